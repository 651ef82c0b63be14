"""Week 5: profiles, stages that skip verified outputs and redo broken ones, the eval CLI's errors, the whole pipeline
(slow)."""

import json

import pytest

from shared.checkpoint import CheckpointError
from shared.config import ConfigError
from shared.data.bpe import train_bpe
from shared.data.corpus import load_corpus
from shared.data.lm import pack_stage, tokenizer_stage
from shared.testing import fake_documents
from week05_lm_pipeline import config, stages
from week05_lm_pipeline.__main__ import main
from week05_lm_pipeline.eval import evaluate_checkpoint
from week05_lm_pipeline.eval import main as eval_main


def _overrides(corpus_dir):
    return [f"data.corpus={corpus_dir}", "data.separator=<|sep|>", "data.vocab_size=400", "model.block_size=16",
            "loop.max_steps=60", "loop.eval_every=30", "eval.max_tokens=0", "check.roundtrip_docs=50",
            "short.max_steps=30", "short.eval_every=15", "short.n_layer=1", "short.n_embd=32", "short.block_size=16",
            "short.eval_tokens=0", "ablation.warmup_steps=5", "ablation.high_lrs=[1.0]", "ladder.tuned_lrs=[0.01]", "ladder.sgd_lrs=[0.1]",
            "short.select_tokens=300",
            "bench.seq_lens=[8,16]", "bench.micro_batches=[2]", "bench.steps=1", "bench.warmup=0"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_loads(profile):
    cfg = config.load(profile)
    assert cfg.model.n_embd % cfg.model.n_head == 0


def test_the_gpu_profile_is_gpt2_small_on_tinystories():
    cfg = config.load("gpu")
    m = cfg.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.attn_backend) == (12, 12, 768, 1024, "torch")
    assert (cfg.loop.precision, cfg.loop.compile, cfg.data.corpus) == ("bf16", True, "tinystories")
    with pytest.raises(ConfigError, match="vocab_sise"):
        config.load("gpu", ["data.vocab_sise=8"])


def test_stages_skip_verified_outputs_and_redo_broken_ones(corpus_dir):
    cfg = config.load("smoke", _overrides(corpus_dir))
    corpus = load_corpus(cfg.data)
    assert len(corpus.train) + len(corpus.val) == 120
    first = tokenizer_stage(cfg.data, corpus, stages.WEEK, cfg.check.roundtrip_docs)
    assert not first.skipped
    assert first.roundtrip_ok == first.roundtrip_n == 12  # 10% of 120 documents
    assert first.edge_cases_ok
    again = tokenizer_stage(cfg.data, corpus, stages.WEEK, cfg.check.roundtrip_docs)
    assert again.skipped
    assert again.tokenizer.sha256 == first.tokenizer.sha256
    packed = pack_stage(cfg.data, corpus, first.tokenizer, stages.WEEK, cfg.model.block_size)
    assert not packed.skipped
    assert all(s.tokens == s.tokens_before and s.bos_count == s.documents for s in packed.splits.values())
    assert pack_stage(cfg.data, corpus, first.tokenizer, stages.WEEK, cfg.model.block_size).skipped
    val = packed.dir / "val.bin"
    val.write_bytes(val.read_bytes()[:-2])  # truncated: the stage must notice and pack again
    redone = pack_stage(cfg.data, corpus, first.tokenizer, stages.WEEK, cfg.model.block_size)
    assert not redone.skipped
    assert redone.splits["val"].tokens == packed.splits["val"].tokens


# The whole pipeline with its bench grid, ablation and ladder: ~8 s on 2 idle cores, minutes on a loaded machine, so it
# is a slow test (`make test-slow`; CI's `make week05 PROFILE=smoke` runs it on the real text). `make test` keeps its
# parts: test_week_parts.py (train -> eval CLI == evaluate_checkpoint, the tokenizer mismatch, stages alone reuse
# what is on disk and write no log), the stage test above, and the check functions in test_checks.py.
@pytest.mark.slow
def test_the_whole_pipeline_passes_its_checks_and_the_eval_cli_agrees(corpus_dir, aifs_dirs, capsys):
    code = main(["--profile", "smoke", *_overrides(corpus_dir)])
    log = (aifs_dirs["runs"] / "week05" / "smoke" / "log" / "week05.md").read_text()
    assert "(of 13)" in log, log
    assert code == (1 if "| FAIL" in log else 0)
    # the pipeline's own checks must pass on any corpus; the experiments' (ablation, ladder) need real sizes
    for name in ("tokenizer round trip", "packing loses no token", "perplexity is reproducible",
                 "beats the unigram baseline", "throughput is plausible", "peak memory is plausible",
                 "HF export reproduces the checkpoint"):
        row = next(line for line in log.splitlines() if line.startswith(f"| {name}"))
        assert row.split("|")[-2].strip() == "PASS", row
    best = next((aifs_dirs["runs"] / "week05" / "smoke").glob("gpt-*/checkpoints/best"))
    capsys.readouterr()
    assert eval_main([str(best), "--batch-size", "3"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli == evaluate_checkpoint(str(best), batch_size=3)
    assert cli["perplexity"] > 1.0
    other = aifs_dirs["models"] / "other.bpe.json"
    train_bpe(fake_documents(300), vocab_size=300).save(other)
    with pytest.raises(CheckpointError, match="trained with a 448-id vocabulary"):
        evaluate_checkpoint(str(best), tokenizer=str(other))
    # every stage also runs alone, reusing what the full run left on disk and writing no log
    log_file = aifs_dirs["runs"] / "week05" / "smoke" / "log" / "week05.md"
    log_file.unlink()
    summaries = {}
    for stage in ("pack", "eval"):
        capsys.readouterr()
        assert main(["--profile", "smoke", "--stage", stage, *_overrides(corpus_dir)]) == 0
        out = capsys.readouterr().out
        summaries[stage] = json.loads(out[out.index('{\n  "stage"'):])
    assert summaries["pack"]["skipped"] is True
    val_tokens = summaries["pack"]["splits"]["val"]["tokens"]
    assert summaries["eval"]["tokens"] == (val_tokens - 1) // 16 * 16  # every whole window of block_size 16
    assert summaries["eval"]["loss"] == pytest.approx(cli["loss"], rel=1e-4)  # another batch size, same number
    assert not log_file.exists()
