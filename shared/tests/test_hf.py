"""The Hugging Face path (shared.models.hf): our GPT and its Llama / GPT-2 twin give the same logits on random weights.

Tolerance: fp32 with atol 1e-5 on logits of magnitude <~ 10. The two implementations compute the same function with
different kernels and summation orders (HF's SDPA vs our hand-written attention, fused vs split q/k/v matmuls,
Conv1D's addmm vs Linear, RoPE angles in fp32 vs our fp64 table), so they agree to a few fp32 ulps of the logits
(~1e-6 measured), not bit for bit; a real mapping bug (a swapped or untransposed matrix, a wrong eps or RoPE base,
the tanh GELU) moves them by 1e-3 or more.
"""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from shared.models.gpt import GPT, GPTConfig
from shared.models.hf import EXPORT_FILE, from_hf, hf_class_name, load_hf, save_hf, to_hf

LLAMA = {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu"}
GPT2 = {"norm": "layernorm", "pos": "learned", "mlp": "gelu"}
TINY = {"vocab_size": 37, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
# Non-default eps and RoPE base, so that a mapping which drops them is caught (eps 1e-2 matters on random weights).
CASES = {
    "llama": GPTConfig(**TINY, **LLAMA, rope_base=500.0, norm_eps=1e-2),
    "llama-nobias-dff-untied": GPTConfig(**TINY, **LLAMA, bias=False, d_ff=40, tie_weights=False),
    "gpt2": GPTConfig(**TINY, **GPT2, norm_eps=1e-2, dropout=0.1),
    "gpt2-nobias-dff-untied": GPTConfig(**TINY, **GPT2, bias=False, d_ff=48, tie_weights=False),
}
ATOL = 1e-5  # fp32; see the module docstring


def random_gpt(cfg: GPTConfig, seed: int = 0) -> GPT:
    """A GPT in eval mode with every parameter re-drawn: norm gains ~ 1 + 0.2 N(0,1), biases ~ 0.1 N(0,1),
    embeddings ~ 0.3 N(0,1), matrices ~ N(0, 1/fan_in). The default init (unit gains, zero biases) would hide a
    swapped or dropped norm or bias."""
    m = GPT(replace(cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if p.dim() == 1:
                p.copy_(1 + 0.2 * z if "norm" in name else 0.1 * z)
            elif name.startswith(("wte", "wpe")):
                p.copy_(0.3 * z)
            else:
                p.copy_(z / p.shape[1] ** 0.5)
    return m.eval()


def ids_batch(cfg: GPTConfig, b: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (b, cfg.block_size), generator=torch.Generator().manual_seed(seed))


def _raise(exc: Exception):
    raise exc


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match(case):
    cfg = CASES[case]
    m = random_gpt(cfg)
    hf = to_hf(m)
    assert type(hf).__name__ == ("LlamaForCausalLM" if cfg.pos == "rope" else "GPT2LMHeadModel")
    assert not hf.training
    ids = ids_batch(cfg)
    with torch.no_grad():
        ours, theirs = m(ids), hf(ids).logits
    assert ours.abs().max() > 1  # logits of a real scale, so atol is meaningful
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_to_hf_logits_match_with_padding(case):
    """Right padding (the usual call: mask only; real positions never see the pads under the causal mask), then left
    padding with position_ids, where the mask is what keeps the pads out: both compared on real positions only."""
    cfg = CASES[case]
    m, ids = random_gpt(cfg), ids_batch(cfg)
    hf = to_hf(m)
    lengths = torch.tensor([16, 11, 5])
    t = torch.arange(cfg.block_size)
    right = (t[None, :] < lengths[:, None]).long()  # (B, T)
    left = right.flip(1)
    left_pos = (left.cumsum(1) - 1).clamp_min(0)  # (B, T): 0 at each row's first real token
    with torch.no_grad():
        for mask, pos in ((right, None), (left, left_pos)):
            ours = m(ids, attention_mask=mask, position_ids=pos)
            theirs = hf(ids, attention_mask=mask, position_ids=pos).logits
            real = mask.bool()
            torch.testing.assert_close(theirs[real], ours[real], atol=ATOL, rtol=0)
        # the left-padding comparison is not vacuous: without the mask the real positions change
        assert not torch.allclose(m(ids, position_ids=left_pos)[real], ours[real], atol=1e-3)


@pytest.mark.parametrize("case", CASES)
def test_from_hf_inverts_to_hf_bit_for_bit(case):
    m = random_gpt(CASES[case])
    back = from_hf(to_hf(m))
    assert back.cfg == m.cfg
    assert_state_dicts_equal(back.state_dict(), m.state_dict())
    if m.cfg.tie_weights:
        assert back.lm_head.weight is back.wte.weight


@pytest.mark.parametrize("case", ["llama", "gpt2"])
def test_round_trip_keeps_bf16_bit_for_bit(case):
    m = random_gpt(CASES[case]).to(torch.bfloat16)
    hf = to_hf(m)
    assert hf.get_input_embeddings().weight.dtype == torch.bfloat16
    assert_state_dicts_equal(from_hf(hf).state_dict(), m.state_dict())


def test_bias_free_gpt2_exports_zero_biases_and_imports_by_their_values():
    m = random_gpt(CASES["gpt2-nobias-dff-untied"])
    hf = to_hf(m)
    biases = {k: v for k, v in hf.state_dict().items() if k.endswith(".bias")}
    assert biases
    assert all(not v.any() for v in biases.values())
    assert not from_hf(hf).cfg.bias
    with torch.no_grad():
        hf.transformer.h[1].ln_2.bias[3] = 0.5  # a fine-tune moved one bias: it must be kept
    back = from_hf(hf)
    assert back.cfg.bias
    ids = ids_batch(m.cfg)
    with torch.no_grad():
        torch.testing.assert_close(back(ids), hf(ids).logits, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="nonzero"):
        from_hf(hf, bias=False)


@pytest.mark.parametrize("case", ["llama", "gpt2"])
def test_save_hf_loads_with_auto_class_offline_and_back_bit_for_bit(case, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = random_gpt(CASES[case])
    out = save_hf(m, tmp_path / "export", meta={"step": 7})
    assert (out / "model.safetensors").is_file()
    assert (out / "config.json").is_file()
    record = json.loads((out / EXPORT_FILE).read_text())
    assert record["gpt_config"]["n_embd"] == 32
    assert record["meta"] == {"step": 7}
    assert record["hf_class"] == hf_class_name(m.cfg)
    assert record["tokenizer_sha256"] is None
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert type(hf).__name__ == record["hf_class"]
    ids = ids_batch(m.cfg)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, m(ids), atol=ATOL, rtol=0)
    back = load_hf(out)
    assert back.cfg == m.cfg  # dropout and bias come back from aifs_export.json
    assert_state_dicts_equal(back.state_dict(), m.state_dict())


@pytest.mark.parametrize("fail_at", ["meta", "fsync", "swap"])
def test_save_hf_replaces_an_existing_export_only_when_complete(fail_at, tmp_path, monkeypatch):
    import os

    import shared.models.hf as hf_module

    out = tmp_path / "export"
    save_hf(random_gpt(CASES["gpt2"], seed=0), out)
    (out / "stale.txt").write_text("from an older export")
    first = (out / "model.safetensors").read_bytes()
    with monkeypatch.context() as mp:
        meta = {"bad": object()} if fail_at == "meta" else None  # not JSON: fails before anything is written
        if fail_at == "fsync":  # fails once the new folder is written, before the swap
            mp.setattr(hf_module, "_fsync_tree", lambda folder: _raise(OSError("disk full")))
        if fail_at == "swap":  # the old export was moved aside, then renaming the new one in fails
            real = os.replace
            mp.setattr(os, "replace", lambda a, b: _raise(OSError("crash")) if str(a).endswith(".tmp") else real(a, b))
        with pytest.raises((TypeError, OSError)):
            save_hf(random_gpt(CASES["gpt2"], seed=1), out, meta=meta)
    assert (out / "model.safetensors").read_bytes() == first
    assert (out / "stale.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary folder left behind
    save_hf(random_gpt(CASES["gpt2"], seed=1), out)
    assert (out / "model.safetensors").read_bytes() != first
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_load_hf_restores_what_a_hf_config_does_not_hold(tmp_path):
    """A fresh GPT-2 init has all-zero biases (from_hf alone would call it bias-free) and Llama has no residual
    dropout: aifs_export.json brings back bias, dropout and attn_backend."""
    fresh = GPT(GPTConfig(**TINY, **GPT2, attn_backend="torch"))
    assert not from_hf(to_hf(fresh)).cfg.bias
    llama = random_gpt(replace(CASES["llama"], dropout=0.1))
    for i, m in enumerate((fresh, llama)):
        back = load_hf(save_hf(m, tmp_path / f"export{i}"))
        assert back.cfg == m.cfg
        assert_state_dicts_equal(back.state_dict(), m.state_dict())


@pytest.mark.parametrize(("overrides", "named"), [
    ({"norm_placement": "post"}, "norm_placement='post'"),
    ({**GPT2, "norm": "rmsnorm"}, "norm='rmsnorm'"),
    ({**GPT2, "pos": "rope"}, "pos='rope'"),
    ({**LLAMA, "mlp": "gelu"}, "mlp='gelu'"),
    ({**LLAMA, "pos": "learned"}, "pos='learned'"),
])
def test_unsupported_variants_are_refused_by_name(overrides, named):
    m = GPT(GPTConfig(**{**TINY, **overrides}))
    with pytest.raises(ValueError, match=named) as e:
        to_hf(m)
    assert "LlamaForCausalLM" in str(e.value)
    assert "GPT2LMHeadModel" in str(e.value)


@pytest.mark.parametrize(("field", "make"), [
    ("num_key_value_heads", lambda tf: tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=37, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2))),
    ("rope_parameters", lambda tf: tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=37, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}))),
    ("hidden_act", lambda tf: tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=37, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        hidden_act="gelu"))),
    ("activation_function", lambda tf: tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=37, n_positions=16, n_embd=32, n_layer=1, n_head=2))),  # GPT-2's default: gelu_new
    ("GPT2Model", lambda tf: tf.GPT2Model(tf.GPT2Config(
        vocab_size=37, n_positions=16, n_embd=32, n_layer=1, n_head=2, activation_function="gelu"))),
])
def test_from_hf_refuses_what_the_gpt_cannot_express(field, make):
    import transformers

    with pytest.raises(ValueError, match=field):
        from_hf(make(transformers))


