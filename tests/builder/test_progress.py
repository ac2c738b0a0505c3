"""
What the builder prints: a bar on a terminal, step lines otherwise.
"""

from __future__ import annotations

import io

from builder.progress import Progress


def test_plain_output_has_step_lines_only() -> None:
    """
    Piped into a log, the builder writes one line per step and no bar.
    """
    stream = io.StringIO()
    progress = Progress(stream, tty=False)
    progress.start("downloading x", 3_000_000)
    for _ in range(30):
        progress.advance(100_000)
    progress.step("published")
    assert stream.getvalue() == "downloading x (3.0 MB)\npublished\n"


def test_terminal_output_has_a_bar() -> None:
    """
    On a terminal a bar shows how far the transfer is, then gives way to the next step.
    """
    stream = io.StringIO()
    progress = Progress(stream, tty=True)
    progress.start("downloading x", 1_000_000)
    progress.advance(500_000)
    text = stream.getvalue()
    assert "\r[###############               ]  50.0% 500.0 KB of 1.0 MB" in text
    progress.step("done")
    assert stream.getvalue().endswith("\r" + " " * 79 + "\rdone\n")
