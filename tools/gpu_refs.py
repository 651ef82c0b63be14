"""GPU reference logs of weeks 1-5 on one lent GPU: ``prepare`` on this machine, ``run`` on the device.

The device (one H100/H200, Python 3.12, torch 2.11 + CUDA, no internet, no package index) receives the working tree
and, per call, the ignored folders named in ``carry``: 64 MiB in all (/work/shared/docs/gpu-runs.md). A call's files
outside the repository (``$HOME``) stay while the machine is warm, so the data goes in parts over consecutive calls.

``python tools/gpu_refs.py prepare`` (``make gpu-refs-prepare``), here:
  1. takes the files of the datasets weeks 1-5 read (MNIST, CIFAR-10, Tiny Shakespeare; their paths, sizes and sha256
     from the project's registry) from ``$AIFS_DATA_MIRROR``, checks each, and packs them into one gzip'd tar;
  2. splits it into parts that each fit one call beside the working tree: ``.devdata1/part1``, ``.devdata2/part2``,
     ... (every folder also holds ``manifest.json``: the parts', the tar's and every file's sha256, and the commit);
  3. downloads into ``.whl/`` the wheels of what that image lacks (omegaconf; its KINDS.md package list has the
     rest: pandas, matplotlib, pyyaml, regex, safetensors, tensorboard, tqdm, tabulate, rich, sentencepiece);
  4. prints the device calls: one per part but the last (copy it to ``$HOME/data``), then the final call that
     carries the last part and the wheels and runs ``python3 tools/gpu_refs.py run``.

``python3 tools/gpu_refs.py run`` (``make gpu-refs``), on the device: joins the parts in ``$HOME/data``, checks every
sha256, installs the wheels of any missing import (``--target $HOME/site``), points the registry at the data
(``AIFS_DATA_MIRROR``), names the commit (``AIFS_GIT_COMMIT``; ``AIFS_GIT_DIRTY=1`` when a tracked file differs from
it), and runs each week's GPU profile (week 2 through torchrun, one process) under a total time budget. Into ``$OUT``:
``gpu-logs.tar.gz`` (``gpu/weekNN.md`` + ``gpu/weekNN/``, rewritten after each week, so what finished comes back even
when the call is cut), ``summary.json`` and one ``weekNN.out`` per week (at most 8 files come back).
``run --profile smoke`` is the same path on a CPU, with the weeks' smoke profiles: the dry run.

``python tools/gpu_refs.py unpack FILES/gpu-logs.tar.gz``, here again: each returned week's ``gpu/weekNN.md`` and
``gpu/weekNN/`` replace the committed ones in ``docs/weekly-logs`` (then ``make logs-status``).

Budget: the GPU profiles as committed take about 30 minutes on one H100 (week 3's 26 ablation runs and week 5's
5,000 steps of GPT-2 small dominate), more than one 10-minute call. The ``budget`` overrides of ``WEEKS`` below cut
weeks 1, 3, 4 and 5 to about 9 minutes in all; they are ``key=value`` overrides, so each log's header shows them in
its command line. ``run`` stops starting weeks after ``--budget-s`` (530 s) so the call returns what finished.
``--full`` runs the profiles unchanged (for a longer loan, a few weeks per call with ``--weeks``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
CARRY_LIMIT = 64 * MIB  # the working tree + the carried folders of one call
CARRY_MARGIN = 2 * MIB  # headroom: the tree may grow a little between prepare and the calls
MANIFEST = "manifest.json"
BUNDLE = "data.tar.gz"
# Imports the weeks need that must be on the device; the image's package list (KINDS.md, 2026-11-17) has all of them
# but omegaconf, which travels as a wheel (pure Python; it needs only pyyaml, which the image has).
REQUIRED_IMPORTS = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "yaml", "omegaconf", "safetensors",
                    "tensorboard", "tqdm", "tabulate", "regex", "sentencepiece")
WHEELS = {"omegaconf": "omegaconf"}  # import name -> distribution name (pinned in requirements/constraints.txt)
DEFAULT_BUDGET_S = 530  # the final call's limit is 600 s: leave time to join, install and pack the logs


@dataclass(frozen=True)
class Week:
    """One week of the reference run."""

    num: str  # "01"
    package: str  # "week01_scaffold"
    datasets: tuple[str, ...]  # registry names its GPU and smoke profiles read
    budget: tuple[str, ...] = ()  # GPU-profile overrides that make the whole run fit about 9 minutes
    estimate_s: int = 0  # estimated seconds on one H100/H200 with ``budget`` (startup and compiles included)
    full_estimate_s: int = 0  # ... with the GPU profile unchanged
    torchrun: bool = False  # launched as ``torchrun --standalone --nproc-per-node=1``

    @property
    def name(self) -> str:
        return f"week{self.num}"


# Estimates: week 1 measured (62 s on an H100, docs/weekly-logs/gpu/week01.md, before its LR ablation got a second
# seed: +14 s); the others from each profile's step counts at ~2-4 ms per small-model step (Python-bound), ~7 ms per
# step of week 4's 10.7M-parameter GPT (bf16, compiled), ~70 ms per 32k-token step of GPT-2 small, and ~40-60 s per
# torch.compile of a new graph (a second compile of the same graph and shapes hits Inductor's cache). None of weeks
# 2-5 has run on a GPU yet: the first run's summary.json gives the real numbers.
WEEKS = (
    # 3 seeds x 20 epochs of softmax regression (Python-bound: a GPU does not speed it up) and the LR ablation.
    # Budget: 10 epochs (the 91% bar is reached in fewer).
    Week("01", "week01_scaffold", ("mnist",), ("train.epochs=10",), 55, 76),
    Week("02", "week02_ddp", ("mnist",), (), 60, 60, torchrun=True),
    # 13 variant files x 2 seeds (22 distinct runs) of 15 epochs on 45k images, and 3 seeds of the speed track:
    # ~10 min. Budget: 2 epochs per ablation run (the seeds stay: the ablation check needs two; a data subset would
    # shrink the speed track's training set too), the 24-epoch speed track (the 94% target) on one seed.
    Week("03", "week03_cifar", ("cifar10",), ("train.epochs=2", "speed.seeds=[0]"), 100, 600),
    # 5,000 steps (the <= 1.47 target needs them), compiled training + the compiled manual-attention benchmark.
    # Budget: shorter benchmarks only.
    Week("04", "week04_transformer", ("tiny_shakespeare",), ("bench.steps=10", "bench.warmup=3"), 150, 170),
    # TinyStories (2.2 GB) cannot travel: Tiny Shakespeare instead (as the profile's comment says for offline use).
    # 5,000 steps of 32 x 1024 tokens would be ~550 passes over it: 300 steps, the throughput benchmark at the
    # training shape only (one cached compile instead of 6 new ones), shorter ablation and ladder runs.
    Week("05", "week05_lm_pipeline", ("tiny_shakespeare",),
         ("data.corpus=tiny_shakespeare", "loop.max_steps=300", "loop.eval_every=50", "schedule.warmup_steps=30",
          "bench.seq_lens=[1024]", "bench.micro_batches=[32]", "short.max_steps=100", "short.eval_every=50"),
         160, 900),
)
BY_NUM = {w.num: w for w in WEEKS}


# ---- shared helpers ------------------------------------------------------------------------------------------------

def sha256_file(path: Path, chunk: int = 4 * MIB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """The id git gives a file's content (sha1 of ``blob <size>\\0<bytes>``): comparable without git."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def select_weeks(spec: str) -> list[Week]:
    """``"1,2,5"`` or ``"01,02"`` -> those weeks, in the given order."""
    out = []
    for part in spec.split(","):
        num = part.strip().zfill(2)
        if num not in BY_NUM:
            raise SystemExit(f"error: no week {part!r} in the reference run (weeks: {', '.join(BY_NUM)})")
        out.append(BY_NUM[num])
    return out


