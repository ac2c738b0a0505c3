"""
Running C{twistd pxe-pilot} as a real process, for tests over real sockets.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

TWISTD = Path(sys.executable).parent / "twistd"
LISTENING = re.compile(r"HTTP listening on (?P<host>[^ ]+):(?P<port>\d+)\n")


def child_log() -> IO[bytes]:
    """
    A temporary file for a child process's output, that the test may read while the
    child writes.

    The child's descriptor shares the file's offset with ours: without C{O_APPEND},
    a line written between our seek and our read would land where we had sought,
    over the start of the log.
    """
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    flags = fcntl.fcntl(log.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(log.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
    return log


class TwistdProcess:
    """
    C{twistd -n pxe-pilot ARGS}, its log collected in a file (a pipe nobody reads would
    fill up and stall the server), its HTTP port found in its log.
    """

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
        environ.update(env or {})
        if "PXE_PILOT_STATE_DIR" not in environ and not any(a.startswith("--state") for a in args):
            # Never the default ./state: that would be the checkout's.
            self._state = tempfile.TemporaryDirectory()
            environ["PXE_PILOT_STATE_DIR"] = self._state.name
        if "PXE_PILOT_HTTPS_PORT" not in environ and "--https-port" not in args:
            # HTTPS is on by default, on a fixed port that two test servers would share;
            # a test about HTTPS names a free port of its own.
            environ["PXE_PILOT_HTTPS_PORT"] = "0"
        self._log = child_log()
        self.process = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", "pxe-pilot", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=cwd,
        )

    @property
    def text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def read_until(self, pattern: re.Pattern[str], timeout: float = 20) -> re.Match[str]:
        """
        Wait until C{pattern} matches the log.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.text)
            if found:
                return found
            if time.monotonic() > deadline or self.process.poll() is not None:
                found = pattern.search(self.text)
                if found:
                    return found
                raise AssertionError(f"{pattern.pattern!r} not in output:\n{self.text}")
            time.sleep(0.05)

    def http_port(self) -> int:
        return int(self.read_until(LISTENING)["port"])

    def finish(self, timeout: float = 20) -> int:
        """
        Wait for the process to exit by itself; its exit code.
        """
        return self.process.wait(timeout)

    def stop(self) -> int:
        """
        SIGTERM, then wait for a clean exit.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish()
