"""`arbees worker`: run one worker (venue connections, books, PUB and snapshot service)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import click

from broker.broker_command import DEFAULT_BROKER_ENDPOINT
from broker.metrics import serve_metrics
from broker.role_metrics import WorkerCollector
from broker.roles import (
    heartbeat_option,
    load_curve,
    role_options,
    run_role,
    setup_logging,
)
from broker.venue_options import VenueEndpoints, venue_options
from loadtest.instrument import FrameLog, flush_every
from workers.worker import Worker


@click.command("worker")
@click.option("--id", "worker_id", default=None, help="Worker id (default: host-pid). Must be unique.")
@click.option("--broker", "broker_endpoint", envvar="ARBEES_BROKER", default=DEFAULT_BROKER_ENDPOINT,
              show_default=True, help="Broker control endpoint.")
@click.option("--pub", default="tcp://127.0.0.1:*", show_default=True, help="PUB endpoint to bind for prices.")
@click.option("--snapshot", default="tcp://127.0.0.1:*", show_default=True,
              help="Snapshot service endpoint to bind.")
@click.option("--capacity", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Most markets this worker takes.")
@heartbeat_option
@click.option("--pub-hwm", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Messages queued per subscriber before the PUB socket drops for it.")
@role_options
@click.option("--frame-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Measurement only (`arbees load`): append when each venue frame was read to this file.")
@venue_options
def worker(worker_id: str | None, broker_endpoint: str, pub: str, snapshot: str, capacity: int, heartbeat: float,
           pub_hwm: int, allow_remote: bool, frame_log: Path | None, venues: VenueEndpoints, log_level: str,
           log_format: str, curve_dir: Path | None, metrics_port: int | None) -> None:
    """Stream the markets the broker assigns and publish every price change."""
    setup_logging(log_level, log_format, "worker")
    if not venues.configured:
        raise click.ClickException("no venue configured: give venue options (or the environment variables "
                                   "`arbees sim` prints), or run workers under `arbees launch`")
    node = Worker(worker_id or f"{socket.gethostname()}-{os.getpid()}", broker_endpoint, pub, snapshot,
                  kalshi=venues.kalshi, polymarket=venues.polymarket, capacity=capacity, heartbeat=heartbeat,
                  pub_hwm=pub_hwm, allow_remote=allow_remote, frame_log=FrameLog(frame_log) if frame_log else None,
                  curve=load_curve(curve_dir))

    async def role(stop: asyncio.Event) -> None:
        async with flush_every(node.frame_log), serve_metrics(metrics_port, WorkerCollector(node)):
            await node.run(stop)

    run_role(role)
