"""`arbees shard`: run one GameShard (subscribes its games' markets, computes and publishes signals)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import click

from broker.broker_command import DEFAULT_BROKER_ENDPOINT
from broker.metrics import serve_metrics
from broker.role_metrics import ShardCollector
from broker.roles import (
    heartbeat_option,
    load_curve,
    role_options,
    run_role,
    setup_logging,
)
from broker.venue_options import parse_id_list
from loadtest.instrument import LatencyLog, flush_every
from shard.game_shard import GameShard
from shard.signals import FeeSchedule


@click.command("shard")
@click.option("--id", "shard_id", default=None, help="Shard id (default: host-pid). Must be unique.")
@click.option("--broker", "broker_endpoint", envvar="ARBEES_BROKER", default=DEFAULT_BROKER_ENDPOINT,
              show_default=True, help="Broker control endpoint.")
@click.option("--signals", default="tcp://127.0.0.1:*", show_default=True,
              help="PUB endpoint to bind for signals.")
@click.option("--fair-feed", default=None, envvar="ARBEES_FAIR_FEED",
              help="ZeroMQ endpoint of a game win-probability feed (topic fair/{game}|).")
@click.option("--games", multiple=True, metavar="IDS",
              help="Fixed game ids (comma-separated or repeated); default: the broker spreads games over shards.")
@click.option("--max-age", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds after which a price (or a fair value) is too old to signal on.")
@click.option("--min-edge", type=float, default=0.0, show_default=True,
              help="Cross-venue arbitrage: least net edge per contract, in cents, to signal.")
@click.option("--model-threshold", type=float, default=2.0, show_default=True,
              help="Model edge: least net edge per contract, in cents, to signal.")
@click.option("--polymarket-fee-bps", type=click.IntRange(min=0, max=10_000), default=0, show_default=True,
              help="Polymarket taker fee in basis points of notional.")
@heartbeat_option
@click.option("--rcvhwm", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Price messages queued for this shard before ZeroMQ drops (seen as gaps, then resynced).")
@role_options
@click.option("--latency-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Measurement only (`arbees load`): append one line per price record received to this file.")
def shard(shard_id: str | None, broker_endpoint: str, signals: str, fair_feed: str | None, games: tuple[str, ...],
          max_age: float, min_edge: float, model_threshold: float, polymarket_fee_bps: int, heartbeat: float,
          rcvhwm: int, allow_remote: bool, curve_dir: Path | None, metrics_port: int | None,
          latency_log: Path | None, log_level: str, log_format: str) -> None:
    """Follow the prices of some games and publish cross-venue and model-edge signals."""
    setup_logging(log_level, log_format, "shard")
    fixed = parse_id_list(games)
    node = GameShard(shard_id or f"{socket.gethostname()}-{os.getpid()}", broker_endpoint, signals,
                     fair_feed_endpoint=fair_feed, games=list(fixed) if fixed else None,
                     fees=FeeSchedule(polymarket_bps=polymarket_fee_bps), max_age=max_age,
                     min_edge_cents=min_edge, model_threshold_cents=model_threshold, heartbeat=heartbeat,
                     rcvhwm=rcvhwm, allow_remote=allow_remote, curve=load_curve(curve_dir))
    record_log = LatencyLog(latency_log) if latency_log else None
    if record_log is not None:
        node.subscriber.on_record = record_log.add

    async def role(stop: asyncio.Event) -> None:
        async with flush_every(record_log), serve_metrics(metrics_port, ShardCollector(node)):
            await node.run(stop)

    run_role(role)
