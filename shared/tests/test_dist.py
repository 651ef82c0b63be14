"""DDP on 2 CPU processes (gloo): equivalence with one process, and failures that do not hang."""

import os
import time

import pytest
import torch
from torch.utils.data import TensorDataset

from shared.dist import DistConfig, DistSetupError, failure_guard, init_distributed
from shared.models import ModelConfig, build_model
from shared.rundir import start_run
from shared.testing import SPAWN_TIMEOUT_S, spawn_ranks
from shared.train.classify import fit_classifier
from shared.train.config import TrainConfig

MODEL = ModelConfig(name="small_cnn", width=4)
MICRO, WORLD = 16, 2
N_TRAIN = MICRO * WORLD  # one epoch = one optimizer step of the global batch


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 1, 28, 28, generator=g)
    x[torch.arange(n), 0, y, y] += 4.0  # learnable
    return TensorDataset(x, y)


def _cfg(**kw):
    return TrainConfig(epochs=1, lr=0.05, momentum=0.9, device="cpu", **kw)


def _fit(root, name, batch, cfg, dist_info=None):
    run = start_run("test", name, "smoke", cfg, root=root)
    return fit_classifier(run, MODEL, cfg, _data(N_TRAIN, 0), _data(64, 1), batch, 64, dist_info)


def _ddp_worker(rank, root, out_dir, accum):
    info = init_distributed(DistConfig(backend="gloo", timeout_s=60), device="cpu")
    out = _fit(root, "ddp", MICRO // accum, _cfg(grad_accum_steps=accum), info)
    torch.save(out.model.state_dict(), out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)  # pytest's own limit (pyproject) must not cut the ranks' first
def test_two_rank_ddp_equals_one_process_with_the_same_global_batch(tmp_path, accum):
    assert spawn_ranks(_ddp_worker, WORLD, (tmp_path / "ddp", tmp_path, accum)) == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single = _fit(tmp_path / "single", "single", MICRO * WORLD, _cfg()).model.state_dict()
    torch.manual_seed(0)  # fit_classifier seeds train.seed=0 before building: this is the shared initial model
    init = build_model(MODEL).state_dict()
    # One optimizer step of the same 32 images. The two runs differ only in fp32 reduction order (gloo's all-reduce
    # of two half-batch mean gradients, or k micro-batch sums, vs one full-batch sum inside the conv kernels): a
    # relative error of order sqrt(n) x 2^-24 per gradient element (n ~ 25k summed terms per conv weight: ~1e-5),
    # so after one step the parameters agree to 1e-4 of how far the step moved them (measured here: 4e-6). A DDP bug
    # (gradients not averaged, both ranks on the same shard, a skipped all-reduce) is off by a large share of the step.
    for k, v in single.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), f"{k} differs between ranks"
        moved, gap = (v - init[k]).abs().max(), (ranks[0][k] - v).abs().max()
        assert moved > 0, f"{k}: the step did not move it"
        assert gap <= 1e-4 * moved, f"{k}: DDP vs single {gap:.2e}, the step moved it {moved:.2e}"


def _failing_worker(rank, failure_dir, mode):
    import sys

    sys.stdout = open(failure_dir / f"stdout{rank}.txt", "w", buffering=1)  # noqa: SIM115 (lives as long as the rank)
    init_distributed(DistConfig(backend="gloo", timeout_s=2), device="cpu")
    if mode == "early" and rank == 0:
        time.sleep(1.5)  # rank 1 fails and writes its file before rank 0 reaches the guard
    with failure_guard(failure_dir, wait_s=10):
        if rank == 1:
            if mode == "hang":
                time.sleep(8)  # alive, but late for the collective: rank 0 must give up after 2 s
            raise ValueError("boom on rank 1")
        torch.distributed.all_reduce(torch.ones(1))


@pytest.mark.parametrize("mode", ["raise", "hang", "early"])
@pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)
def test_a_failed_or_stuck_rank_does_not_hang_rank0_and_rank0_reports_it(tmp_path, mode):
    stale = tmp_path / "rank1.error"  # left by an earlier launch: must not be reported as this one's
    stale.write_text("rank 1: stale error from an earlier launch")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    codes = spawn_ranks(_failing_worker, WORLD, (tmp_path, mode))  # the default limit: only a hang fails it
    assert codes[0] != 0
    assert codes[1] != 0
    log0 = (tmp_path / "stdout0.txt").read_text()
    assert "rank 0 stopped" in log0
    assert "rank 1 failed" in log0, log0
    assert "boom on rank 1" in log0, log0
    assert "stale" not in log0, log0
    if mode == "hang":  # rank 0 raised on its own timeout, well before rank 1 woke up
        gap = (tmp_path / "rank1.error").stat().st_mtime - (tmp_path / "rank0.error").stat().st_mtime
        assert gap > 3, f"rank 0 gave up only {gap:.1f} s before rank 1 failed"


def test_nccl_without_gpus_or_with_too_few_gpus_is_a_clear_error(monkeypatch):
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DistSetupError, match=r"8 processes per node .* only 1 GPU.*--nproc-per-node=1"):
        init_distributed(DistConfig(backend="nccl"), device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DistSetupError, match="needs CUDA GPUs"):
        init_distributed(DistConfig(backend="nccl"), device="cpu")


def test_single_process_needs_no_process_group(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = init_distributed(DistConfig(), device="cpu")
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
    assert not torch.distributed.is_initialized()


def test_a_half_described_launch_is_a_clear_error(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "0")  # LOCAL_RANK and WORLD_SIZE missing
    with pytest.raises(DistSetupError, match="RANK set but not all of RANK, WORLD_SIZE and LOCAL_RANK"):
        init_distributed(DistConfig(backend="gloo"), device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")  # now a torchrun-like set, but no rendezvous address
    with pytest.raises(DistSetupError, match="rendezvous variable.*MASTER_ADDR, MASTER_PORT"):
        init_distributed(DistConfig(backend="gloo"), device="cpu")
    assert not torch.distributed.is_initialized()
