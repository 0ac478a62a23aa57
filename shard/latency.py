"""A bounded window of recent latencies, summarised as percentiles for heartbeats and status."""

from __future__ import annotations

from collections import deque


class LatencyWindow:
    """The last `size` samples in nanoseconds; O(1) to add, sorted only when summarised."""

    def __init__(self, size: int = 4096) -> None:
        self._samples: deque[int] = deque(maxlen=size)
        self.count = 0

    def add(self, ns: int) -> None:
        self._samples.append(ns)
        self.count += 1

    def summary_us(self) -> dict[str, float | int]:
        """p50/p99/max of the window in microseconds (empty dict before any sample), and the total count."""
        if not self._samples:
            return {"count": 0}
        ordered = sorted(self._samples)
        last = len(ordered) - 1
        return {"count": self.count,
                "p50": round(ordered[last // 2] / 1000, 1),
                "p99": round(ordered[min(last, round(last * 0.99))] / 1000, 1),
                "max": round(ordered[last] / 1000, 1)}
