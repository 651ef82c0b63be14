"""RESULTS.md from a fake registry (written here) and the fixture logs in ``fixtures/results/`` (weeks 01 and 09,
and a GPU reference log for week 01)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from week12_portfolio import results
from week12_portfolio.headlines import HEADLINES, Cell, CsvSource, Headline, Item, Row, cells, value
from week12_portfolio.results import NO_GPU, NOT_ON_GPU, MissingRunsError, ResultsError, build

FIXTURE = Path(__file__).parent / "fixtures" / "results"
LINK = re.compile(r"\]\(([^)#\s]+)\)")


def rec(run_id: str, metrics: dict, *, commit: str = "0123456789abcdef0123", when: str = "2026-12-06T10:00:00+0000",
        hardware: str | None = None) -> dict:
    week, profile, last = run_id.split("/")
    name, h = last.rsplit("-", 1)
    return {"run_id": run_id, "week": week, "name": name, "profile": profile, "config_hash": h, "git_commit": commit,
            "git_dirty": False, "hardware": hardware or ("CPU (2 cores)" if profile == "cpu" else "1x Test GPU"),
            "seed": 0, "metrics": metrics, "train_time_s": 1.0, "wall_time_s": 2.0, "finished_at": when,
            "config": {"big": list(range(5))}}


def acc(a: float) -> dict:
    return {"best_val": {"acc": a, "loss": 0.3}, "last_val": {"acc": a, "loss": 0.3}}


BASE = [
    rec("week01/cpu/baseline-seed0-aaaa0000", acc(0.9228)),
    rec("week01/cpu/baseline-seed1-aaaa0001", acc(0.9222)),
    rec("week01/cpu/lr-1-seed0-aaaa0009", acc(0.91)),  # another run of the week: not in the headline
    # the same name under an older config: the later run id is the current one
    rec("week09/cpu/dpo-cccc0001", {"val_loss": 0.9, "kl": 0.5}, when="2026-12-06T09:00:00+0000"),
    rec("week09/cpu/dpo-cccc0002", {"val_loss": 0.6521, "kl": 0.1068}, when="2026-12-06T11:00:00+0000"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the fixture repository (so the test may write RESULTS.md and docs/results/ into it)."""
    shutil.copytree(FIXTURE, tmp_path / "repo")
    return tmp_path / "repo"


