"""Helpers for the UI test: a `dagster dev` server, its GraphQL API, and headless Chromium.

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
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the process group that ``process`` leads, then SIGKILL if it is still there."""
    if process.poll() is not None and not _group_alive(process.pid):
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- dagster dev and its GraphQL API --------------------------------------------------------------


class GraphQLError(AssertionError):
    pass


class DagsterDev:
    """``dagster dev -w workspace.yaml`` on 127.0.0.1:<port>, in its own session; ``stop()`` ends the group."""

    def __init__(self, repo_root: Path, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.repo_root = repo_root
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> None:
        dagster = Path(self.env.get("VIRTUAL_ENV", "")) / "bin" / "dagster"
        executable = str(dagster) if dagster.exists() else shutil.which("dagster", path=self.env.get("PATH"))
        if executable is None:
            raise RuntimeError("the dagster command is not installed in this environment")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [executable, "dev", "-w", "workspace.yaml", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.repo_root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.process.returncode}; see {self.log_path}")
            try:
                data = self.graphql(
                    "{ version workspaceOrError { ... on Workspace { locationEntries { name "
                    "locationOrLoadError { __typename } } } } }",
                    timeout_s=10,
                )
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and all(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries):
                    return
                if any(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "PythonError" for e in entries):
                    raise RuntimeError(f"the code location failed to load: {entries}; see {self.log_path}")
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ValueError, GraphQLError):
                pass
            time.sleep(1.0)
        raise TimeoutError(f"dagster dev did not answer on {self.url} within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
        if self._log is not None:
            self._log.close()

    def graphql(self, query: str, variables: dict | None = None, timeout_s: float = 60.0) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise GraphQLError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]


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
