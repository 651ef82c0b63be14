"""The built docs site in a real browser: serve ``site/`` with ``http.server`` on 127.0.0.1 at a free port (a thread),
open the home page and a weekly log with plots in headless Chromium through Playwright (Debian's
``/usr/bin/chromium``: no browser download), and check each page's title and that every image of the log loaded.

    python -m week12_portfolio.browser [--site site]

Playwright's Python API: https://playwright.dev/python/docs/api/class-page
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from week12_portfolio.links import REPO, heading_texts

CHROMIUM = "/usr/bin/chromium"
# headless, and none of Chromium's background connections (the machine's closed network refuses them, many at once)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOGS = "docs/weekly-logs"
_IMAGES = "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"


@dataclass(frozen=True)
class BrowserCheck:
    """What the browser saw: the ``pages`` opened (site paths) and their ``titles``, the log page's images
    (``images_loaded`` of ``images_total``; ``broken_images`` their ``src``), ``problems`` (empty: every check
    passed) and the ``seconds`` it took, serving and browser start included."""

    pages: tuple[str, ...]
    titles: tuple[str, ...]
    images_loaded: int
    images_total: int
    broken_images: tuple[str, ...]
    problems: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems


def browser_missing() -> str:
    """Why the browser check cannot run here ("" when it can)."""
    if not shutil.which(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (the project's `infer` extra)"
    return ""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request otherwise
        pass


@contextmanager
def serve_folder(folder: Path | str) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 at a port the OS picks, in a daemon thread; yields the base URL.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder to serve (build the site first: make docs)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def find_log_page(site: Path | str) -> str:
    """The first weekly log page of a built ``site`` that shows an image (CPU logs first, by path), as a site path.

    Raises:
        FileNotFoundError: no page under ``docs/weekly-logs/`` has an ``<img>``.
    """
    site = Path(site)
    for page in sorted((site / LOGS).rglob("*.html"), key=lambda p: (len(p.parts), p)):  # CPU logs before gpu/
        if "<img" in page.read_text(encoding="utf-8", errors="replace"):
            return page.relative_to(site).as_posix()
    raise FileNotFoundError(f"no weekly log page with an image under {site / LOGS}: was the site built from a "
                            "repository with docs/weekly-logs/weekNN.md and its plots?")


def check_site(site: Path | str, site_name: str, log_page: str | None = None,
               timeout_ms: int = 30_000) -> BrowserCheck:
    """Open the home page and ``log_page`` (a site path; None -> :func:`find_log_page`) of the built ``site`` in
    headless Chromium. A problem: a page that does not answer 200, a title without ``site_name``, an image of the
    log page that did not load (``complete && naturalWidth > 0``), a log page with no image at all.

    Raises:
        FileNotFoundError: ``site`` is not a folder, or has no log page with an image.
        RuntimeError: the browser cannot run here (the message says why: :func:`browser_missing`).
    """
    if why := browser_missing():
        raise RuntimeError(why)
    from playwright.sync_api import sync_playwright

    t0 = time.perf_counter()
    log_page = log_page or find_log_page(site)
    paths, titles, problems, images = ("index.html", log_page), [], [], []
    with serve_folder(site) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            for path in paths:
                response = page.goto(f"{base}/{path}", wait_until="load", timeout=timeout_ms)
                status = response.status if response else None
                if status != 200:
                    problems.append(f"{path}: HTTP {status}")
                titles.append(page.title())
                if site_name not in titles[-1]:
                    problems.append(f"{path}: title {titles[-1]!r} does not name the site {site_name!r}")
            images = page.evaluate(_IMAGES)
        finally:
            browser.close()
    broken = tuple(src for src, loaded in images if not loaded)
    if not images:
        problems.append(f"{log_page}: no image on the page")
    problems += [f"{log_page}: image {src} did not load" for src in broken]
    return BrowserCheck(paths, tuple(titles), len(images) - len(broken), len(images), broken, tuple(problems),
                        round(time.perf_counter() - t0, 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m week12_portfolio.browser", description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, default=Path("site"), help="the built site (default site/)")
    ap.add_argument("--site-name", default=None, help="what every page title names (default: README.md's heading)")
    ap.add_argument("--page", default=None, help="the log page to open (default: the first with an image)")
    args = ap.parse_args(argv)
    site_name = args.site_name or heading_texts((REPO / "README.md").read_text(encoding="utf-8"))[0]
    try:
        res = check_site(args.site, site_name, args.page)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for problem in res.problems:
        print(problem)
    print(f"{len(res.pages)} pages ({', '.join(res.pages)}), images {res.images_loaded}/{res.images_total} loaded, "
          f"{res.seconds:.1f} s")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
