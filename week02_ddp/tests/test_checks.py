"""Every week-2 check, fed a passing and a failing result (and a SKIP where one process or a CPU cannot measure
it); plus the recommendation it judges. Pure numbers: no training, no processes."""

import math

import pandas as pd
import pytest

from week02_ddp import checks
from week02_ddp.checks import Agreement, AmpRun, Recommendation
from week02_ddp.report import bf16_skip_reason, recommendation_text

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


def _launch(world=2, micro=128, accum=1, drawn=None):
    return [{"rank": r, "world_size": world, "micro_batch": micro, "grad_accum_steps": accum,
             "samples_per_step": micro * accum * world if drawn is None else drawn} for r in range(world)]


def test_launch_reported():
    assert checks.launch_reported(_launch(), 128, 1, 2).status == PASS
    assert checks.launch_reported(_launch(drawn=128), 128, 1, 2).status == FAIL  # a rank's batch not drawn
    assert checks.launch_reported(_launch()[:1], 128, 1, 2).status == FAIL  # rank 1 did not report
    assert checks.launch_reported(_launch(accum=2), 128, 1, 2).status == FAIL  # another accumulation than set


def _shards(world=2, overlap=0, covers=True, deterministic=True, differs=True):
    epoch = {"sizes": [10] * world, "overlap": overlap, "covers": covers, "deterministic": deterministic,
             "head": [[0]] * world}
    return {"n": 10 * world, "world_size": world, "epochs": {0: epoch, 1: dict(epoch)},
            "differs_across_epochs": differs}


def test_shards_unique():
    assert checks.shards_unique(_shards(), 2).status == PASS
    assert checks.shards_unique(_shards(overlap=3), 2).status == FAIL
    assert checks.shards_unique(_shards(covers=False), 2).status == FAIL
    assert checks.shards_unique(_shards(deterministic=False), 2).status == FAIL
    assert checks.shards_unique(_shards(differs=False), 2).status == FAIL  # set_epoch forgotten


def test_shards_unique_skips_with_one_process_unless_what_one_process_shows_fails():
    c = checks.shards_unique(_shards(world=1), 1)
    assert c.status == SKIP
    assert "2 ranks" in c.reason
    assert checks.shards_unique(_shards(world=1, differs=False), 1).status == FAIL


def _agree(acc_b=0.9762, gap=3.7e-4, steps_b=428, compared=428, label="cnn"):
    return Agreement(label, 0.9762, acc_b, gap, 428, steps_b, compared)


def test_ddp_matches_single():
    ok = [_agree(label="softmax"), _agree()]
    assert checks.ddp_matches_single(ok, 2, 0.005, 0.02).status == PASS
    assert checks.ddp_matches_single([ok[0], _agree(acc_b=0.95)], 2, 0.005, 0.02).status == FAIL
    assert checks.ddp_matches_single([_agree(gap=0.05)], 2, 0.005, 0.02).status == FAIL
    assert checks.ddp_matches_single([_agree(gap=math.nan)], 2, 0.005, 0.02).status == FAIL  # nothing compared
    assert checks.ddp_matches_single([_agree(steps_b=214)], 2, 0.005, 0.02).status == FAIL
    assert checks.ddp_matches_single([], 2, 0.005, 0.02).status == FAIL


def test_ddp_matches_single_skips_with_one_process_unless_the_runs_disagree():
    c = checks.ddp_matches_single([_agree()], 1, 0.005, 0.02)
    assert c.status == SKIP
    assert "one process" in c.reason
    assert checks.ddp_matches_single([_agree(acc_b=0.9)], 1, 0.005, 0.02).status == FAIL


def test_accumulation_matches():
    assert checks.accumulation_matches(_agree(acc_b=0.9758, gap=4.1e-4), 0.005, 0.02).status == PASS
    assert checks.accumulation_matches(_agree(gap=0.3), 0.005, 0.02).status == FAIL  # loss not divided by k
    assert checks.accumulation_matches(_agree(steps_b=856), 0.005, 0.02).status == FAIL  # stepped every micro-batch
    assert checks.accumulation_matches(_agree(compared=0), 0.005, 0.02).status == FAIL


@pytest.mark.parametrize(("first", "last", "finite", "skipped", "expected"), [
    (2.3, 0.9, True, 0, True), (2.3, 2.4, True, 0, False), (2.3, 0.9, False, 0, False), (2.3, 0.9, True, 3, False),
])
def test_loss_stable(first, last, finite, skipped, expected):
    assert checks.loss_stable(first, last, finite, skipped, 23, 0.1) is expected


def _amp(precision="bf16", final=0.918, ref=0.923, skipped=0, finite=True, last=None):
    return AmpRun(precision, 2.307, final if last is None else last, final, ref, skipped, 23, finite)


