"""
Running C{twistd pxe-pilot} as a real process, for tests over real sockets.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

TWISTD = Path(sys.executable).parent / "twistd"
LISTENING = re.compile(r"HTTP listening on (?P<host>[^ ]+):(?P<port>\d+)")


class TwistdProcess:
    """
    C{twistd -n pxe-pilot ARGS}, its output collected, its HTTP port found in its log.
    """

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
        environ.update(env or {})
        self.process = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", "pxe-pilot", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=cwd,
        )
        self.output = b""

    def read_until(self, pattern: re.Pattern[str], timeout: float = 20) -> re.Match[str]:
        """
        Read the log until C{pattern} matches a line.
        """
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.output.decode("utf-8", "replace"))
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.process.poll() is not None and not self._read(0)):
                raise AssertionError(f"{pattern.pattern!r} not in output:\n{self.text}")
            self._read(remaining)

    def _read(self, timeout: float) -> bool:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], min(timeout, 0.5))
        if not ready:
            return False
        chunk = os.read(self.process.stdout.fileno(), 65536)
        self.output += chunk
        return bool(chunk)

    def http_port(self) -> int:
        return int(self.read_until(LISTENING)["port"])

    def finish(self, timeout: float = 20) -> int:
        """
        Wait for the process to exit by itself; its exit code.
        """
        code = self.process.wait(timeout)
        while self._read(0):
            pass
        return code

    def stop(self) -> int:
        """
        SIGTERM, then wait for a clean exit.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish()

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")
