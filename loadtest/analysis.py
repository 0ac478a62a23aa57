"""Latencies of the streaming phase, from three logs joined exactly.

* the simulators' send log: when each frame was written (`venue, market, key, send_ns`);
* each worker's frame log: when each frame was read (`venue, market, key, recv_ns`);
* the shard's latency log: each record it held, with the worker's read stamp of the
  frame that produced it (`recv_ns`), the worker's publish stamp and its own.

A record's frame is found by (venue, recv_ns): exact, with no guess about which of
several frames sent back to back moved the top. Records the shard got from a
snapshot, or that no frame explains (a resync's REST book), are not in the join.
The logs are read in three passes, each keeping only what the next one needs, so a
2,000-market run does not hold every frame of the simulators in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.instrument import read_latency_log
from markets.sim.sendlog import read_send_log

PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))


def summary_us(values_ns: Sequence[int], names: Iterable[str] = ("p50", "p90", "p99", "p999")
               ) -> dict[str, float | int | None]:
    """Nearest-rank percentiles (the rule of `scripts/benchstats.percentile`: always a measured
    value), max and count, in microseconds; None when there is no sample."""
    wanted = set(names)
    ordered = sorted(values_ns)
    out: dict[str, float | int | None] = {}
    for name, q in PERCENTILES:
        if name in wanted:
            out[name] = round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3, 1) if ordered else None
    out["max"] = round(ordered[-1] / 1e3, 1) if ordered else None
    out["count"] = len(ordered)
    return out


@dataclass
class StreamLatencies:
    """Nanosecond samples of the window: end to end and per hop."""

    end_to_end: list[int] = field(default_factory=list)
    venue_to_worker: list[int] = field(default_factory=list)
    worker_to_shard: list[int] = field(default_factory=list)
    records: int = 0
    unmatched: int = 0
    """Records in the window with no frame in the logs (a resync, or a frame the logs missed)."""


def join_logs(send_log: Path, frame_logs: Sequence[Path], latency_log: Path, start_ns: int,
              end_ns: int) -> StreamLatencies:
    """The samples of records held by the shard between `start_ns` and `end_ns`."""
    out = StreamLatencies()
    records = [r for r in read_latency_log(latency_log) if start_ns <= r.decode_ns < end_ns] \
        if latency_log.exists() else []
    out.records = len(records)
    wanted_recv = {(r.venue, r.recv_ns) for r in records}
    frame_of: dict[tuple[str, str, str], tuple[str, int]] = {}
    for path in frame_logs:
        if path.exists():
            for frame in read_send_log(path):
                if (frame.venue, frame.send_ns) in wanted_recv:
                    frame_of[(frame.venue, frame.market_id, frame.key)] = (frame.venue, frame.send_ns)
    sent: dict[tuple[str, int], int] = {}
    if send_log.exists():
        for record in read_send_log(send_log):
            received = frame_of.get((record.venue, record.market_id, record.key))
            if received is not None:
                previous = sent.get(received)
                sent[received] = record.send_ns if previous is None else min(previous, record.send_ns)
    for r in records:
        send_ns = sent.get((r.venue, r.recv_ns))
        if send_ns is None:
            out.unmatched += 1
            continue
        out.end_to_end.append(r.decode_ns - send_ns)
        out.venue_to_worker.append(r.recv_ns - send_ns)
        out.worker_to_shard.append(r.decode_ns - r.publish_ns)
    return out
