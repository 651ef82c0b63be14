"""tools/gpu_refs.py on this CPU: the prepare step on a small fake mirror (parts, manifest, sizes per call), the data
path of the run step (join, verify, refuse a corrupt or missing part), the week commands and their budget overrides,
the log locations, the dirty-tree check, the unpacking of the returned logs; and (slow) a dry run on the smoke
profile."""

import hashlib
import importlib
import json
import os
import random
import subprocess
import sys
import tarfile
import time

import pytest

from shared.paths import REPO_ROOT
from shared.report import log_dir
from shared.testing import mirror_has
from tools import gpu_refs

FAKE_FILES = {"fakeset/a.bin": 3 * gpu_refs.MIB + 17, "fakeset/sub/b.bin": 2 * gpu_refs.MIB, "other/c.txt": 1000}


@pytest.fixture
def mirror(tmp_path):
    """A mirror of three incompressible files, and their specs as dataset_files() returns them."""
    root = tmp_path / "mirror"
    specs = []
    for i, (rel, size) in enumerate(FAKE_FILES.items()):
        data = random.Random(i).randbytes(size)  # incompressible: gzip leaves it as big
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        specs.append({"path": rel, "bytes": size, "sha256": hashlib.sha256(data).hexdigest()})
    return root, specs


def _prepare(tmp_path, mirror, monkeypatch, *extra):
    root, specs = mirror
    monkeypatch.setattr(gpu_refs, "dataset_files", lambda weeks: specs)
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    assert gpu_refs.main(["prepare", "--mirror", str(root), "--dest", str(dest), "--no-wheels", *extra]) == 0
    return dest


def test_prepare_splits_the_data_into_calls_that_fit_and_prints_them(tmp_path, mirror, monkeypatch, capsys):
    tree = gpu_refs.tree_bytes(REPO_ROOT)
    # a call limit of the working tree + 2.5 MiB: the 5 MiB of data must go in several parts
    monkeypatch.setattr(gpu_refs, "CARRY_LIMIT", tree + gpu_refs.CARRY_MARGIN + int(2.5 * gpu_refs.MIB))
    dest = _prepare(tmp_path, mirror, monkeypatch)
    folders = sorted(dest.glob(".devdata*"))
    assert [f.name for f in folders] == [".devdata1", ".devdata2", ".devdata3"]
    manifest = json.loads((folders[0] / gpu_refs.MANIFEST).read_text())
    for i, (folder, part) in enumerate(zip(folders, manifest["parts"], strict=True), 1):
        blob = (folder / f"part{i}").read_bytes()
        assert hashlib.sha256(blob).hexdigest() == part["sha256"]
        carried = sum(f.stat().st_size for f in folder.iterdir())
        assert tree + carried <= gpu_refs.CARRY_LIMIT  # every call's tree + carry within the limit
        assert json.loads((folder / gpu_refs.MANIFEST).read_text()) == manifest  # each call brings the manifest
    assert sum(p["bytes"] for p in manifest["parts"]) == manifest["bundle_bytes"]
    assert [f["path"] for f in manifest["files"]] == list(FAKE_FILES)
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert manifest["commit"] == head.strip()
    assert "week01_scaffold/__main__.py" in manifest["tracked"]
    out = capsys.readouterr().out
    assert "3 part(s)" in out
    calls = [line for line in out.splitlines() if line.lstrip()[:3] in ("1. ", "2. ", "3. ")]
    assert len(calls) == 3
    assert calls[0].endswith("command: mkdir -p $HOME/data && cp .devdata1/* $HOME/data/ && ls -l $HOME/data")
    assert '[".devdata1"]' in calls[0]
    assert "tools/gpu_refs.py run" in calls[2]
    assert '[".devdata3"]' in calls[2]


def test_run_joins_the_parts_checks_every_sha_and_refuses_a_bad_part(tmp_path, mirror, monkeypatch):
    dest = _prepare(tmp_path, mirror, monkeypatch, "--part-mib", "2")
    data = tmp_path / "home-data"
    data.mkdir()
    for folder in sorted(dest.glob(".devdata*"))[:-1]:  # the earlier calls: cp .devdataN/* $HOME/data/
        for f in folder.iterdir():
            (data / f.name).write_bytes(f.read_bytes())
    last = tmp_path / "final-call-tree"
    (last / ".devdata3").mkdir(parents=True)
    for f in (dest / ".devdata3").iterdir():
        (last / ".devdata3" / f.name).write_bytes(f.read_bytes())
    gpu_refs.collect_parts(last, data)  # the final call brings the last part
    manifest = gpu_refs.join_and_verify(data)
    root, specs = mirror
    for spec in specs:
        assert (data / "mirror" / spec["path"]).read_bytes() == (root / spec["path"]).read_bytes()
    assert manifest["files"] == specs

    (data / manifest["bundle"]).unlink()
    part2 = data / "part2"
    part2.write_bytes(b"0" + part2.read_bytes()[1:])
    with pytest.raises(SystemExit, match="part2 is corrupt"):
        gpu_refs.join_and_verify(data)
    part2.unlink()
    with pytest.raises(SystemExit, match=r"part2 is missing: make the call that carries \.devdata2 first"):
        gpu_refs.join_and_verify(data)


