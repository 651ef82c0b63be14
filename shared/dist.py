"""Distributed set-up: one code path for 1 process or N (DDP), from the ``torchrun`` environment.

``torchrun`` (https://docs.pytorch.org/docs/stable/elastic/run.html) starts N copies of the same
script and gives each one ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` and the
rendezvous address (``MASTER_ADDR``/``MASTER_PORT``). Without those variables the script is a
single process and nothing here touches ``torch.distributed``.

Failures: the process group gets a finite timeout, so a collective waiting for a dead rank raises
instead of hanging; :func:`failure_guard` writes each rank's exception to a shared folder and makes
rank 0 print every failed rank's error before it exits.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from shared.atomic import atomic_write_text
from shared.device import resolve_device
from shared.tracking import console

# Wall-clock time just before this process joined the rendezvous. No rank of this launch can have
# failed earlier (every rank waits in the rendezvous for all the others), so an error file older than
# this belongs to an earlier launch. Used only when the launcher gives no launch id.
_JOINED_AT: float | None = None


@dataclass
class DistConfig:
    """The ``dist`` section of a config."""

    backend: str = "auto"  # "auto" (nccl on CUDA, gloo on CPU), "nccl" or "gloo"
    timeout_s: float = 600.0  # a collective waiting longer than this raises (a dead rank never hangs the others)


class DistSetupError(RuntimeError):
    """The launch does not match the machine (more processes than GPUs, an unknown backend, ...)."""


class RankTerminated(SystemExit):
    """This rank received SIGTERM (``torchrun`` stops the survivors after one rank fails)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    ``world_size == 1`` and ``backend is None`` when no process group was created.
    """

    rank: int
    local_rank: int
    world_size: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the ``torchrun`` environment variables are present."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _pick_backend(backend: str, device: str) -> tuple[str, torch.device]:
    if backend not in ("auto", "nccl", "gloo"):
        raise DistSetupError(f"unknown dist.backend '{backend}'. Choose auto, nccl or gloo")
    want_cuda = device == "cuda" or device.startswith("cuda:") or (device == "auto" and torch.cuda.is_available())
    if backend == "nccl" or (backend == "auto" and want_cuda):
        if not torch.cuda.is_available():
            raise DistSetupError("dist.backend=nccl needs CUDA GPUs; none is visible. Use dist.backend=gloo on CPU")
        return "nccl", torch.device("cuda")
    return "gloo", torch.device("cuda" if want_cuda else "cpu")


def init_distributed(cfg: DistConfig | None = None, device: str = "auto") -> DistInfo:
    """Create the process group from the ``torchrun`` environment, or describe a single process.

    Each rank on a node gets its own GPU (``cuda:LOCAL_RANK``) when the device is CUDA.

    Args:
        cfg: backend and timeout.
        device: the run's ``train.device`` (``auto``, ``cpu``, ``cuda``).

    Raises:
        DistSetupError: NCCL without GPUs, more processes per node than visible GPUs (the message says which
            ``--nproc-per-node`` to use), a rendezvous variable missing (``MASTER_ADDR``/``MASTER_PORT``), or only
            some of ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set.
    """
    cfg = cfg or DistConfig()
    if not launched_by_torchrun():
        partial = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ]
        if partial:
            raise DistSetupError(f"{', '.join(partial)} set but not all of RANK, WORLD_SIZE and LOCAL_RANK: a launch "
                                 "half-described. Launch with torchrun (it sets every one), or unset them to run as "
                                 "one process")
        return DistInfo(0, 0, 1, None, resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    backend, dev = _pick_backend(cfg.backend, device)
    if dev.type == "cuda":
        n_gpu = torch.cuda.device_count()
        if local_world > n_gpu:
            raise DistSetupError(
                f"{local_world} processes per node were launched but only {n_gpu} GPU(s) are visible: one GPU per "
                f"rank is required with {backend}. Relaunch with --nproc-per-node={n_gpu} (make week02 NPROC={n_gpu})."
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise DistSetupError(f"RANK, WORLD_SIZE and LOCAL_RANK are set but the rendezvous variable(s) "
                                 f"{', '.join(missing)} are not: launch with torchrun (e.g. `torchrun --standalone "
                                 "--nproc-per-node=2 -m weekNN_x`), which sets them, or export MASTER_ADDR and MASTER_PORT")
        global _JOINED_AT
        _JOINED_AT = time.time()
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=cfg.timeout_s),
            device_id=dev if backend == "nccl" else None,
        )
    return DistInfo(rank, local_rank, world_size, backend, dev)


def shutdown() -> None:
    """Destroy the process group if there is one (safe to call in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a copy; ``t`` itself is left alone); ``t`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise RankTerminated(f"received signal {signum} (another rank probably failed)")


def peer_errors(failure_dir: Path, exclude_rank: int | None = None, newer_than: float = 0.0) -> dict[int, str]:
    """The errors other ranks wrote into ``failure_dir`` (rank -> traceback text).

    Files last modified before ``newer_than`` (seconds since the epoch) are left out.
    """
    out = {}
    for f in sorted(Path(failure_dir).glob("rank*.error")):
        r = int(f.stem.removeprefix("rank"))
        if r != exclude_rank and f.stat().st_mtime >= newer_than:
            out[r] = f.read_text()
    return out


@contextlib.contextmanager
def failure_guard(failure_dir: str | Path, rank: int | None = None, wait_s: float = 5.0) -> Iterator[None]:
    """Make a failure on any rank visible on rank 0.

    On an exception (or SIGTERM, which ``torchrun`` sends to the survivors) this rank writes
    ``failure_dir/<launch id>/rank<R>.error``; rank 0 then waits up to ``wait_s`` seconds for the
    other ranks' files and prints each failed rank's traceback before re-raising. The launch id is
    torchrun's ``TORCHELASTIC_RUN_ID``, so files of an earlier launch are never mistaken for this one's;
    without it (other launchers) rank 0 ignores files older than its join of the process group. (Deleting
    them on entry would race: a peer can fail and write its file before rank 0 reaches this guard.)
    """
    launch_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    failure_dir = Path(failure_dir) / launch_id
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    # 1 s of slack: some filesystems store mtimes at a coarser grain than time.time()
    since = 0.0 if launch_id else ((_JOINED_AT or time.time()) - 1.0)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        yield
    except BaseException as e:
        tb = "".join(traceback.format_exception(e))
        atomic_write_text(failure_dir / f"rank{rank}.error", f"rank {rank}: {type(e).__name__}: {e}\n{tb}")
        if rank == 0:
            deadline = time.monotonic() + wait_s
            peers = peer_errors(failure_dir, exclude_rank=0, newer_than=since)
            while not peers and time.monotonic() < deadline:
                time.sleep(0.2)
                peers = peer_errors(failure_dir, exclude_rank=0, newer_than=since)
            console(f"rank 0 stopped: {type(e).__name__}: {e}")
            for r, text in peers.items():
                console(f"---- rank {r} failed (from {failure_dir}/rank{r}.error) ----\n{text.rstrip()}")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
