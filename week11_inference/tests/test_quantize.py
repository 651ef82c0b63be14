"""int8 dynamic quantisation on the debug GPT (trained for a second on the debug stream, so its argmaxes are not
near-ties): every Linear but the tied head becomes int8 and the original is untouched; each int8 layer equals the fp32
layer on int8-rounded weights up to one activation rounding step; the logits move, but by less than the rounding
allows; the linear weights shrink exactly 4x; greedy decoding through the KV cache equals the no-cache loop on the
int8 model; perplexity barely moves; the Hugging Face path (a tiny Llama) runs the harness; bad inputs named."""

import pytest
import torch
from torch import nn

from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import causal_lm_loss
from shared.testing import DEBUG_GPT, debug_token_stream
from week11_inference.quantize import (
    QuantConfig,
    cache_agreement,
    compare_gpt,
    compare_hf,
    linear_bytes,
    model_bytes,
    perplexity,
    quantize_int8,
    quantized_linears,
    time_decode,
    torch_threads,
)

DATA = debug_token_stream(4000)  # train on the first 3000 tokens, score the last 1000
QUANTISED = ["blocks.0.attn.c_attn", "blocks.0.attn.c_proj", "blocks.0.mlp.c_fc", "blocks.0.mlp.c_proj"]
FAST = QuantConfig(prompt_len=2, new_tokens=6, warmup=0, repeats=1, ppl_tokens=0)


def _trained(pos: str) -> GPT:
    """The debug GPT after 60 AdamW steps on the debug stream (~0.3 s): loss ~0.55 nats, chance is ln 8 = 2.08."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**DEBUG_GPT, "pos": pos}))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    starts = torch.arange(0, 3000 - 9, 9)
    with torch_threads(1):
        for _ in range(60):
            x = DATA[starts[torch.randint(0, len(starts), (32,), generator=g)][:, None] + torch.arange(9)]
            loss = causal_lm_loss(model(x[:, :-1]), x[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module", params=["learned", "rope"])
def pair(request):
    model = _trained(request.param)
    return model, quantize_int8(model)


def _batch() -> torch.Tensor:
    return DATA[3000:3064].view(8, 8)


def test_every_linear_but_the_tied_head_becomes_int8_and_the_original_is_untouched(pair):
    model, q = pair
    assert quantized_linears(q) == QUANTISED
    assert type(q.lm_head) is nn.Linear
    assert q.lm_head.weight is q.wte.weight
    assert quantized_linears(model) == []
    assert all(type(model.get_submodule(n)) is nn.Linear for n in QUANTISED)


def test_each_int8_layer_is_the_fp32_layer_on_rounded_weights_up_to_one_activation_step(pair):
    """y_q = Σ_j x̂_j ŵ_ij + b, with ŵ = the dequantised int8 weight and x̂ = x rounded to the call's 7-bit grid
    (step s_x = range(x ∪ 0) / 127, error <= s_x / 2). So |y_q - x·ŵᵀ - b| <= s_x / 2 · Σ_j |ŵ_ij|, exactly."""
    model, q = pair
    inputs: dict[str, torch.Tensor] = {}
    hooks = [q.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0]))
             for n in QUANTISED]
    with torch.no_grad():
        q(_batch())
    for h in hooks:
        h.remove()
    for name in QUANTISED:
        x, qlin, lin = inputs[name], q.get_submodule(name), model.get_submodule(name)
        w_hat = qlin.weight().dequantize()  # (out, in)
        assert 0 < (w_hat - lin.weight).abs().max() <= qlin.weight().q_per_channel_scales().max() / 2 + 1e-7
        s_x = (x.max().clamp_min(0) - x.min().clamp_max(0)) / 127
        bound = s_x / 2 * w_hat.abs().sum(1) + 1e-5  # (out,), + fp32 rounding of the rescale
        with torch.no_grad():
            err = (qlin(x) - nn.functional.linear(x, w_hat, lin.bias)).abs()
        assert (err <= bound).all(), f"{name}: error {err.max():.3g} above the rounding bound {bound.min():.3g}"


def test_int8_logits_differ_from_fp32_by_less_than_the_rounding_allows(pair):
    """Each of the 4 int8 matmuls errs by at most ~1/127 of its operands' range (one step, half for the weight and
    half for the input); summed over the layers, relative to the logits' range: 4/127 = 3% of max|logits|. Errors of
    a dot product's C terms partly cancel, so the measured gap is ~1%; a wrong scale or zero point would be ~100%."""
    model, q = pair
    with torch.no_grad():
        ref, got = model(_batch()), q(_batch())
    gap = (got - ref).abs().max().item()
    assert gap > 1e-4, "the int8 model gives the fp32 logits: nothing was quantised"  # fp32 noise is ~1e-7
    assert gap <= len(QUANTISED) / 127 * ref.abs().max().item()


@pytest.mark.parametrize("per_channel", [True, False])
def test_linear_weights_shrink_exactly_4x_and_the_checkpoint_shrinks(pair, per_channel):
    model, _ = pair
    q = quantize_int8(model, QuantConfig(per_channel=per_channel))
    fp, i8 = linear_bytes(model, skip=("lm_head",)), linear_bytes(q, skip=("lm_head",))
    assert fp["layers"] == i8["layers"] == 4
    assert fp["weights"] == 4 * i8["weights"] == 4 * (16 * 48 + 16 * 16 + 16 * 64 + 64 * 16)
    assert fp["qparams"] == 0
    assert fp["bias"] == i8["bias"]
    # qparams: 16 B per matrix (per-tensor) or per output row (per-channel): at C = 16 a row's scale + zero point
    # weigh as much as its 16 int8 weights, so per-channel only halves the payload here (C = 128: 3.6x)
    total = (fp["weights"] + fp["bias"]) / (i8["weights"] + i8["qparams"] + i8["bias"])
    assert total > (1.9 if per_channel else 3.4)
    assert model_bytes(q) < model_bytes(model)