def test_tokenizer_round_trip_and_refusals(tmp_path):
    from shared.data.bpe import train_bpe
    from shared.data.spm_tokenizer import train_sentencepiece
    from shared.data.text import CharTokenizer
    from shared.data.tokenizer import load_tokenizer
    from shared.testing import fake_documents

    spm = train_sentencepiece(fake_documents(300), vocab_size=400)
    tok = train_bpe(fake_documents(300), vocab_size=400)
    for t, name in ((tok, "tokenizer.bpe.json"), (spm, "tokenizer.model")):
        m = random_gpt(replace(CASES["llama"], vocab_size=t.vocab_size))
        out = save_hf(m, tmp_path / f"export-{name}", tokenizer=t)
        record = json.loads((out / EXPORT_FILE).read_text())
        assert record["tokenizer_sha256"] == t.sha256
        assert record["tokenizer_file"] == name
        reloaded = load_tokenizer(out)
        assert type(reloaded) is type(t)
        assert reloaded.sha256 == t.sha256
        config = json.loads((out / "config.json").read_text())
        assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (t.bos_id, t.eos_id, t.pad_id)
    # a tokenizer with more ids than the model has embeddings is refused, and nothing is written
    with pytest.raises(ValueError, match="400 ids but the model only 37"):
        save_hf(random_gpt(CASES["gpt2"]), tmp_path / "refused", tokenizer=tok)
    assert not (tmp_path / "refused").exists()
    # the char tokenizer is kept under its own name: "tokenizer.json" would be read as a Hugging Face tokenizer
    chars = CharTokenizer("abcdefghij ")
    out = save_hf(random_gpt(CASES["gpt2"]), tmp_path / "char", tokenizer=chars)
    assert load_tokenizer(out / "char_tokenizer.json").sha256 == chars.sha256
    with pytest.raises(ValueError, match="cannot save a str"):
        save_hf(random_gpt(CASES["gpt2"]), tmp_path / "bad", tokenizer="not a tokenizer")


