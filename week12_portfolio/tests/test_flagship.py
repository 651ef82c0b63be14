"""The flagship pipeline on a tiny GPT: every stage starts from the previous stage's export, a rerun reuses every
training run and reproduces every harness row, the engine answers as plain greedy decoding does, and bad orders and
configs fail clearly."""

from __future__ import annotations

import json

import pytest

from shared.config import ConfigError
from shared.data.sources import record_text
from week12_portfolio import flagship, flagship_data
from week12_portfolio.flagship_config import STAGES, load_flagship

# the smoke profile, shorter still; the pipeline tests are `slow` (about a minute on 2 idle cores: the tokenizer,
# five stages, six harness passes), and CI's `make week12 PROFILE=smoke` runs the same path again
TINY = ["pretrain.steps=4", "pretrain.eval_every=2", "sft.steps=2", "sft.eval_every=2", "lora.steps=2",
        "lora.eval_every=2", "dpo.steps=2", "dpo.eval_every=2", "eval.items=3", "eval.max_new_tokens=4",
        "serve.prompts=3", "serve.max_new_tokens=6"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("flagship")
    mp.setenv("AIFS_RUNS_ROOT", str(base / "runs"))
    mp.setenv("AIFS_MODELS_ROOT", str(base / "models"))
    yield base
    mp.undo()


@pytest.fixture(scope="module")
def pipeline(roots):
    cfg = load_flagship("smoke", TINY)
    return cfg, flagship.run_flagship(cfg, "smoke")


@pytest.fixture
def first(pipeline, roots, monkeypatch):
    """The module's pipeline, with this test's output roots pointed at it (the suite's autouse fixture gives each
    test its own)."""
    monkeypatch.setenv("AIFS_RUNS_ROOT", str(roots / "runs"))
    monkeypatch.setenv("AIFS_MODELS_ROOT", str(roots / "models"))
    return pipeline


@pytest.mark.slow
def test_every_stage_starts_from_the_previous_export(first):
    cfg, res = first
    assert [s.stage for s in res.stages] == list(STAGES)
    for prev, stage in zip(STAGES, STAGES[1:4], strict=False):
        meta = json.loads((flagship.export_dir("smoke", stage) / "aifs_export.json").read_text())["meta"]
        assert meta["start_sha256"] == res.stage(prev).weights_sha256, stage
    # training changed the weights at every training stage
    shas = [res.stage(s).weights_sha256 for s in STAGES[:4]]
    assert len(set(shas)) == 4
    assert res.stage("serve").weights_sha256 == res.stage("dpo").weights_sha256


@pytest.mark.slow
def test_engine_answers_equal_plain_greedy_decoding(first):
    _, res = first
    m = res.stage("serve").metrics
    assert m["requests"] == 3
    assert m["same_as_greedy"] == 3
    assert m["engine_tokens_per_sec"] > 0


@pytest.mark.slow
def test_harness_row_after_every_stage(first):
    _, res = first
    for s in res.stages:
        assert set(flagship.HARNESS_KEYS) <= set(s.harness), s.stage
        assert len(s.harness["answers_sha256"]) == 16


@pytest.mark.slow
def test_summary_round_trips(first):
    _, res = first
    back = flagship.read_summary("smoke")
    assert back is not None
    assert back.to_json() == json.loads(json.dumps(res.to_json()))


@pytest.mark.slow
def test_rerun_reuses_the_runs_and_reproduces_the_rows(first):
    cfg, res = first
    again = flagship.run_flagship(cfg, "smoke")
    assert all(s.reused for s in again.stages if s.stage != "serve")
    assert [s.harness for s in again.stages] == [s.harness for s in res.stages]
    assert [s.weights_sha256 for s in again.stages] == [s.weights_sha256 for s in res.stages]
    assert flagship.rerun_harness(cfg, "smoke") == res.stage("dpo").harness


def test_a_stage_without_its_start_names_the_missing_stage(roots, monkeypatch, tmp_path):
    monkeypatch.setenv("AIFS_MODELS_ROOT", str(tmp_path / "empty"))
    cfg = load_flagship("smoke", TINY)
    with pytest.raises(flagship.StageOrderError, match="stage 'pretrain'"):
        flagship.run_flagship(cfg, "smoke", ("sft",))


def test_config_rejects_an_answer_longer_than_the_window():
    with pytest.raises(ConfigError, match="serve.max_new_tokens"):
        load_flagship("smoke", ["pretrain.block_size=32", "serve.max_new_tokens=40"])
    with pytest.raises(ConfigError, match="n_head"):
        load_flagship("smoke", ["pretrain.n_embd=30", "pretrain.n_head=4"])


@pytest.mark.slow
def test_corpus_leaves_out_the_held_out_records(roots):
    split = flagship_data.instruction_split(["alpaca"], 4, 0, limit=50)
    folder = flagship_data.pretraining_corpus(["alpaca"], split.val)
    docs = (folder / "corpus.txt").read_text().split(flagship_data.SEPARATOR)
    docs = {d.strip() for d in docs}
    for r in split.val:
        assert record_text(r.to_json()).strip() not in docs
    assert any(record_text(r.to_json()).strip() in docs for r in split.train[:10])
