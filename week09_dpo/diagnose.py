"""DPO's failure modes read off a run's periodic evals, not by eye: each detector compares the first eval (the
policy is the reference) with the last one.

- **likelihood displacement**: the chosen responses' summed log-prob falls by more than ``displacement_nats`` while
  the reward margin grows (Razin et al. 2024, https://arxiv.org/abs/2410.08847; Pal et al. 2024, "Smaug",
  https://arxiv.org/abs/2402.13228): the model prefers chosen over rejected by pushing both down;
- **verbosity**: the mean generated length grows by more than ``verbosity_ratio`` (Park et al. 2024,
  https://arxiv.org/abs/2403.19159);
- **collapse**: the repeated-trigram share of generations rises by more than ``repetition_rise``;
- **KL explosion**: the mean per-token KL to the reference on the held-out responses exceeds ``kl_explode``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MODES = ("likelihood displacement", "verbosity", "collapse", "KL explosion")


@dataclass(frozen=True)
class Thresholds:
    displacement_nats: float = 1.0
    verbosity_ratio: float = 1.5
    repetition_rise: float = 0.15
    kl_explode: float = 1.0


def diagnose(evals: Sequence[Mapping[str, float]], th: Thresholds) -> dict[str, dict[str, float | bool | str]]:
    """mode -> {"flag": bool, "value": the measured signal, "text": how it was measured}; a mode whose metric the
    evals lack (no generation probe) gets ``flag=False`` and ``value=nan``.

    Raises:
        ValueError: fewer than two evals (nothing to compare).
    """
    if len(evals) < 2:
        raise ValueError(f"diagnosing a run needs its first and last eval, got {len(evals)} eval(s)")
    a, b = evals[0], evals[-1]
    out: dict[str, dict[str, float | bool | str]] = {}
    drop = a["logps_chosen"] - b["logps_chosen"]
    grew = b["margin"] - a["margin"]
    out["likelihood displacement"] = {
        "flag": drop > th.displacement_nats and grew > 0, "value": drop,
        "text": f"chosen log-prob {a['logps_chosen']:.2f} → {b['logps_chosen']:.2f} nats ({-drop:+.2f}), margin "
                f"{a['margin']:+.3f} → {b['margin']:+.3f}"}
    if "gen_length" in a and "gen_length" in b:
        ratio = b["gen_length"] / max(a["gen_length"], 1e-9)
        out["verbosity"] = {"flag": ratio > th.verbosity_ratio, "value": ratio,
                            "text": f"generated length {a['gen_length']:.1f} → {b['gen_length']:.1f} tokens "
                                    f"(x{ratio:.2f})"}
        rise = b["gen_repetition"] - a["gen_repetition"]
        out["collapse"] = {"flag": rise > th.repetition_rise, "value": rise,
                           "text": f"repeated-trigram share {a['gen_repetition']:.3f} → {b['gen_repetition']:.3f}"}
    else:
        for m in ("verbosity", "collapse"):
            out[m] = {"flag": False, "value": math.nan, "text": "no generation probe"}
    out["KL explosion"] = {"flag": not (b["kl"] <= th.kl_explode), "value": b["kl"],
                           "text": f"KL to the reference {a['kl']:.4f} → {b['kl']:.4f} nats/token"}
    return out


def flagged(diag: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The modes a diagnosis flags, in :data:`MODES` order."""
    return [m for m in MODES if diag.get(m, {}).get("flag")]
