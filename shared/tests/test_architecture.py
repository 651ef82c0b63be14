"""The architecture rules, enforced on every week folder that exists (import-linter checks them too)."""

import ast
import pkgutil
from pathlib import Path

import shared
from shared.paths import REPO_ROOT


def _imported_roots(py: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_weeks_import_only_shared_and_third_party_and_shared_imports_no_week():
    weeks = sorted(p.name for p in REPO_ROOT.glob("week[0-9][0-9]_*") if p.is_dir())
    assert weeks, "no week packages found"
    problems = []
    for pkg in ["shared", *weeks]:
        for py in (REPO_ROOT / pkg).rglob("*.py"):
            bad = {r for r in _imported_roots(py) if r.startswith("week") and r != pkg}
            if bad:
                problems.append(f"{py.relative_to(REPO_ROOT)} imports {sorted(bad)}")
    assert problems == []


def test_shared_public_api_is_frozen():
    """Changing this list is a deliberate API change: update it together with the docs."""
    modules = sorted(m.name for m in pkgutil.iter_modules(shared.__path__) if m.name != "tests")
    assert sorted(shared.__all__) == modules
    assert modules == [
        "amp", "analysis", "atomic", "checkpoint", "cli", "config", "data", "dcp", "device", "dist", "evals", "flops",
        "models", "nn",
        "parallel", "paths", "profiling", "report", "repro", "results", "rundir", "scaling", "serve", "stats", "tasks", "testing",
        "tracking", "train",
    ]


def test_every_week_is_tested_by_make_test_and_linted_by_import_linter():
    import tomllib

    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    testpaths = set(cfg["tool"]["pytest"]["ini_options"]["testpaths"])
    linter = cfg["tool"]["importlinter"]
    weeks = sorted(p.name for p in REPO_ROOT.glob("week[0-9][0-9]_*") if (p / "tests").is_dir())
    assert [w for w in weeks if f"{w}/tests" not in testpaths] == [], "add them to pytest's testpaths"
    assert [w for w in weeks if w not in linter["root_packages"]] == [], "add them to import-linter's root_packages"
