"""`arbees broker`: run the broker role alone (for multi-host deployments; `arbees launch` runs one too)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from broker.broker import Broker
from broker.roles import log_level_option, run_role, setup_logging
from broker.universe import ConfigError, Game, games_from_config, load_config, sim_games

DEFAULT_BROKER_ENDPOINT = "tcp://127.0.0.1:5570"


def load_games(config: Path | None, sim_markets: int, sim_seed: int) -> list[Game]:
    """Games from the config file, or the simulators' universe when there is none."""
    if config is None:
        return sim_games(sim_markets, sim_seed)
    games = games_from_config(load_config(config), str(config))
    if not games:
        raise ConfigError(f"config file {config} lists no [[game]]")
    return games


@click.command("broker")
@click.option("--endpoint", default=DEFAULT_BROKER_ENDPOINT, show_default=True,
              help="Control endpoint to bind (tcp://host:port or ipc://path).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file listing the games (see README); default: the simulators' universe.")
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
@click.option("--allow-remote", is_flag=True, help="Permit binding beyond loopback.")
@log_level_option
def broker(endpoint: str, config: Path | None, sim_markets: int, sim_seed: int, dead_after: float,
           heartbeat: float, grace: float | None, allow_remote: bool, log_level: str) -> None:
    """Assign markets to workers, watch their heartbeats, and serve the directory to shards."""
    setup_logging(log_level)
    try:
        games = load_games(config, sim_markets, sim_seed)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None

    async def role(stop: asyncio.Event) -> None:
        node = Broker(games, endpoint, dead_after=dead_after, heartbeat=heartbeat, grace=grace,
                      allow_remote=allow_remote)
        ready = asyncio.Event()
        task = asyncio.create_task(node.run(stop, ready))
        await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            click.echo(f"arbees broker: listening on {node.bound_endpoint} ({len(games)} games, "
                       f"{len(node.universe)} markets)")
        await task

    run_role(role)
