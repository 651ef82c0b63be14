"""Week 5's checks: pure functions from the pipeline's numbers to a :class:`shared.report.Check` (each is fed a
failing input in ``tests/test_checks.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.report import Check
from shared.stats import Comparison

ADAMW_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW's two moments, 4 bytes each
MFU_BOUNDS = (0.001, 1.0)  # a measured tokens/s outside these shares of the peak is a measurement bug


@dataclass(frozen=True)
class PackReadback:
    """One packed split read back from its ``.bin`` file, cut at BOS/EOS and decoded."""

    documents: int  # source documents
    read_back: int  # documents found between BOS/EOS frames in the file
    mismatched: int  # decoded documents that differ from their source (compared in order)
    first_mismatch: int | None  # index of the first differing document


def tokenizer_roundtrip(ok: int, n: int, edge_cases_ok: bool) -> Check:
    """decode(encode(x)) == x for every val document checked and every edge case (whitespace, CRLF, unicode)."""
    edge = "and every edge case (whitespace, CRLF, unicode, control characters)" if edge_cases_ok else \
        "; an EDGE CASE FAILED"
    return Check.judge("tokenizer round trip", n > 0 and ok == n and edge_cases_ok,
                       f"{ok}/{n} val documents {edge}", "decode(encode(x)) == x for all")


def packing_lossless(splits: dict[str, PackReadback]) -> Check:
    """Every source document comes back, in order and identical, from the packed file on disk."""
    ok = bool(splits) and all(r.read_back == r.documents and r.mismatched == 0 for r in splits.values())
    measured = "; ".join(
        f"{k}: {r.read_back:,} documents read back from the .bin for {r.documents:,}, {r.mismatched} differ"
        + (f" (first: #{r.first_mismatch})" if r.first_mismatch is not None else "") for k, r in splits.items())
    return Check.judge("packing loses no token", ok, measured,
                       "the .bin read back, cut at BOS/EOS and decoded, equals the source documents (count and text)")


def perplexity_reproducible(first: float, second: float, batch1: float, rtol: float = 1e-4) -> Check:
    """The eval gives the identical loss twice and (within fp32 reduction-order noise) at another batch size."""
    rel = abs(batch1 - first) / first
    return Check.judge("perplexity is reproducible", first == second and rel <= rtol,
                       f"two calls: {first:.6f} and {second:.6f}; batch size 1: relative difference {rel:.1e}",
                       f"identical twice; ≤ {rtol:g} relative across batch sizes")


def throughput_plausible(tokens_per_sec: float, flops_per_token: float, peak_flops: float | None, source: str) -> Check:
    """tokens/s x FLOPs/token must land between 0.1% and 100% of the measured peak: below, the timer or the token
    count is wrong; above, the FLOP count or the peak is. SKIP without a measured peak."""
    lo, hi = MFU_BOUNDS
    crit = f"MFU between {lo:.1%} and {hi:.0%} of the peak"
    if not peak_flops:
        return Check.skip("throughput is plausible", "no peak FLOP/s measured for this device", crit)
    mfu = tokens_per_sec * flops_per_token / peak_flops
    return Check.judge("throughput is plausible", lo <= mfu <= hi,
                       f"{tokens_per_sec:,.0f} tokens/s x {flops_per_token / 1e6:.2f} MFLOPs/token = MFU {mfu:.2%} "
                       f"of {peak_flops / 1e9:,.0f} GFLOP/s ({source})", crit)


def memory_plausible(peak_mem_gib: float, n_params: int) -> Check:
    """The measured peak memory must hold at least the weights, gradients and AdamW's two moments (16 bytes per
    fp32 parameter); less means the measurement missed the training process."""
    need = ADAMW_BYTES_PER_PARAM * n_params / 2**30
    return Check.judge("peak memory is plausible", peak_mem_gib >= need,
                       f"peak {peak_mem_gib:.3f} GiB vs {n_params:,} params x 16 B = {need:.4f} GiB",
                       "≥ parameters + gradients + AdamW state (16 B/param, fp32)")


def beats_unigram(perplexity: float, unigram_perplexity: float) -> Check:
    return Check.judge("beats the unigram baseline", perplexity < unigram_perplexity,
                       f"perplexity {perplexity:.1f} vs unigram {unigram_perplexity:.1f}", "lower")


def sample_real_words(share: float, n_words: int, threshold: float) -> Check:
    """Share of the sample's words that occur in the training text (a babbling model invents words)."""
    return Check.judge("the sample is made of real words", n_words > 0 and share >= threshold,
                       f"{share:.0%} of its {n_words} words occur in the training text", f"≥ {threshold:.0%}")


