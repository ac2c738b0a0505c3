"""
The TFTP block-cost benchmark (C{bench/tftp_block_cost.py}) drives every client's
download to its end, so that its figure is per block of whole transfers. No figure is
checked here: timings belong to the benchmark's own runs.
"""

from __future__ import annotations

from pathlib import Path

from bench.tftp_block_cost import BLKSIZE, measure, measure_in


def test_every_client_downloads_the_whole_file() -> None:
    cost, blocks = measure(clients=3, mib=1)
    # Each download: its full blocks, then the short last one.
    assert blocks == 3 * ((1 << 20) // BLKSIZE + 1)
    assert cost > 0


def test_a_tree_is_measured_in_a_process_of_its_own() -> None:
    root = Path(__file__).resolve().parent.parent
    assert measure_in(root, clients=1, mib=1) > 0
