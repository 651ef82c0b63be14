"""Week 10: the probe under ``accelerate launch`` (2 CPU processes, the FSDP2 config file), accelerate's FSDP
environment read into an FSDPConfig, bad config values refused, the week launched without torchrun (one process, the
parity runs skipped), the minimal example's size and the pitfall tests' JUnit report read back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from shared.config import ConfigError
from shared.dist import DistInfo, DistSetupError
from shared.parallel import STRATEGIES, FSDPConfig, build_parallel, fsdp_from_accelerate
from shared.paths import REPO_ROOT
from shared.testing import SPAWN_TIMEOUT_S, mirror_has
from week10_fsdp import config, experiments, launch

WEEK_DIR = Path(__file__).resolve().parents[1]
ACCEL_VARS = ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_RESHARD_AFTER_FORWARD", "FSDP_ACTIVATION_CHECKPOINTING",
              "FSDP_OFFLOAD_PARAMS")


@pytest.fixture
def out_roots(tmp_path, monkeypatch):
    """Runs, models and logs in ``tmp_path`` (the children inherit them through ``launch.child_env``)."""
    roots = {var: tmp_path / var.lower() for var in ("AIFS_RUNS_ROOT", "AIFS_MODELS_ROOT", "AIFS_LOGS_ROOT")}
    for var, path in roots.items():
        monkeypatch.setenv(var, str(path))
    return roots


def test_child_env_drops_the_parent_launch_and_keeps_the_rest(monkeypatch, out_roots):
    for var, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x", "ACCELERATE_USE_FSDP": "true",
                       "FSDP_VERSION": "2"}.items():
        monkeypatch.setenv(var, value)
    env = launch.child_env()
    assert not {k for k in env if k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") or k.startswith(("MASTER_", "TORCHELASTIC_",
                                                                                             "ACCELERATE_", "FSDP_"))}
    assert env["AIFS_RUNS_ROOT"] == str(out_roots["AIFS_RUNS_ROOT"])


@pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)  # pytest's own limit (pyproject) must not cut a loaded machine's launch
def test_accelerate_launch_runs_the_probe_with_fsdp2_on_2_cpu_processes(tmp_path, out_roots):
    pytest.importorskip("accelerate")
    out = tmp_path / "a.json"
    cmd = launch.accelerate(2, experiments.ACCELERATE_CONFIG,
                            ["-m", "week10_fsdp.probe", "--out", str(out), "--profile", "smoke"])
    assert cmd[:6] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                       str(WEEK_DIR / "configs" / "accelerate_fsdp2.yaml"), "--num_processes"]
    t0 = time.perf_counter()
    text, _ = launch.run(cmd, SPAWN_TIMEOUT_S)  # cwd = the repository root, env = launch.child_env()
    print(f"accelerate launch, 2 processes: {time.perf_counter() - t0:.1f} s")
    got = json.loads(out.read_text())
    assert got["launcher"] == "accelerate", text[-2000:]
    assert got["world_size"] == 2
    assert got["device"] == "cpu"
    assert got["fsdp"] == asdict(FSDPConfig(reshard_after_forward=True, activation_checkpointing=False))
    assert got["bench"] == []
    rows = got["rows"]
    assert sorted(r["rank"] for r in rows) == [0, 1]
    assert {(r["strategy"], r["world_size"]) for r in rows} == {("fsdp2", 2)}  # no DDP: accelerate asked for FSDP2
    # the smoke GPT at the probe's default vocabulary: every parameter's dim 0 is even, so 2 ranks shard it evenly
    from shared.models.gpt import GPT, GPTConfig

    params = list(GPT(GPTConfig(vocab_size=2048, **asdict(config.load("smoke").lm))).parameters())
    n_params = sum(p.numel() for p in params)
    assert all(p.shape[0] % 2 == 0 for p in params)
    half = n_params * 4 // 2  # fp32 bytes of the whole model (one rank's total) over 2 ranks
    for r in rows:
        assert r["n_params"] == n_params
        assert r["params"] == half, r
        assert r["grads"] == half, r
        assert r["optimizer"] == 2 * half + 4 * len(params), r  # two AdamW moments (sharded) + a 4-byte step each
        assert 0 < r["activations_ckpt"] < r["activations"], r
    assert not any(p.exists() for p in out_roots.values())  # the probe writes nothing but --out


def test_fsdp_options_come_from_accelerate_s_environment(monkeypatch):
    for var in ACCEL_VARS:
        monkeypatch.delenv(var, raising=False)
    assert fsdp_from_accelerate() is None  # not launched by accelerate (or without FSDP)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert fsdp_from_accelerate() is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    assert fsdp_from_accelerate() == FSDPConfig(reshard_after_forward=False, activation_checkpointing=True,
                                                cpu_offload=False)
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "True")
    assert fsdp_from_accelerate().cpu_offload
    for version in ("1", None):  # FSDP1, said or left to accelerate's default
        if version is None:
            monkeypatch.delenv("FSDP_VERSION")
        else:
            monkeypatch.setenv("FSDP_VERSION", version)
        with pytest.raises(DistSetupError, match="fsdp_version: 2"):
            fsdp_from_accelerate()


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_profiles_load(profile):
    cfg = config.load(profile)
    assert set(cfg.parity.tasks) <= {"lm", "sft"}
    assert cfg.check.time_budget_s > 0


@pytest.mark.parametrize(("override", "words"), [
    ("loop.parallel=zero9", ["loop.parallel", "zero9", ", ".join(STRATEGIES)]),
    ("fsdp.param_dtype=fp16", ["fsdp.param_dtype", "fp16", "fp32, bf16"]),
    ("fsdp.reduce_dtype=int8", ["fsdp.reduce_dtype", "fp32, bf16"]),
    ("parity.tasks=[xx]", ["parity.tasks", "xx", "lm, sft"]),
    ("sft.base.source=nope", ["sft.base.source", "nope", "registry or tiny_llama"]),
])
def test_bad_config_values_are_refused_naming_the_key_and_the_choices(override, words):
    with pytest.raises(ConfigError) as e:
        config.load("smoke", [override])
    for word in words:
        assert word in str(e.value)


def test_build_parallel_refuses_an_unknown_strategy_naming_the_choices():
    one = DistInfo(0, 0, 1, None, torch.device("cpu"))
    with pytest.raises(DistSetupError, match="unknown parallel strategy 'zero9'. Choose one of: auto, none, ddp, fsdp2"):
        build_parallel("zero9", one)
    with pytest.raises(DistSetupError, match="needs a process group"):  # fsdp2 in one process: no group to shard over
        build_parallel("fsdp2", one)


@pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)
@pytest.mark.skipif(not (mirror_has("tiny_shakespeare/input.txt") and mirror_has("alpaca/alpaca_5000.json")),
                    reason="needs the dataset mirror (tiny_shakespeare, alpaca)")
def test_without_torchrun_the_week_runs_as_one_process_and_skips_parity(out_roots):
    env = {**launch.child_env(), "HF_HUB_OFFLINE": "1"}  # no RANK/WORLD_SIZE/LOCAL_RANK: a plain `python -m`
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "week10_fsdp", "--profile", "smoke", "--stage", "parity"], cwd=REPO_ROOT,
                       env=env, capture_output=True, text=True, timeout=SPAWN_TIMEOUT_S)
    print(f"python -m week10_fsdp --stage parity: {time.perf_counter() - t0:.1f} s")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "not launched by torchrun" in p.stdout
    summary = json.loads(p.stdout[p.stdout.index('{\n  "stage"'):])
    assert summary == {"stage": "parity", "summary": []}
    # only the prepared LM data: no DDP/FSDP2 run folder, no failure report
    assert [p.name for p in (out_roots["AIFS_RUNS_ROOT"] / "week10").iterdir()] == ["data"]
    assert not out_roots["AIFS_LOGS_ROOT"].exists()  # --stage writes no log


def test_minimal_example_fits_the_issue_s_80_lines():
    lines = (WEEK_DIR / "minimal.py").read_text().splitlines()
    assert len(lines) <= 80, f"week10_fsdp/minimal.py has {len(lines)} lines (at most 80)"


def test_junit_rows_read_each_outcome(tmp_path):
    xml = tmp_path / "pitfalls.xml"
    xml.write_text("""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="3.5">
<testcase classname="shared.tests.test_fsdp" name="test_accumulation_skips_the_reduce_scatter" time="1.25" />
<testcase classname="shared.tests.test_dcp" name="test_reload_at_4_ranks" time="2.0">
<failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="shared.tests.test_fsdp" name="test_bf16_reduction" time="0.25">
<skipped type="pytest.skip" message="needs a GPU">skip</skipped></testcase>
<testcase classname="shared.tests.test_dcp" name="test_rank0_metadata" time="0">
<error message="fixture failed">trace</error></testcase>
</testsuite></testsuites>
""")
    assert experiments.junit_rows(xml) == [
        {"test": "test_accumulation_skips_the_reduce_scatter", "file": "test_fsdp", "outcome": "passed",
         "seconds": 1.25},
        {"test": "test_reload_at_4_ranks", "file": "test_dcp", "outcome": "failed", "seconds": 2.0},
        {"test": "test_bf16_reduction", "file": "test_fsdp", "outcome": "skipped", "seconds": 0.25},
        {"test": "test_rank0_metadata", "file": "test_dcp", "outcome": "failed", "seconds": 0.0},
    ]
