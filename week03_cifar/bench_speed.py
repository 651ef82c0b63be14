"""The speed track: ResNet-9, one-cycle schedule, label smoothing; epochs and seconds to the test-accuracy target.

``python -m week03_cifar.bench_speed [--profile P] [key=value ...]`` runs it alone and writes
``runs/week03/<profile>/speed.csv``; ``make week03`` runs it as part of the week and puts the table in the log.

Timing: ``train_time_s`` is the Trainer's training-loop time (forward, backward, optimizer, on-device
augmentation), summed over epochs up to the one that reached the target. It excludes loading the
data from disk, building the model and the per-epoch test evaluation.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace

import pandas as pd
from torch.utils.data import TensorDataset

from shared.cli import parse_week_args
from shared.data.cifar import CIFARSplits, load_cifar10
from shared.device import resolve_device
from shared.paths import runs_root
from shared.rundir import start_run
from shared.tracking import console
from shared.train.classify import fit_classifier, to_device
from week03_cifar import config
from week03_cifar.config import SpeedRunConfig, Week03Config
from week03_cifar.experiments import WEEK, augmenter


def run_seed(cfg: Week03Config, profile: str, splits: CIFARSplits, seed: int) -> dict:
    """Train the speed-track model once (test split as the per-epoch evaluation); one CSV row."""
    sp = cfg.speed
    train = replace(copy.deepcopy(sp.train), seed=seed)
    n_train = min(sp.train_subset or len(splits.train), len(splits.train))
    steps = train.epochs * (n_train // sp.batch_size + (n_train % sp.batch_size > 0))
    train.warmup_steps = max(1, int(sp.warmup_frac * steps))
    x, y = splits.train.tensors
    subset = TensorDataset(x[:n_train], y[:n_train])
    run = start_run(WEEK, f"speed-{sp.model.name}-seed{seed}", profile, SpeedRunConfig(cfg.data, sp, train))
    console(f"\n== speed track seed {seed}: {sp.model.name} width {sp.model.width}, {train.epochs} epochs -> {run.dir}")
    out = fit_classifier(run, sp.model, train, subset, splits.test, sp.batch_size, cfg.data.eval_batch_size,
                         train_transform=augmenter(cfg))
    val = out.metrics()
    val = val[val.phase == "val"].reset_index(drop=True)
    hit = val[val.acc >= sp.target_acc]
    return {
        "seed": seed, "epochs": int(val.epoch.max()), "train_images": n_train, "final_test_acc": float(val.acc.iloc[-1]),
        "best_test_acc": float(val.acc.max()),
        "epochs_to_target": int(hit.epoch.iloc[0]) if len(hit) else None,
        "time_to_target_s": float(hit.train_time_s.iloc[0]) if len(hit) else None,
        "train_time_s": float(val.train_time_s.iloc[-1]), "run_id": run.run_id,
    }


def speed_track(cfg: Week03Config, profile: str, splits: CIFARSplits) -> pd.DataFrame:
    """Every seed of ``cfg.speed.seeds``; the rows also go to ``runs/week03/<profile>/speed.csv``."""
    df = pd.DataFrame([run_seed(cfg, profile, splits, s) for s in cfg.speed.seeds])
    out = runs_root() / WEEK / profile / "speed.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return df


def main(argv: list[str] | None = None) -> int:
    profile, overrides = parse_week_args("week03_cifar.bench_speed", __doc__.splitlines()[0], argv)
    cfg = config.load(profile, overrides)
    device = resolve_device(cfg.speed.train.device)
    splits = load_cifar10(replace(cfg.data, train_subset=0))
    splits.train, splits.test = to_device(splits.train, device), to_device(splits.test, device)
    df = speed_track(cfg, profile, splits)
    console(df.to_string(index=False))
    return 0 if df.best_test_acc.mean() >= cfg.speed.target_acc else 1


if __name__ == "__main__":
    sys.exit(main())
