"""`arbees status`: the broker's view (workers, assignment with epochs, market ages, shards and their lag)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from broker import protocol
from broker.broker_client import BrokerUnreachable, ask_broker
from broker.endpoints import EndpointError, find_broker
from broker.roles import curve_dir_option, load_curve


def render(status: dict[str, Any]) -> str:
    """A human summary; the whole document is what `--json` prints."""
    head = status["broker"]
    lines = [f"broker {head['endpoint']}: up {head['uptime_s']:.0f}s, {head['games']} games, "
             f"{head['markets']} markets, directory v{head['directory_version']}"]
    ages: dict[str, float | None] = {}
    for worker_id, info in sorted(status["workers"].items()):
        counters = info["counters"]
        ages.update({market: entry[3] for market, entry in counters.get("markets", {}).items()})
        lines.append(f"  worker {worker_id} (pid {info['pid']}): {info['markets']} markets, heartbeat "
                     f"{info['heartbeat_age_s']:.1f}s ago, published {counters.get('published', 0)}, "
                     f"dropped {counters.get('pub_dropped', 0)}, statuses {counters.get('statuses', {})}")
    for shard_id, info in sorted(status["shards"].items()):
        counters = info["counters"]
        lag = counters.get("bus_latency_us", {})
        lines.append(f"  shard {shard_id}: {info['games']} games, {counters.get('live', 0)}/"
                     f"{len(counters.get('markets', {}))} live, gaps {counters.get('gap', 0)}, zombies dropped "
                     f"{counters.get('zombie', 0)}, bus latency p50 {lag.get('p50', '-')} us p99 {lag.get('p99', '-')} us")
    if status["unassigned"]:
        lines.append(f"  unassigned: {len(status['unassigned'])} ({', '.join(status['unassigned'][:5])})")
    lines.append("  market                                              worker                      epoch  last update")
    for market, owner in status["assignment"].items():
        age = ages.get(market)
        lines.append(f"  {market[:50]:50}  {owner['worker'][:14]:14}  {owner['epoch']:>17}  "
                     f"{'-' if age is None else f'{age:.1f}s ago'}")
    return "\n".join(lines)


@click.command("status")
@click.option("--broker", "broker_endpoint", default=None,
              help="Broker control endpoint (default: $ARBEES_BROKER, else the running `arbees launch`).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as one JSON document.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds to wait for the broker.")
@curve_dir_option
def status(broker_endpoint: str | None, as_json: bool, timeout: float, curve_dir: Path | None) -> None:
    """Show the broker's view of the running system."""
    try:
        endpoint = find_broker(broker_endpoint)
        reply = ask_broker(endpoint, protocol.STATUS_REQUEST, timeout=timeout, curve=load_curve(curve_dir))
    except (EndpointError, BrokerUnreachable, protocol.ProtocolError) as exc:
        raise click.ClickException(str(exc)) from None
    document = dict(reply.mapping("status"))
    document["time"] = time.time()
    click.echo(json.dumps(document) if as_json else render(document))
