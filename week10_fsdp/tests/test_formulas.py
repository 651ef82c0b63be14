"""The memory formulas: state division by strategy from its definition, the GPT activation formula against
``measure_step_memory`` on real models (plain, flash, checkpointed), and the generated doc on passing and failing
measurements."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import causal_lm_loss
from shared.train.memory import _storages, measure_step_memory
from week10_fsdp import formulas as F
from week10_fsdp.memory_doc import TOLERANCE, compare_measurements, main, render_memory_doc

PSI, N = 1_000_000, 8  # Ψ divisible by N: every formula is a whole number of bytes
# (batch, seq, n_embd, n_head, n_layer, vocab): small enough for a CPU, varied in every dimension
CONFIGS = [(2, 16, 32, 4, 2, 64), (3, 32, 64, 2, 3, 256), (4, 64, 128, 4, 4, 512), (2, 48, 96, 6, 2, 128)]


@pytest.mark.parametrize(("precision", "expected"), [
    ("fp32", {"ddp": 16 * PSI, "zero1": 8 * PSI + 8 * PSI // N, "zero2": 4 * PSI + 12 * PSI // N,
              "zero3": 16 * PSI // N, "fsdp2": 16 * PSI // N, "fsdp2_no_reshard": 16 * PSI // N}),
    ("bf16_mixed", {"ddp": 16 * PSI, "zero1": 4 * PSI + 12 * PSI // N, "zero2": 2 * PSI + 14 * PSI // N,
                    "zero3": 16 * PSI // N, "fsdp2": 16 * PSI // N, "fsdp2_no_reshard": 16 * PSI // N}),
])
def test_state_totals_per_strategy(precision, expected):
    for strategy, total in expected.items():
        s = F.state_bytes(PSI, N, strategy, precision)
        assert s["total"] == total == s["params"] + s["grads"] + s["optimizer"], strategy


def test_state_parts():
    assert F.state_bytes(PSI, N, "ddp") == {"params": 4 * PSI, "grads": 4 * PSI, "optimizer": 8 * PSI,
                                            "total": 16 * PSI}
    assert F.state_bytes(PSI, N, "zero2", "bf16_mixed") == {"params": 2 * PSI, "grads": 2 * PSI // N,
                                                            "optimizer": 12 * PSI // N, "total": 2 * PSI + 14 * PSI // N}
    assert F.state_bytes(PSI, N, "zero3", "bf16_mixed")["params"] == 2 * PSI // N
    # one rank: every strategy is DDP
    assert all(F.state_bytes(PSI, 1, s)["total"] == 16 * PSI for s in F.STRATEGIES)
    assert F.state_bytes(7, 2, "zero3")["params"] == 14  # 28 bytes over 2 ranks; 7 * 4 / 2 = 14
    assert F.state_bytes(7, 3, "zero3")["params"] == 10  # ceil(28 / 3): a shard is whole bytes


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"strategy": "zero4"}, "zero4"), ({"precision": "fp16"}, "fp16"),
    ({"world_size": 0}, "world_size"), ({"n_params": -1}, "n_params"),
])
def test_state_bad_inputs_name_the_value(kwargs, word):
    args = {"n_params": PSI, "world_size": N, "strategy": "ddp", "precision": "fp32", **kwargs}
    with pytest.raises(ValueError, match=word):
        F.state_bytes(**args)


def test_bad_strategy_lists_the_choices():
    with pytest.raises(ValueError, match="fsdp2_no_reshard"):
        F.gathered_param_bytes(10, 2, "fsdp3")


def test_gathered_param_bytes():
    assert F.gathered_param_bytes(1000, 12, "fsdp2") == F.gathered_param_bytes(1000, 12, "zero3") == 4000
    assert F.gathered_param_bytes(1000, 12, "fsdp2_no_reshard", bytes_per_param=2) == 12 * 1000 * 2
    assert F.gathered_param_bytes(1000, 12, "fsdp2_no_reshard", root_params=500) == (12 * 1000 + 500) * 4
    assert all(F.gathered_param_bytes(1000, 12, s) == 0 for s in ("ddp", "zero1", "zero2"))


def _model(cfg, backend="manual"):
    b, t, c, h, L, v = cfg
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=v, block_size=t, n_layer=L, n_head=h, n_embd=c, attn_backend=backend))
    x, y = torch.randint(0, v, (b, t)), torch.randint(0, v, (b, t))
    return model, x, y


def _measured(model, x, y) -> int:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return measure_step_memory(model, opt, lambda: causal_lm_loss(model(x), y)).activations


def _formula(cfg, **kw) -> int:
    b, t, c, h, L, v = cfg
    return F.gpt_activation_bytes(b, t, c, h, L, v, **kw)


def _close(measured: int, formula: int) -> bool:
    return abs(measured / formula - 1) <= 0.05


@pytest.mark.parametrize("cfg", CONFIGS)
def test_activations_match_measurement(cfg):
    measured, formula = _measured(*_model(cfg)), _formula(cfg)
    assert _close(measured, formula), (cfg, measured, formula)  # equal to the byte on torch 2.14 (CPU, fp32)


@pytest.mark.parametrize("cfg", CONFIGS[:3])
def test_flash_activations_match_and_drop_the_t2_term(cfg):
    # backend "torch" = F.scaled_dot_product_attention: on a CPU with is_causal and no mask, its flash kernel
    measured, flash = _measured(*_model(cfg, backend="torch")), _formula(cfg, flash=True)
    assert _close(measured, flash), (cfg, measured, flash)
    b, t, c, h, L, v = cfg
    t2 = L * 4 * F.LAYER_ATTN_TT * b * h * t * t  # the T x T tensors of the hand-written attention, fp32
    small = L * (4 * F.LAYER_ATTN_BHT + F.LAYER_ATTN_BHT_BOOL - F.FLASH_LSE_BYTES) * b * h * t  # per-row stats
    assert _formula(cfg) - flash == t2 + small
    assert _measured(*_model(cfg)) - measured == t2 + small


@pytest.mark.parametrize("cfg", CONFIGS[:3])
def test_checkpointed_activations_match_measurement(cfg):
    model, x, y = _model(cfg)
    for block in model.blocks:  # per-block activation checkpointing, the non-reentrant (recommended) variant
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    measured, formula = _measured(model, x, y), _formula(cfg, checkpointing=True)
    assert _close(measured, formula), (cfg, measured, formula)
    b, t, c, h, L, v = cfg
    assert formula == L * 4 * b * t * c + F.gpt_non_layer_activation_bytes(b, t, c, v)


def test_recompute_saves_one_block_at_a_time():
    """The recompute peak adds one block's activations: count what each block saves when backward recomputes it
    (the reentrant variant recomputes under the caller's saved-tensor hooks, so a pack hook sees it)."""
    cfg = CONFIGS[1]
    model, x, y = _model(cfg)
    current, per_block = [0], {}

    def wrap(i, block):
        forward = block.forward

        def run(*args):
            current[0] = i
            return forward(*args)
        block.forward = lambda *args: checkpoint(run, *args, use_reentrant=True)

    for i, block in enumerate(model.blocks):
        wrap(i, block)
    loss = causal_lm_loss(model(x), y)
    owned = {k for p in model.parameters() for k in _storages(p)}

    def pack(t):
        per_block.setdefault(current[0], {}).update({k: n for k, n in _storages(t).items() if k not in owned})
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss.backward()
    b, t, c, h, L, v = cfg
    one = F.gpt_layer_activation_bytes(b, t, c, h)
    assert {i: sum(s.values()) for i, s in per_block.items()} == dict.fromkeys(range(L), one)
    assert F.gpt_activation_peak_bytes(b, t, c, h, L, v, checkpointing=True) == _formula(cfg, checkpointing=True) + one
    assert F.gpt_activation_peak_bytes(b, t, c, h, L, v) == _formula(cfg)


def test_param_counts():
    for bias in (True, False):
        cfg = GPTConfig(vocab_size=100, block_size=32, n_layer=3, n_head=4, n_embd=64, bias=bias)
        assert F.gpt_params(3, 64, 100, 32, bias) == GPT(cfg).num_params(non_embedding=False)
    assert F.gpt_params(12, 768, 50257, 1024) == 124_439_808  # GPT-2 small, as counted by nanoGPT
    # the counts Hugging Face reports for meta-llama/Llama-3.2-1B (tied head) and meta-llama/Llama-2-7b-hf
    assert F.llama_params(16, 2048, 32, 8, 8192, 128256, tied=True) == 1_235_814_400
    assert F.llama_params(32, 4096, 32, 32, 11008, 32000, tied=False) == 6_738_415_616


def test_worked_examples():
    rows = F.worked_examples()
    assert len(rows) == (2 + 1 + 1) * len(F.WORKED_STRATEGIES) * len(F.WORKED_WORLD_SIZES)  # fp32 for the 124M only
    by = {(r["model"], r["precision"], r["strategy"], r["world_size"]): r for r in rows}
    ddp, zero3 = by[("7B", "bf16_mixed", "ddp", 64)], by[("7B", "bf16_mixed", "zero3", 64)]
    assert ddp["total_gib"] == pytest.approx(16 * ddp["n_params"] / F.GIB)
    assert zero3["total_gib"] == pytest.approx(ddp["total_gib"] / 64)
    for r in rows:
        assert r["act_flash_gib"] < r["act_gib"]
        assert r["act_ckpt_gib"] < r["act_ckpt_flash_peak_gib"] <= r["act_ckpt_peak_gib"]


def _fake_measurements(params_scale: float = 1.0) -> dict:
    """What the week's run would pass, made from the formulas themselves; ``params_scale`` spoils one number."""
    b, t, c, h, L, v = CONFIGS[0]
    shape = {"batch": b, "seq": t, "n_layer": L, "n_embd": c, "n_head": h, "vocab_size": v}
    rows = []
    for strategy, world_size in (("ddp", 2), ("fsdp2", 2), ("fsdp2_no_reshard", 2)):
        n_params = F.gpt_params(L, c, v, t)
        s = F.state_bytes(n_params, world_size, strategy)
        rows.append({"strategy": strategy, "world_size": world_size, "n_params": n_params, **shape,
                     "params": s["params"], "grads": s["grads"], "optimizer": s["optimizer"] + 4 * 10,  # + steps
                     "activations": F.gpt_activation_bytes(b, t, c, h, L, v),
                     "activations_ckpt": F.gpt_activation_bytes(b, t, c, h, L, v, checkpointing=True)})
    rows[1]["params"] = int(rows[1]["params"] * params_scale)
    rows[2]["gathered"] = rows[2]["n_params"] * 4  # every block and the root, gathered and kept
    rows[2]["activations"] += rows[2]["gathered"]  # ... and saved for backward: counted with the activations
    rows[2]["activations_ckpt"] += (rows[2]["n_params"] - L * F.gpt_block_params(c)) * 4  # checkpointed: the root's
    return {"hardware": "2 x CPU (gloo)", "commit": "abc1234", "rows": rows}


def test_doc_without_measurements():
    doc = render_memory_doc(None)
    for heading in ("## What takes memory", "## Activations of one GPT block", "## DDP vs ZeRO-1/2/3 vs FSDP2",
                    "## Worked examples", "## Validated against this week's measurements"):
        assert heading in doc
    assert "| 124M | 124,439,808 | fp32 | DDP |" in doc
    assert "| ZeRO-2 | 2Ψ | 2Ψ/N | 12Ψ/N | 2Ψ + 14Ψ/N |" in doc
    assert "make week10" in doc


def test_doc_with_measurements_agreeing():
    doc = render_memory_doc(_fake_measurements())
    assert all(c["agrees"] for c in compare_measurements(_fake_measurements()))
    assert "2 x CPU (gloo)" in doc
    assert "abc1234" in doc
    assert "**NO**" not in doc
    assert "**16 of 16 measured numbers agree" in doc  # 3 rows x 5 quantities + one gathered


def test_doc_marks_a_wrong_measurement():
    cmp = compare_measurements(_fake_measurements(params_scale=1.2))
    bad = [c for c in cmp if not c["agrees"]]
    assert [(c["strategy"], c["quantity"]) for c in bad] == [("fsdp2", "params")]
    assert bad[0]["ratio"] == pytest.approx(1.2, abs=1e-3)
    assert abs(bad[0]["ratio"] - 1) > TOLERANCE
    doc = render_memory_doc(_fake_measurements(params_scale=1.2))
    assert doc.count("**NO**") == 1
    assert "**15 of 16 measured numbers agree" in doc


def test_measurements_missing_a_key():
    m = _fake_measurements()
    del m["rows"][0]["seq"]
    with pytest.raises(ValueError, match="seq"):
        render_memory_doc(m)


def test_cli_writes_the_doc(tmp_path, capsys):
    src, out = tmp_path / "m.json", tmp_path / "memory.md"
    src.write_text(json.dumps(_fake_measurements()))
    main(["--measurements", str(src), "--out", str(out)])
    assert out.read_text() == render_memory_doc(_fake_measurements())
    assert "wrote" in capsys.readouterr().out
