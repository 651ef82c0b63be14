"""Week 11 as a whole: bad config values named, a missing GPT export names the command that writes it, and the smoke
profile end to end (slow: CI runs it as `make week11 PROFILE=smoke`)."""

import pytest

from shared.config import ConfigError
from week11_inference import config
from week11_inference.__main__ import main
from week11_inference.experiments import load_subject


@pytest.fixture
def roots(tmp_path, monkeypatch):
    for var in ("AIFS_RUNS_ROOT", "AIFS_MODELS_ROOT", "AIFS_LOGS_ROOT"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    return tmp_path


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="stages has \\['decode'\\]"):
        config.load("smoke", ["stages=[decode]"])
    with pytest.raises(ConfigError, match="engine.new_tokens"):
        config.load("smoke", ["engine.new_tokens=0"])
    with pytest.raises(ConfigError, match="export.batch"):
        config.load("smoke", ["export.batch=1"])


def test_an_unknown_serving_engine_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown engine 'tgi'. Choices: vllm, llama_cpp"):
        config.load("smoke", ["serving.engines=[tgi]"])


def test_a_missing_gpt_export_names_the_command(roots):
    with pytest.raises(FileNotFoundError, match="make week10 PROFILE=cpu"):
        load_subject(config.load("cpu"))


@pytest.mark.slow
def test_the_smoke_profile_writes_its_log_and_memo(roots):
    code = main(["--profile", "smoke", "stages=[cache_check,engine,export]", "serving.engines=[]", "chat.browser=false"])
    log = (roots / "aifs_runs_root" / "week11" / "smoke" / "log" / "week11.md").read_text()
    assert code == 0, log
    assert "cache outputs match no-cache" in log
    assert (roots / "aifs_runs_root" / "week11" / "smoke" / "log" / "week11" / "inference-memo.md").is_file()