def test_amp_stable():
    fp32 = _amp("fp32", 0.923, 0.923)
    assert checks.amp_stable([fp32, _amp(), _amp("fp16", 1.2685, 1.3258, 2)], 0.1, 0.1).status == PASS
    assert checks.amp_stable([fp32, _amp(final=1.2)], 0.1, 0.1).status == FAIL  # 30% off fp32
    assert checks.amp_stable([fp32, _amp("fp16", skipped=5)], 0.1, 0.1).status == FAIL  # scaler kept skipping
    assert checks.amp_stable([fp32, _amp(finite=False)], 0.1, 0.1).status == FAIL
    assert checks.amp_stable([fp32, _amp(last=2.5)], 0.1, 0.1).status == FAIL  # did not decrease
    assert checks.amp_stable([_amp("fp32", 0.923, 0.923, last=2.5), _amp()], 0.1, 0.1).status == FAIL  # fp32 broke
    assert checks.amp_stable([fp32], 0.1, 0.1).status == FAIL  # no reduced precision measured


def test_bf16_faster_passes_or_fails_on_a_gpu_and_skips_on_a_cpu():
    fp32 = [10_000.0, 10_300.0, 9_900.0]
    assert checks.bf16_faster(fp32, [21_000.0, 20_500.0, 21_400.0]).status == PASS
    assert checks.bf16_faster(fp32, [10_200.0, 9_800.0, 10_400.0]).status == FAIL  # lead inside the round spread
    assert checks.bf16_faster(fp32, [2_200.0, 2_300.0, 2_250.0]).status == FAIL  # slower
    assert checks.bf16_faster(fp32[:1], [21_000.0]).status == FAIL  # one round: noise unknown
    assert checks.bf16_faster(fp32, None).status == FAIL  # not benchmarked
    c = checks.bf16_faster(fp32, [2_200.0, 2_300.0, 2_250.0], "needs a GPU: the claim is about bf16 tensor cores")
    assert c.status == SKIP
    assert "0.22x" in c.measured  # what the CPU did is still reported
    assert "tensor cores" in c.reason
    assert bf16_skip_reason("cpu").startswith("needs a GPU")  # the reason the log gives on a CPU


def _phases(data=0.7, forward=24.2, backward=32.9, optimizer=0.5, step=58.8):
    return {"data": data, "forward": forward, "backward": backward, "optimizer": optimizer, "step": step}


def test_bottleneck_found():
    assert checks.bottleneck_found(_phases(), 0.1, 0.5).status == PASS
    assert checks.bottleneck_found(_phases(step=80.0), 0.1, 0.5).status == FAIL  # 27% of the step untimed
    assert checks.bottleneck_found(_phases(step=50.0), 0.1, 0.5).status == FAIL  # phases exceed the step
    even = _phases(data=20.0, forward=10.0, backward=10.0, optimizer=18.8)  # 34% / 34% / 32%: no clear winner
    assert checks.bottleneck_found(even, 0.1, 0.5).status == FAIL
    assert checks.work_kinds(_phases(data=40.0, forward=5.0, backward=5.0, step=50.5))[0][0] == "data"


# --- the recommendation -----------------------------------------------------------------------------------------

COLS = ["config", "micro_batch", "grad_accum_steps", "precision", "global_batch", "samples_per_sec", "final_loss",
        "peak_memory_gib", "stable"]


def _bench(rounds, rows):
    """``rows`` without samples_per_sec; it is the mean of ``rounds``."""
    full = [[r[0], *r[1:4], r[4], sum(rounds[r[0]]) / len(rounds[r[0]]), *r[5:]] for r in rows]
    return pd.DataFrame(full, columns=COLS)


BASE = [["128x1 fp32", 128, 1, "fp32", 256, 0.923, 1.13, True],
        ["64x2 fp32", 64, 2, "fp32", 256, 0.923, 1.13, True],
        ["128x1 bf16", 128, 1, "bf16", 256, 0.918, 1.13, True],
        ["128x1 fp16", 128, 1, "fp16", 256, 1.269, 1.13, True],  # loss 37% above the best: not a candidate
        ["256x1 fp32", 256, 1, "fp32", 512, 1.228, 1.17, True]]  # another global batch: not ranked


