"""Week 1's experiments: the baseline over several seeds, the reload check, the LR ablation."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from shared.checkpoint import load_model
from shared.data.mnist import MNISTSplits
from shared.data.sampling import batch_loader
from shared.models import build_model
from shared.rundir import start_run
from shared.tracking import console
from shared.train.classify import ClassifierRun, fit_classifier
from shared.train.trainer import evaluate
from week01_scaffold.config import Week01Config

WEEK = "week01"


def run_one(cfg: Week01Config, name: str, profile: str, splits: MNISTSplits) -> ClassifierRun:
    """Train (or resume/reuse) one configuration in its own run directory."""
    run = start_run(WEEK, name, profile, cfg)
    console(f"\n== {name}: lr={cfg.train.lr} seed={cfg.train.seed} epochs={cfg.train.epochs} -> {run.dir}")
    return fit_classifier(
        run, cfg.model, cfg.train, splits.train, splits.val, cfg.data.batch_size, cfg.data.eval_batch_size
    )


def run_seeds(cfg: Week01Config, profile: str, splits: MNISTSplits) -> list[ClassifierRun]:
    """The baseline config once per seed in ``cfg.experiment.seeds``."""
    runs = []
    for seed in cfg.experiment.seeds:
        c = copy.deepcopy(cfg)
        c.train.seed = seed
        runs.append(run_one(c, f"baseline-seed{seed}", profile, splits))
    return runs


def run_lr_ablation(cfg: Week01Config, profile: str, splits: MNISTSplits) -> dict[float, list[ClassifierRun]]:
    """Each learning rate of the grid with each seed of ``lr_seeds``, for ``ablation_epochs`` (lr -> runs)."""
    runs: dict[float, list[ClassifierRun]] = {}
    for lr in cfg.experiment.lr_grid:
        for seed in cfg.experiment.lr_seeds:
            c = copy.deepcopy(cfg)
            c.train.lr, c.train.epochs, c.train.seed = lr, cfg.experiment.ablation_epochs, seed
            runs.setdefault(lr, []).append(run_one(c, f"lr-{lr:g}-seed{seed}", profile, splits))
    return runs


@dataclass
class ReloadResult:
    """The best checkpoint, reloaded into a fresh model and evaluated again."""

    recorded_val: dict[str, float]
    reloaded_val: dict[str, float]
    test: dict[str, float]
    best_step: int

    @property
    def exact(self) -> bool:
        return all(self.recorded_val[k] == self.reloaded_val[k] for k in ("loss", "acc"))


def reload_best(run: ClassifierRun, cfg: Week01Config, splits: MNISTSplits) -> ReloadResult:
    """Load the best checkpoint into a freshly built model; evaluate it on val (must match) and on test."""
    model = build_model(cfg.model).to(run.device)
    ck = load_model(model, run.result.checkpoints["best"])
    eb = cfg.data.eval_batch_size
    val = evaluate(model, batch_loader(splits.val, eb, shuffle=False), run.device)
    test = evaluate(model, batch_loader(splits.test, eb, shuffle=False), run.device)
    recorded = ck.progress["best"]
    return ReloadResult({k: recorded[k] for k in ("loss", "acc")}, val, test, ck.step)