def test_hf_tokenizer_is_saved_with_save_pretrained(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from shared.data.hf_tokenizer import HFTokenizer
    from shared.data.tokenizer import load_tokenizer

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "the", "cat", "sat"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = HFTokenizer(PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                              eos_token="</s>"))
    out = save_hf(random_gpt(CASES["llama"]), tmp_path / "export", tokenizer=tok)
    reloaded = load_tokenizer(out)
    assert isinstance(reloaded, HFTokenizer)
    assert reloaded.sha256 == tok.sha256
    assert reloaded.encode("the cat sat") == [3, 4, 5]
    assert json.loads((out / EXPORT_FILE).read_text())["tokenizer_sha256"] == tok.sha256


def test_importing_the_module_does_not_import_transformers():
    code = "import sys, shared.models.hf; assert 'transformers' not in sys.modules, 'imported transformers'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_hugging_face_model_trains_with_the_one_loop_behind_the_causal_lm_adapter(tmp_path):
    """The adapter makes a transformers model a CausalLM: same logits as the GPT it came from, and the step loop
    trains it (with checkpoints and an exact resume) like any other model."""
    from shared.checkpoint import FileCheckpointer
    from shared.models.causal_lm import CausalLM, HFCausalLM
    from shared.tasks.lm import LMTask
    from shared.testing import debug_token_stream
    from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
    from shared.train.loop import fit
    from shared.train.optim import build_optimizer

    cfg = replace(CASES["llama"], vocab_size=8, block_size=8, norm_eps=1e-5)
    gpt = random_gpt(cfg)
    lm = HFCausalLM(to_hf(gpt))
    assert isinstance(lm, CausalLM)
    x = ids_batch(cfg)
    torch.testing.assert_close(lm(x), gpt(x), atol=ATOL, rtol=0)
    data = debug_token_stream()

    def train(folder, stop_at=0):
        torch.manual_seed(0)
        model = HFCausalLM(to_hf(random_gpt(cfg))).train()
        loop = LoopConfig(max_steps=12, micro_batch=8, eval_every=6, log_every=1, print_every=0, device="cpu",
                          progress=False, stop_at=stop_at)
        task = LMTask(data[:3600], data[3600:], cfg.block_size, 0, 2, 8)
        result = fit(model, task, build_optimizer(model, OptimConfig(lr=3e-3)), ScheduleConfig(warmup_steps=2),
                     loop, checkpointer=FileCheckpointer(tmp_path / folder))
        return model, result

    model, full = train("full")
    assert full.evals[-1]["val_loss"] < full.evals[0]["val_loss"] - 0.1
    train("cut", stop_at=5)
    resumed_model, resumed = train("cut")
    assert resumed.resumed_from == 5
    assert [e["val_loss"] for e in resumed.evals] == [e["val_loss"] for e in full.evals]
    assert_state_dicts_equal(model.state_dict(), resumed_model.state_dict())