def test_prepare_refuses_a_mirror_file_with_another_checksum(tmp_path, mirror, monkeypatch):
    root, _ = mirror
    (root / "other" / "c.txt").write_text("changed")
    with pytest.raises(SystemExit, match="does not match the registry's sha256"):
        _prepare(tmp_path, mirror, monkeypatch)


def test_the_real_registry_files_of_weeks_1_to_5_are_mnist_cifar_and_shakespeare():
    files = gpu_refs.dataset_files(list(gpu_refs.WEEKS))
    assert {f["path"].split("/")[0] for f in files} == {"mnist", "cifar10", "tiny_shakespeare"}
    assert all(f["sha256"] and f["bytes"] for f in files)
    assert sum(f["bytes"] for f in files) > 150 * gpu_refs.MIB  # CIFAR-10: more than two calls' worth


def test_week_commands_week02_through_torchrun_and_the_budget_only_on_the_gpu_profile():
    w2 = gpu_refs.BY_NUM["02"]
    assert gpu_refs.week_command(w2, "smoke", False, "py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "week02_ddp",
        "--profile", "smoke"]
    w5 = gpu_refs.BY_NUM["05"]
    assert gpu_refs.week_command(w5, "gpu", False, "py")[:5] == ["py", "-m", "week05_lm_pipeline", "--profile", "gpu"]
    assert "data.corpus=tiny_shakespeare" in gpu_refs.week_command(w5, "gpu", False, "py")  # TinyStories can't travel
    assert gpu_refs.week_command(w5, "gpu", True, "py") == ["py", "-m", "week05_lm_pipeline", "--profile", "gpu"]
    assert [w.num for w in gpu_refs.select_weeks("1,5")] == ["01", "05"]
    with pytest.raises(SystemExit, match="no week '7'"):
        gpu_refs.select_weeks("7")


@pytest.mark.parametrize("week", gpu_refs.WEEKS, ids=lambda w: w.name)
def test_every_budget_override_is_a_valid_key_of_its_week(week):
    config = importlib.import_module(f"{week.package}.config")
    cfg = config.load("gpu", list(week.budget))  # an unknown key raises ConfigError
    assert cfg is not None


def test_the_budget_fits_9_minutes_and_the_profiles_as_committed_do_not():
    assert sum(w.estimate_s for w in gpu_refs.WEEKS) <= 9 * 60 - 15
    assert sum(w.full_estimate_s for w in gpu_refs.WEEKS) > 10 * 60  # why the budget exists
    assert gpu_refs.DEFAULT_BUDGET_S + 60 <= 600  # the run stops starting weeks before the call's limit


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_log_locations_are_shared_report_s(profile, tmp_path, monkeypatch):
    monkeypatch.setenv("AIFS_LOGS_ROOT", str(tmp_path / "logs"))
    monkeypatch.setenv("AIFS_RUNS_ROOT", str(tmp_path / "runs"))
    folder, kind = gpu_refs.log_location("week03", profile, tmp_path / "logs", tmp_path / "runs")
    assert folder == log_dir("week03", profile)
    assert kind == {"smoke": "smoke", "cpu": ".", "gpu": "gpu"}[profile]


