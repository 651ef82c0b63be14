"""Where each profile's weekly log goes: CPU logs at the top of docs/weekly-logs, GPU reference logs in gpu/,
smoke logs in the run folder only."""

from shared.report import log_dir


def test_cpu_logs_at_the_top_gpu_references_in_gpu_and_smoke_in_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFS_LOGS_ROOT", str(tmp_path / "logs"))
    monkeypatch.setenv("AIFS_RUNS_ROOT", str(tmp_path / "runs"))
    assert log_dir("week07", "cpu") == tmp_path / "logs"
    assert log_dir("week07", "gpu") == tmp_path / "logs" / "gpu"
    assert log_dir("week07", "smoke") == tmp_path / "runs" / "week07" / "smoke" / "log"  # CI never writes docs/
