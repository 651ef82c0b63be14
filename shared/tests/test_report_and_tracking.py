import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from shared.report import Check, WeeklyLog  # noqa: E402
from shared.repro import environment  # noqa: E402
from shared.results import append_run, read_runs  # noqa: E402
from shared.tracking import FileLogger, MetricLogger, format_step  # noqa: E402


def test_weekly_log_writes_markdown_with_checks_tables_and_plots(tmp_path):
    log = WeeklyLog("week99", "Week 99", tmp_path)
    log.header(environment(), "smoke", "python -m week99", {"wall clock (s)": "1.0"})
    log.section("Numbers")
    log.table(pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}), "numbers")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    log.plot(fig, "curve", "a curve")
    log.check("good", True, "1.0", "> 0")
    log.check("bad", False, "-1.0", "> 0")
    text = log.write().read_text()
    assert "## Checks: 1 PASS, 0 SKIP, 1 FAIL (of 2)" in text
    assert "PASS" in text.split("good")[1][:80]
    assert "FAIL" in text.split("bad")[1][:80]
    assert "![a curve](week99/curve.png)" in text
    assert (tmp_path / "week99" / "curve.png").stat().st_size > 1000
    assert pd.read_csv(tmp_path / "week99" / "numbers.csv").b.tolist() == [0.5, 0.25]
    assert not log.all_passed


def test_skip_is_reported_with_its_reason_and_never_as_pass(tmp_path):
    log = WeeklyLog("week99", "Week 99", tmp_path)
    log.check("measured", True, "1.0", "> 0")
    log.add(Check.skip("needs gpu", "needs a GPU", ">= 94%"))
    text = log.write().read_text()
    assert "## Checks: 1 PASS, 1 SKIP, 0 FAIL (of 2)" in text
    row = next(line for line in text.splitlines() if line.startswith("| needs gpu"))
    assert "SKIP (needs a GPU)" in row
    assert "PASS" not in row
    assert log.all_passed  # a SKIP with its reason does not fail the week
    assert not Check.skip("x", "why", "c").passed
    log.check("broken", False, "0", "> 0")
    assert not log.all_passed


def test_check_refuses_unknown_status_and_a_skip_without_reason():
    with pytest.raises(ValueError, match="PASS, FAIL or SKIP"):
        Check("x", "MAYBE", "1", "c")
    with pytest.raises(ValueError, match="reason"):
        Check("x", "SKIP", "1", "c")


def test_metric_logger_resume_drops_rows_after_the_checkpoint(tmp_path):
    lg = FileLogger(tmp_path, "run", 3, tensorboard=False)
    for step in range(1, 6):
        lg.log("train", step, 0, loss=1.0 / step)
    lg.log("val", 5, 1, acc=0.5)  # a new column appears later
    lg.flush()
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert list(df.columns) == ["run_id", "seed", "phase", "step", "epoch", "loss", "acc"]
    assert len(df) == 6
    assert (df.seed == 3).all()
    again = FileLogger(tmp_path, "run", 3, tensorboard=False)
    again.resume(step=3)
    again.flush()
    assert pd.read_csv(tmp_path / "metrics.csv").step.tolist() == [1, 2, 3]


def test_tensorboard_gets_the_rows_at_flush_and_the_no_op_logger_writes_nothing(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lg = FileLogger(tmp_path / "a", "run", 0)
    lg.log("train", 1, 0, loss=2.0)
    lg.log("train", 2, 0, loss=1.0)
    assert not (tmp_path / "a" / "tb").exists()  # TensorBoard's import waits for the first flush
    lg.close()
    events = EventAccumulator(str(tmp_path / "a" / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.0), (2, 1.0)]
    null = MetricLogger()
    null.resume(0)
    null.log("train", 1, loss=1.0)
    null.close()
    assert list(tmp_path.iterdir()) == [tmp_path / "a"]


def test_format_step_is_the_fixed_line():
    assert format_step(10, {"loss": 0.5, "lr": 0.1}) == "step 10 | loss 0.5000 | lr 1.00e-01"
    line = format_step(100, {"loss": 4.25, "lr": 1e-3, "dt": 0.0123, "tokens_per_sec": 5314.2, "mfu": 0.363}, 1200)
    assert line == "step 100/1200 | loss 4.2500 | lr 1.00e-03 | dt 12.3ms | tok/s 5,314 | mfu 36.3%"


def test_results_registry_appends_one_line_per_run(tmp_path):
    path = tmp_path / "registry.jsonl"
    append_run({"run_id": "a", "week": "week01"}, path)
    append_run({"run_id": "b", "week": "week02"}, path)
    assert [r["run_id"] for r in read_runs(path)] == ["a", "b"]
    assert read_runs(path, week="week02") == [{"run_id": "b", "week": "week02"}]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_finish_writes_the_log_and_returns_the_exit_code(tmp_path, capsys):
    from shared.report import WeeklyLog, log_dir

    log = WeeklyLog("week99", "t", tmp_path)
    log.check("a", True, "1", "> 0")
    assert log.finish(1.5) == 0
    assert (tmp_path / "week99.md").is_file()
    assert "(checks: 1 PASS, 0 SKIP, 0 FAIL (of 1), 1.5 s)" in capsys.readouterr().out
    log.check("b", False, "0", "> 0")
    assert log.finish(2.0) == 1
    assert log_dir("week99", "smoke").parts[-3:] == ("week99", "smoke", "log")  # CI never writes into docs/
    assert log_dir("week99", "cpu") != log_dir("week99", "smoke")


def test_a_pipe_in_a_cell_or_header_is_escaped_not_a_new_column(tmp_path):
    log = WeeklyLog("week99", "pipes", tmp_path)
    log.table(pd.DataFrame({"|Δ| (max)": ["a |b| c", "d"], "n": [1, 2]}), "pipes")
    rows = [line for line in log.render().splitlines() if line.startswith("|")]
    # every row of the table has the header's cell count: 2 columns -> 3 unescaped pipes
    counts = {len([i for i, ch in enumerate(r) if ch == "|" and (i == 0 or r[i - 1] != "\\")]) for r in rows}
    assert counts == {3}
    assert "a \\|b\\| c" in log.render()
