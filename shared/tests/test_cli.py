"""The week command line: an explained error prints its message and exits 2; a bug keeps its traceback."""

import pytest

from shared.cli import run_week
from shared.config import ConfigError


def _fails(exc):
    def main():
        raise exc
    return main


def test_an_explained_error_prints_its_fix_without_a_traceback(capsys, monkeypatch):
    monkeypatch.delenv("AIFS_TRACEBACK", raising=False)
    assert run_week(_fails(ConfigError("unknown config key 'train.lrr'. Fix the spelling"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'train.lrr'")
    assert "Traceback" not in err
    assert run_week(lambda: 0) == 0


def test_a_bug_or_aifs_traceback_keeps_the_traceback(monkeypatch):
    monkeypatch.delenv("AIFS_TRACEBACK", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_week(_fails(ZeroDivisionError("a bug")))
    monkeypatch.setenv("AIFS_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        run_week(_fails(ConfigError("bad key")))
