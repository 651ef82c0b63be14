"""Distributed checkpoints (``shared.dcp``, ``torch.distributed.checkpoint``) of FSDP2 runs on gloo CPU ranks: a
2-rank run interrupted and resumed on 2 ranks equals the uninterrupted run bit for bit (losses, weights, AdamW state
and step counters); the same checkpoint resumes in one process and on 4 ranks with the same losses (resharding);
it exports to one safetensors file with exactly the gathered weights; only rank 0 writes ``meta.json`` and
``metrics.csv`` while every rank writes its shards and RNG state; an asynchronous save is committed by ``wait()`` and
holds the weights of the moment it was called; a checkpoint of another model or of the other format is refused by
name.

The 2-rank and the 4-rank launches run once per session (``run_once`` from test_fsdp.py); the tests read what they
left.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from shared.checkpoint import CheckpointError, FileCheckpointer, load_model, load_weights, save_weights
from shared.dcp import DCPCheckpointer, check_keys, full_state_dict, load_sharded_into
from shared.models.gpt import GPT, GPTConfig
from shared.parallel import build_parallel
from shared.testing import SPAWN_TIMEOUT_S
from shared.tests.test_fsdp import (
    ADAMW,
    GPT2,
    MICRO,
    STEPS,
    WORLD,
    fit_run,
    init_gloo,
    lm_task,
    loop_cfg,
    run_once,
    spawn_job,
    train_losses,
)
from shared.train.optim import build_optimizer

STOP = 3  # the 2-rank run is interrupted after this step (loop.stop_at) and resumed from its checkpoint


def _full_optim_state(model, optimizer) -> dict:
    """The whole AdamW state, gathered from every rank's shards onto rank 0 (collective; empty on the others)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _dcp_worker(rank, out):
    import torch.distributed as dist

    info = init_gloo()
    loop = loop_cfg()
    fsdp = build_parallel("fsdp2", info)
    model, optimizer, _ = fit_run(out / "full", fsdp, loop, lm_task(loop), ADAMW,
                                  fsdp.checkpointer(out / "full" / "checkpoints"))
    full = full_state_dict(model)

    cut = out / "cut"
    model, optimizer, stopped = fit_run(cut, fsdp, loop_cfg(stop_at=STOP), lm_task(loop), ADAMW,
                                        DCPCheckpointer(cut / "checkpoints"))
    saved = {"model": full_state_dict(model), "optim": _full_optim_state(model, optimizer)}
    if rank == 0:  # the folder as the interruption left it, for the one-process and 4-rank resumes
        shutil.copytree(cut, out / "cut_at_stop", symlinks=True)  # last/best stay links
    dist.barrier()

    torch.manual_seed(1)  # another initialisation: the load must overwrite every weight and moment
    model = GPT(GPTConfig(**GPT2))
    optimizer = build_optimizer(model, ADAMW)
    build_parallel("fsdp2", info).wrap(model, optimizer)
    for group in optimizer.param_groups:
        # fit() gives every group a "peak_lr" before it resumes. DCP reads only the keys the destination already has
        # (a custom param-group key missing from the fresh optimizer stays missing), so give it one, a wrong value.
        group["peak_lr"] = 123.0
    DCPCheckpointer(cut / "checkpoints").load(model, optimizer)
    loaded = {"model": full_state_dict(model), "optim": _full_optim_state(model, optimizer)}

    model, optimizer, resumed = fit_run(cut, build_parallel("fsdp2", info), loop, lm_task(loop), ADAMW,
                                        DCPCheckpointer(cut / "checkpoints"))
    resumed_state = full_state_dict(model)

    # an asynchronous save; then training goes on (the weights change) before wait() commits the folder
    saver = DCPCheckpointer(out / "async" / "checkpoints", async_save=True)
    path = saver.save(STEPS, model, optimizer)
    committed_before_wait = path.exists()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    saver.wait()
    committed_after_wait = (path / "meta.json").is_file()

    torch.save({"full": full, "stopped": (stopped.step, stopped.finished), "saved": saved, "loaded": loaded,
                "resumed_from": resumed.resumed_from, "resumed": resumed_state,
                "async": (committed_before_wait, committed_after_wait)}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def dcp_job(tmp_path_factory):
    out = run_once(tmp_path_factory, "dcp_job", lambda out: spawn_job(_dcp_worker, WORLD, out))
    return out, torch.load(out / "rank0.pt", weights_only=True)


FOUR = 4


def _four_rank_worker(rank, out):
    warnings.filterwarnings("ignore", message=r".*on 4 ranks but GPT has 2 blocks")  # expected: 4 ranks, 2 blocks
    info = init_gloo()
    loop = loop_cfg(micro_batch=MICRO * WORLD // FOUR)  # the 2-rank run's global batch of 8 windows
    model, _, result = fit_run(out, build_parallel("fsdp2", info), loop, lm_task(loop), ADAMW,
                               DCPCheckpointer(out / "checkpoints"))
    state = full_state_dict(model)
    if rank == 0:
        torch.save({"resumed_from": result.resumed_from, "final": state}, out / "result.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def four_ranks(dcp_job, tmp_path_factory):
    def produce(out):
        shutil.rmtree(out)
        shutil.copytree(dcp_job[0] / "cut_at_stop", out, symlinks=True)
        spawn_job(_four_rank_worker, FOUR, out)

    out = run_once(tmp_path_factory, "dcp_four_ranks", produce)
    return out, torch.load(out / "result.pt", weights_only=True)


SPAWNS = pytest.mark.timeout(SPAWN_TIMEOUT_S + 120)  # pytest's own limit (pyproject) must not cut the ranks' first
SPAWNS_TWICE = pytest.mark.timeout(2 * SPAWN_TIMEOUT_S + 120)  # the 4-rank launch waits for the 2-rank one


def _assert_equal_states(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k}"


# -- 2. save -> load exactness ----------------------------------------------------------------------------------
@SPAWNS
def test_an_interrupted_fsdp2_run_resumed_on_two_ranks_equals_the_uninterrupted_run_exactly(dcp_job):
    out, r0 = dcp_job
    assert r0["stopped"] == (STOP, False)
    assert r0["resumed_from"] == STOP
    assert train_losses(out / "cut") == train_losses(out / "full")  # rows 4..6 come from the resumed run
    _assert_equal_states(r0["resumed"], r0["full"], "final weights")


@SPAWNS
def test_the_optimizer_state_after_a_load_equals_the_state_that_was_saved(dcp_job):
    _, r0 = dcp_job
    saved, loaded = r0["saved"]["optim"], r0["loaded"]["optim"]
    _assert_equal_states(r0["loaded"]["model"], r0["saved"]["model"], "weights")
    assert saved["state"].keys() == loaded["state"].keys()
    assert saved["state"].keys() == dict(GPT(GPTConfig(**GPT2)).named_parameters()).keys()  # every parameter, once
    for name, s in saved["state"].items():
        assert s.keys() == loaded["state"][name].keys() == {"step", "exp_avg", "exp_avg_sq"}, name
        for k, v in s.items():
            assert torch.equal(loaded["state"][name][k], v), f"{name}.{k}"
        # STOP steps taken, not one more: a zero-lr step taken to create missing state would show here
        assert s["step"].item() == STOP, name
    assert loaded["param_groups"] == saved["param_groups"]  # lr, betas, weight decay, the loop's peak_lr
    assert [g["peak_lr"] for g in loaded["param_groups"]] == [ADAMW.lr] * 2


def _one_process_resume(tmp_path, cut_at_stop):
    run = tmp_path / "one"
    shutil.copytree(cut_at_stop, run, symlinks=True)
    loop = loop_cfg(micro_batch=MICRO * WORLD)  # one process, the 2-rank run's global batch of 8 windows
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*assuming the intent is to (load|save) in a single process")
        model, _, result = fit_run(run, None, loop, lm_task(loop), ADAMW, DCPCheckpointer(run / "checkpoints"))
    return run, model, result


def _assert_continues_like(losses, weights, out, r0, where):
    full = train_losses(out / "full")
    assert len(losses) == STEPS
    assert losses[:STOP] == full[:STOP]  # the rows before the stop, kept from the 2-rank run
    # The checkpoint loads bit for bit (the 2-rank resume above is exact), so the runs differ only in fp32 reduction
    # order from step STOP+1 on: a mean over 8 windows in one process or 4 x 2 vs 2 x 4 windows per rank, gradients
    # summed in another order (~1e-7 relative). AdamW turns that into update differences ~1e-7 x lr per element
    # (m/sqrt(v) is smooth in g), so the losses agree to ~1e-6 after 3 steps; rtol 1e-5 leaves room, while a state
    # that failed to reshard (AdamW restarting, a shard from the wrong rank) moves the loss by >1e-3.
    torch.testing.assert_close(torch.tensor(losses[STOP:]), torch.tensor(full[STOP:]), rtol=1e-5, atol=0,
                               msg=lambda m: f"{where}: {m}")
    # Weights: every element agrees to 1e-6 (measured: < 1e-7) but the key biases. The key bias (c_attn.bias[C:2C])
    # has a zero gradient in exact arithmetic (it adds q.b_k to every score of a query, and softmax ignores a shift),
    # so its fp32 gradient is rounding noise (|g| ~ 1e-12 here) whose value depends on the summation order. AdamW,
    # with sqrt(v) ~ |g| << eps = 1e-8, moves such an element by ~ lr |g| / eps ~ 1e-6 per step (measured gaps:
    # ~2e-6 after 3 steps); allowed: (STEPS - STOP) x lr x 1e-11 / eps = 3e-5 (|g| < 1e-11), still 1/300 of one
    # real lr-sized AdamW update.
    C = GPT2["n_embd"]
    noisy = (STEPS - STOP) * ADAMW.lr * 1e-11 / 1e-8
    for k, v in r0["full"].items():
        atol = torch.full_like(v, 1e-6)
        if k.endswith("attn.c_attn.bias"):
            atol[C:2 * C] = noisy
        gap = (weights[k] - v).abs()
        assert (gap <= atol).all(), f"{where} {k}: gaps {gap[gap > atol].tolist()} at {(gap > atol).nonzero().tolist()}"


@SPAWNS
def test_a_two_rank_checkpoint_resumes_in_one_process_with_the_same_losses(dcp_job, tmp_path):
    out, r0 = dcp_job
    run, model, result = _one_process_resume(tmp_path, out / "cut_at_stop")
    assert result.resumed_from == STOP
    _assert_continues_like(train_losses(run), model.state_dict(), out, r0, "1 process")


@SPAWNS_TWICE
def test_a_two_rank_checkpoint_resumes_on_four_ranks_with_the_same_losses(dcp_job, four_ranks):
    out, r0 = dcp_job
    run, r4 = four_ranks
    assert r4["resumed_from"] == STOP
    assert (run / "checkpoints" / "last" / "rank3.pt").is_file()  # the 4-rank save wrote every rank's state
    _assert_continues_like(train_losses(run), r4["final"], out, r0, "4 ranks")


# -- 3. export ---------------------------------------------------------------------------------------------------
@SPAWNS
def test_a_dcp_checkpoint_exports_to_safetensors_with_exactly_the_gathered_weights(dcp_job, tmp_path):
    out, r0 = dcp_job
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(out / "full" / "checkpoints", ckpts, symlinks=True)
    in_flight = ckpts / ".tmp-step-00000009"  # a save the live run is writing while we export
    in_flight.mkdir()
    plain = GPT(GPTConfig(**GPT2))  # seed-less: its own random weights, all overwritten by the load
    ck = load_sharded_into(plain, ckpts / "last")
    assert in_flight.is_dir()  # a reader never cleans up the folder it reads
    assert ck.step == STEPS
    aliases = save_weights(plain, tmp_path / "model.safetensors")
    assert aliases == {"lm_head.weight": "wte.weight"}  # the tied head is stored once
    other = GPT(GPTConfig(**GPT2))
    load_weights(other, tmp_path / "model.safetensors", aliases)
    _assert_equal_states(other.state_dict(), r0["full"], "exported weights")
    assert other.lm_head.weight is other.wte.weight  # still tied after the load


# -- 5. rank-0-only metadata, every rank's shards ------------------------------------------------------------------
@SPAWNS
def test_every_rank_writes_its_shards_and_rng_state_and_only_rank_0_writes_meta_and_metrics(dcp_job):
    out, _ = dcp_job
    ckpts = out / "full" / "checkpoints"
    steps = sorted(p.name for p in ckpts.glob("step-*"))
    assert steps == ["step-00000000", f"step-{STEPS:08d}"]  # the two evals' saves; nothing half-written beside them
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", *steps]
    assert len(list(ckpts.rglob("meta.json"))) == len(steps)
    last = ckpts / "last"
    assert sorted(p.name for p in last.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.json",
                                                      "rank0.pt", "rank1.pt"]
    meta = json.loads((last / "meta.json").read_text())
    assert (meta["format"], meta["world_size"], meta["optimizer_state"], meta["step"]) == ("dcp", WORLD, True, STEPS)
    assert set(meta["files"]) == {".metadata", "__0_0.distcp", "__1_0.distcp", "rank0.pt", "rank1.pt"}
    # the step-0 eval's save comes before any optimizer step: model only (AdamW has no state to save yet)
    assert json.loads((ckpts / "step-00000000" / "meta.json").read_text())["optimizer_state"] is False
    for run in ("full", "cut"):  # the interrupted run's rows too: none written twice across the resume
        assert len(train_losses(out / run)) == STEPS  # (train_losses checks the steps are 1..STEPS, once each)


# -- 10. asynchronous save ---------------------------------------------------------------------------------------
@SPAWNS
def test_an_async_save_is_committed_by_wait_and_holds_the_weights_of_the_moment_it_was_called(dcp_job):
    out, r0 = dcp_job
    assert r0["async"] == (False, True)  # no folder before wait(): a folder with meta.json is always complete
    plain = GPT(GPTConfig(**GPT2))
    load_sharded_into(plain, out / "async" / "checkpoints" / "last")
    # the weights were changed by +1 right after save() returned: the shards hold the copy save() took
    _assert_equal_states(plain.state_dict(), r0["resumed"], "async checkpoint")


# -- 8. bad inputs ----------------------------------------------------------------------------------------------
@pytest.fixture
def step3(dcp_job, tmp_path):
    """A private copy of the 2-rank checkpoint at the stop (a load must not touch the shared folder)."""
    dst = tmp_path / "checkpoints" / f"step-{STOP:08d}"
    shutil.copytree(dcp_job[0] / "cut_at_stop" / "checkpoints" / f"step-{STOP:08d}", dst)
    return dst


def _without_config(cfg: dict) -> GPT:
    """A GPT whose config the checkpoint cannot compare (as for a model without a dataclass ``cfg``, e.g. one from
    Hugging Face): only the parameter names and shapes can tell it is another model."""
    model = GPT(GPTConfig(**cfg))
    model.cfg = None
    return model


@SPAWNS
def test_a_dcp_checkpoint_of_another_model_is_refused_naming_what_differs(step3):
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    with pytest.raises(CheckpointError, match=r"belongs to another run:\n  model_config: n_embd is 16 in the "
                                              r"checkpoint, 32 in this run"):
        load_sharded_into(GPT(GPTConfig(**{**GPT2, "n_embd": 32})), step3)
    with pytest.raises(CheckpointError, match=r"does not fit this model") as e:
        load_sharded_into(_without_config({**GPT2, "n_layer": 3}), step3)
    assert f"missing in {step3}: blocks.2.attn.c_attn.weight" in str(e.value)
    assert "has shape" not in str(e.value)  # the two blocks it has are the checkpoint's shapes
    with pytest.raises(CheckpointError, match=r"wte\.weight: .* has shape \(8, 16\), model has \(8, 32\)") as e:
        check_keys(step3, get_model_state_dict(_without_config({**GPT2, "n_embd": 32})))
    assert "blocks.0.mlp.c_fc.weight" in str(e.value)  # every mismatched tensor is named, not only the first


@SPAWNS
def test_a_checkpoint_of_the_other_format_is_refused_naming_the_loader_to_use(step3, tmp_path):
    FileCheckpointer(tmp_path / "file").save(0, GPT(GPTConfig(**GPT2)))
    with pytest.raises(CheckpointError, match=r"is a single-file checkpoint, not a distributed one: load it with "
                                              r"shared\.checkpoint\.FileCheckpointer"):
        DCPCheckpointer(tmp_path / "file").load(GPT(GPTConfig(**GPT2)))
    with pytest.raises(CheckpointError, match=r"(?i)distributed.*(DCPCheckpointer|load_sharded_into)"):
        FileCheckpointer(step3.parent).load(GPT(GPTConfig(**GPT2)), which=step3.name)
    with pytest.raises(CheckpointError, match=r"(?i)distributed.*load_sharded_into"):
        load_model(GPT(GPTConfig(**GPT2)), step3)
