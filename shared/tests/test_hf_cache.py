"""The Hugging Face path's KV cache: ``transformers``' greedy ``generate`` with ``use_cache=True`` gives the same tokens
as with ``use_cache=False``, and the same raw logits to 1e-5 (fp32) at every step, on a left-padded batch.

Tolerance: the cached step computes each new query's dot products against the same keys as the full forward, as
a (1, T) row instead of inside a (T, T) matmul: only the summation order differs, ~1e-7 on logits of order 1
(measured 2e-7 to 4e-7), so 1e-5 leaves two orders of margin, while a wrong position, mask or cache slot moves a
logit by O(0.1). The tiny Llama's weights are drawn with std 0.125 (≈ 1/√hidden) so its logits are O(1), not the
near-zero logits of the default 0.02 init that would make any tolerance meaningless.

The real SmolLM2-135M (slow marker) is deeper (30 layers) with logits up to ~36, and there fp32 itself is coarser
than 1e-5: its no-cache logits are 5.5e-5 from an fp64 forward of the same model, the cached ones 4.2e-5, and the
two paths differ by 2-5e-5 (measured). So the real model is held to what fp32 allows: the cache-vs-no-cache gap
relative to the largest logit ≤ 1e-5 (measured ~1.5e-6), and the cache adds no more error than fp32 rounding
already has (gap ≤ 2 × the no-cache path's distance from fp64).

Sizes: the tiny model decodes 128 new tokens (~3-6 s on a busy machine). 512 took ~18 s: without a cache each of
the 512 steps re-runs the whole sequence through ``generate``, whose per-step overhead dominates a model this small
(``shared/tests/test_kv_cache.py`` covers 512 tokens on the project's GPT). SmolLM2 decodes SMOLLM2_NEW_TOKENS = 128
after its ~39-token chat prompt, on one thread: a no-cache step costs ~0.15 s + 3 ms per token of context (measured
on 2 busy cores), so 128 tokens take ~1-1.5 min with both modes and the fp64 forward; 512 would take ~15 min (Σ over
512 growing prefixes). Two threads on a machine busy with other work were 5-10x slower than one (OpenMP threads
waiting on each other), hence one.
"""

import pytest
import torch

from shared.models.fetch import inspect_model
from shared.models.registry import get_spec
from shared.paths import REPO_ROOT
from shared.profiling import torch_threads

TOL = 1e-5  # fp32: absolute for the tiny model, relative to the largest logit for SmolLM2 (module docstring)
TINY_NEW_TOKENS = 128
SMOLLM2_NEW_TOKENS = 128
REAL_MODELS_ROOT = REPO_ROOT / "models"


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread (no OpenMP hand-offs), and much faster on a busy machine."""
    with torch_threads(1):
        yield


def _greedy_both_ways(model, ids, mask, n):
    outs = []
    for use_cache in (True, False):
        outs.append(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                   do_sample=False, use_cache=use_cache, output_logits=True,
                                   return_dict_in_generate=True, pad_token_id=0))
    return outs


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.125, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).float().eval()


@pytest.mark.usefixtures("one_thread")
def test_tiny_llama_greedy_with_the_cache_equals_without_it_on_a_left_padded_batch():
    pytest.importorskip("transformers")
    model = _tiny_llama()
    g = torch.Generator().manual_seed(1)
    lens = (3, 9, 6)
    ids = torch.zeros(len(lens), max(lens), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lens):  # left padding: each prompt ends in the last column
        ids[row, -n:] = torch.randint(3, 97, (n,), generator=g)
        mask[row, -n:] = 1
    cached, full = _greedy_both_ways(model, ids, mask, TINY_NEW_TOKENS)
    assert cached.sequences.shape == (3, max(lens) + TINY_NEW_TOKENS)
    assert torch.equal(cached.sequences, full.sequences)
    assert len(cached.logits) == len(full.logits) == TINY_NEW_TOKENS
    assert max(x.abs().max().item() for x in cached.logits) > 0.5, "logits ~0: the tolerance would test nothing"
    gap = max((a - b).abs().max().item() for a, b in zip(cached.logits, full.logits, strict=True))
    assert gap <= TOL, f"per-step logits differ by {gap:.2e}"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_smollm2_greedy_with_the_cache_equals_without_it(monkeypatch):
    monkeypatch.setenv("AIFS_MODELS_ROOT", str(REAL_MODELS_ROOT))
    monkeypatch.setenv("AIFS_OFFLINE", "1")
    monkeypatch.delenv("AIFS_MODEL_SOURCE", raising=False)
    spec = get_spec("smollm2-135m-instruct")
    if inspect_model(spec, REAL_MODELS_ROOT).state != "converted":
        pytest.skip(f"run `make models` first ({REAL_MODELS_ROOT / spec.name} is not converted)")
    from shared.models.pretrained import load_pretrained

    lm = load_pretrained(spec.name)
    ids, mask = lm.chat_ids("Write a short story about a lighthouse keeper.")
    hf = lm.model.hf
    cached, full = _greedy_both_ways(hf, ids, mask, SMOLLM2_NEW_TOKENS)
    assert torch.equal(cached.sequences, full.sequences)
    assert len(cached.logits) == SMOLLM2_NEW_TOKENS
    c, f = torch.stack(cached.logits), torch.stack(full.logits)  # (n, 1, V)
    gap, scale = (c - f).abs().max().item(), f.abs().max().item()
    assert gap / scale <= TOL, f"per-step logits differ by {gap:.2e} ({gap / scale:.2e} of the largest, {scale:.1f})"
    with torch.no_grad():  # the fp32 noise floor: the same sequence through the model in fp64, once
        exact = hf.double()(input_ids=full.sequences[:, :-1], use_cache=False).logits[:, ids.shape[1] - 1:]
    hf.float()
    floor = (f.squeeze(1).double() - exact[0]).abs().max().item()
    assert gap <= 2 * floor, f"the cache adds error: {gap:.2e} vs the fp32 no-cache path's {floor:.2e} from fp64"