# ---- prepare (this machine) ----------------------------------------------------------------------------------------

def dataset_files(weeks: list[Week]) -> list[dict]:
    """``[{"path", "bytes", "sha256"}]`` of every file the weeks read, from the project's registry (each once)."""
    from shared.data.registry import get_spec

    files: dict[str, dict] = {}
    for name in sorted({d for w in weeks for d in w.datasets}):
        for f in get_spec(name).files:
            files[f.relpath] = {"path": f.relpath, "bytes": f.size, "sha256": f.sha256}
    return list(files.values())


def tree_bytes(repo: Path) -> int:
    """Size of what every call sends: tracked files plus untracked files git does not ignore."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return sum((repo / p).stat().st_size for p in out.decode().split("\0") if p and (repo / p).is_file())


def tracked_blobs(repo: Path) -> dict[str, str]:
    """``{path: blob id}`` of HEAD's files, generated logs excepted (a week rewrites its own log)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "-z", "HEAD"], capture_output=True, check=True).stdout
    blobs = {}
    for entry in out.decode().split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, kind, blob = meta.split()
        if kind == "blob" and mode != "120000" and not path.startswith("docs/weekly-logs/"):
            blobs[path] = blob
    return blobs


def commit_state(repo: Path) -> tuple[str, bool]:
    """HEAD's commit and whether the tree differs from it (untracked files count; the weekly logs do not)."""
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", ".",
                             ":(exclude)docs/weekly-logs"], capture_output=True, text=True, check=True).stdout
    return head, bool(status.strip())


