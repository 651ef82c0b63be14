"""Week 8's checks pass on good numbers and fail on bad ones; the tiny-model pitfalls show their symptoms."""

from __future__ import annotations

import pytest

from week08_lora import checks, config, pitfalls


def mem(trainable, opt, weights=100, total=1000):
    return {"trainable params": trainable, "optimizer": opt, "gradients": opt // 2, "weights": weights,
            "total": total}


def test_lora_saves_memory_pass_and_fail():
    assert checks.lora_saves_memory(mem(10**9, 8e9), mem(10**6, 8e6), 2.0, 1.9).passed
    assert checks.lora_saves_memory(mem(10**9, 8e9), mem(10**6, 8e6), 2.0, 2.1).failed  # did not train
    assert checks.lora_saves_memory(mem(10**6, 8e6), mem(10**9, 8e9), 2.0, 1.9).failed  # more memory


def test_parity_speed_rerun_export():
    assert checks.parity([1.0, 0.9], [1.0, 0.90001], 1e-4).passed
    assert checks.parity([1.0, 0.9], [1.0, 0.95], 1e-4).failed
    assert checks.speed_close(1.1, 1.0, 0.15).passed
    assert checks.speed_close(1.3, 1.0, 0.15).failed
    assert not checks.speed_close(1.3, 1.0, 0.15, judge=False).failed
    assert checks.rerun_reproduces(2.0, 2.0, "r1").passed
    assert checks.rerun_reproduces(2.0, 2.01, "r1").failed
    assert checks.export_loads(1.0, 1.0, "x").passed
    assert checks.export_loads(1.0, 1.1, "x").failed


def test_tradeoff_and_default_fail_on_bad_numbers():
    full, lora = {"rougeL": 0.20, "format_compliance": 0.6}, {"rougeL": 0.19, "format_compliance": 0.55}
    assert checks.tradeoff_stated(full, lora, 10.0, 4.0).passed
    assert checks.tradeoff_stated(full, lora, 10.0, 12.0).failed  # LoRA's step is not smaller: no trade-off
    assert checks.tradeoff_stated(full, {**lora, "rougeL": float("nan")}, 10.0, 4.0).failed
    assert checks.default_picked(full, lora, 10.0, 4.0).passed
    assert checks.default_picked(full, {**lora, "format_compliance": float("nan")}, 10.0, 4.0).failed
    assert not checks.default_picked(full, lora, 10.0, 4.0, judge=False).passed  # smoke: SKIP


def test_default_rule_and_table_citations():
    lora, q = {"rougeL": 0.20, "format_compliance": 0.6}, {"rougeL": 0.195, "format_compliance": 0.6}
    assert checks.pick_default(lora, q, 10, 5)[0] == "QLoRA"
    assert checks.pick_default(lora, {"rougeL": 0.1, "format_compliance": 0.6}, 10, 5)[0] == "LoRA"
    assert checks.pick_default(lora, q, 10, 11)[0] == "LoRA"
    cells = [{"cell": "a", "runs": ["week08/cpu/lora-1"]}]
    assert checks.table_cites(cells, {"week08/cpu/lora-1"}).passed
    assert checks.table_cites(cells, {"week08/cpu/other"}).failed
    assert checks.table_cites([{"cell": "a", "runs": []}], set()).failed


def test_qa_and_bnb_gradient_checks():
    good = [{"key": "a", "shown": True, "skip": ""}, {"key": "b", "shown": None, "skip": "CPU-only"}]
    assert checks.qa_reproduced(good).passed
    assert checks.qa_reproduced([*good, {"key": "c", "shown": False, "skip": ""}]).failed
    assert checks.qa_reproduced([*good, {"key": "d", "shown": None, "skip": ""}]).failed
    ok = {"available": True, "cos_before": 0.9999, "cos_after": 0.04, "loss_bnb": 2.0, "loss_hand": 2.0,
          "layer0_norm_before": 4e-3, "layer0_norm_after": 4e-7}
    assert checks.bnb_gradients(ok, 0.99, on_cuda=False).passed
    assert checks.bnb_gradients({**ok, "cos_before": 0.5}, 0.99, on_cuda=False).failed
    assert not checks.bnb_gradients({"available": False, "reason": "no bnb"}, 0.99, False).failed
    wrong_kernel = {**ok, "cos_before": 0.97, "bnb_dequant_error": 0.02}  # bnb's own CPU dequantise is off
    assert not checks.bnb_gradients(wrong_kernel, 0.99, on_cuda=False).failed