def test_a_tree_that_differs_from_the_recorded_commit_is_found(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True)

    (tmp_path / "a.py").write_text("a = 1\n")
    (tmp_path / "docs" / "weekly-logs").mkdir(parents=True)
    (tmp_path / "docs" / "weekly-logs" / "week01.md").write_text("log\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "c")
    tracked = gpu_refs.tracked_blobs(tmp_path)
    assert set(tracked) == {"a.py"}  # the generated logs are not part of the check
    assert tracked["a.py"] == git("rev-parse", "HEAD:a.py").stdout.strip() == gpu_refs.git_blob_id(tmp_path / "a.py")
    assert gpu_refs.tree_differs(tmp_path, tracked) == []
    (tmp_path / "docs" / "weekly-logs" / "week01.md").write_text("regenerated\n")
    assert gpu_refs.tree_differs(tmp_path, tracked) == []
    (tmp_path / "a.py").write_text("a = 2\n")
    assert gpu_refs.tree_differs(tmp_path, tracked) == ["a.py"]


def test_unpack_replaces_each_week_s_old_log_and_assets(tmp_path):
    logs = tmp_path / "docs-logs"
    (logs / "gpu" / "week02").mkdir(parents=True)
    (logs / "gpu" / "week02.md").write_text("old")
    (logs / "gpu" / "week02" / "stale_plot.png").write_text("old")
    (logs / "gpu" / "week01.md").write_text("kept: not in this run")
    new = tmp_path / "new" / "gpu"
    (new / "week02").mkdir(parents=True)
    (new / "week02.md").write_text("new")
    (new / "week02" / "bench.csv").write_text("a\n1\n")
    tar = tmp_path / "gpu-logs.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(new / "week02.md", arcname="gpu/week02.md")
        t.add(new / "week02", arcname="gpu/week02")
    assert gpu_refs.unpack(tar, logs) == ["gpu/week02.md"]
    assert (logs / "gpu" / "week02.md").read_text() == "new"
    assert sorted(p.name for p in (logs / "gpu" / "week02").iterdir()) == ["bench.csv"]
    assert (logs / "gpu" / "week01.md").read_text() == "kept: not in this run"


def test_a_week_past_its_limit_is_stopped_with_its_whole_process_group(tmp_path):
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
            "print('started', flush=True); time.sleep(60)"
    t0 = time.monotonic()
    rc = gpu_refs.run_with_limit([sys.executable, "-c", child], tmp_path, dict(os.environ), tmp_path / "out", 3)
    assert rc is None
    assert time.monotonic() - t0 < 30
    assert gpu_refs.run_with_limit([sys.executable, "-c", "print('ok')"], tmp_path, dict(os.environ),
                                   tmp_path / "out", 60) == 0
    assert (tmp_path / "out").read_text().strip() == "ok"


def test_missing_imports_names_what_is_not_installed():
    assert gpu_refs.missing_imports(("json", "no_such_module_here")) == ["no_such_module_here"]
    assert gpu_refs.missing_imports() == []  # this machine has every package the weeks import


def test_wheels_are_pinned_from_the_constraints():
    req = gpu_refs.pinned_version("omegaconf", REPO_ROOT / "requirements" / "constraints.txt")
    assert req.startswith("omegaconf==")


# The dry run: prepare (MNIST only, in 4 MiB parts) and `run --profile smoke --weeks 2` on this CPU, through
# torchrun like the device. ~30 s on 2 idle cores, minutes on a loaded one: slow. The limit only catches a hang.
DRY_RUN_TIMEOUT_S = 1200


@pytest.mark.slow
@pytest.mark.timeout(DRY_RUN_TIMEOUT_S + 300)
@pytest.mark.skipif(not mirror_has("mnist/MNIST/raw/train-images-idx3-ubyte.gz"), reason="needs the MNIST mirror")
def test_dry_run_on_the_smoke_profile(tmp_path):
    dest, out = tmp_path / "dest", tmp_path / "out"
    dest.mkdir()
    tool = [sys.executable, str(REPO_ROOT / "tools" / "gpu_refs.py")]
    prep = subprocess.run([*tool, "prepare", "--weeks", "2", "--dest", str(dest), "--no-wheels", "--part-mib", "4"],
                          capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT_S)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    assert len(list(dest.glob(".devdata*"))) == 3  # MNIST's 11.6 MB in 4 MiB parts
    run = subprocess.run([*tool, "run", "--profile", "smoke", "--weeks", "2", "--parts-from", str(dest),
                          "--data", str(tmp_path / "data"), "--out", str(out), "--work", str(tmp_path / "work"),
                          "--site", str(tmp_path / "site")], capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT_S)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weeks"]["week02"]["log"] is True, run.stdout[-3000:] + run.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node=1" in summary["weeks"]["week02"]["command"]
    with tarfile.open(out / "gpu-logs.tar.gz") as tar:
        names = tar.getnames()
        text = tar.extractfile("smoke/week02.md").read().decode()
    assert "smoke/week02/bench.csv" in names
    assert f"| git commit                | {summary['commit'][:12]}" in text
    assert (out / "week02.out").stat().st_size > 0
