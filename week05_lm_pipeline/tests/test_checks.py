"""Every week-5 check, fed one passing and one failing result."""

from shared.stats import compare
from week05_lm_pipeline import checks
from week05_lm_pipeline.checks import PackReadback


def test_tokenizer_roundtrip():
    assert checks.tokenizer_roundtrip(1000, 1000, True).status == "PASS"
    assert checks.tokenizer_roundtrip(999, 1000, True).status == "FAIL"
    assert checks.tokenizer_roundtrip(1000, 1000, False).status == "FAIL"
    assert checks.tokenizer_roundtrip(0, 0, True).status == "FAIL"


def test_packing_lossless():
    good = {"train": PackReadback(100, 100, 0, None), "val": PackReadback(10, 10, 0, None)}
    assert checks.packing_lossless(good).status == "PASS"
    lost = {**good, "val": PackReadback(10, 9, 1, None)}
    assert checks.packing_lossless(lost).status == "FAIL"
    changed = {**good, "train": PackReadback(100, 100, 1, 42)}
    c = checks.packing_lossless(changed)
    assert c.status == "FAIL"
    assert "#42" in c.measured


def test_perplexity_reproducible():
    assert checks.perplexity_reproducible(4.1, 4.1, 4.10001).status == "PASS"
    assert checks.perplexity_reproducible(4.1, 4.1000001, 4.1).status == "FAIL"  # not identical twice
    assert checks.perplexity_reproducible(4.1, 4.1, 4.2).status == "FAIL"  # batch size changes the result


def test_throughput_plausible():
    peak = 100e9
    assert checks.throughput_plausible(200, 10e6, peak, "measured").status == "PASS"  # MFU 2%
    assert checks.throughput_plausible(2, 10e6, peak, "measured").status == "FAIL"  # 0.02%: a timer bug
    assert checks.throughput_plausible(20_000, 10e6, peak, "measured").status == "FAIL"  # 200%: a FLOP-count bug
    assert checks.throughput_plausible(200, 10e6, None, "").status == "SKIP"


def test_memory_plausible():
    n = 10_000_000  # 16 B/param -> 0.149 GiB
    assert checks.memory_plausible(0.5, n).status == "PASS"
    assert checks.memory_plausible(0.1, n).status == "FAIL"


def test_beats_unigram():
    assert checks.beats_unigram(60.0, 400.0).status == "PASS"
    assert checks.beats_unigram(500.0, 400.0).status == "FAIL"


def test_sample_real_words():
    assert checks.sample_real_words(0.8, 30, 0.6).status == "PASS"
    assert checks.sample_real_words(0.3, 30, 0.6).status == "FAIL"
    assert checks.sample_real_words(1.0, 0, 0.6).status == "FAIL"  # an empty sample proves nothing


def test_stabilisation_shown():
    bar = 6.2  # unigram 6.3 - margin 0.1
    assert checks.stabilisation_shown(0.1, bar, [None, 6.3], [5.6, 5.9], [0.01, 0.1]).status == "PASS"
    assert checks.stabilisation_shown(None, bar, [], [], [0.01, 0.1]).status == "FAIL"  # nothing broke
    assert checks.stabilisation_shown(0.1, bar, [None, 5.9], [5.6, 5.9], [0.1]).status == "FAIL"  # seed 1 fine
    assert checks.stabilisation_shown(0.1, bar, [None, None], [5.6, None], [0.1]).status == "FAIL"  # no rescue
    assert checks.stabilisation_shown(0.1, bar, [None, 6.3], [5.6, 6.25], [0.1]).status == "FAIL"  # collapsed too
    assert checks.stabilisation_shown(0.1, bar, [None], [5.6], [0.1]).status == "FAIL"  # one seed
    skipped = checks.stabilisation_shown(0.1, bar, [None, 6.3], [6.3, 6.3], [0.1], skip_reason="too short")
    assert skipped.status == "SKIP"
    assert "6.300" in skipped.measured  # the numbers are still reported


def test_lr_search_inside():
    assert checks.lr_search_inside({"sgd": (0.3, [0.1, 0.3, 1.0]), "adamw": (4e-3, [2e-3, 4e-3, 8e-3])}).status == "PASS"
    assert checks.lr_search_inside({"sgd": (0.3, [0.1, 0.3, 1.0]), "adamw": (8e-3, [2e-3, 4e-3, 8e-3])}).status == "FAIL"
    assert checks.lr_search_inside({}).status == "FAIL"


def test_ladder_beats_baseline():
    clear = compare({"0 baseline": [5.6, 5.62], "5 +tuned lr": [4.9, 4.92]}, higher_is_better=False)
    assert checks.ladder_beats_baseline(clear, "0 baseline", 0.05).status == "PASS"
    small = compare({"0 baseline": [5.0, 5.02], "5 +tuned lr": [4.98, 4.99]}, higher_is_better=False)
    assert checks.ladder_beats_baseline(small, "0 baseline", 0.05).status == "FAIL"  # below the margin
    noisy = compare({"0 baseline": [5.0, 5.4], "5 +tuned lr": [4.9, 5.0]}, higher_is_better=False)
    assert checks.ladder_beats_baseline(noisy, "0 baseline", 0.05).status == "FAIL"  # inside the seed spread
    worse = compare({"0 baseline": [4.0, 4.01], "5 +tuned lr": [5.0, 5.01]}, higher_is_better=False)
    assert checks.ladder_beats_baseline(worse, "0 baseline", 0.0).status == "FAIL"


def test_bpe_speed():
    assert checks.bpe_speed(20.0, 2.0, 60, 1.0).status == "PASS"
    assert checks.bpe_speed(90.0, 2.0, 60, 1.0).status == "FAIL"
    assert checks.bpe_speed(20.0, 0.5, 60, 1.0).status == "FAIL"


def test_time_budget():
    assert checks.time_budget(900, 1200).status == "PASS"
    assert checks.time_budget(1300, 1200).status == "FAIL"


def test_export_matches():
    assert checks.export_matches("m", 0.0, 3e-6).status == "PASS"
    assert checks.export_matches("m", 1e-7, 3e-6).status == "FAIL"
    assert checks.export_matches("m", 0.0, 1e-2).status == "FAIL"
