import pytest

from shared.cli import PROFILES
from shared.config import ConfigError
from shared.stats import compare
from week01_scaffold import config
from week01_scaffold.__main__ import main
from week01_scaffold.report import classify_lrs


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile):
    cfg = config.load(profile)
    assert cfg.model.name == "softmax_regression"
    assert cfg.data.dataset == "mnist"
    assert len(cfg.experiment.seeds) == 3
    assert {0.1, 0.01, 0.001} <= set(cfg.experiment.lr_grid)


def test_cli_overrides_reach_the_config_and_bad_keys_are_named():
    assert config.load("smoke", ["train.lr=0.05"]).train.lr == 0.05
    with pytest.raises(ConfigError, match="train.lrate"):
        config.load("smoke", ["train.lrate=0.05"])


def test_lr_verdicts_are_relative_to_the_best_and_respect_the_seed_spread():
    got = classify_lrs(compare({1.0: [0.90, 0.901], 0.1: [0.92, 0.921], 0.01: [0.89, 0.891]}))
    assert got == {1.0: "overshoot", 0.1: "best", 0.01: "undershoot"}
    tie = classify_lrs(compare({1.0: [0.918, 0.921], 0.1: [0.92, 0.921], 0.01: [0.80, 0.81]}))
    assert tie == {1.0: "tie with best", 0.1: "tied best", 0.01: "undershoot"}


def test_week_runs_end_to_end_on_fake_mnist_and_writes_its_log(fake_mnist, aifs_dirs):
    args = ["--profile", "smoke", "data.dataset=fake_mnist", "data.val_size=100", "data.train_subset=0",
            "data.batch_size=32", "train.device=cpu", "train.epochs=2", "experiment.lr_grid=[30.0,0.1,0.0001]",
            "experiment.min_val_acc=0.5", "experiment.max_seed_std=0.1"]
    # Fake MNIST is separable at any lr >= 0.1, so no lr overshoots: the bracket check fails, and says so.
    assert main(args) == 1
    log = aifs_dirs["runs"] / "week01" / "smoke" / "log" / "week01.md"
    text = log.read_text()
    assert "## Checks: 6 PASS, 0 SKIP, 1 FAIL (of 7)" in text
    fails = [line for line in text.splitlines() if line.rstrip().endswith("| FAIL     |")]
    assert len(fails) == 1
    assert fails[0].startswith("| LR ablation brackets the best lr")
    assert "overshoot: none" in fails[0]
    for asset in ("baseline_curves.png", "lr_ablation.png", "seeds.csv", "lr_ablation.csv", "data_summary.csv"):
        assert (log.parent / "week01" / asset).is_file(), asset
    assert not (aifs_dirs["logs"] / "week01.md").exists()  # smoke never writes docs/weekly-logs
    registry = (aifs_dirs["runs"] / "registry.jsonl").read_text().splitlines()
    assert len(registry) == 9  # 3 seeds + 3 learning rates x 2 seeds

    # Running the same command again reuses the finished runs: nothing new is registered.
    assert main(args) == 1
    assert len((aifs_dirs["runs"] / "registry.jsonl").read_text().splitlines()) == 9
