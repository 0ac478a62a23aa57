"""`arbees broker`: run the broker role alone (for multi-host deployments; `arbees launch` runs one too)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from broker.broker import Broker
from broker.discovery import DiscoveryPlan, discover_games
from broker.metrics import serve_metrics
from broker.role_metrics import BrokerCollector
from broker.roles import load_curve, role_options, run_role, setup_logging
from broker.universe import ConfigError, Game, games_from_config, load_config, sim_games
from broker.venue_options import VenueEndpoints, parse_id_list, venue_options
from markets.base import VenueError

DEFAULT_BROKER_ENDPOINT = "tcp://127.0.0.1:5570"


def load_games(config: Path | None, plan: DiscoveryPlan, venues: VenueEndpoints, sim_markets: int,
               sim_seed: int) -> list[Game]:
    """Games from the config file, else discovered over REST, else the simulators' universe."""
    if config is not None:
        games = games_from_config(load_config(config), str(config))
        if not games:
            raise ConfigError(f"config file {config} lists no [[game]]")
        return games
    if plan.requested:
        try:
            games = asyncio.run(discover_games(plan, venues.kalshi, venues.polymarket))
        except VenueError as exc:
            raise ConfigError(f"discovery failed: {exc}") from None
        if not games:
            raise ConfigError("discovery found no market that can trade now")
        return games
    return sim_games(sim_markets, sim_seed)


@click.command("broker")
@click.option("--endpoint", default=DEFAULT_BROKER_ENDPOINT, show_default=True,
              help="Control endpoint to bind (tcp://host:port or ipc://path).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file listing the games (see README); default: the simulators' universe.")
@click.option("--kalshi-series", multiple=True, metavar="TICKERS",
              help="Discover the open markets of these Kalshi series (comma-separated or repeated).")
@click.option("--polymarket-tag", "polymarket_tags", multiple=True, type=int, metavar="ID",
              help="Discover the active markets of this Gamma tag id (repeatable).")
@click.option("--polymarket-slug", "polymarket_slugs", multiple=True, metavar="SLUGS",
              help="Discover these Gamma market slugs (comma-separated or repeated).")
@click.option("--max-markets", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Upper bound on markets discovered per venue.")
@venue_options
@click.option("--sim-markets", type=click.IntRange(min=1), default=20, show_default=True,
              help="Without --config: size of the simulated universe (as `arbees sim --markets`).")
@click.option("--sim-seed", type=int, default=0, show_default=True,
              help="Without --config: seed of the simulated universe (as `arbees sim --seed`).")
@click.option("--dead-after", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds without a heartbeat before a worker is declared dead.")
@click.option("--heartbeat", type=click.FloatRange(min=0.01), default=0.5, show_default=True,
              help="Heartbeat period the peers use (seconds).")
@click.option("--grace", type=click.FloatRange(min=0), default=None,
              help="Seconds after start before unclaimed markets are placed (default: 3 heartbeats), so a "
                   "restarted broker adopts what running workers publish instead of moving it.")
@role_options
def broker(endpoint: str, config: Path | None, kalshi_series: tuple[str, ...], polymarket_tags: tuple[int, ...],
           polymarket_slugs: tuple[str, ...], max_markets: int, venues: VenueEndpoints, sim_markets: int,
           sim_seed: int, dead_after: float, heartbeat: float, grace: float | None, allow_remote: bool,
           curve_dir: Path | None, metrics_port: int | None, log_level: str, log_format: str) -> None:
    """Assign markets to workers, watch their heartbeats, and serve the directory to shards.

    Games come from --config, else from discovery (--kalshi-series / --polymarket-tag /
    --polymarket-slug, with the venue options), else the simulators' universe."""
    setup_logging(log_level, log_format, "broker")
    curve = load_curve(curve_dir)
    plan = DiscoveryPlan(parse_id_list(kalshi_series), polymarket_tags, parse_id_list(polymarket_slugs), max_markets)
    try:
        games = load_games(config, plan, venues, sim_markets, sim_seed)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None

    async def role(stop: asyncio.Event) -> None:
        node = Broker(games, endpoint, dead_after=dead_after, heartbeat=heartbeat, grace=grace,
                      allow_remote=allow_remote, curve=curve)
        ready = asyncio.Event()
        task = asyncio.create_task(node.run(stop, ready))
        await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            click.echo(f"arbees broker: listening on {node.bound_endpoint} ({len(games)} games, "
                       f"{len(node.universe)} markets)")
        async with serve_metrics(metrics_port, BrokerCollector(node)):
            await task

    run_role(role)
