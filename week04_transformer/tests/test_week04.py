"""Week 4: profiles, sample points, the component-test counter, and the whole week on the debug corpus."""

import pytest

from shared.config import ConfigError
from week04_transformer import components, config
from week04_transformer.__main__ import main
from week04_transformer.train import sample_steps

DEBUG = ["data.dataset=fake_text", "loop.max_steps=30", "loop.eval_every=10", "task.eval_iters=2",
         "sample.max_new_tokens=20", "bench.steps=1", "bench.warmup=0", "check.time_budget_s=600"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_loads(profile):
    cfg = config.load(profile)
    assert cfg.model.n_embd % cfg.model.n_head == 0
    assert cfg.loop.max_steps % cfg.loop.eval_every == 0


def test_the_gpu_profile_is_the_issue_s_reference_shape():
    cfg = config.load("gpu")
    m, t = cfg.model, cfg.loop
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.attn_backend) == (6, 6, 384, 256, "torch")
    assert (t.precision, t.compile, cfg.optim.fused) == ("bf16", True, True)
    assert cfg.check.target_val_loss == 1.47


def test_an_unknown_key_is_named():
    with pytest.raises(ConfigError, match="n_heads"):
        config.load("smoke", ["model.n_heads=4"])


def test_samples_at_the_first_middle_and_last_eval():
    assert sample_steps(2000, 250) == [0, 1000, 2000]
    assert sample_steps(120, 40) == [0, 40, 120]
    assert sample_steps(100, 30) == [0, 60, 100]


def test_component_test_counter_counts_passes_and_failures(tmp_path):
    f = tmp_path / "test_demo.py"
    f.write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n\ndef test_c():\n    assert 1 == 2\n")
    count = components.run_component_tests((str(f),))
    assert (count.tests, count.passed, count.failures) == (3, 2, 1)


def test_the_whole_week_runs_on_the_debug_corpus_and_writes_its_log(fake_text, aifs_dirs, monkeypatch):
    monkeypatch.setattr(components, "run_component_tests", lambda: components.TestCount(9, 0, 0, 0, 0.1))
    code = main(["--profile", "smoke", *DEBUG, "check.target_val_loss=3.5"])
    log = (aifs_dirs["runs"] / "week04" / "smoke" / "log" / "week04.md").read_text()
    assert "## Checks: 7 PASS, 0 SKIP, 0 FAIL (of 7)" in log, log
    assert code == 0
    assert log.count("**Step ") == 3  # three samples
    assert "loss_curves.png" in log
    assert "| manual" in log  # the benchmark table


def test_a_second_run_of_the_same_config_resumes_and_says_so(fake_text, aifs_dirs, monkeypatch):
    monkeypatch.setattr(components, "run_component_tests", lambda: components.TestCount(9, 0, 0, 0, 0.1))
    args = ["--profile", "smoke", *DEBUG, "check.target_val_loss=3.5"]
    assert main([*args, "loop.stop_at=20"]) == 1  # stopped early: above the target, so that check fails
    main(args)
    log = (aifs_dirs["runs"] / "week04" / "smoke" / "log" / "week04.md").read_text()
    assert "resumed the run from its checkpoint at step 20" in log
    assert "summed over the processes" in log
