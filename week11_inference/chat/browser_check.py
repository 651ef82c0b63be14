"""The chat page end to end in a real browser: serve :func:`week11_inference.chat.app.create_app` on a free loopback
port (uvicorn in a thread), open it in headless Chromium through Playwright (Debian's ``/usr/bin/chromium``: no
browser download), send a prompt, and record how the answer arrived. The week's log and the test both use it.

Playwright's Python API: https://playwright.dev/python/docs/api/class-page
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# headless, and none of Chromium's background connections (the machine's closed network refuses them, many at once)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

_RECORD_LENGTHS = """() => { window.lengths = [];
    new MutationObserver(() => {
      const t = document.querySelector('[data-role="assistant"] .text');
      if (t) window.lengths.push(t.textContent.length);
    }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


def browser_missing() -> str:
    """Why the browser check cannot run here ("" when it can)."""
    if not shutil.which(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (the `infer` extra)"
    return ""


@contextmanager
def serve_in_thread(app: Any, timeout_s: float = 10.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 at a free port in a daemon thread; yields its base URL.

    Raises:
        RuntimeError: the server stopped or did not start within ``timeout_s``.
    """
    import uvicorn

    from shared.testing import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port} within {timeout_s:.0f} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def browser_roundtrip(base_url: str, prompt: str, max_tokens: int = 24, timeout_ms: int = 30_000) -> dict[str, Any]:
    """Open ``base_url`` in headless Chromium, send ``prompt`` and wait for the answer's done marker.

    Returns:
        ``{model_label, user_text, answer, stats, status_line, lengths, page_errors, seconds}``: ``lengths`` is every
        length the answer's text took while it streamed (more than one distinct value: it arrived in pieces).

    Raises:
        playwright's TimeoutError: no done marker within ``timeout_ms``.
    """
    from playwright.sync_api import expect, sync_playwright

    t0 = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base_url + "/")
            expect(page.locator("#model")).not_to_be_empty()
            page.evaluate(_RECORD_LENGTHS)
            page.get_by_label("Max tokens").fill(str(max_tokens))
            page.get_by_label("Your message").fill(prompt)
            page.get_by_role("button", name="Send").click()
            answer = page.locator('[data-role="assistant"]')
            expect(answer).to_have_attribute("data-done", "true", timeout=timeout_ms)
            return {"model_label": page.locator("#model").text_content(),
                    "user_text": page.locator('[data-role="user"] .text').text_content(),
                    "answer": answer.locator(".text").text_content(),
                    "stats": answer.locator(".stats").text_content(),
                    "status_line": page.locator("#status").text_content(),
                    "lengths": page.evaluate("window.lengths"), "page_errors": errors,
                    "seconds": round(time.perf_counter() - t0, 2)}
        finally:
            browser.close()
