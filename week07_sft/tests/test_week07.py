"""Week 7: profiles load and bad values are refused; the whole smoke week (slow: CI runs it as `make week07
PROFILE=smoke`) writes a log whose every check is PASS or SKIP."""

import pytest

from shared.config import ConfigError
from shared.data.prompts import TEMPLATES
from shared.testing import mirror_has
from week07_sft import config


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_profiles_load(profile):
    cfg = config.load(profile)
    assert cfg.sft.template in TEMPLATES
    assert cfg.eval_set.sha256, "the frozen eval set's hash is pinned"


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="base.source"):
        config.load("smoke", ["base.source=hub"])
    with pytest.raises(ConfigError):
        config.load("smoke", ["sft.max_length=1"])


@pytest.mark.slow
@pytest.mark.skipif(not mirror_has("alpaca/alpaca_5000.json"), reason="needs the dataset mirror")
def test_the_smoke_week_writes_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFS_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("AIFS_MODELS_ROOT", str(tmp_path / "models"))
    monkeypatch.setenv("AIFS_LOGS_ROOT", str(tmp_path / "logs"))
    from week07_sft.__main__ import main

    assert main(["--profile", "smoke"]) == 0
    text = (tmp_path / "runs" / "week07" / "smoke" / "log" / "week07.md").read_text()
    checks = text.split("## Checks")[1].split("\n## ")[0]
    assert " 0 FAIL " in checks.splitlines()[0]
    rows = [r for r in checks.splitlines() if r.startswith("|")]
    assert rows
    assert not [r for r in rows if r.strip().strip("|").split("|")[-1].strip() == "FAIL"]
    assert (tmp_path / "runs" / "harness.csv").is_file()
    assert (tmp_path / "models" / "week07" / "sft-v1" / "meta.json").is_file()
