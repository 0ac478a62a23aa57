"""What each role exposes to Prometheus, read from the counters it already keeps (no work on the hot path).

One collector per role; `collect()` runs at scrape time on the role's event loop
(`broker.metrics`). Counters that the role has not incremented yet are exposed as
0 under their known labels, so dashboards and alerts see the series from the start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from broker.broker import Broker
from markets.models import PriceStatus
from shard.game_shard import GameShard
from shard.histogram import BucketHistogram
from shard.market_state import APPLIED, DUPLICATE, GAP, HELD, ZOMBIE
from workers.worker import Worker

BROKER_REJECT_REASONS = ("protocol", "frame_count")
SHARD_REJECT_REASONS = ("rejected_frames", "rejected_payload", "rejected_topic_mismatch", "unexpected_topic",
                        "control_rejected", "snapshot_rejected")
SIGNAL_KINDS = ("arbitrage", "model_edge")


def _labelled(family: CounterMetricFamily | GaugeMetricFamily, values: Iterable[tuple[tuple[str, ...], float]]
              ) -> CounterMetricFamily | GaugeMetricFamily:
    for labels, value in values:
        family.add_metric(list(labels), value)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, histogram: BucketHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=histogram.buckets(), sum_value=histogram.sum_ns / 1e9)


def _with_defaults(counts: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    return {**dict.fromkeys(known, 0), **counts}


class BrokerCollector:
    """Workers alive, markets assigned/unassigned, reassignments, rejected control messages, heartbeat ages."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        b, now = self.broker, time.monotonic()
        counters = b.counters
        yield _gauge("arbees_broker_workers_alive", "Workers registered and heard from within --dead-after.",
                     len(b.workers))
        yield _gauge("arbees_broker_shards_alive", "Shards heard from within --dead-after.", len(b.shards))
        yield _gauge("arbees_broker_markets_assigned", "Markets with an owning worker.", len(b.assignment.owner))
        yield _gauge("arbees_broker_markets_unassigned", "Markets of the universe no worker owns.",
                     len(b.assignment.unowned(b.universe)))
        yield _counter("arbees_broker_markets_reassigned", "Markets taken from workers declared dead, to be placed "
                       "on the survivors.", counters["markets_reassigned"])
        yield _counter("arbees_broker_workers_declared_dead", "Workers declared dead (silent for --dead-after).",
                       counters["workers_declared_dead"])
        yield _counter("arbees_broker_registrations", "Worker registrations (new, again, after a broker restart).",
                       counters["registrations"])
        reasons = _with_defaults({k.removeprefix("rejected_"): v for k, v in counters.items()
                                  if k.startswith("rejected_")}, BROKER_REJECT_REASONS)
        yield _labelled(CounterMetricFamily("arbees_broker_control_rejected", "Control messages rejected, by reason.",
                                            labels=["reason"]), (((r,), v) for r, v in reasons.items()))
        ages = GaugeMetricFamily("arbees_broker_heartbeat_age_seconds", "Seconds since each peer was last heard.",
                                 labels=["role", "peer"])
        yield _labelled(ages, [*((("worker", w), now - i.last_seen) for w, i in b.workers.items()),
                               *((("shard", s), now - i.last_seen) for s, i in b.shards.items())])


class WorkerCollector:
    """Per venue: messages, rejections by reason, reconnects, resyncs, gaps; book statuses; bus counters."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        report = self.worker.report()
        venues: dict[str, dict[str, Any]] = report["venues"]
        for name, doc in (("messages", "Venue WebSocket frames handled."), ("reconnects", "Venue reconnections."),
                          ("resyncs", "Books re-snapshotted after a gap or a disagreement."),
                          ("gaps", "Sequence gaps and persistent disagreements seen."),
                          ("stale_trips", "Books marked stale by the watchdog.")):
            family = CounterMetricFamily(f"arbees_worker_venue_{name}", doc, labels=["venue"])
            yield _labelled(family, (((venue,), stats.get(name, 0)) for venue, stats in venues.items()))
        rejected = CounterMetricFamily("arbees_worker_venue_rejected", "Venue frames rejected, by reason.",
                                       labels=["venue", "reason"])
        yield _labelled(rejected, (((venue, reason), count) for venue, stats in venues.items()
                                   for reason, count in stats.get("rejected", {}).items()))
        books = GaugeMetricFamily("arbees_worker_books", "Owned markets by the status last published.",
                                  labels=["status"])
        statuses = _with_defaults(report["statuses"], (*(s.value for s in PriceStatus), "pending"))
        yield _labelled(books, (((status,), count) for status, count in statuses.items()))
        for name, doc in (("published", "Price records published on the bus."),
                          ("pub_dropped", "Records the PUB socket dropped (high-water mark)."),
                          ("snapshot_requests", "Snapshot requests answered."),
                          ("snapshot_rejected", "Snapshot requests rejected (malformed, wrong type or version)."),
                          ("control_rejected", "Control messages from the broker rejected."),
                          ("assignments", "Assignments applied."), ("broker_lost", "Times the broker went silent.")):
            yield _counter(f"arbees_worker_{name}", doc, report.get(name, 0))


class ShardCollector:
    """Bus gaps, records by outcome, rejections, signals, latency histograms, broker heartbeat age."""

    def __init__(self, shard: GameShard) -> None:
        self.shard = shard

    def collect(self) -> Iterator[Metric]:
        sub, counters = self.shard.subscriber, self.shard.subscriber.counters
        yield _counter("arbees_shard_bus_gaps", "Sequence gaps seen on the bus (each answered by a snapshot).",
                       counters[GAP])
        outcomes = CounterMetricFamily("arbees_shard_records", "Bus records by outcome.", labels=["outcome"])
        yield _labelled(outcomes, (((o,), counters[o]) for o in (APPLIED, HELD, DUPLICATE, ZOMBIE)))
        rejected = CounterMetricFamily("arbees_shard_rejected", "Frames and messages rejected, by reason.",
                                       labels=["reason"])
        yield _labelled(rejected, (((r,), counters[r]) for r in SHARD_REJECT_REASONS))
        signals = CounterMetricFamily("arbees_shard_signals", "Signals published (new or changed), by kind.",
                                      labels=["kind"])
        yield _labelled(signals, (((k,), self.shard.counters[f"signals_{k}"]) for k in SIGNAL_KINDS))
        yield _counter("arbees_shard_snapshot_requests", "Snapshot requests sent (new markets, gaps, timeouts).",
                       counters["snapshot_requests"])
        live = sum(1 for s in sub.states.values() if s.latest is not None and not s.awaiting
                   and s.latest.status is PriceStatus.LIVE)
        yield _gauge("arbees_shard_markets_live", "Followed markets whose latest record is LIVE.", live)
        yield _gauge("arbees_shard_markets_awaiting", "Followed markets awaiting a snapshot.",
                     sum(1 for s in sub.states.values() if s.awaiting))
        age = time.monotonic() - sub.broker_seen if sub.broker_seen else math.nan
        yield _gauge("arbees_shard_broker_heartbeat_age_seconds", "Seconds since the broker last answered.", age)
        yield _histogram("arbees_shard_latency_seconds", "End to end: venue frame read by the worker to the record "
                         "applied here (clocks of two hosts add their offset).", sub.latency.end_to_end)
        yield _histogram("arbees_shard_bus_hop_seconds", "The bus alone: published by the worker to applied here.",
                         sub.latency.bus_hop)
