"""Helpers for the UI test: headless Chromium (the server is in ``dagster_dev.py``).

Chromium is driven through the Chrome DevTools Protocol over a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), so nothing beyond the standard
library and Debian's ``chromium`` package is needed: no browser download, no websocket client.
Every process started here is started in its own session and stopped by its process-group id.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fly64_assets_tests.dagster_dev import stop_process_group

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The Chromium executable (env FLY64_CHROMIUM, else the first of the usual names on PATH)."""
    configured = os.environ.get("FLY64_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else shutil.which(configured)
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


# --- Chromium over the DevTools protocol ----------------------------------------------------------


class Chromium:
    """Headless Chromium, one page, driven over ``--remote-debugging-pipe``."""

    def __init__(self, executable: str, profile_dir: Path, width: int = 1600, height: int = 1000) -> None:
        self.width, self.height = width, height
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: bash moves our ends there.
        # (Copied to free descriptors above 100 first, so that its redirections cannot clobber each other.)
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)
        args = [
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-', executable, *args],
            pass_fds=(child_in, child_out),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        for fd in (to_chrome_r, from_chrome_w, child_in, child_out):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: collections.deque[dict] = collections.deque(maxlen=2000)
        """Protocol events received while waiting for replies (console messages, network requests, ...)."""
        self.session_id: str | None = None
        try:
            self._attach()
        except Exception:
            self.close()
            raise

    # protocol plumbing

    def _send(self, method: str, params: dict | None = None, session: bool = True, timeout_s: float = 60.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session_id:
            message["sessionId"] = self.session_id
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)
            elif reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], remaining)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe:\n{self.stderr_tail()}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def stderr_tail(self, n: int = 4000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-n:]

    def _attach(self) -> None:
        targets = self._send("Target.getTargets", session=False)["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = page["targetId"] if page else self._send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session_id = self._send("Target.attachToTarget", {"targetId": target_id, "flatten": True}, session=False)["sessionId"]
        self._send("Page.enable")
        self._send("Runtime.enable")
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )

    # what a test does with a page

    def navigate(self, url: str) -> None:
        result = self._send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")

    def evaluate(self, expression: str):
        result = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        """What a person reads: the page's visible text."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(poll_s)
        raise AssertionError(f"the page never showed {what} within {timeout_s:.0f} s; it shows:\n{self.text()[:3000]}")

    def wait_for_text(self, *needles: str, timeout_s: float = 60.0) -> str:
        """Wait until every needle is in the visible text; returns that text."""
        self.wait_for(lambda: all(needle in self.text() for needle in needles), f"the text {list(needles)}", timeout_s)
        return self.text()

    def wait_until_settled(self, quiet_s: float = 1.5, timeout_s: float = 30.0) -> None:
        """Until the visible text has stopped changing for ``quiet_s`` (spinners gone, data loaded)."""
        deadline = time.monotonic() + timeout_s
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            current = self.text()
            if current != last:
                last, since = current, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.25)

    def click_text(self, text: str, selector: str = "button, a, [role=button], [role=tab], span, div") -> bool:
        """Click the innermost element matching ``selector`` whose own visible text is exactly ``text``."""
        script = f"""(() => {{
            const wanted = {json.dumps(text)};
            const hits = [...document.querySelectorAll({json.dumps(selector)})]
                .filter(e => e.innerText && e.innerText.trim() === wanted && e.offsetParent !== null);
            const innermost = hits.filter(e => !hits.some(o => o !== e && e.contains(o)));
            if (!innermost.length) return false;
            innermost[0].scrollIntoView({{block: 'center'}});
            innermost[0].click();
            return true;
        }})()"""
        return bool(self.evaluate(script))

    def press_key(self, key: str, code: str, key_code: int, alt: bool = False) -> None:
        """One key stroke (e.g. the UI's keyboard shortcuts), sent to the focused page."""
        event = {"key": key, "code": code, "windowsVirtualKeyCode": key_code, "modifiers": 1 if alt else 0}
        self._send("Input.dispatchKeyEvent", {"type": "keyDown", **event})
        self._send("Input.dispatchKeyEvent", {"type": "keyUp", **event})

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            metrics = self._send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self._send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                with contextlib.suppress(Exception):  # it is stopped by its process group below anyway
                    self._send("Browser.close", session=False, timeout_s=5)
        finally:
            stop_process_group(self.process, grace_s=5.0)
            for fd in (self._to_chrome, self._from_chrome):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._stderr.close()