def test_kv_cache_greedy_on_the_int8_model_equals_its_no_cache_greedy(pair):
    """Same tokens; the logits differ by the int8 error (a one-token step quantises its input over its own range,
    the full re-run over the whole sequence's), while the fp32 model's paths agree to ~1e-7."""
    model, q = pair
    prompt = DATA[3000:3002][None]
    fp32, int8 = cache_agreement(model, prompt, 6), cache_agreement(q, prompt, 6)
    assert fp32["tokens_equal"]
    assert fp32["max_logit_gap"] <= 1e-5
    assert int8["tokens_equal"], f"first differing step: {int8['first_mismatch']}"
    with torch.no_grad():
        spread = model(prompt).abs().max().item()
    assert int8["max_logit_gap"] <= len(QUANTISED) / 127 * 2 * spread


def test_int8_perplexity_stays_within_1_percent_of_fp32(pair):
    model, q = pair
    fp, i8 = perplexity(model, DATA[3000:], 8, FAST), perplexity(q, DATA[3000:], 8, FAST)
    assert fp["ppl"] < 2.0
    assert fp["eval_tokens"] == i8["eval_tokens"] == 124 * 8
    assert abs(i8["ppl"] / fp["ppl"] - 1) < 0.01


def test_compare_gpt_returns_an_fp32_and_an_int8_row(pair):
    model, _ = pair
    rows = compare_gpt(model, DATA[3000:], "debug", FAST)
    assert [r["variant"] for r in rows] == ["fp32", "int8"]
    fp, i8 = rows
    assert i8["bytes"] < fp["bytes"]
    assert i8["quantized_linears"] == 4
    assert fp["quantized_linears"] == 0
    assert fp["linear_weight_bytes"] == 4 * i8["linear_weight_bytes"]
    assert fp["max_logit_diff_vs_fp32"] == 0
    assert i8["max_logit_diff_vs_fp32"] > 0
    assert fp["argmax_agree_vs_fp32"] == 1.0
    assert i8["argmax_agree_vs_fp32"] >= 0.75  # teacher-forced on the first val window: 8 positions
    for r in rows:
        assert r["forward_tok_s"] > 0
        assert r["decode_tok_s"] > 0
        assert r["threads"] == 1
        assert r["kv_cache"]
        assert r["cache_tokens_equal"]
        assert r["ppl"] < 2.0


def test_the_hugging_face_path_quantises_a_tiny_llama_and_runs_the_harness():
    from shared.data.hf_tokenizer import HFTokenizer
    from shared.evals.instruct import EvalItem, HarnessConfig
    from shared.models.causal_lm import HFCausalLM
    from shared.models.tiny import tiny_llama, tiny_tokenizer
    from shared.testing import fake_documents

    tok = tiny_tokenizer(fake_documents(20), vocab_size=300)
    model = HFCausalLM(tiny_llama(len(tok), tokenizer=tok))
    items = [EvalItem(str(i), f"Name {n} animals.", "", "cat, dog", "brainstorm", "test") for i, n in enumerate("23")]
    cfg = QuantConfig(prompt_len=2, new_tokens=2, warmup=0, repeats=1)
    rows = compare_hf(model, HFTokenizer(tok), items, "alpaca", HarnessConfig(max_new_tokens=3, batch_size=2), "tiny",
                      cfg)
    fp, i8 = rows
    assert i8["quantized_linears"] == 2 * 7
    assert fp["quantized_linears"] == 0
    assert fp["linear_weight_bytes"] == 4 * i8["linear_weight_bytes"]
    assert i8["bytes"] < fp["bytes"]
    assert all(r["items"] == 2 and 0 <= r["rougeL"] <= 1 and len(r["answers"]) == 2 for r in rows)
    assert i8["max_logit_diff_vs_fp32"] > 0
    assert i8["decode_tok_s"] > 0


def test_skip_names_a_module_or_a_dotted_suffix(pair):
    model, _ = pair
    q = quantize_int8(model, QuantConfig(skip=("lm_head", "mlp.c_proj")))
    assert quantized_linears(q) == ["blocks.0.attn.c_attn", "blocks.0.attn.c_proj", "blocks.0.mlp.c_fc"]
    assert type(q.blocks[0].mlp.c_proj) is nn.Linear


def test_bad_inputs_are_named(pair):
    model, q = pair
    with pytest.raises(ValueError, match="no nn.Linear to quantise"):
        quantize_int8(model, QuantConfig(skip=("lm_head", *QUANTISED)))
    with torch.device("meta"):
        on_meta = GPT(GPTConfig(**DEBUG_GPT))
    with pytest.raises(ValueError, match="CPU only"):
        quantize_int8(on_meta)
    with pytest.raises(ValueError, match="block_size"):
        time_decode(q, QuantConfig(prompt_len=4, new_tokens=8, repeats=1, warmup=0))
