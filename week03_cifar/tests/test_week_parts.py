"""The parts of the whole-week test (slow, in test_week03.py) that `make test` keeps: one ablation group trains
every variant file and tabulates it with its file, and the speed track runs alone and writes speed.csv."""

import pandas as pd

from shared.data.cifar import CIFARConfig, load_cifar10
from shared.paths import REPO_ROOT
from week03_cifar import bench_speed, config, report
from week03_cifar.experiments import Runner
from week03_cifar.tests.test_week03 import FAKE


def test_an_ablation_group_trains_each_file_and_tabulates_it_with_its_config_file(fake_cifar):
    overrides = [*FAKE, "train.epochs=1"]
    splits = load_cifar10(CIFARConfig(dataset="fake_cifar10", val_size=100))
    variants = Runner("smoke", overrides, splits).ablation("optimizer")
    files = config.ablation_files("optimizer")
    assert {v.source for v in variants} == {str(f.relative_to(REPO_ROOT)) for f in files}
    table = report.ablation_table(variants, target=0.5)
    assert list(table.variant) == [f.stem for f in files]  # one row per file, in file order
    for src in table["config file"]:
        assert (REPO_ROOT / src.strip("`")).is_file()
    assert table["val acc"].between(0, 1).all()


def test_the_speed_track_alone_writes_speed_csv(fake_cifar, aifs_dirs):
    assert bench_speed.main(["--profile", "smoke", *FAKE]) in (0, 1)  # 1: the tiny run misses the 94% target
    speed = pd.read_csv(aifs_dirs["runs"] / "week03" / "smoke" / "speed.csv")
    sp = config.load("smoke", FAKE).speed
    assert list(speed.seed) == sp.seeds
    assert speed.best_test_acc.between(0, 1).all()
    assert (speed.epochs == sp.train.epochs).all()
