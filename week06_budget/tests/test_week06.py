"""Week 6: profiles load, the budget runs and the memo on the fake pool, bad input, the whole week (slow)."""

import json

import pytest

from shared.config import ConfigError
from shared.data.lm import padded_vocab_size
from shared.data.manifest import ManifestError
from shared.results import read_runs
from week06_budget import config, experiments, memo
from week06_budget.__main__ import main
from week06_budget.data import build_versions

TINY = ["data.vocab_size=300", "model.block_size=16", "model.n_embd=16", "model.n_head=2", "model.n_layer=1",
        "loop.micro_batch=4", "ab.max_tokens=2000", "ab.samples=1", "ab.sample_tokens=5", "demo.max_tokens=1000",
        "demo.max_seconds=0.5", "isoflop.budgets=[3e7,9e7]", "isoflop.block_size=16", "isoflop.micro_batch=4",
        "isoflop.min_steps=3", "isoflop.bootstrap=20", "memo.budget_flops=1e8", "check.probe_s=0.05",
        "isoflop.sizes=[{n_layer: 1, n_head: 2, n_embd: 8}, {n_layer: 1, n_head: 2, n_embd: 16}, "
        "{n_layer: 1, n_head: 2, n_embd: 24}]"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_loads(profile):
    cfg = config.load(profile)
    assert cfg.ab.seeds
    assert len(cfg.isoflop.sizes) >= 4
    assert len(cfg.isoflop.budgets) >= 3


def test_bad_values_are_refused_by_name():
    with pytest.raises(ConfigError, match="dedup.threshold"):
        config.load("smoke", ["dedup.threshold=1.5"])
    with pytest.raises(ConfigError, match="ab.max_tokens"):
        config.load("smoke", ["ab.max_tokens=0"])


def _setup(*extra):
    cfg = config.load("smoke", [*TINY, *extra])
    v = build_versions(cfg)
    return cfg, v, padded_vocab_size(v.tokenizer.vocab_size, cfg.data.pad_vocab_to)


def test_budget_demo_stops_at_each_budget_and_estimates_first(fake_sources):
    cfg, v, vocab = _setup()
    demo = experiments.budget_demo(cfg, "smoke", v, vocab)
    t, s = demo.by_tokens, demo.by_seconds
    assert (t.stopped_by, s.stopped_by) == ("max_tokens", "max_seconds")
    assert cfg.demo.max_tokens - t.tokens_per_step < t.tokens <= cfg.demo.max_tokens
    assert s.train_time_s - s.last_step_s < cfg.demo.max_seconds <= s.train_time_s
    assert t.estimate["tokens"] == t.tokens  # the estimate names the tokens the run then trained on
    run_dir = read_runs(run_id=t.run_id)[0]
    assert run_dir["config"]["data"]["manifest"] == t.manifest
    again = experiments.budget_demo(cfg, "smoke", v, vocab)  # cached: the same runs, not new ones
    assert again.by_tokens.run_id == t.run_id
    assert again.by_tokens.val_loss == t.val_loss


def test_the_memo_cites_registered_runs_and_one_reproduces_exactly(fake_sources, tmp_path):
    cfg, v, vocab = _setup()
    ab = experiments.ab_experiment(cfg, "smoke", v, vocab)
    iso = experiments.isoflop_sweep(cfg, "smoke", v, vocab)
    m = memo.write_memo(tmp_path / "memo.md", cfg.memo.budget_flops, ab, iso, cfg.ab.alpha, "smoke")
    assert set(m.cited) <= memo.registered_ids("smoke")
    assert all(r.run_id in m.text for r in ab.runs["A"])
    original, rerun = memo.reproduce(ab.runs["B"][0], "smoke")
    assert rerun.val_loss == original
    assert rerun.run_id != ab.runs["B"][0].run_id


def test_reproducing_from_a_changed_manifest_is_refused(fake_sources):
    cfg, v, vocab = _setup()
    run = experiments.budget_demo(cfg, "smoke", v, vocab).by_tokens
    val = v.b.dir / "val.bin"
    data = bytearray(val.read_bytes())
    data[0] ^= 1
    val.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="val.bin has sha256"):
        memo.reproduce(run, "smoke")


def test_a_token_budget_smaller_than_one_step_is_an_error_with_exit_2(fake_sources, capsys):
    from shared.cli import run_week

    code = run_week(lambda: main(["--profile", "smoke", *TINY, "demo.max_tokens=10"]))
    assert code == 2
    assert "loop.max_tokens=10 is smaller than one step" in capsys.readouterr().err


@pytest.mark.slow
def test_the_whole_week_writes_its_log_and_memo(fake_sources, aifs_dirs):
    code = main(["--profile", "smoke", *TINY])
    log = (next(aifs_dirs["runs"].rglob("week06.md"))).read_text()
    assert "## Checks:" in log
    assert "budget enforced" in log
    assert "memo run reproduced" in log
    memo_md = next(aifs_dirs["runs"].rglob("week06-budget-memo.md")).read_text()
    assert "Recommended: **" in memo_md
    assert code in (0, 1)  # tiny runs may fail the ±25% estimate check; the log is written either way
    assert json.loads(next(aifs_dirs["runs"].rglob("manifest.json")).read_text())["name"] in ("A", "B")