def test_qlora_stability_and_sweep():
    class R:
        train_rows = [{"loss": 2.0, "grad_norm": 1.0}, {"loss": 1.9, "grad_norm": 1.2}, {"loss": 1.8, "grad_norm": 0.9}]
        first_val_loss, final_val_loss = 2.0, 1.8

    assert checks.qlora_recorded(R, mem(1, 1, weights=10), mem(1, 1, weights=40), "cpu").passed
    R.train_rows = [*R.train_rows, {"loss": 1.7, "grad_norm": 500.0}]
    assert checks.qlora_recorded(R, mem(1, 1, weights=10), mem(1, 1, weights=40), "cpu").failed  # a spike
    assert checks.sweep_done([1, 4], [1.9, 1.8], 2.0).passed
    assert checks.sweep_done([1, 4], [1.9, 2.1], 2.0).failed
    assert checks.rank_needed([1, 4, 16], [1.90, 1.81, 1.80])[0] == 4


def test_pitfalls_show_their_symptoms():
    out = pitfalls.reproduce_all()
    assert all(v["shown"] for v in out.values()), {k: v["symptom"] for k, v in out.items()}
    assert out["forgot_merge"]["unmerged_export_vs_base"] == 0.0
    assert out["merged_twice"]["second_merge_refused"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_profiles_load(profile):
    cfg = config.load(profile)
    cfg.run.validate()
    assert cfg.run.max_steps >= 1


def test_bad_values_are_refused():
    from shared.config import ConfigError

    with pytest.raises((ConfigError, ValueError)):
        config.load("smoke", ["run.methods=[lora,adapterx]"]).run.validate()
    with pytest.raises((ConfigError, ValueError)):
        config.load("smoke", ["lora.r=0"])


def test_compute_dtype_item_is_judged_only_where_bf16_is_not_emulated():
    from types import SimpleNamespace

    from week08_lora import decision

    cfg = config.load("cpu")

    def items(bf16_s, fp32_act=100, bf16_act=60):
        bench = [{"variant": "qlora", "method": "qlora", "compute dtype": "float32", "s/step": 5.0,
                  "activations": fp32_act},
                 {"variant": "qlora-bfloat16", "method": "qlora", "compute dtype": "bfloat16", "s/step": bf16_s,
                  "activations": bf16_act}]
        res = SimpleNamespace(pitfalls={}, runs={}, grid=[], bench=bench, export={}, bnb={})
        return {i["key"]: i for i in decision.qa_items(res, cfg, on_cuda=False)}["qlora_fp32_compute"]

    assert items(3.0)["shown"] is True  # bf16 faster: fp32 compute is the pitfall, shown
    assert items(5.5, fp32_act=60)["shown"] is False  # neither faster nor smaller in bf16: not shown (FAIL)
    emulated = items(90.0)
    assert emulated["shown"] is None
    assert "18.0x slower" in emulated["skip"]


def test_cpu_trap_item_is_shown_only_where_bitsandbytes_repacked():
    from types import SimpleNamespace

    from week08_lora import decision

    cfg = config.load("cpu")
    base = {"available": True, "cos_before": 1.0, "loss_bnb": 2.0, "loss_bnb_after_eval": 2.0,
            "layer0_norm_before": 4e-3, "layer0_norm_after": 4e-7, "after_eval_error": ""}

    def item(bnb):
        res = SimpleNamespace(pitfalls={}, runs={}, grid=[], bench=[], export={}, bnb=bnb)
        return {i["key"]: i for i in decision.qa_items(res, cfg, on_cuda=False)}["cpu_trap"]

    trap = item({**base, "repacked_after_eval": True, "cos_after": 0.04})
    assert trap["shown"] is True
    assert not trap["skip"]
    fixed = item({**base, "repacked_after_eval": True, "cos_after": 1.0})  # repacked but gradients right: not shown
    assert fixed["shown"] is False
    assert not fixed["skip"]
    no_repack = item({**base, "repacked_after_eval": False, "cpu_avx512bf16": False, "cos_after": 1.0})
    assert no_repack["shown"] is None
    assert "AVX512-BF16: no" in no_repack["skip"]
    assert checks.qa_reproduced([no_repack]).passed  # a stated reason, not a missing reproduction
    assert checks.qa_reproduced([fixed]).failed