def stabilisation_shown(high_lr: float | None, bar: float, unprotected: list[float | None],
                        protected: list[float | None], swept: list[float], skip_reason: str = "") -> Check:
    """At the first lr where the unprotected run (no warm-up, no clipping) breaks — diverges, or ends at or above
    ``bar`` (the unigram baseline minus a margin: it learned nothing beyond token frequencies) — it breaks on every
    seed, and the run with warm-up and clipping survives (finite, below ``bar``) on every seed. ≥ 2 seeds.
    ``skip_reason``: the profile's runs are too short to show it (the smoke profile); the numbers are still shown."""
    name = "the ablation shows what warm-up and clipping protect against"
    crit = (f">= 2 seeds; unprotected: NaN or ≥ {bar:.3f} (unigram - margin) on every seed; protected: finite and "
            "below it on every seed")

    def fmt(x: float | None) -> str:
        return "diverged" if x is None else f"{x:.3f}"

    if skip_reason:
        measured = (f"at lr {high_lr:g}: unprotected {', '.join(map(fmt, unprotected))}; protected "
                    f"{', '.join(map(fmt, protected))}" if high_lr is not None else f"no lr of {swept} broke the run")
        return Check.skip(name, skip_reason, crit, measured)
    if high_lr is None:
        return Check.judge(name, False, f"no lr of {swept} broke the unprotected run: extend ablation.high_lrs", crit)
    broke = all(x is None or x >= bar for x in unprotected)
    survived = all(x is not None and x < bar for x in protected)
    ok = len(unprotected) >= 2 and len(protected) >= 2 and broke and survived
    return Check.judge(name, ok, f"at lr {high_lr:g}: unprotected {', '.join(map(fmt, unprotected))}; protected "
                       f"{', '.join(map(fmt, protected))} (bar {bar:.3f})", crit)


def lr_search_inside(searches: dict[str, tuple[float, list[float]]]) -> Check:
    """Each lr search's best lr has a tried lr on both sides (it is not at an edge of its grid)."""
    ok = bool(searches) and all(grid[0] < best < grid[-1] for best, grid in searches.values())
    return Check.judge("tuned lrs lie inside their grids", ok,
                       "; ".join(f"{k}: best {best:g} in [{', '.join(f'{x:g}' for x in grid)}]"
                                 for k, (best, grid) in searches.items()),
                       "best lr strictly between the smallest and largest lr tried (selected on held-out train tokens)")


def ladder_beats_baseline(cmp: Comparison, baseline: str, margin: float) -> Check:
    """The best rung's mean val loss over seeds is below the baseline rung's by ≥ ``margin`` and by more than the
    seed spread (``cmp`` compares the best rung with the baseline only)."""
    gain = cmp.means[baseline] - cmp.means[cmp.best] if cmp.best != baseline else 0.0
    ok = cmp.best != baseline and cmp.decided and gain >= margin and gain > 0
    return Check.judge("the ladder beats its baseline", ok,
                       f"best rung '{cmp.best}' {cmp.means[cmp.best]:.4f} vs '{baseline}' {cmp.means[baseline]:.4f}: "
                       f"{gain:.4f} nats/token lower, seed spread {cmp.spread:.4f} ({cmp.min_seeds} seeds)",
                       f"lower by ≥ {margin} nats/token and by more than the seed spread, ≥ 2 seeds")


def bpe_speed(train_s: float, encode_mb_per_s: float, max_train_s: float, min_mb_per_s: float) -> Check:
    """The hand-written BPE's benchmark: training the vocabulary and encoding fast enough to be the week's tokenizer."""
    return Check.judge("hand-written BPE is fast enough", train_s <= max_train_s and encode_mb_per_s >= min_mb_per_s,
                       f"training {train_s:.1f} s, encoding {encode_mb_per_s:.2f} MB/s",
                       f"training ≤ {max_train_s:g} s and encoding ≥ {min_mb_per_s:g} MB/s")


def time_budget(pipeline_s: float, budget_s: float) -> Check:
    """Seconds from process start through corpus, tokenizer, pack, train, eval and the sample (the experiments after
    the pipeline are timed in the log's timings table, not here)."""
    return Check.judge("time budget (the pipeline)", pipeline_s <= budget_s,
                       f"{pipeline_s:.0f} s from process start to the sample", f"≤ {budget_s:.0f} s")


def export_matches(path: str, diff_gpt: float, diff_hf: float, atol: float = 1e-4) -> Check:
    """The Hugging Face export gives the checkpoint's logits, loaded back as the GPT and by ``from_pretrained``.

    The tolerance: the GPT reload is the same module with the same weights (0 expected); the HF twin computes the
    same fp32 arithmetic in another order (GPT-2's Conv1D, its own attention), a difference of rounding only."""
    return Check.judge("HF export reproduces the checkpoint", diff_gpt == 0.0 and diff_hf <= atol,
                       f"{path}: max |Δ logits| {diff_gpt:.1e} (load_hf), {diff_hf:.1e} (from_pretrained)",
                       f"0 for load_hf; ≤ {atol:g} for transformers' GPT2LMHeadModel (fp32 rounding)")