def registry(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "registry.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table_rows(md: str) -> list[list[str]]:
    """The data rows of every results table (cells split on unescaped pipes)."""
    out = []
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| result |"):
            out.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return out


def test_every_row_cites_its_run(tmp_path: Path, root: Path) -> None:
    res = build(registry(tmp_path, BASE), ["01", "09"], root)
    rows = table_rows(res.markdown)
    assert len(rows) == res.summary.rows == 5  # 2 seeds + preference accuracy, val loss, KL
    assert res.summary.rows_citing == 5
    assert res.summary.weeks == ["01", "09"]
    assert res.summary.missing == {}
    by_id = {r["run_id"]: r for r in BASE}
    for row in rows:
        run_id = row[4].strip("`")
        assert run_id in by_id, row
        assert row[5] == f"`{by_id[run_id]['config_hash']}`"
        assert row[6] == f"`{by_id[run_id]['git_commit'][:12]}`"
        assert row[7] == by_id[run_id]["hardware"]
    assert "week09/cpu/dpo-cccc0002" in res.summary.cited_runs
    assert "week09/cpu/dpo-cccc0001" not in res.summary.cited_runs  # the older config of the same name
    assert "week01/cpu/lr-1-seed0-aaaa0009" not in res.summary.cited_runs


def test_numbers_and_sentences_come_from_the_data(tmp_path: Path, root: Path) -> None:
    md = build(registry(tmp_path, BASE), ["01", "09"], root).markdown
    rows = {r[0]: r for r in table_rows(md)}
    assert rows["baseline-seed0: best val accuracy"][1] == "92.28%"
    assert rows["DPO: reward accuracy on all held-out pairs"][1] == "67.00%"  # the CSV's 'all' row, not another
    assert rows["DPO: final val loss"][1] == "0.6521"
    assert "mean 92.25% over 2 seeds (range 0.06 pp)" in md  # (0.9228 + 0.9222) / 2, 0.9228 - 0.9222
    assert "reward accuracy on 103 held-out pairs is 67.00%" in md


def test_missing_runs_raise_an_error_naming_week_pattern_and_registry(tmp_path: Path, root: Path) -> None:
    reg = registry(tmp_path, [r for r in BASE if r["week"] != "week01"])
    with pytest.raises(MissingRunsError) as e:
        build(reg, ["01", "09"], root)
    msg = str(e.value)
    assert "week 01" in msg
    assert r"baseline-seed\d+" in msg
    assert str(reg) in msg
    assert "week 09" not in msg  # week 9 is complete
    # not strict: the week is left out and named, never a blank row
    res = build(reg, ["01", "09"], root, strict=False)
    assert res.summary.weeks == ["09"]
    assert "week 01" in res.summary.missing["01"]
    assert "baseline-seed" not in res.markdown


def test_csv_headline_needs_its_run_in_the_registry(tmp_path: Path, root: Path) -> None:
    reg = registry(tmp_path, [r for r in BASE if r["week"] != "week09"])
    with pytest.raises(MissingRunsError, match=r"week 09: the run behind .*preference_accuracy.csv.*'dpo'.*registry"):
        build(reg, ["09"], root)


def test_csv_value_refused_when_the_log_does_not_cite_the_run(tmp_path: Path, root: Path) -> None:
    newer = rec("week09/cpu/dpo-cccc0003", {"val_loss": 0.5, "kl": 0.2}, when="2026-12-07T00:00:00+0000")
    with pytest.raises(MissingRunsError, match=r"does not cite week09/cpu/dpo-cccc0003.*regenerate the week's log"):
        build(registry(tmp_path, [*BASE, newer]), ["09"], root)


def test_gpu_column_not_run_without_gpu_rows_and_a_value_with_one(tmp_path: Path, root: Path) -> None:
    shutil.rmtree(root / "docs/weekly-logs/gpu")
    rows = table_rows(build(registry(tmp_path, BASE), ["01"], root).markdown)
    assert [r[2] for r in rows] == [NO_GPU, NO_GPU]
    assert [r[8] for r in rows] == ["—", "—"]
    gpu = rec("week01/gpu/baseline-seed0-dddd0000", acc(0.9301), commit="abcdefabcdef0000", hardware="1x H100")
    res = build(registry(tmp_path, [*BASE, gpu]), ["01"], root)
    rows = table_rows(res.markdown)
    assert rows[0][2] == "93.01%"
    assert rows[0][8] == "`week01/gpu/baseline-seed0-dddd0000`, config `dddd0000`, commit `abcdefabcdef`, 1x H100"
    assert rows[1][2] == NOT_ON_GPU  # a GPU ran this week, but not this seed
    assert "week01/gpu/baseline-seed0-dddd0000" in {r["run_id"] for r in res.evidence}
    assert res.summary.rows_citing == 2


def test_gpu_column_from_the_gpu_reference_log(tmp_path: Path, root: Path) -> None:
    res = build(registry(tmp_path, BASE), ["01"], root)
    rows = table_rows(res.markdown)
    assert [r[2] for r in rows] == ["92.34%", "92.30%"]  # gpu/week01/seeds.csv
    assert rows[0][8].startswith("`week01/gpu/baseline-seed0-bbbb0000`, config `bbbb0000`, commit `fedcba987654`, "
                                 "1x Test GPU 80GB (79.2 GiB), [GPU reference log](docs/weekly-logs/gpu/week01.md)")
    assert res.summary.rows_citing == 2
    # a GPU-profile registry row wins over the log
    gpu = rec("week01/gpu/baseline-seed0-bbbb0000", acc(0.95))
    assert table_rows(build(registry(tmp_path, [*BASE, gpu]), ["01"], root).markdown)[0][2] == "95.00%"


def test_regenerating_from_evidence_gives_the_same_file(tmp_path: Path, root: Path) -> None:
    out = root / "RESULTS.md"
    first = build(registry(tmp_path, BASE), ["01", "09"], root, out)
    results.write(first, out, root)
    evidence = root / "docs/results/evidence.jsonl"
    lines = [json.loads(x) for x in evidence.read_text().splitlines()]
    # the registry lines cited; the GPU runs are cited from the committed GPU reference log instead
    assert sorted(r["run_id"] for r in lines) == [i for i in first.summary.cited_runs if "/gpu/" not in i]
    assert all("config" not in r and r["config_hash"] for r in lines)
    again = build(evidence, ["01", "09"], root, out)
    assert again.markdown == out.read_text() == first.markdown
    assert (root / "docs/results/week01.png").stat().st_size > 0
    assert (root / "docs/results/week09.png").stat().st_size > 0


def test_links_resolve(tmp_path: Path, root: Path) -> None:
    out = root / "RESULTS.md"
    res = build(registry(tmp_path, BASE), ["01", "09"], root, out)
    results.write(res, out, root)
    targets = LINK.findall(out.read_text())
    assert "docs/weekly-logs/week01.md" in targets
    assert "docs/weekly-logs/week09/preference_accuracy.csv" in targets
    assert "docs/results/week01.png" in targets
    assert [t for t in targets if not (root / t).exists()] == []


def test_check_detects_a_hand_edit(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = str(registry(tmp_path, BASE))
    args = ["--registry", reg, "--weeks", "01,9", "--root", str(root)]
    assert results.main(args) == 0
    assert results.main([*args, "--check"]) == 0
    out = root / "RESULTS.md"
    out.write_text(out.read_text().replace("92.28%", "93.28%"))
    capsys.readouterr()
    assert results.main([*args, "--check"]) == 1
    diff = capsys.readouterr().out
    assert "-| baseline-seed0: best val accuracy | 93.28%" in diff
    assert "+| baseline-seed0: best val accuracy | 92.28%" in diff
    out.unlink()
    assert results.main([*args, "--check"]) == 1


def test_cli_errors_exit_2(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert results.main(["--registry", str(tmp_path / "none.jsonl"), "--root", str(root)]) == 2
    assert "--registry docs/results/evidence.jsonl" in capsys.readouterr().err
    reg = str(registry(tmp_path, BASE))
    assert results.main(["--registry", reg, "--weeks", "13", "--root", str(root)]) == 2
    assert "no headline for week '13'" in capsys.readouterr().err
    assert results.main(["--registry", reg, "--weeks", "12", "--root", str(root)]) == 2
    assert "no cpu run whose name matches 'flagship-pretrain'" in (err := capsys.readouterr().err)
    assert "run `make flagship`" in err
    assert not (root / "RESULTS.md").exists()


def test_corrupt_registry_line_is_named(tmp_path: Path, root: Path) -> None:
    path = registry(tmp_path, BASE[:1])
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ResultsError, match=r"registry.jsonl:2 is not JSON"):
        build(path, ["01"], root)
    path.write_text(json.dumps({"run_id": "x"}) + "\n")
    with pytest.raises(ResultsError, match=r"registry.jsonl:1 lacks week, name, profile, metrics"):
        build(path, ["01"], root)


def test_a_rerun_counts_once_with_its_latest_line(tmp_path: Path, root: Path) -> None:
    again = {**BASE[0], "metrics": acc(0.9300), "git_commit": "9999999999990000",
             "finished_at": "2026-12-08T00:00:00+0000"}
    res = build(registry(tmp_path, [*BASE, again]), ["01"], root)
    row = table_rows(res.markdown)[0]
    assert row[1] == "93.00%"
    assert row[6] == "`999999999999`"
    assert res.summary.rows == 2


def fake_week(pick: str) -> dict[str, Headline]:
    item = Item(r"iso-(?P<g>[^-]+)-L\d", "C = {g}: lowest val loss", metric="val_loss", pick=pick)
    return {"06": Headline("06", "fake", (item,), lambda rows: f"{len(rows)} rows")}


def test_pick_per_group(tmp_path: Path, root: Path) -> None:
    rows = [rec(f"week06/cpu/iso-{c}-L{n}-eeee000{n}{c[0]}", {"val_loss": loss})
            for c, n, loss in [("1e9", 1, 5.0), ("1e9", 2, 4.5), ("1e9", 3, 4.8), ("3e9", 1, 4.4), ("3e9", 2, 4.1)]]
    got = table_rows(build(registry(tmp_path, rows), ["06"], root, defined=fake_week("min")).markdown)
    assert [(r[0], r[1], r[4]) for r in got] == [
        ("C = 1e9: lowest val loss", "4.5000", "`week06/cpu/iso-1e9-L2-eeee00021`"),
        ("C = 3e9: lowest val loss", "4.1000", "`week06/cpu/iso-3e9-L2-eeee00023`")]
    got = table_rows(build(registry(tmp_path, rows), ["06"], root, defined=fake_week("max")).markdown)
    assert [r[1] for r in got] == ["5.0000", "4.4000"]


def test_item_definition_errors() -> None:
    with pytest.raises(ValueError, match="exactly one of metric and csv"):
        Item("x", "x")
    with pytest.raises(ValueError, match="exactly one of metric and csv"):
        Item("x", "x", metric="m", csv=CsvSource("f.csv", "c"))
    with pytest.raises(ValueError, match="pick 'best'"):
        Item("x", "x", metric="m", pick="best")


def test_every_headline_summary_handles_rows_of_its_items() -> None:
    """Each real headline's sentence is built from cells shaped like its items (a smoke test of the prose)."""
    for week, h in HEADLINES.items():
        rows = []
        for i, item in enumerate(h.items):
            keys = re.findall(r"[a-z0-9_]+(?:-[a-z0-9]+)*", item.runs.replace(r"\d+", "0")) or ["run"]
            for k, key in enumerate(dict.fromkeys(keys)):
                extra = {"budget C": 1e9 * (1 + k % 2), "N'": 1e4 * (1 + k), "n": 10.0}
                rows.append(Row(i, key, item.label, Cell(0.5 + 0.01 * k, f"week{week}/cpu/{key}-abcd1234", "abcd1234",
                                                          "0" * 40, False, "CPU (2 cores)", "registry", extra)))
        text = h.summary(rows)
        assert "No GPU run is recorded" in text, week
        assert cells(rows, 0)


def test_value_formats() -> None:
    assert value(0.9228, "pct") == "92.28%"
    assert value(1713.66, ",.1f") == "1,713.7"


def test_week06_fit_is_stated_from_the_table(tmp_path: Path, root: Path) -> None:
    from shared.scaling import fit_scaling

    with (root / "docs/weekly-logs/week06/isoflop.csv").open() as f:
        table = [line.strip().split(",") for line in f][1:]
    rows = [rec(r[5].strip("`"), {"val_loss": float(r[4])}) for r in table]
    out = root / "RESULTS.md"
    res = build(registry(tmp_path, rows), ["06"], root, out)
    fit = fit_scaling({c: [(float(r[2]), float(r[4])) for r in table if float(r[0]) == c]
                       for c in {float(r[0]) for r in table}}, n_boot=0)
    assert f"N_opt ∝ C^{fit.n_opt.exponent:.3f}" in res.markdown
    assert "C = 3e+11: L1xC32 (N' = 77,824), 4.8616" in res.markdown  # the lowest loss of that budget
    assert res.summary.rows == 6
    results.write(res, out, root)
    assert (root / "docs/results/week06.png").stat().st_size > 0


def test_a_run_without_the_metric_is_named(tmp_path: Path, root: Path) -> None:
    broken = rec("week01/cpu/baseline-seed2-aaaa0002", {"steps": 10})
    with pytest.raises(MissingRunsError, match=r"week 01: run week01/cpu/baseline-seed2-aaaa0002 has no number at "
                                               r"metrics\.best_val\.acc"):
        build(registry(tmp_path, [*BASE, broken]), ["01"], root)
    # an older config of the same name without the number does not count: the latest run of that name holds it
    older = rec("week01/cpu/baseline-seed0-aaaa9999", {"steps": 10}, when="2026-12-01T00:00:00+0000")
    assert build(registry(tmp_path, [*BASE, older]), ["01"], root).summary.rows == 2
