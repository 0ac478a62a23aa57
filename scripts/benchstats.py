"""Reporting helpers shared by the benchmark scripts.

Every benchmark reports the same way: latency as percentiles (an average hides
the tail that decides whether a price arrives in time) and, first of all, the
settings it ran with, so a figure pasted into a report can be reproduced.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, `q` in [0, 1]: always a value that was measured."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_settings(args: argparse.Namespace) -> None:
    """One line with every command-line setting, spelled as the option it came from."""
    options = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in sorted(vars(args).items()))
    print(f"settings: {options}", flush=True)
