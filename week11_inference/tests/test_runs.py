"""A measurement is a run: rows tagged with its run id, registered once, reused as recorded on the next call,
measured again in a new folder with fresh=True."""

from dataclasses import dataclass

from shared.results import read_runs
from week11_inference.runs import measure


@dataclass
class _Cfg:
    size: int = 3


def test_measure_registers_then_reuses_then_measures_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFS_RUNS_ROOT", str(tmp_path))
    calls = []

    def fn():
        calls.append(1)
        return [{"x": i, "answers": ["a", "b"]} for i in range(3)]

    first = measure("bench-x", "smoke", _Cfg(), fn, lambda rows: {"n": len(rows)})
    assert not first.reused
    assert [r["run_id"] for r in first.rows] == [first.run_id] * 3
    again = measure("bench-x", "smoke", _Cfg(), fn)
    assert again.reused
    assert again.rows == first.rows
    assert len(calls) == 1
    fresh = measure("bench-x", "smoke", _Cfg(), fn, fresh=True)
    assert not fresh.reused
    assert fresh.run_id != first.run_id
    assert len(calls) == 2
    registered = read_runs(tmp_path / "registry.jsonl")
    assert [r["run_id"] for r in registered] == [first.run_id, fresh.run_id]
    assert registered[0]["metrics"] == {"n": 3}
    assert (tmp_path / "week11" / "smoke").is_dir()
