"""
What the builder prints: a bar on a terminal; step lines and paced progress lines
otherwise.
"""

from __future__ import annotations

import io

from twisted.internet.task import Clock

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


def lines_at(total: int | None, chunk: int, every: float, steps: int) -> list[tuple[float, str]]:
    """
    The lines a log gets (with the time each was written) when C{chunk} bytes arrive
    every C{every} seconds, C{steps} times.
    """
    clock = Clock()
    stream = io.StringIO()
    progress = Progress(stream, tty=False, clock=clock)
    progress.start("downloading x", total)
    written: list[tuple[float, str]] = []
    seen = len(stream.getvalue())
    for _ in range(steps):
        clock.advance(every)
        progress.advance(chunk)
        text = stream.getvalue()
        if len(text) > seen:
            written.append((clock.seconds(), text[seen:]))
            seen = len(text)
    return written


def test_slow_transfer_gets_a_line_every_5_seconds() -> None:
    """
    Not on a terminal (systemd, docker logs, CI), a transfer too slow to move 5 % in 5 s
    still shows a line every 5 s: the log tells it is alive, how far and how fast.
    """
    written = lines_at(total=1_000_000_000, chunk=1_000_000, every=1.0, steps=20)
    assert written == [
        (5.0, "0% 5.0 MB of 1.0 GB, 1.0 MB/s\n"),
        (10.0, "1% 10.0 MB of 1.0 GB, 1.0 MB/s\n"),
        (15.0, "2% 15.0 MB of 1.0 GB, 1.0 MB/s\n"),
        (20.0, "2% 20.0 MB of 1.0 GB, 1.0 MB/s\n"),
    ]


def test_every_5_percent_but_at_most_one_line_a_second() -> None:
    """
    A faster transfer gets a line each 5 % further on; one moving 5 % in less than a
    second gets a line a second, not more.
    """
    moderate = lines_at(total=100_000_000, chunk=1_000_000, every=0.5, steps=40)
    assert [at for at, _ in moderate] == [2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0]
    assert moderate[0][1] == "5% 5.0 MB of 100.0 MB, 2.0 MB/s\n"
    fast = lines_at(total=100_000_000, chunk=1_000_000, every=0.125, steps=100)
    assert [at for at, _ in fast] == [float(n) for n in range(1, 13)]
    assert fast[-1][1] == "96% 96.0 MB of 100.0 MB, 8.0 MB/s\n"


def test_unknown_size_gets_a_line_every_5_seconds() -> None:
    """
    Without a Content-Length only time can pace the lines.
    """
    written = lines_at(total=None, chunk=2_000_000, every=0.5, steps=20)
    assert written == [(5.0, "20.0 MB, 4.0 MB/s\n"), (10.0, "40.0 MB, 4.0 MB/s\n")]


def test_terminal_bar_follows_the_clock() -> None:
    """
    On a terminal the bar is redrawn at most five times a second of the clock given.
    """
    clock = Clock()
    stream = io.StringIO()
    progress = Progress(stream, tty=True, clock=clock)
    progress.start("downloading x", 1_000_000)
    for _ in range(10):
        clock.advance(0.05)
        progress.advance(10_000)
    assert stream.getvalue().count("\r[") == 3
