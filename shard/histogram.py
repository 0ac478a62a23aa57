"""Latency histograms for Prometheus, cheap enough for the shard's applied-record path.

A `prometheus_client.Histogram` takes a lock and walks its buckets per sample;
here a sample is one `bisect` and two integer additions, with no lock: the
samples are added on the event loop, and the metrics endpoint reads them on the
same loop. Cumulative counts are computed only when scraped.
"""

from __future__ import annotations

from bisect import bisect_left

from markets.models import MarketPrice

BOUNDS_NS = (50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000,
             50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 10_000_000_000)
"""Upper bounds of the buckets: 50 µs (the loopback floor is ~0.2 ms venue to shard) to 10 s."""


class BucketHistogram:
    """Counts of samples (nanoseconds) per bucket, and their sum."""

    __slots__ = ("bounds_ns", "counts", "sum_ns")

    def __init__(self, bounds_ns: tuple[int, ...] = BOUNDS_NS) -> None:
        if list(bounds_ns) != sorted(set(bounds_ns)) or not bounds_ns:
            raise ValueError("histogram bounds must be a non-empty, strictly increasing sequence")
        self.bounds_ns = bounds_ns
        self.counts = [0] * (len(bounds_ns) + 1)
        self.sum_ns = 0

    def observe(self, ns: int) -> None:
        """Add one sample; a negative one (clocks of two hosts disagree) counts in the first bucket."""
        self.counts[bisect_left(self.bounds_ns, ns)] += 1
        self.sum_ns += ns

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative `(upper bound in seconds, count)` pairs ending with `+Inf`, as Prometheus expects."""
        total, out = 0, []
        for bound, count in zip((*(f"{b / 1e9:g}" for b in self.bounds_ns), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class BusLatency:
    """At the shard, per applied record: end to end (venue frame read by the worker) and the bus hop alone."""

    __slots__ = ("end_to_end", "bus_hop")

    def __init__(self) -> None:
        self.end_to_end = BucketHistogram()
        self.bus_hop = BucketHistogram()

    def observe(self, now_ns: int, record: MarketPrice) -> None:
        if record.recv_ts_ns:
            self.end_to_end.observe(now_ns - record.recv_ts_ns)
        if record.publish_ts_ns:
            self.bus_hop.observe(now_ns - record.publish_ts_ns)
