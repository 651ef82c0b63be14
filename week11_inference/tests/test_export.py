"""torch.export and ONNX on the debug GPT, learned positions and RoPE (one ONNX export each, module-scoped):
onnxruntime's logits equal eager PyTorch's to 1e-4 (fp32) on the example shape and on other batch sizes and lengths
(the batch and the length are symbolic), and so do the exported program's; the .onnx file is written atomically and
passes the ONNX checker; speed rows for the three backends; a sequence longer than block_size is refused by each."""

import numpy as np
import pytest
import torch

from shared.models.gpt import GPT, GPTConfig
from shared.testing import DEBUG_GPT
from week11_inference.export import (
    ExportConfig,
    OnnxLM,
    example_ids,
    export_and_check,
    export_program,
)

CFG = ExportConfig(warmup=1, repeats=3)


def _gpt(pos: str) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**DEBUG_GPT, "pos": pos})).eval()


@pytest.fixture(scope="module", params=["learned", "rope"])
def exported(request, tmp_path_factory):
    model = _gpt(request.param)
    out = tmp_path_factory.mktemp(f"onnx-{request.param}")
    cfg = ExportConfig(**{**CFG.__dict__, "name": f"gpt-{request.param}"})
    return model, out, cfg, export_and_check(model, out, cfg)


def test_onnxruntime_logits_equal_eager_to_1e4_at_every_shape(exported):
    model, _, _, res = exported
    ort_rows = [r for r in res["agreement"] if r["backend"] == "onnxruntime"]
    assert {(r["batch"], r["seq_len"]) for r in ort_rows} == {(2, 8), (1, 1), (3, 5)}  # dynamic batch and length
    assert res["ok"]
    assert res["max_abs_diff"] <= 1e-4
    assert res["max_abs_diff"] > 0 or all(r["max_abs_diff"] == 0 for r in ort_rows)
    # the exported program runs the same ATen ops as eager: equal to fp32 noise
    assert all(r["max_abs_diff"] <= 1e-6 for r in res["agreement"] if r["backend"] == "torch.export")


def test_the_onnx_file_is_written_atomically_and_is_valid(exported):
    import onnx

    _, out, cfg, res = exported
    path = out / f"{cfg.name}.onnx"
    assert res["onnx_path"] == str(path)
    assert path.stat().st_size == res["onnx_bytes"]
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no temporary file left behind
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert (inp.name, outp.name) == ("input_ids", "logits")
    assert all(d.dim_param for d in inp.type.tensor_type.shape.dim)  # both dimensions symbolic


def test_a_fresh_session_reproduces_the_eager_logits(exported):
    model, out, cfg, _ = exported
    lm = OnnxLM(out / f"{cfg.name}.onnx", model.cfg.block_size, threads=1)
    ids = example_ids(model, cfg, batch=4, seq_len=7)
    with torch.no_grad():
        assert torch.allclose(lm(ids), model(ids), rtol=0, atol=1e-4)
    assert torch.equal(lm(ids.numpy()), lm(ids))


def test_speed_rows_cover_the_three_backends_on_the_same_input(exported):
    *_, res = exported
    assert [r["backend"] for r in res["speed"]] == ["eager", "torch.export", "onnxruntime"]
    assert all(r["forward_tok_s"] > 0 and r["threads"] == 1 and (r["batch"], r["seq_len"]) == (2, 8)
               for r in res["speed"])


def test_a_sequence_longer_than_block_size_is_refused(exported):
    model, out, cfg, _ = exported
    too_long = torch.zeros(1, model.cfg.block_size + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="longer than model.block_size=8"):
        OnnxLM(out / f"{cfg.name}.onnx", model.cfg.block_size)(too_long)
    with pytest.raises(ValueError, match=r"must be \(batch, seq\)"):
        OnnxLM(out / f"{cfg.name}.onnx", model.cfg.block_size)(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="longer than model.block_size=8"):
        export_program(model, ExportConfig(seq_len=model.cfg.block_size + 1))


def test_the_program_keeps_the_length_bound_and_a_fixed_export_keeps_its_shape():
    model = _gpt("learned")
    dynamic = export_program(model, CFG).module()
    with pytest.raises(AssertionError, match=r"size\(\)\[1\] <= 8"):  # the range constraint of the symbolic length
        dynamic(torch.zeros(1, 9, dtype=torch.long))
    fixed = export_program(model, ExportConfig(dynamic=False, seq_len=4)).module()
    ids = example_ids(model, CFG, batch=2, seq_len=4)
    with torch.no_grad():
        assert torch.equal(fixed(ids), model(ids))
    with pytest.raises(AssertionError, match=r"size\(\)\[1\] == 4"):
        fixed(torch.zeros(2, 5, dtype=torch.long))
