"""Week 3's experiments: the baseline, the four ablations, the BatchNorm eval check, the error analysis."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, replace

import torch
from torch.utils.data import TensorDataset

from shared.analysis import confusion_matrix, predict
from shared.data.cifar import CIFARSplits, random_crop_flip
from shared.data.sampling import batch_loader
from shared.paths import REPO_ROOT
from shared.rundir import start_run
from shared.tracking import console
from shared.train.classify import ClassifierRun, fit_classifier
from shared.train.trainer import evaluate
from week03_cifar import config
from week03_cifar.config import Week03Config

WEEK = "week03"


@dataclass
class Variant:
    """One trained configuration of an ablation, with the file it came from."""

    group: str
    name: str
    source: str  # config file, relative to the repository
    seed: int  # train.seed of this run (each variant runs once per experiment.seeds)
    cfg: Week03Config
    run: ClassifierRun
    train_eval: dict[str, float]  # loss/acc on un-augmented training images


def augmenter(cfg: Week03Config):
    """The training-batch transform of ``cfg`` (crop + flip on the device), or None."""
    return functools.partial(random_crop_flip, padding=4) if cfg.data.augment else None


def train_subset(splits: CIFARSplits, n: int) -> TensorDataset:
    """The first ``n`` training images, without augmentation (for train accuracy / the train-val gap)."""
    x, y = splits.train.tensors
    return TensorDataset(x[:n], y[:n])


class Runner:
    """Trains configurations once each: identical configs (same hash) share a run directory, so the
    baseline is trained once even though it is a variant (seed ``train.seed``) of several ablations."""

    def __init__(self, profile: str, overrides: list[str], splits: CIFARSplits) -> None:
        self.profile, self.overrides, self.splits = profile, overrides, splits
        self.cache: dict[str, tuple[ClassifierRun, dict[str, float]]] = {}

    def fit(self, cfg: Week03Config) -> tuple[ClassifierRun, dict[str, float]]:
        run = start_run(WEEK, cfg.model.name, self.profile, cfg)
        if run.run_id in self.cache:
            return self.cache[run.run_id]
        console(f"\n== {run.run_id}")
        out = fit_classifier(run, cfg.model, cfg.train, self.splits.train, self.splits.val, cfg.data.batch_size,
                             cfg.data.eval_batch_size, train_transform=augmenter(cfg))
        sub = train_subset(self.splits, cfg.experiment.train_eval_size)
        train_eval = evaluate(out.model, batch_loader(sub, cfg.data.eval_batch_size, shuffle=False), out.device)
        self.cache[run.run_id] = (out, train_eval)
        return out, train_eval

    def baseline(self) -> tuple[Week03Config, ClassifierRun, dict[str, float]]:
        cfg = config.load(self.profile, self.overrides)
        return (cfg, *self.fit(cfg))

    def ablation(self, group: str) -> list[Variant]:
        """Every variant file of ``group`` once per ``experiment.seeds`` (file order, then seed order)."""
        out = []
        for path in config.ablation_files(group):
            cfg = config.load(self.profile, self.overrides, variant=path)
            for seed in cfg.experiment.seeds:
                seeded = replace(cfg, train=replace(cfg.train, seed=seed))
                run, train_eval = self.fit(seeded)
                out.append(Variant(group, path.stem, str(path.relative_to(REPO_ROOT)), seed, seeded, run, train_eval))
        return out


@dataclass
class EvalModeCheck:
    """BatchNorm behaviour of a trained model on ``n_images`` validation images, and what the project's
    ``evaluate`` (the loop's val pass) does with it."""

    n_images: int
    max_train_eval_diff: float  # max |batch-statistics logits - eval-mode logits| (dropout off in both)
    eval_repeat_equal: bool  # two eval-mode passes give identical logits
    running_stats_unchanged: bool  # evaluate() leaves every BatchNorm's running mean/var/count untouched
    mode_restored: bool  # evaluate() hands the model back in the mode it got it (train)
    evaluate_loss: float  # shared.train.trainer.evaluate's loss on the images
    eval_mode_loss: float  # cross-entropy of the eval-mode (running statistics) logits
    train_mode_loss: float  # cross-entropy of the batch-statistics logits


def _bn_state(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in model.named_buffers() if n.rsplit(".", 1)[-1] in
            ("running_mean", "running_var", "num_batches_tracked")]


@torch.no_grad()
def check_eval_mode(run: ClassifierRun, splits: CIFARSplits, n: int = 256) -> EvalModeCheck:
    """Train-mode (batch statistics) vs eval-mode (running statistics) outputs of a copy of the model, and
    whether the project's ``evaluate`` computes the eval-mode numbers and leaves the running statistics alone."""
    model = copy.deepcopy(run.model)
    x, y = (t[:n].to(run.device) for t in splits.val.tensors)
    model.train()
    before = _bn_state(model)
    ev = evaluate(model, batch_loader(TensorDataset(x, y), len(y), shuffle=False), run.device)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, _bn_state(model), strict=True)) and len(before) > 0
    restored = model.training
    model.eval()
    a, b = model(x), model(x)
    for m in model.modules():  # batch statistics, dropout still off: the difference is BatchNorm's alone
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()
    t = model(x)  # this also moves the copy's running stats, which is why it is a copy
    ce = torch.nn.functional.cross_entropy
    return EvalModeCheck(len(y), (t - a).abs().max().item(), torch.equal(a, b), unchanged, restored,
                         ev["loss"], ce(a, y).item(), ce(t, y).item())


@dataclass
class ErrorAnalysis:
    """Test-set errors of one model, and the same confusions measured on training images."""

    cm_test: torch.Tensor  # (K, K)
    cm_train: torch.Tensor  # (K, K) on un-augmented training images
    wrong_idx: torch.Tensor  # indices of misclassified test images
    pred: torch.Tensor  # test predictions (N,)
    target: torch.Tensor  # test labels (N,)


def error_analysis(run: ClassifierRun, splits: CIFARSplits, cfg: Week03Config) -> ErrorAnalysis:
    """Predictions on the test split and on a training subset; the confusion matrices of both."""
    eb = cfg.data.eval_batch_size
    pred, target = predict(run.model, batch_loader(splits.test, eb, shuffle=False), run.device)
    sub = train_subset(splits, cfg.experiment.train_eval_size)
    tp, tt = predict(run.model, batch_loader(sub, eb, shuffle=False), run.device)
    k = len(splits.classes)
    wrong = (pred != target).nonzero().flatten()
    return ErrorAnalysis(confusion_matrix(pred, target, k), confusion_matrix(tp, tt, k), wrong, pred, target)


def denormalise(x: torch.Tensor, splits: CIFARSplits) -> torch.Tensor:
    """Normalised (N, 3, H, W) -> [0, 1] pixels for display."""
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    return x.cpu() * std + mean

