"""A throwaway git repository for the tools' tests: run git in it, commit files into it."""

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """``git -C repo args`` with a fixed identity and no signing; its stdout, stripped."""
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def commit(repo: Path, files: dict[str, str], msg: str = "change") -> str:
    """Write ``files`` (path relative to the repository → text), commit everything; the new commit's sha."""
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")
