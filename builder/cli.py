"""
The C{pxe-pilot-builder} command.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("pxe-pilot-builder: not available yet", file=sys.stderr)
    return 1
