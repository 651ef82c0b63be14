"""What each week's headline result is: which runs (week, run-name pattern, profile cpu / gpu), which numbers
(a registry metric, or a column of a committed CSV of the week's log), and the sentence stated from those numbers.

:mod:`week12_portfolio.results` selects the rows and writes ``RESULTS.md``; this file only defines. Week 12's
headline is the flagship pipeline: fill :data:`FLAGSHIP` (one :class:`Headline`) once its runs register.

Selection rules (implemented in ``results.py``): a registry run id that appears more than once (a run re-registered
after its folder was removed) counts with its latest line; ``pick="latest"`` keeps, per run name, the run id that
finished last (the current config of that name); ``pick="max"``/``"min"`` keeps, per group (the pattern's named
group ``g``, else the whole item), the run id with the highest / lowest value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CsvSource:
    """A number read from a committed CSV of the week's log (``docs/weekly-logs/weekNN/<file>``; for the GPU column,
    ``docs/weekly-logs/gpu/weekNN/<file>``).

    The run a CSV row belongs to comes from ``run_col`` (a run id), else ``name_col`` (a run name: the latest
    registry run of that name), else the item's pattern (exactly one run name must match it).
    """

    file: str
    column: str
    run_col: str | None = None
    name_col: str | None = None
    where: tuple[tuple[str, str], ...] = ()  # keep rows whose column equals the value (as text)
    keep: tuple[str, ...] = ()  # more numeric columns carried into the row, for the sentence or the plot


@dataclass(frozen=True)
class Item:
    """One kind of number in a week's table: one row per selected run (or per group with ``pick`` max / min).

    ``label`` may use ``{name}`` (the run name) and ``{g}`` (the pattern's group). Exactly one of ``metric`` (a
    dotted path into the registry row's ``metrics``) and ``csv`` is set. ``gpu_csv`` says where a GPU reference
    log holds the same number for a registry metric (used when no GPU-profile registry row exists).
    """

    runs: str
    label: str
    metric: str = ""
    csv: CsvSource | None = None
    gpu_csv: CsvSource | None = None
    pick: str = "latest"
    fmt: str = ".4f"
    axis: str = ""  # the plot's axis label

    def __post_init__(self) -> None:
        if bool(self.metric) == (self.csv is not None):
            raise ValueError(f"item {self.label!r}: set exactly one of metric and csv")
        if self.pick not in ("latest", "max", "min"):
            raise ValueError(f"item {self.label!r}: pick {self.pick!r} is not one of latest, max, min")

    @property
    def source(self) -> str:
        """Where the number comes from, for the table's ``from`` column (links are added by the writer)."""
        return f"registry `metrics.{self.metric}`" if self.metric else f"`{self.csv.file}` `{self.csv.column}`"


@dataclass
class Cell:
    """One number and the run it cites."""

    value: float
    run_id: str
    config_hash: str
    git_commit: str  # full hash as recorded ('' when unknown)
    git_dirty: bool
    hardware: str
    origin: str  # "registry" or the GPU reference log's path
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run name: the run id's last part without ``-<config hash>``."""
        return self.run_id.rsplit("/", 1)[-1].rsplit("-", 1)[0]

    @property
    def cites(self) -> bool:
        """Whether the cell names its run id, config hash, a 12-character commit and the hardware."""
        return bool(self.run_id and self.config_hash and len(self.git_commit) >= 12 and self.hardware)


@dataclass
class Row:
    """One line of a week's table: a CPU cell and a GPU cell (or the reason there is none)."""

    item: int  # index into the headline's items
    key: str  # run name, or the group for pick max / min
    label: str
    cpu: Cell
    gpu: Cell | None = None
    gpu_note: str = ""


@dataclass(frozen=True)
class Headline:
    """A week's headline: its items, the sentence stated from the rows, and optionally its own plot."""

    week: str  # "01"
    title: str
    items: tuple[Item, ...]
    summary: Callable[[Sequence[Row]], str]
    plot: Callable[[object, Sequence[Row]], None] | None = None  # (matplotlib figure, rows); default: dots per axis


def value(v: float, spec: str) -> str:
    """``v`` formatted by ``spec`` ("pct": a percentage with 2 decimals; else a format spec such as ".4f")."""
    return f"{100 * v:.2f}%" if spec == "pct" else format(v, spec)


def cells(rows: Sequence[Row], item: int, side: str = "cpu") -> dict[str, Cell]:
    """``key -> cell`` of one item's rows on one side ("cpu" or "gpu"; rows without a GPU value are left out)."""
    out = {}
    for r in rows:
        c = r.cpu if side == "cpu" else r.gpu
        if r.item == item and c is not None:
            out[r.key] = c
    return out


def _sides(rows: Sequence[Row]) -> list[tuple[str, str]]:
    return [("cpu", "On CPU")] + ([("gpu", "On the GPU")] if any(r.gpu for r in rows) else [])


def _no_gpu(rows: Sequence[Row]) -> str:
    return "" if any(r.gpu for r in rows) else " No GPU run is recorded for this week."


def _spread(xs: Sequence[float]) -> str:
    return f"mean {100 * sum(xs) / len(xs):.2f}% over {len(xs)} seeds (range {100 * (max(xs) - min(xs)):.2f} pp)"


def _week01(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        acc = [c.value for c in cells(rows, 0, side).values()]
        if acc:
            parts.append(f"{where}, softmax regression on MNIST reaches a best val accuracy of {_spread(acc)}.")
    return " ".join(parts) + _no_gpu(rows)


def _week02(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        loss, acc = cells(rows, 0, side), cells(rows, 1, side)
        for model in ("softmax", "cnn"):
            one, ddp = f"{model}-single-ws1", f"{model}-ddp-ws2"
            if one in loss and ddp in loss and one in acc and ddp in acc:
                d = abs(loss[ddp].value - loss[one].value)
                parts.append(f"{where}, {model}: DDP on 2 processes ends at val loss {loss[ddp].value:.4f} vs "
                             f"{loss[one].value:.4f} in one process (|Δ| {d:.1e}), val accuracy "
                             f"{value(acc[ddp].value, 'pct')} vs {value(acc[one].value, 'pct')}.")
    return (" ".join(parts) or "No single-process / DDP pair of the same model is in the table.") + _no_gpu(rows)


def _week03(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        best, speed = cells(rows, 0, side), list(cells(rows, 1, side).values())
        for c in best.values():
            parts.append(f"{where}, the best cnn_small run (`{c.run_id}`) reaches a val accuracy of "
                         f"{value(c.value, 'pct')}.")
        if speed:
            mean = sum(c.value for c in speed) / len(speed)
            parts.append(f"The ResNet-9 speed track reaches a best test accuracy of {value(mean, 'pct')} "
                         f"(mean over {len(speed)} seed{'s' if len(speed) > 1 else ''}).")
    return " ".join(parts) + _no_gpu(rows)


def _week04(rows: Sequence[Row]) -> str:
    parts = [f"{where}, the hand-written char-level GPT ends at a val loss of {c.value:.4f} nats/char "
             f"(`{c.run_id}`)." for side, where in _sides(rows) for c in cells(rows, 0, side).values()]
    return " ".join(parts) + _no_gpu(rows)


def _week05(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        ppl, loss = cells(rows, 0, side), cells(rows, 1, side)
        for key, c in ppl.items():
            tail = f" (val loss {loss[key].value:.4f} nats/token)" if key in loss else ""
            parts.append(f"{where}, the pre-training pipeline's GPT reaches a val perplexity of {c.value:.2f}{tail}.")
    return " ".join(parts) + _no_gpu(rows)


_N = "N'"  # the IsoFLOP table's matmul-parameter column


def _week06(rows: Sequence[Row]) -> str:
    from shared.scaling import FitError, fit_scaling

    parts = []
    for side, where in _sides(rows):
        budgets: dict[float, list[Cell]] = {}
        for c in cells(rows, 0, side).values():
            budgets.setdefault(c.extra["budget C"], []).append(c)
        if not budgets:
            continue
        best = [min(cs, key=lambda c: c.value) for _, cs in sorted(budgets.items())]
        parts.append(f"{where}, the lowest val loss per FLOP budget: " + "; ".join(
            f"C = {c.extra['budget C']:.3g}: {c.name.rsplit('-', 1)[-1]} (N' = {c.extra[_N]:,.0f}), {c.value:.4f}"
            for c in best) + ".")
        try:
            fit = fit_scaling({b: [(c.extra[_N], c.value) for c in cs] for b, cs in budgets.items()}, n_boot=0)
        except FitError as e:
            parts.append(f"No scaling law fits these runs: {e}.")
            continue
        left = f" (left out, no minimum: C = {', '.join(f'{b:.3g}' for b, _ in fit.excluded)})" if fit.excluded else ""
        parts.append(f"The IsoFLOP parabolas' minima give N_opt ∝ C^{fit.n_opt.exponent:.3f} and "
                     f"D_opt ∝ C^{fit.d_opt.exponent:.3f} from {len(fit.curves)} budgets{left} (point fit; the "
                     "bootstrap interval is in the week's log).")
    return " ".join(parts) + _no_gpu(rows)


def _isoflop_plot(fig: object, rows: Sequence[Row]) -> None:
    ax = fig.subplots()
    for side, marker in (("cpu", "o-"), ("gpu", "s--")):
        budgets: dict[float, list[Cell]] = {}
        for c in cells(rows, 0, side).values():
            budgets.setdefault(c.extra["budget C"], []).append(c)
        for b, cs in sorted(budgets.items()):
            cs = sorted(cs, key=lambda c: c.extra[_N])
            ax.plot([c.extra[_N] for c in cs], [c.value for c in cs], marker, label=f"{side.upper()} C = {b:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("N' (matmul parameters)")
    ax.set_ylabel("final val loss (nats/token)")
    ax.legend(fontsize=8)


def _week07(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        before, after = cells(rows, 0, side), cells(rows, 1, side)
        moves = [f"from {before[k].value:.4f} to {after[k].value:.4f} on {k} ({after[k].value - before[k].value:+.4f})"
                 for k in sorted(after) if k in before]
        if moves:
            parts.append(f"{where}, SFT moves the val loss " + " and ".join(moves) + ".")
        if "sft-v1" in after and "sft-v2" in after:
            d = after["sft-v2"].value - after["sft-v1"].value
            parts.append(f"The cleaned data v2 ends {abs(d):.4f} {'lower' if d < 0 else 'higher'} than v1.")
    return " ".join(parts) + _no_gpu(rows)


_METHOD = {"full": "full fine-tuning", "lora": "LoRA (hand-written)", "peft": "LoRA (peft)", "qlora": "QLoRA"}


def _week08(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        loss, mem = cells(rows, 0, side), cells(rows, 1, side)
        if loss:
            parts.append(f"{where}, after the same steps on the same data the val loss is " + ", ".join(
                f"{_METHOD.get(k, k)} {c.value:.4f}" for k, c in loss.items()) + ".")
        if "full" in mem:
            parts.append("Counted training-step memory: " + ", ".join(
                f"{_METHOD.get(k, k)} {c.value:,.1f} MiB" + ("" if k == "full" else
                                                             f" ({c.value / mem['full'].value:.0%} of full)")
                for k, c in mem.items()) + ".")
    return " ".join(parts) + _no_gpu(rows)


def _week09(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        acc, loss, kl = cells(rows, 0, side), cells(rows, 1, side), cells(rows, 2, side)
        for key, c in acc.items():
            n = c.extra.get("n")
            pairs = f" on {n:.0f} held-out pairs" if n is not None and math.isfinite(n) else " on held-out pairs"
            tail = ""
            if key in loss and key in kl:
                tail = (f"; its final val loss is {loss[key].value:.4f} at a KL to the reference of "
                        f"{kl[key].value:.4f} nats/token")
            parts.append(f"{where}, DPO's reward accuracy{pairs} is {value(c.value, 'pct')}{tail}.")
    return " ".join(parts) + _no_gpu(rows)


def _week10(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        loss = cells(rows, 0, side)
        pairs = [(k, k.replace("ddp", "fsdp2")) for k in loss if "-ddp" in k and k.replace("ddp", "fsdp2") in loss]
        if pairs:
            gaps = {k: abs(loss[f].value - loss[k].value) for k, f in pairs}
            worst = max(gaps, key=gaps.get)
            parts.append(f"{where}, DDP and FSDP2 end at the same val loss within {gaps[worst]:.1e} over "
                         f"{len(pairs)} pairs (largest gap: {worst} vs {worst.replace('ddp', 'fsdp2')}).")
    return (" ".join(parts) or "No DDP / FSDP2 pair is in the table.") + _no_gpu(rows)


def _week11(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        for n, load in enumerate(_W11_LOADS):
            got = [next(iter(cells(rows, 3 * n + k, side).values()), None) for k in range(3)]
            if all(got):
                e, s, h = (c.value for c in got)
                parts.append(f"{where}, with {load} lengths at 32 concurrent requests the continuous-batching engine "
                             f"serves {e:,.0f} tokens/s: {e / s:.2f}x static batching ({s:,.0f}) and {e / h:.2f}x "
                             f"Hugging Face generate ({h:,.0f}).")
    return (" ".join(parts) or "No complete engine / static / generate triple is in the table.") + _no_gpu(rows)


_W01_SEEDS = CsvSource("seeds.csv", "best val acc", run_col="run")
_W02 = {"val loss": CsvSource("correctness.csv", "val loss", run_col="run id"),
        "val acc": CsvSource("correctness.csv", "val acc", run_col="run id")}
_W10 = r"(lm|sft)-(ddp|fsdp2)(-accum)?"
_W11_LOADS = ("equal", "mixed")  # engine.csv's workloads: equal prompt/answer lengths, or mixed ones
_W11_SYSTEMS = {"engine": "continuous-batching engine", "static_batch": "static batching",
                "hf_generate": "Hugging Face generate"}

HEADLINES: dict[str, Headline] = {h.week: h for h in (
    Headline("01", "softmax regression on MNIST", (
        Item(r"baseline-seed\d+", "{name}: best val accuracy", metric="best_val.acc", gpu_csv=_W01_SEEDS, fmt="pct",
             axis="best val accuracy"),
    ), _week01),
    Headline("02", "one entrypoint for 1 or N processes (DDP)", (
        Item(r"(softmax|cnn)-(single-ws1|ddp-ws2)", "{name}: final val loss", metric="last_val.loss",
             gpu_csv=_W02["val loss"], axis="final val loss"),
        Item(r"(softmax|cnn)-(single-ws1|ddp-ws2)", "{name}: final val accuracy", metric="last_val.acc",
             gpu_csv=_W02["val acc"], fmt="pct", axis="final val accuracy"),
    ), _week02),
    Headline("03", "CIFAR-10: the best variant and the ResNet-9 speed track", (
        Item(r"cnn_small", "cnn_small, best run of the baseline and ablations: best val accuracy",
             metric="best_val.acc", pick="max", fmt="pct", axis="best val accuracy"),
        Item(r"speed-resnet9-seed\d+", "ResNet-9 speed track, {name}: best test accuracy", metric="best_val.acc",
             gpu_csv=CsvSource("speed.csv", "best_test_acc", run_col="run_id"), fmt="pct",
             axis="best test accuracy"),
    ), _week03),
    Headline("04", "a char-level GPT written by hand", (
        Item(r"char_gpt", "char-level GPT on Tiny Shakespeare: final val loss (nats/char)", metric="val_loss",
             axis="val loss (nats/char)"),
    ), _week04),
    Headline("05", "the pre-training pipeline: perplexity", (
        Item(r"gpt", "GPT, best checkpoint: val perplexity", fmt=".2f", axis="val perplexity",
             csv=CsvSource("perplexity.csv", "perplexity", where=(("model", "GPT, best checkpoint"),))),
        Item(r"gpt", "GPT, best checkpoint: val loss (nats/token)", axis="val loss (nats/token)",
             csv=CsvSource("perplexity.csv", "val loss (nats/token)", where=(("model", "GPT, best checkpoint"),))),
    ), _week05),
    Headline("06", "IsoFLOP sweep and the scaling-law fit", (
        Item(r"iso-(?P<g>[^-]+)-L\d+xC\d+", "{name}: final val loss", axis="final val loss (nats/token)",
             csv=CsvSource("isoflop.csv", "val loss", run_col="run", keep=("budget C", _N))),
    ), _week06, _isoflop_plot),
    Headline("07", "supervised fine-tuning of SmolLM2-135M", (
        Item(r"sft-v[12]", "{name}: val loss before SFT", axis="val loss",
             csv=CsvSource("runs.csv", "val loss before", run_col="run id")),
        Item(r"sft-v[12]", "{name}: val loss after SFT", metric="val_loss", axis="val loss"),
    ), _week07),
    Headline("08", "full fine-tuning vs LoRA vs QLoRA", (
        Item(r"full|lora|peft|qlora", "{name}: final val loss", metric="val_loss", axis="final val loss"),
        Item(r"full|lora|qlora", "{name}: counted training-step memory (MiB)", fmt=",.1f", axis="step memory (MiB)",
             csv=CsvSource("memory.csv", "total (MiB)", name_col="variant")),
    ), _week08),
    Headline("09", "DPO: held-out preference accuracy", (
        Item(r"dpo", "DPO: reward accuracy on all held-out pairs", fmt="pct", axis="held-out reward accuracy",
             csv=CsvSource("preference_accuracy.csv", "DPO reward acc (SFT: 0.5)", where=(("pairs", "all"),),
                           keep=("n",))),
        Item(r"dpo", "DPO: final val loss", metric="val_loss", axis="final val loss"),
        Item(r"dpo", "DPO: KL to the reference (nats/token)", metric="kl", axis="KL (nats/token)"),
    ), _week09),
    Headline("10", "DDP vs FSDP2: loss parity", (
        Item(_W10, "{name}: final val loss", metric="val_loss", axis="final val loss"),
    ), _week10),
    Headline("11", "inference engine throughput", tuple(
        Item(r"engine", f"{what}, 32 concurrent requests, {load} lengths: tokens/s", fmt=",.1f",
             axis="tokens/s at 32 concurrent requests",
             csv=CsvSource("engine.csv", "tokens_per_sec", run_col="run_id",
                           where=(("workload", load), ("concurrency", "32"), ("system", system))))
        for load in _W11_LOADS for system, what in _W11_SYSTEMS.items()), _week11),
)}

_W12_STAGES = ("pretrain", "sft", "lora")


def _week12(rows: Sequence[Row]) -> str:
    parts = []
    for side, where in _sides(rows):
        loss = {k: cells(rows, i, side) for i, k in enumerate(_W12_STAGES)}
        got = [(k, next(iter(v.values()))) for k, v in loss.items() if v]
        if got:
            parts.append(f"{where}, the val loss of each training stage on its own data: "
                         + ", ".join(f"{k} {c.value:.4f}" for k, c in got) + ".")
        acc = next(iter(cells(rows, len(_W12_STAGES), side).values()), None)
        if acc is not None:
            parts.append(f"DPO ends with a held-out reward accuracy of {value(acc.value, 'pct')} (the harness row of "
                         "every stage is in week 12's log).")
    return " ".join(parts) + _no_gpu(rows)


# Week 12's headline: the flagship pipeline's training stages (their harness rows live in week 12's log).
FLAGSHIP: Headline | None = Headline("12", "the flagship pipeline: pre-train → SFT → LoRA → DPO", (
    *(Item(rf"flagship-{k}", f"flagship {k}: final val loss", metric="val_loss", axis="final val loss")
      for k in _W12_STAGES),
    Item(r"flagship-dpo", "flagship DPO: held-out reward accuracy", metric="reward_accuracy", fmt="pct",
         axis="held-out reward accuracy"),
), _week12)


def headlines() -> dict[str, Headline]:
    """Every defined headline by week ("01" ...), week 12's included once :data:`FLAGSHIP` is set."""
    return {**HEADLINES, **({"12": FLAGSHIP} if FLAGSHIP is not None else {})}
