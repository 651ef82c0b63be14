"""Week 3: configs and ablation files, a short training run, the fit-signal logic, and the whole week on a fake CIFAR
(slow)."""

import math

import pandas as pd
import pytest
import torch

from shared.config import ConfigError
from shared.data.cifar import CIFARConfig, load_cifar10
from shared.paths import REPO_ROOT
from week03_cifar import config
from week03_cifar.__main__ import main
from week03_cifar.experiments import Runner
from week03_cifar.report import fit_signal

FAKE = ["data.dataset=fake_cifar10", "data.val_size=100", "data.train_subset=0", "data.test_subset=0",
        "data.eval_batch_size=100", "data.batch_size=32", "model.width=4", "speed.model.width=4",
        "speed.batch_size=64", "speed.train_subset=0", "experiment.train_eval_size=200", "experiment.curve_steps=10"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_and_ablation_file_loads(profile):
    base = config.load(profile)
    assert base.model.name == "cnn_small"
    assert base.speed.model.name == "resnet9"
    for group in config.ABLATIONS:
        files = config.ablation_files(group)
        assert len(files) >= (3 if group == "regularisation" else 2), group
        variants = [config.load(profile, variant=f) for f in files]
        assert len({str(v) for v in variants}) == len(variants), f"two {group} variants are the same config"


def test_an_unknown_key_in_an_ablation_file_names_the_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("model: {dropuot: 0.5}\n")
    with pytest.raises(ConfigError, match="dropuot"):
        config.load("smoke", variant=bad)


def test_two_epochs_on_a_512_image_subset_lower_the_loss(fake_cifar):
    overrides = [*FAKE, "train.epochs=2", "train.warmup_steps=2", "train.lr=0.05"]
    cfg = config.load("smoke", overrides)
    splits = load_cifar10(CIFARConfig(dataset="fake_cifar10", val_size=100))  # 400 train images
    splits.train = torch.utils.data.TensorDataset(*(t.repeat(2, *[1] * (t.dim() - 1))[:512] for t in splits.train.tensors))
    run, train_eval = Runner("smoke", overrides, splits).fit(cfg)
    m = run.metrics()
    loss = m[m.phase == "train"].loss
    assert run.result.epoch == 2
    assert abs(loss.iloc[0] - math.log(10)) < 0.5  # an untrained classifier starts near chance
    assert loss.tail(5).mean() < loss.head(5).mean()
    assert set(train_eval) >= {"loss", "acc"}


def test_fit_signal_calls_a_pair_confused_on_train_too_underfitting_else_overfitting():
    classes = ["cat", "dog"]
    pair = pd.Series({"true": "cat", "predicted": "dog", "true-class error rate": 0.30})
    confused_on_train = torch.tensor([[70, 30], [0, 100]])
    separated_on_train = torch.tensor([[99, 1], [0, 100]])
    assert fit_signal(pair, confused_on_train, classes).startswith("underfitting")
    assert fit_signal(pair, separated_on_train, classes).startswith("overfitting")


# The whole week (baseline, every ablation variant, error analysis, speed track): ~10 s on 2 idle cores, minutes on a
# loaded machine, so it is a slow test (`make test-slow`; CI's `make week03 PROFILE=smoke` runs it on real CIFAR-10).
# `make test` keeps its parts: test_week_parts.py (one ablation group tabulated with its files, the speed track
# alone), the training run above, and the check functions in test_checks.py.
@pytest.mark.slow
def test_the_whole_week_on_a_fake_cifar_writes_every_table(fake_cifar, aifs_dirs):
    main(["--profile", "smoke", *FAKE])
    log_dir = aifs_dirs["runs"] / "week03" / "smoke" / "log"
    text = (log_dir / "week03.md").read_text()
    assert "## Checks:" in text
    for group in config.ABLATIONS:
        table = pd.read_csv(log_dir / "week03" / f"ablation_{group}.csv")
        assert len(table) == len(config.ablation_files(group))
        for src in table["config file"]:
            assert (REPO_ROOT / src.strip("`")).is_file()
    assert "**Winner: `" in text or "**Tie.**" in text  # fake CIFAR's 100 val images: seeds often tie
    pairs = pd.read_csv(log_dir / "week03" / "confusion_pairs.csv")
    assert pairs["fit signal"].str.match("(under|over)fitting").all()
    assert (log_dir / "week03" / "errors.png").stat().st_size > 10_000
    speed = pd.read_csv(log_dir / "week03" / "speed.csv")
    assert list(speed.seed) == [0]
    assert 0 <= speed.best_test_acc.iloc[0] <= 1
    assert (aifs_dirs["runs"] / "week03" / "smoke" / "speed.csv").is_file()
