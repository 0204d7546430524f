"""Headless Chromium for tests, driven over its DevTools pipe (``--remote-debugging-pipe``: JSON messages,
NUL-separated, on the child's fds 3 and 4; the standard library only).

``chromium --dump-dom --virtual-time-budget=...`` was tried first: on the MLflow UI it dumped the page before
its chart chunks had loaded in two calls of three (the charts still spinners), whatever the budget. Here a
page is opened and its DOM read until what the test looks for is there, so a slow box waits, not fails."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

EXECUTABLE = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _onto_3_and_4(read_fd: int, write_fd: int) -> None:
    """In the child: the pipe ends onto fds 3 and 4 (dups first: a < b, both >= 3, so neither dup2 clobbers
    the other's source)."""
    a, b = os.dup(read_fd), os.dup(write_fd)
    os.dup2(a, 3)
    os.dup2(b, 4)


class Chromium:
    """One headless browser with one tab, its own fresh profile in ``profile`` (nothing from a user's browser,
    nothing kept in localStorage between tests)."""

    def __init__(self, profile: Path, width: int = 1600, height: int = 1000):
        self.width = width
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        self.proc = subprocess.Popen(
            [EXECUTABLE, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4),
            start_new_session=True, preexec_fn=lambda: _onto_3_and_4(commands_r, replies_w))
        os.close(commands_r)
        os.close(replies_w)
        self._buffer, self._id = b"", 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, timeout: float = 60, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"chromium: {method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium: no answer to {method} in {timeout:.0f}s")
            if select.select([self._replies], [], [], left)[0]:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self.proc.poll()}) during {method}")
                self._buffer += chunk

    def tab(self, method: str, **params) -> dict:
        return self.send(method, session=self.session, **params)

    def html(self) -> str:
        """The tab's DOM now, then its text as rendered (a syntax-highlighted file splits its words into spans);
        "" while a navigation has none to give."""
        return self.evaluate("document.documentElement ? document.documentElement.outerHTML + '\\n' + "
                             "document.body.innerText : ''") or ""

    def evaluate(self, expression: str):
        return self.tab("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, needles: list[str], height: int = 1000, timeout: float = 90) -> str:
        """Load ``url`` afresh (via about:blank: a new hash route of the same app would keep the old DOM) and
        return its DOM once every needle is in it, or at ``timeout`` as it is then."""
        self.tab("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1, mobile=False)
        self.tab("Page.navigate", url="about:blank")
        self.tab("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while True:
            html = self.html()
            if all(n in html for n in needles) or time.monotonic() > deadline:
                return html
            time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.tab("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        os.close(self._commands)
        os.close(self._replies)
