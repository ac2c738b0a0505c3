"""
Reads a TFTP benchmark run (summary.csv and servers.csv of the shared harness) and
prints pxe-pilot's figures, its ratio to each peer measured in the same run, and the
targets.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

US = "pxe-pilot"
PEERS = ("tftpd-hpa", "dnsmasq", "atftpd")


Cells = dict[tuple[str, ...], dict[str, str]]


def load(run: Path) -> tuple[Cells, dict[str, int]]:
    cells: Cells = {}
    with open(run / "summary.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = (row["test"], row["client"], row["blksize"], row["windowsize"])
            cells[(row["server"], *key)] = row
    memory = {}
    with open(run / "servers.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["peak_rss_kb"]:
                memory[row["server"]] = int(row["peak_rss_kb"])
    return cells, memory


def rate(cells: Cells, server: str, key: tuple[str, str, str, str]) -> float | None:
    row = cells.get((server, *key))
    if row is None or not row["median_mbps"] or row["n_fail"] != "0":
        return None
    return float(row["median_mbps"])


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if not ours or not theirs else f"{ours / theirs:.2f}"


def main(run: Path) -> int:
    cells, memory = load(run)
    rows = [
        ("32 MiB, blksize 512, lock-step (curl)", ("single", "curl", "512", "1")),
        ("32 MiB, blksize 1468, lock-step (curl)", ("single", "curl", "1468", "1")),
        ("32 MiB, blksize 8192, lock-step (curl)", ("single", "curl", "8192", "1")),
        ("32 MiB, blksize 1468, lock-step (atftp)", ("single", "atftp", "1468", "1")),
        ("32 MiB, blksize 1468, windowsize 8 (atftp)", ("single", "atftp", "1468", "8")),
        ("32 MiB, blksize 1468, windowsize 16 (atftp)", ("single", "atftp", "1468", "16")),
        ("50 clients x 32 MiB, blksize 1468 (curl)", ("conc50", "curl", "1468", "1")),
    ]
    header = ["test", f"{US} MB/s", *[f"{p} MB/s" for p in PEERS], *[f"x {p}" for p in PEERS]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, key in rows:
        ours = rate(cells, US, key)
        theirs = [rate(cells, p, key) for p in PEERS]
        print(
            "| "
            + " | ".join([label, fmt(ours), *map(fmt, theirs), *(ratio(ours, t) for t in theirs)])
            + " |"
        )
    print()
    peak = {s: kb / 1024 for s, kb in memory.items()}
    print("peak memory (MB): " + ", ".join(f"{s} {v:.1f}" for s, v in sorted(peak.items())))
    print()

    checks = []
    lock = rate(cells, US, rows[1][1])
    hpa = rate(cells, "tftpd-hpa", rows[1][1])
    checks.append(("lock-step 1468 >= 0.8 x tftpd-hpa", lock and hpa and lock / hpa, 0.8))
    best_peer = max(
        (
            float(r["median_mbps"])
            for (server, *_), r in cells.items()
            if server in PEERS
            and r["test"] == "single"
            and r["median_mbps"]
            and r["n_fail"] == "0"
        ),
        default=None,
    )
    window = rate(cells, US, rows[5][1])
    checks.append(
        (
            "windowsize 16 >= 1.0 x best peer's best",
            window and best_peer and window / best_peer,
            1.0,
        )
    )
    conc = rate(cells, US, rows[6][1])
    conc_hpa = rate(cells, "tftpd-hpa", rows[6][1])
    checks.append(("50 clients >= 1.0 x tftpd-hpa", conc and conc_hpa and conc / conc_hpa, 1.0))
    checks.append(("peak memory < 100 MB (value in MB)", peak.get(US), -100.0))
    failed = 0
    for name, value, target in checks:
        if value is None or value is False:
            verdict, shown = "MISSING", "-"
        elif target < 0:
            verdict, shown = ("ok" if value < -target else "MISSED"), f"{value:.1f}"
        else:
            verdict, shown = ("ok" if value >= target else "MISSED"), f"{value:.2f}"
        failed += verdict != "ok"
        print(f"{verdict:8} {name}: {shown}")
    print(f"\nbest peer configuration: {fmt(best_peer)} MB/s; run directory: {run}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
