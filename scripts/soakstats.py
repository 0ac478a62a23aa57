"""What `scripts/soak.py` measures besides books: resident memory over time, and counters that
survive restarts.

RSS is sampled from /proc per process *instance* (a role killed and restarted is a new
instance with a new pid): a leak shows as a steady climb within one long-lived instance,
so the trend is the least-squares slope of each instance's samples, in MB per minute,
computed only where the samples span at least `MIN_TREND_SPAN` seconds.

Role counters (venue reconnects, resyncs, bus gaps) live in the role processes and die
with them, so the last value seen of each instance is kept and the totals add up every
instance that ever ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from loadtest.procstats import sample

WARM_UP = 30.0
"""Seconds after an instance's first sample that its trend leaves out: a process grows while it
imports, connects and fills its books, which says nothing about a leak."""
MIN_TREND_SPAN = 60.0
"""Seconds of samples past the warm-up an instance needs before its slope means anything."""


@dataclass
class RssSeries:
    """(seconds since the start, MB) samples of each (role name, pid)."""

    samples: dict[tuple[str, int], list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, pid: int, at: float) -> None:
        """Sample `pid` now; a process that is already gone is skipped (it was just killed)."""
        measured = sample(pid)
        if measured is not None:
            self.samples[(name, pid)].append((at, measured.rss_kb / 1024))

    def report(self, max_slope: float) -> list[dict[str, Any]]:
        """One row per instance: samples, first/last/peak MB, slope in MB/min past the warm-up (None
        when too short), and whether the slope stays under `max_slope`."""
        rows = []
        for (name, pid), points in sorted(self.samples.items()):
            span = points[-1][0] - points[0][0]
            steady = [(t, mb) for t, mb in points if t - points[0][0] >= WARM_UP]
            trend = (slope_per_minute(steady) if steady and steady[-1][0] - steady[0][0] >= MIN_TREND_SPAN
                     else None)
            rows.append({"name": name, "pid": pid, "samples": len(points), "span_s": round(span, 1),
                         "start_mb": round(points[0][1], 1), "end_mb": round(points[-1][1], 1),
                         "peak_mb": round(max(mb for _, mb in points), 1),
                         "slope_mb_per_min": None if trend is None else round(trend, 3),
                         "trend_ok": None if trend is None else trend <= max_slope})
        return rows


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


@dataclass
class InstanceCounters:
    """The last counters reported by each (role id, pid), so totals outlive restarts."""

    last: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def update(self, status: dict[str, Any]) -> None:
        for worker_id, info in status.get("workers", {}).items():
            self.last[(worker_id, info.get("pid", 0))] = info.get("counters", {})
        for shard_id, info in status.get("shards", {}).items():
            counters = info.get("counters", {})
            self.last[(shard_id, counters.get("pid", 0))] = counters

    def venue_total(self, venue: str, name: str) -> int:
        """A venue client counter (`reconnects`, `resyncs`, `gaps`) summed over every worker instance."""
        return sum(c.get("venues", {}).get(venue, {}).get(name, 0) for c in self.last.values())

    def total(self, name: str) -> int:
        """A role counter (a shard's `gap`, a worker's `published`) summed over every instance."""
        return sum(c.get(name, 0) for c in self.last.values() if isinstance(c.get(name, 0), int))