def build_bundle(mirror: Path, files: list[dict], out: Path) -> Path:
    """``out`` = a gzip'd tar (level 1: CIFAR's pixels gain ~10%, MNIST's .gz nothing) of ``mirror/<path>`` for
    every file, each checked against its sha256 first.

    Raises:
        SystemExit: a file is missing from the mirror or has another checksum.
    """
    for f in files:
        src = mirror / f["path"]
        if not src.is_file():
            raise SystemExit(f"error: {src} is missing: point AIFS_DATA_MIRROR at the dataset mirror")
        if f["sha256"] and sha256_file(src) != f["sha256"]:
            raise SystemExit(f"error: {src} does not match the registry's sha256 {f['sha256']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tar.gettarinfo(str(mirror / f["path"]), arcname=f["path"])
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(mirror / f["path"], "rb") as src:
                tar.addfile(info, src)
    return out


def split_file(path: Path, part_bytes: int, dest: Path) -> list[dict]:
    """Cut ``path`` into ``dest/.devdataN/partN`` of at most ``part_bytes``; ``[{"folder", "name", "bytes",
    "sha256"}]`` in order."""
    parts = []
    with open(path, "rb") as f:
        n = 0
        while block := f.read(part_bytes):
            n += 1
            folder = dest / f".devdata{n}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / f"part{n}").write_bytes(block)
            parts.append({"folder": folder.name, "name": f"part{n}", "bytes": len(block),
                          "sha256": hashlib.sha256(block).hexdigest()})
    return parts


def pinned_version(dist: str, constraints: Path) -> str:
    """``NAME==VERSION`` of ``dist`` from the project's constraints file."""
    for line in constraints.read_text().splitlines():
        req = line.split("#")[0].strip()
        if req.lower().startswith(f"{dist.lower()}=="):
            return req
    raise SystemExit(f"error: {dist} is not pinned in {constraints}")


def download_wheels(requirements: list[str], dest: Path) -> list[Path]:
    """``pip download`` pure-Python wheels for the device's Python 3.12 into ``dest`` (PyPI, from this machine)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "py", "--abi", "none",
                    "--platform", "any", "-d", str(dest), *requirements], check=True)
    return sorted(dest.glob("*.whl"))


def device_calls(parts: list[dict], wheels: bool, run_args: str = "") -> list[dict]:
    """The ``run`` tool calls, in order: copy each part but the last to ``$HOME/data``; the last call carries the
    last part (and the wheels) and runs everything."""
    calls = []
    for p in parts[:-1]:
        calls.append({"carry": [p["folder"]], "timeout_s": 120,
                      "command": f"mkdir -p $HOME/data && cp {p['folder']}/* $HOME/data/ && ls -l $HOME/data"})
    last = parts[-1]["folder"]
    calls.append({"carry": [last, *([".whl"] if wheels else [])], "timeout_s": 600,
                  "command": f"PYTHONUNBUFFERED=1 python3 tools/gpu_refs.py run{run_args}"})
    return calls


def prepare(args: argparse.Namespace) -> int:
    weeks = select_weeks(args.weeks)
    repo, dest = args.repo, args.dest or args.repo
    mirror = Path(args.mirror or os.environ.get("AIFS_DATA_MIRROR", "") or REPO_ROOT.parent / "shared" / "datasets")
    head, dirty = commit_state(repo)
    if dirty:
        print("warning: the tree differs from HEAD: the logs will say '(dirty)'. Commit first for reference logs.")
    files = dataset_files(weeks)
    for old in dest.glob(".devdata*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    wheels: list[Path] = []
    if not args.no_wheels:
        wheels = download_wheels([pinned_version(WHEELS[m], repo / "requirements" / "constraints.txt")
                                  for m in sorted(WHEELS)], dest / ".whl")
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    tree = tree_bytes(repo)
    part_bytes = args.part_mib * MIB if args.part_mib else CARRY_LIMIT - tree - wheel_bytes - CARRY_MARGIN
    if part_bytes < MIB:
        raise SystemExit(f"error: the working tree ({tree / MIB:.1f} MiB) leaves no room for data in a 64 MiB call")
    staging = dest / ".devdata-staging"
    bundle = build_bundle(mirror, files, staging / BUNDLE)
    parts = split_file(bundle, part_bytes, dest)
    manifest = {"commit": head, "dirty": dirty, "weeks": [w.num for w in weeks], "bundle": BUNDLE,
                "bundle_bytes": bundle.stat().st_size, "bundle_sha256": sha256_file(bundle), "parts": parts,
                "files": files, "wheels": [w.name for w in wheels], "tracked": tracked_blobs(repo),
                "tree_bytes": tree}
    shutil.rmtree(staging)
    for p in parts:
        (dest / p["folder"] / MANIFEST).write_text(json.dumps(manifest, indent=1))
    run_args = "" if args.weeks == ",".join(BY_NUM) else f" --weeks {args.weeks}"
    calls = device_calls(parts, bool(wheels), run_args)
    for i, call in enumerate(calls, 1):  # what a call sends must fit its limit
        carried = sum(f.stat().st_size for c in call["carry"] for f in (dest / c).rglob("*") if f.is_file())
        if tree + carried > CARRY_LIMIT:
            raise SystemExit(f"error: call {i} would send {(tree + carried) / MIB:.1f} MiB (limit 64): lower --part-mib")
    print(f"prepared {len(files)} files of {', '.join(sorted({d for w in weeks for d in w.datasets}))} "
          f"({manifest['bundle_bytes'] / MIB:.1f} MiB packed) in {len(parts)} part(s) of <= {part_bytes / MIB:.1f} MiB "
          f"(+ {tree / MIB:.1f} MiB working tree per call), commit {head[:12]}{' (dirty)' if dirty else ''}")
    print(f"estimated device time of the run: ~{sum(w.estimate_s for w in weeks) / 60:.1f} min with the budget "
          f"overrides (~{sum(w.full_estimate_s for w in weeks) / 60:.0f} min for the unchanged GPU profiles)")
    print("\nDevice calls, back to back (a warm machine is given back ~30 s after a call returns; "
          "$HOME/data survives between calls while it is warm):")
    for i, call in enumerate(calls, 1):
        print(f"  {i}. carry={json.dumps(call['carry'])} timeout_s={call['timeout_s']} command: {call['command']}")
    print("A week cut by the budget can run again in the same warm machine (the data and wheels stay in $HOME):\n"
          "  carry=[] timeout_s=600 command: PYTHONUNBUFFERED=1 python3 tools/gpu_refs.py run --weeks N")
    print("\nThen here: python tools/gpu_refs.py unpack <files_at>/gpu-logs.tar.gz && make logs-status"
          "   (replaces docs/weekly-logs/gpu/weekNN.md + gpu/weekNN/ of each week that finished)")
    return 0


# ---- run (the device) ----------------------------------------------------------------------------------------------

def collect_parts(repo: Path, data: Path) -> None:
    """Copy the carried ``.devdataN/*`` of this call into ``data`` (the earlier calls copied theirs)."""
    data.mkdir(parents=True, exist_ok=True)
    for folder in sorted(repo.glob(".devdata[0-9]*")):
        for f in folder.iterdir():
            shutil.copyfile(f, data / f.name)


def join_and_verify(data: Path) -> dict:
    """Check every part, join them, check the tar, unpack it into ``data/mirror`` and check every file; the manifest.

    Raises:
        SystemExit: a part is missing or corrupt, or a file does not match its sha256.
    """
    manifest = json.loads((data / MANIFEST).read_text())
    bundle = data / manifest["bundle"]
    if not (bundle.is_file() and bundle.stat().st_size == manifest["bundle_bytes"]):
        with open(bundle, "wb") as out:
            for p in manifest["parts"]:
                part = data / p["name"]
                if not part.is_file():
                    raise SystemExit(f"error: {part} is missing: make the call that carries {p['folder']} first")
                if sha256_file(part) != p["sha256"]:
                    raise SystemExit(f"error: {part} is corrupt (sha256): make its call again")
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
    if sha256_file(bundle) != manifest["bundle_sha256"]:
        raise SystemExit(f"error: the joined {bundle} does not match its sha256")
    mirror = data / "mirror"
    with tarfile.open(bundle, "r:gz") as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(mirror, **safe)
    for f in manifest["files"]:
        path = mirror / f["path"]
        if path.stat().st_size != f["bytes"] or (f["sha256"] and sha256_file(path) != f["sha256"]):
            raise SystemExit(f"error: {path} does not match the registry's size or sha256")
    return manifest


def tree_differs(repo: Path, tracked: dict[str, str]) -> list[str]:
    """The tracked files whose content here is not the recorded commit's (missing ones included)."""
    return [p for p, blob in sorted(tracked.items()) if not (repo / p).is_file() or git_blob_id(repo / p) != blob]


def missing_imports(names: tuple[str, ...] = REQUIRED_IMPORTS) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def install_wheels(wheel_dir: Path, target: Path) -> None:
    """``pip install --no-index --no-deps`` every carried wheel into ``target`` (offline)."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: no wheels in {wheel_dir}: carry .whl (made by `prepare`) in this call")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, wheels)], check=True)


def week_command(week: Week, profile: str, full: bool, python: str = sys.executable) -> list[str]:
    """How a week is launched: ``python -m weekNN_x --profile P [budget overrides]``; week 2 through torchrun."""
    launch = ([python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", week.package]
              if week.torchrun else [python, "-m", week.package])
    overrides = list(week.budget) if profile == "gpu" and not full else []
    return [*launch, "--profile", profile, *overrides]


def log_location(week: str, profile: str, logs_root: Path, runs_root: Path) -> tuple[Path, str]:
    """Where ``shared.report.log_dir`` puts a week's log, and its folder's name inside ``gpu-logs.tar.gz``."""
    if profile == "smoke":
        return runs_root / week / "smoke" / "log", "smoke"
    return (logs_root / "gpu", "gpu") if profile == "gpu" else (logs_root, ".")


def pack_logs(done: list[tuple[Week, Path, str]], out: Path) -> Path:
    """``out/gpu-logs.tar.gz`` with ``<kind>/weekNN.md`` and ``<kind>/weekNN/`` of every finished week."""
    tmp = out / "gpu-logs.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for week, folder, kind in done:
            for item in (folder / f"{week.name}.md", folder / week.name):
                if item.exists():
                    tar.add(item, arcname=f"{kind}/{item.name}")
    return tmp.replace(out / "gpu-logs.tar.gz")


def run_with_limit(cmd: list[str], cwd: Path, env: dict, log: Path, timeout: float) -> int | None:
    """Run ``cmd`` in its own process group, output to ``log``; None when it ran past ``timeout`` seconds. On a
    timeout the whole group goes (torchrun's worker too: a survivor would hold the GPU for the next week)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None or _group_alive(proc.pid):
                _kill_group(proc.pid)
                proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_group(pgid: int) -> None:
    import signal

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end and _group_alive(pgid):
            time.sleep(0.2)


def unpack(tar_path: Path, logs: Path) -> list[str]:
    """Extract ``gpu-logs.tar.gz`` into ``logs`` (``docs/weekly-logs``); each week's old log and assets in the same
    folder are removed first, so no plot of an earlier run lingers. Returns the logs written."""
    with tarfile.open(tar_path, "r:gz") as tar:
        names = tar.getnames()
        written = sorted(n for n in names if n.endswith(".md") and n.count("/") == 1)
        for md in written:
            old = logs / md
            old.unlink(missing_ok=True)
            shutil.rmtree(old.with_suffix(""), ignore_errors=True)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(logs, **safe)
    return written


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    weeks = select_weeks(args.weeks)
    repo = args.repo
    data = Path(args.data or Path.home() / "data")
    out = Path(args.out or os.environ.get("OUT") or repo / "gpu-refs-out")
    work = Path(args.work or Path.home() / "gpu-refs")
    out.mkdir(parents=True, exist_ok=True)
    collect_parts(args.parts_from or repo, data)
    manifest = join_and_verify(data)
    print(f"data: {len(manifest['files'])} files verified in {data / 'mirror'}")

    env = dict(os.environ)
    site = Path(args.site or Path.home() / "site")
    if site.is_dir():  # wheels installed by an earlier call of this warm machine
        sys.path.insert(0, str(site))
    if missing := missing_imports():
        print(f"missing on this machine: {', '.join(missing)}; installing the carried wheels into {site}")
        install_wheels(repo / ".whl", site)
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        if still := missing_imports():
            raise SystemExit(f"error: still missing after the wheels: {', '.join(still)}; add them to WHEELS")
    paths = [*([str(site)] if site.is_dir() else []), str(repo), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    differs = tree_differs(repo, manifest["tracked"])
    dirty = manifest["dirty"] or bool(differs)
    if differs:
        print(f"warning: {len(differs)} tracked file(s) differ from {manifest['commit'][:12]} (first: {differs[0]}): "
              "the logs say '(dirty)'")
    logs_root, runs_root = work / "logs", work / "runs"
    env.update({"AIFS_DATA_MIRROR": str(data / "mirror"), "AIFS_DATA_ROOT": str(data / "raw"),
                "AIFS_RUNS_ROOT": str(runs_root), "AIFS_LOGS_ROOT": str(logs_root), "AIFS_OFFLINE": "1",
                "AIFS_GIT_COMMIT": manifest["commit"], "AIFS_GIT_DIRTY": "1" if dirty else "0",
                "PYTHONUNBUFFERED": "1", "CI": "1"})

    summary: dict = {"commit": manifest["commit"], "dirty": dirty, "profile": args.profile, "full": args.full,
                     "weeks": {}}
    done: list[tuple[Week, Path, str]] = []
    deadline = t_start + args.budget_s
    for week in weeks:
        left = deadline - time.monotonic()
        if left < 30:
            summary["weeks"][week.name] = {"status": "skipped: the time budget ran out"}
            continue
        cmd = week_command(week, args.profile, args.full)
        folder, kind = log_location(week.name, args.profile, logs_root, runs_root)
        (folder / f"{week.name}.md").unlink(missing_ok=True)  # an earlier call's log must not pass for this one's
        shutil.rmtree(folder / week.name, ignore_errors=True)
        print(f"\n== {week.name}: {' '.join(cmd[1:])}  (at most {left:.0f} s)", flush=True)
        t0 = time.monotonic()
        rc = run_with_limit(cmd, repo, env, out / f"{week.name}.out", left)
        status = "killed: the time budget ran out" if rc is None else "all checks passed" if rc == 0 else f"exit {rc}"
        seconds = round(time.monotonic() - t0, 1)
        has_log = (folder / f"{week.name}.md").is_file() and rc is not None
        if has_log:
            done.append((week, folder, kind))
            pack_logs(done, out)
        summary["weeks"][week.name] = {"status": status, "rc": rc, "seconds": seconds, "log": has_log,
                                       "command": " ".join(cmd[1:])}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        tail = (out / f"{week.name}.out").read_text(errors="replace").splitlines()[-3:]
        print(f"{week.name}: {status} in {seconds:.0f} s; " + " | ".join(tail), flush=True)
    summary["total_s"] = round(time.monotonic() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{len(done)}/{len(weeks)} weekly logs in {out / 'gpu-logs.tar.gz'} ({summary['total_s']:.0f} s in all)")
    return 0 if len(done) == len(weeks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_refs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: the data parts, the wheels and the device calls")
    p.add_argument("--weeks", default=",".join(BY_NUM), help="e.g. 1,2 (default: all five)")
    p.add_argument("--mirror", help="dataset mirror (default: $AIFS_DATA_MIRROR, else ../shared/datasets)")
    p.add_argument("--part-mib", type=int, default=0, help="part size (default: what a call leaves beside the tree)")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheels (a machine that has omegaconf)")
    p.add_argument("--dest", type=Path, help="where .devdataN/ and .whl/ go (default: the repository)")
    r = sub.add_parser("run", help="the device: join, verify, install, run the weeks, logs to $OUT")
    r.add_argument("--weeks", default=",".join(BY_NUM))
    r.add_argument("--profile", default="gpu", choices=("gpu", "smoke", "cpu"), help="smoke: the CPU dry run")
    r.add_argument("--full", action="store_true", help="the GPU profiles unchanged (no budget overrides)")
    r.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="stop starting weeks after this")
    r.add_argument("--data", help="where the parts are joined (default: $HOME/data)")
    r.add_argument("--parts-from", type=Path, help="where the carried .devdataN/ are (default: the repository)")
    r.add_argument("--out", help="where the logs go (default: $OUT)")
    r.add_argument("--work", help="runs and logs of this run (default: $HOME/gpu-refs)")
    r.add_argument("--site", help="where missing wheels are installed (default: $HOME/site)")
    u = sub.add_parser("unpack", help="here: the returned gpu-logs.tar.gz into docs/weekly-logs")
    u.add_argument("tar", type=Path)
    u.add_argument("--logs", type=Path, default=REPO_ROOT / "docs" / "weekly-logs")
    for q in (p, r):
        q.add_argument("--repo", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "unpack":
        for md in unpack(args.tar, args.logs):
            print(f"wrote {args.logs / md}")
        return 0
    return prepare(args) if args.step == "prepare" else run(args)


if __name__ == "__main__":
    sys.exit(main())
