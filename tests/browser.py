"""
Headless Chromium driven over the DevTools protocol, for tests that look at a page as a
person would: Debian's C{chromium} package only, no driver and no Python dependency.

Chromium started with C{--remote-debugging-pipe} reads protocol messages (JSON, each
ending with a NUL byte) from its file descriptor 3 and writes its own to descriptor 4.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.twistd_process import child_log

CHROMIUM = Path("/usr/bin/chromium")

# Chromium's own descriptors for the protocol pipe, fixed by --remote-debugging-pipe.
_CHROMIUM_READS = 3
_CHROMIUM_WRITES = 4


def _above_protocol_descriptors(descriptor: int) -> int:
    """
    A close-on-exec copy of C{descriptor} numbered above 4, which replaces it.
    """
    moved = fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, _CHROMIUM_WRITES + 1)
    os.close(descriptor)
    return moved


class BrowserError(Exception):
    """
    Chromium did not do what was asked in time, or said it could not; the message
    ends with the tail of its log.
    """


class Browser:
    """
    One headless Chromium process, for as many pages as a test needs.

    Use it as a context manager: the process is started on entry and ended on exit.

    @ivar timeout: Seconds any single wait may take.
    """

    def __init__(self, profile: Path, executable: Path = CHROMIUM, timeout: float = 30) -> None:
        self.profile = profile
        self.executable = executable
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log = child_log()
        self._to_chromium = -1
        self._from_chromium = -1
        self._received = b""
        self._events: list[dict[str, Any]] = []
        self._last_id = 0

    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        # The child's ends are moved above 4 first, so that putting them in place as 3
        # and 4 cannot overwrite one with the other.
        chromium_reads, self._to_chromium = os.pipe()
        self._from_chromium, chromium_writes = os.pipe()
        chromium_reads = _above_protocol_descriptors(chromium_reads)
        chromium_writes = _above_protocol_descriptors(chromium_writes)
        self.profile.mkdir(parents=True, exist_ok=True)
        arguments = [
            str(self.executable),
            "--headless",
            # CI runs as root, where Chromium's sandbox refuses to start.
            "--no-sandbox",
            "--disable-gpu",
            # Debian's launcher loads its packaged extensions; a test wants none.
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]

        def wire_pipe() -> None:
            # In the child, between fork and exec: subprocess cannot renumber a
            # descriptor (pass_fds keeps numbers), and Chromium wants these as 3 and 4.
            # Only dup2 runs here, no import and no lock that another thread of the
            # parent could have held at fork, which is what makes preexec_fn risky.
            os.dup2(chromium_reads, _CHROMIUM_READS)
            os.dup2(chromium_writes, _CHROMIUM_WRITES)

        try:
            self._process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # Closing inherited descriptors happens after wire_pipe and would close
                # 3 and 4 again; the ones Python opens are close-on-exec anyway.
                close_fds=False,
                preexec_fn=wire_pipe,
                # Chromium's renderers and other helpers join this group, so that close()
                # can end any it leaves behind.
                process_group=0,
            )
        finally:
            os.close(chromium_reads)
            os.close(chromium_writes)
        # The first answer proves the pipe works.
        self.send("Browser.getVersion")

    def close(self) -> None:
        process = self._process
        self._process = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            # Helpers that outlived the browser (its group is its own: see start).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for descriptor in (self._to_chromium, self._from_chromium):
            if descriptor >= 0:
                os.close(descriptor)
        self._to_chromium = self._from_chromium = -1
        self._log.close()

    # -- the protocol

    def log_tail(self, lines: int = 30) -> str:
        """
        The end of Chromium's own output, for error messages.
        """
        if self._log.closed:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        # Headless Chromium complains about every D-Bus service it cannot reach, which
        # tells nothing about a failure here.
        relevant = [line for line in text.splitlines() if "dbus/" not in line]
        return "\n".join(relevant[-lines:])

    def error(self, message: str) -> BrowserError:
        """
        A L{BrowserError} saying C{message}, with Chromium's last words.
        """
        return BrowserError(f"{message}\n--- chromium output (last lines) ---\n{self.log_tail()}")

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """
        Call a protocol method and wait for its result; events that arrive meanwhile
        are kept for L{wait_for}.
        """
        self._last_id += 1
        call: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            call["sessionId"] = session
        data = json.dumps(call).encode("utf-8") + b"\0"
        try:
            while data:
                data = data[os.write(self._to_chromium, data) :]
        except OSError as e:
            raise self.error(f"cannot send {method} to Chromium: {e}") from e
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._next_message(deadline, f"the answer to {method}")
            if message.get("id") == call["id"]:
                if "error" in message:
                    raise self.error(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self._events.append(message)

    def wait_for(self, method: str, session: str | None = None) -> dict[str, Any]:
        """
        The parameters of the first event C{method} in C{session} not yet waited for.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self._events:
                if event["method"] == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    params: dict[str, Any] = event.get("params", {})
                    return params
            message = self._next_message(deadline, f"the event {method}")
            if "method" in message:
                self._events.append(message)

    def forget_events(self, session: str | None) -> None:
        """
        Drop the events received so far in C{session}.
        """
        self._events = [event for event in self._events if event.get("sessionId") != session]

    def _next_message(self, deadline: float, awaited: str) -> dict[str, Any]:
        """
        Chromium's next message, as soon as it has arrived whole.

        @raise BrowserError: when none does by C{deadline}, or Chromium has gone.
        """
        while True:
            data, separator, rest = self._received.partition(b"\0")
            if separator:
                self._received = rest
                message: dict[str, Any] = json.loads(data)
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.error(f"waited {self.timeout} s for {awaited} from Chromium")
            readable, _, _ = select.select([self._from_chromium], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(self._from_chromium, 1 << 16)
            if not chunk:
                code = self._process.poll() if self._process else None
                raise self.error(f"Chromium closed its pipe (exit code {code}) before {awaited}")
            self._received += chunk

    # -- pages

    def open(
        self,
        url: str,
        width: int,
        height: int,
        mobile: bool = False,
        before_load: str = "",
        javascript: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Page:
        """
        A new tab of C{width} by C{height} CSS pixels (one device pixel each) showing
        C{url}, loaded. C{mobile} emulates a phone, where the page's viewport meta tag
        applies. C{before_load} is a script run in the page before any of its own.
        Without C{javascript} the page's own scripts never run, as in a browser with
        JavaScript turned off (L{Page.evaluate} still works: it is the test's, not the
        page's). C{headers} go with every request of the tab, the page's own
        C{fetch()} calls included: C{Authorization} there is what a browser sends once
        its user typed Basic credentials.
        """
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, target, session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            session,
        )
        self.send("Page.enable", session=session)
        if not javascript:
            self.send("Emulation.setScriptExecutionDisabled", {"value": True}, session)
        if headers:
            self.send("Network.enable", session=session)
            self.send("Network.setExtraHTTPHeaders", {"headers": headers}, session)
        if before_load:
            self.send("Page.addScriptToEvaluateOnNewDocument", {"source": before_load}, session)
        page.navigate(url)
        return page


class Page:
    """
    One tab of a L{Browser}.
    """

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session

    def navigate(self, url: str) -> None:
        """
        Load C{url} and wait for its load event.
        """
        result = self.browser.send("Page.navigate", {"url": url}, self.session)
        if result.get("errorText"):
            raise self.browser.error(f"cannot load {url}: {result['errorText']}")
        # Page.navigate answers once the new document is committed: a load event
        # received before then was the previous document's.
        self.browser.forget_events(self.session)
        self.browser.wait_for("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        """
        The value of a JavaScript expression in the page, as JSON would carry it.
        """
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise self.browser.error(f"{expression!r} raised: {text}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float | None = None) -> Any:
        """
        The first truthy value of a JavaScript expression, evaluated again every tenth
        of a second until C{timeout} (the browser's) has passed.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.browser.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise self.browser.error(f"{expression!r} stayed {value!r}")
            time.sleep(0.1)

    def answer_dialog(self, accept: bool = True) -> str:
        """
        Wait for the page's next C{alert()}, C{confirm()} or C{prompt()}, answer it as a
        person clicking OK (or Cancel, without C{accept}) would; its message.

        Start what opens it with C{setTimeout} in L{evaluate}: the dialog holds the
        page's script until it is answered, and so would hold the evaluation.
        """
        opened = self.browser.wait_for("Page.javascriptDialogOpening", self.session)
        self.browser.send("Page.handleJavaScriptDialog", {"accept": accept}, self.session)
        message: str = opened.get("message", "")
        return message

    def wait_for_load(self) -> None:
        """
        Wait for the load event of a document the page is navigating to; call
        L{forget_loads} before what starts the navigation.
        """
        self.browser.wait_for("Page.loadEventFired", self.session)

    def forget_loads(self) -> None:
        """
        Drop the events of the page received so far, so that L{wait_for_load} waits for
        the next document.
        """
        self.browser.forget_events(self.session)

    def screenshot(self, path: Path) -> Path:
        """
        Save what the viewport shows as a PNG file at C{path}.
        """
        result = self.browser.send("Page.captureScreenshot", {"format": "png"}, self.session)
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})
        self.browser.forget_events(self.session)
