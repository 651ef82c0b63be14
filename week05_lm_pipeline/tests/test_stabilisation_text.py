"""The stabilisation prose is generated from the runs: it says "survives" only when every protected seed ends below
the bar, and counts the seeds each protection alone rescues."""

from week05_lm_pipeline.experiments import ShortRun, Stabilisation
from week05_lm_pipeline.report import stabilisation_text


def run(name: str, seed: int, loss: float | None, lr: float = 0.003) -> ShortRun:
    return ShortRun("ablation", name, seed, f"{name} settings", loss, None if loss is not None else 7, 8.0, 1.0, loss, lr)


def ablation(protected: list[float | None], warmup_only: list[float | None], clip_only: list[float | None]):
    unigram, margin = 6.3, 0.1  # bar 6.2
    return Stabilisation(one_at_a_time=[run("baseline", 0, 5.9, 0.001), run("no warm-up", 0, 5.8, 0.001)],
                         sweep=[run("unprotected", 0, 5.85, 0.002), run("unprotected", 0, 6.28)], high_lr=0.003,
                         unprotected=[run("unprotected", 0, 6.28), run("unprotected", 1, None)],
                         protected=[run("protected", s, x) for s, x in enumerate(protected)],
                         warmup_only=[run("warm-up only", s, x) for s, x in enumerate(warmup_only)],
                         clip_only=[run("clipping only", s, x) for s, x in enumerate(clip_only)],
                         unigram_loss=unigram, margin=margin)


def test_survival_and_the_single_protections_follow_the_numbers():
    text = stabilisation_text(ablation([5.2, 5.1], [5.3, 5.2], [5.9, 6.25]))
    assert "first breaks it at lr 0.003" in text
    assert "seed 1: diverged at step 7" in text
    assert "the protected run survives on every seed" in text
    assert "warm-up alone (warm-up only settings): seed 0: 5.3000, seed 1: 5.2000 — it survives on 2 of 2 seeds" in text
    assert "it survives on 1 of 2 seeds" in text  # clipping alone: 6.25 is above the bar


def test_a_protected_seed_above_the_bar_is_reported_as_not_surviving():
    text = stabilisation_text(ablation([5.2, 6.21], [None, 6.3], [5.0, 5.0]))
    assert "does NOT survive on every seed" in text
    assert "survives on every seed" not in text.replace("does NOT survive on every seed", "")
    assert "it survives on 0 of 2 seeds" in text


def test_a_sweep_that_never_breaks_says_so():
    st = ablation([], [], [])
    st.high_lr, st.unprotected, st.sweep = None, [], [run("unprotected", 0, 5.85, 0.002)]
    text = stabilisation_text(st)
    assert "never broke the run" in text
    assert "alone" not in text