def test_recommend_names_a_winner_only_when_its_lead_clears_every_rounds_spread():
    rounds = {"128x1 fp32": [4300.0, 4400.0, 4450.0], "64x2 fp32": [4700.0, 4750.0, 4800.0],
              "128x1 bf16": [950.0, 960.0, 955.0], "128x1 fp16": [9000.0, 9100.0, 9050.0],
              "256x1 fp32": [4500.0, 4600.0, 4650.0]}
    bench = _bench(rounds, BASE)
    rec = checks.recommend(bench, rounds, tol=0.1)
    assert (rec.why, rec.pick, rec.other) == ("winner", "64x2 fp32", "128x1 fp32")
    assert rec.global_batch == 256
    assert "128x1 fp16" not in rec.candidates  # fastest, but its loss is off
    assert rec.lead == pytest.approx(4750 / 4383.33 - 1, rel=1e-3)
    assert rec.noise == pytest.approx(150 / 4383.33, rel=1e-3)  # the larger range: 4300..4450
    c = checks.recommendation_justified(rec)
    assert c.status == PASS
    assert "lead 8.4%" in c.measured
    assert "noise 3.4%" in c.measured
    text = recommendation_text(rec, bench, 0.1)
    assert text.startswith("**Recommendation: `64x2 fp32`**")
    assert "8.4% ahead of the runner-up `128x1 fp32`" in text
    assert "at global batch 512 the fastest is `256x1 fp32`" in text
    assert "`128x1 fp16` (1.2690)" in text  # left out for its loss, said with the number


def test_recommend_calls_a_tie_inside_the_noise_and_picks_the_simplest():
    rounds = {"128x1 fp32": [4300.0, 4800.0, 4550.0], "64x2 fp32": [4500.0, 4900.0, 4700.0],
              "128x1 bf16": [950.0, 960.0, 955.0], "128x1 fp16": [9000.0, 9100.0, 9050.0],
              "256x1 fp32": [4500.0, 4600.0, 4650.0]}
    bench = _bench(rounds, BASE)
    rec = checks.recommend(bench, rounds, tol=0.1)
    assert rec.why == "tie"
    assert rec.leader == "64x2 fp32"
    assert rec.tied == ("128x1 fp32", "64x2 fp32")  # simplest first: no accumulation
    assert rec.pick == "128x1 fp32"
    assert rec.lead <= rec.noise
    c = checks.recommendation_justified(rec)
    assert c.status == PASS
    assert "tie between `128x1 fp32`, `64x2 fp32`" in c.measured
    text = recommendation_text(rec, bench, 0.1)
    assert "Tie between `128x1 fp32`, `64x2 fp32` (lead 3.3% of `64x2 fp32` over `128x1 fp32`, inside the noise " \
           "11.0%" in text


def test_recommend_ties_in_a_noisy_third_config_the_runner_up_does_not_explain():
    rounds = {"a": [1000.0, 1010.0], "b": [900.0, 905.0], "c": [700.0, 1050.0]}  # c's range reaches a's
    rows = [["a", 128, 2, "fp32", 256, 1.0, 1.0, True], ["b", 128, 1, "fp32", 256, 1.0, 1.0, True],
            ["c", 128, 1, "bf16", 256, 1.0, 1.0, True]]
    rec = checks.recommend(_bench(rounds, rows), rounds, tol=0.1)
    assert (rec.why, rec.tied, rec.pick, rec.other) == ("tie", ("c", "a"), "c", "c")


def test_recommendation_justified_fails_without_a_stable_config_or_a_measured_noise():
    rounds = {"128x1 fp32": [4300.0], "64x2 fp32": [4750.0], "128x1 bf16": [950.0], "128x1 fp16": [9000.0],
              "256x1 fp32": [4600.0]}
    bench = _bench(rounds, BASE)
    one_round = checks.recommend(bench, rounds, tol=0.1)
    assert (one_round.why, one_round.pick) == ("noise unknown", None)
    assert checks.recommendation_justified(one_round).status == FAIL
    assert "noise is unknown" in recommendation_text(one_round, bench, 0.1)
    none = checks.recommend(bench.assign(stable=False), rounds, tol=0.1)
    assert (none.why, none.pick) == ("none stable", None)
    c = checks.recommendation_justified(none)
    assert c.status == FAIL
    assert "no configuration was stable" in c.measured


def test_recommendation_justified_fails_a_pick_the_numbers_do_not_back():
    winner = Recommendation("a", "winner", ("a", "b"), 256, "a", "b", lead=0.02, noise=0.05, rounds=3)
    assert checks.recommendation_justified(winner).status == FAIL  # a "winner" inside the noise
    not_simplest = Recommendation("a", "tie", ("a", "b"), 256, "a", "b", 0.02, 0.05, 3, tied=("b", "a"))
    assert checks.recommendation_justified(not_simplest).status == FAIL
    simplest = Recommendation("b", "tie", ("a", "b"), 256, "a", "b", 0.02, 0.05, 3, tied=("b", "a"))
    assert checks.recommendation_justified(simplest).status == PASS
    only = Recommendation("a", "only candidate", ("a",), 256, "a", rounds=1)
    assert checks.recommendation_justified(only).status == PASS
