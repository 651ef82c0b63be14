"""Week 2 end to end on 2 gloo ranks (fake MNIST), plus the config and the recommendation logic."""

import sys

import pandas as pd
import pytest

from shared.config import ConfigError
from shared.testing import spawn_ranks, write_fake_mnist
from week02_ddp import config
from week02_ddp.report import recommend

FAST = [
    "data.dataset=fake_mnist", "data.val_size=200", "data.train_subset=0", "data.batch_size=64",
    "data.eval_batch_size=200", "cnn.width=4", "experiment.bench_steps=3", "experiment.bench_warmup=1",
    "experiment.bench_rounds=2",
    "experiment.max_acc_gap=0.02", "train.lr=0.02",
]


def _week_worker(rank, spec, overrides):
    from shared.data import registry
    from week02_ddp.__main__ import main

    registry.REGISTRY[spec.name] = spec  # the spawned interpreter starts with the default registry
    rc = main(["--profile", "smoke", *overrides])
    sys.exit(rc)


def test_week02_smoke_on_two_ranks_writes_a_passing_log_and_bench_csv(aifs_dirs, monkeypatch):
    spec = write_fake_mnist(aifs_dirs["mirror"], n_train=2248, n_test=200)
    monkeypatch.setenv("AIFS_DATA_MIRROR", str(aifs_dirs["mirror"]))
    assert spawn_ranks(_week_worker, 2, (spec, FAST), timeout_s=240) == [0, 0]
    log_dir = aifs_dirs["runs"] / "week02" / "smoke" / "log"
    text = (log_dir / "week02.md").read_text()
    assert "## Checks: 7/7 PASS" in text, text[:3000]
    assert "FAIL" not in text
    bench = pd.read_csv(log_dir / "week02" / "bench.csv")
    assert len(bench) >= 4
    assert {"micro_batch", "grad_accum_steps", "precision", "samples_per_sec", "peak_memory_gib", "final_loss",
            "stable"} <= set(bench.columns)
    assert set(bench.precision) == {"fp32", "bf16", "fp16"}
    launch = pd.read_csv(log_dir / "week02" / "launch.csv")
    assert list(launch["rank"]) == [0, 1]
    assert set(launch.world_size) == {2}
    assert (log_dir / "week02" / "trace.json").stat().st_size > 1000
    assert "**Recommendation:" in text
    assert "**Bottleneck:" in text


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_loads_and_keeps_the_global_batch_divisible(profile):
    cfg = config.load(profile)
    assert cfg.data.batch_size % cfg.experiment.accum_steps == 0
    assert len(cfg.experiment.ablation) >= 4
    assert {p.precision for p in cfg.experiment.ablation} >= {"fp32", "bf16"}


def test_unknown_config_key_is_rejected():
    with pytest.raises(ConfigError, match="experiment.bench_stepz"):
        config.load("smoke", ["experiment.bench_stepz=3"])


def _bench_rows(rows):
    cols = ["config", "micro_batch", "grad_accum_steps", "precision", "global_batch", "samples_per_sec",
            "final_loss", "peak_memory_gib", "stable"]
    return pd.DataFrame(rows, columns=cols).assign(step_cv=0.02)


def test_recommendation_is_the_fastest_stable_config_at_equal_loss_and_global_batch():
    bench = _bench_rows([
        ["128x1 fp32", 128, 1, "fp32", 256, 1000.0, 1.00, 1.0, True],
        ["128x1 bf16", 128, 1, "bf16", 256, 2500.0, 1.01, 0.6, True],
        ["128x1 fp16", 128, 1, "fp16", 256, 3000.0, 1.50, 0.6, True],  # fastest but its loss is off
        ["64x2 fp32", 64, 2, "fp32", 256, 9000.0, 1.00, 0.8, False],  # unstable
        ["512x1 bf16", 512, 1, "bf16", 1024, 8000.0, 0.90, 2.0, True],  # another global batch
    ])
    pick, text = recommend(bench, tol=0.1)
    assert pick.config == "128x1 bf16"
    assert "2.50x the baseline" in text


def test_a_tie_within_the_noise_goes_to_the_simpler_config():
    bench = _bench_rows([
        ["128x1 fp32", 128, 1, "fp32", 256, 1000.0, 1.00, 1.0, True],
        ["64x2 fp32", 64, 2, "fp32", 256, 1030.0, 1.00, 0.8, True],  # 3% faster: noise
    ])
    pick, text = recommend(bench, tol=0.1, tie=0.05)
    assert pick.config == "128x1 fp32"
    assert "`64x2 fp32` came within 5%" in text
    pick, _ = recommend(bench.assign(samples_per_sec=[1000.0, 1200.0]), tol=0.1, tie=0.05)
    assert pick.config == "64x2 fp32"  # 20% faster is a real difference
    none, msg = recommend(bench.assign(stable=False), tol=0.1)
    assert none is None
    assert "No configuration was stable" in msg
