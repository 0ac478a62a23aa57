"""`arbees sim`: run the Kalshi and Polymarket simulators until Ctrl-C or SIGTERM.

It prints everything a client needs to connect — both venues' URLs and the demo
Kalshi key as shell `export` lines — so another terminal (or a test harness
reading stdout) can point the real clients at it. The simulators serve
unauthenticated market data and accept a demo key, so they bind to loopback
unless `--allow-remote` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import IO

import click

from broker.endpoints import EndpointError, is_local, is_loopback
from broker.fair_publisher import FairFeedPublisher
from broker.signals import install_stop_signals
from markets.sim.activity import ActivityMix
from markets.sim.lifecycle import LifecycleConfig
from markets.sim.polymarket import PolymarketFaultPlan
from markets.sim.sendlog import SendLog
from markets.sim.venues import SimulatedVenues


def _parse_faults(ctx: click.Context, param: click.Parameter, value: str) -> PolymarketFaultPlan:
    """`key=value,...` into a plan; Polymarket's plan is a superset, valid for both venues."""
    try:
        return PolymarketFaultPlan.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _parse_fair_feed(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ZeroMQ endpoint another process can connect to: ipc:// or tcp:// only."""
    if value is None:
        return None
    scheme, _, address = value.partition("://")
    if scheme not in ("ipc", "tcp") or not address:
        raise click.BadParameter(f"{value!r} is not an ipc:///path or tcp://host:port endpoint",
                                 ctx=ctx, param=param)
    return value


def _parse_close_after(ctx: click.Context, param: click.Parameter, value: str) -> LifecycleConfig:
    """`FIRST,LAST` seconds into the games' timetable (the rest of it keeps its defaults)."""
    try:
        first, last = (float(part) for part in value.split(","))
        return LifecycleConfig(close_after=(first, last))
    except ValueError as exc:
        raise click.BadParameter(f"expected FIRST,LAST seconds with 0 < FIRST <= LAST: {exc}",
                                 ctx=ctx, param=param) from None



def describe(venues: SimulatedVenues, rate: float, seed: int, fair_feed: str | None = None) -> str:
    """The start-up banner: URLs, then the same URLs and the key as the variables `arbees stream`
    reads, plus the control URL and the fair-value feed (if any) for `arbees launch` and tests."""
    kalshi, poly = venues.kalshi, venues.polymarket
    return "\n".join([
        f"arbees sim: {len(venues.universe.markets)} markets on both venues, "
        + (f"{rate:g} updates/s per market" if venues.kalshi.activity is None else "a realistic activity mix")
        + f", seed {seed}",
        f"Kalshi WebSocket:      {kalshi.ws_url}",
        f"Kalshi REST:           {kalshi.rest_url}",
        f"Polymarket WebSocket:  {poly.ws_url}",
        f"Polymarket CLOB REST:  {poly.clob_url}",
        f"Polymarket Gamma REST: {poly.gamma_url}",
        f"Simulator control (HTTP, loopback only): {venues.control_url}",
        *([f"Fair-value feed (ZeroMQ PUB): {fair_feed}"] if fair_feed else []),
        "Paste into a shell, then `arbees stream` streams from these simulators:",
        f"export KALSHI_API_KEY_ID={venues.key_id}",
        f"export KALSHI_PRIVATE_KEY_PATH={venues.private_key_path}",
        f"export KALSHI_WS_URL={kalshi.ws_url}",
        f"export KALSHI_REST_URL={kalshi.rest_url}",
        f"export POLYMARKET_WS_URL={poly.ws_url}",
        f"export POLYMARKET_CLOB_URL={poly.clob_url}",
        f"export POLYMARKET_GAMMA_URL={poly.gamma_url}",
        f"export ARBEES_SIM_CONTROL={venues.control_url}",
        *([f"export ARBEES_FAIR_FEED={fair_feed}"] if fair_feed else []),
        "Press Ctrl-C to stop.",
    ])


async def serve(venues: SimulatedVenues, banner: IO[str], rate: float, seed: int,
                fair_feed: FairFeedPublisher | None = None) -> None:
    """Run until SIGINT/SIGTERM, then stop the feed and both simulators cleanly."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    async with venues, fair_feed or contextlib.nullcontext():
        endpoint = fair_feed.endpoint if fair_feed is not None else None
        print(describe(venues, rate, seed, endpoint), file=banner, flush=True)
        await stop.wait()
    print("arbees sim: stopped", file=banner, flush=True)


def _parse_activity(ctx: click.Context, param: click.Parameter, value: str | None) -> ActivityMix | None:
    """None (every market at --rate), "mix" (the realistic defaults) or "key=value,..." of ActivityMix."""
    if value is None:
        return None
    try:
        return ActivityMix.parse("" if value == "mix" else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--allow-remote", is_flag=True,
              help="Permit a non-loopback --host (the simulators have no real authentication).")
@click.option("--kalshi-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Kalshi simulator port (0 = ephemeral).")
@click.option("--polymarket-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Polymarket simulator port (0 = ephemeral).")
@click.option("--markets", "n_markets", type=click.IntRange(min=1), default=20, show_default=True,
              help="Number of simulated markets (each listed on both venues).")
@click.option("--rate", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Book updates per second per market.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the universe and books.")
@click.option("--faults", default="", callback=_parse_faults, metavar="KEY=VALUE,...",
              help="Fault plan, e.g. drop_after=500,malformed_every=100,snapshot_delay=0.5.")
@click.option("--key-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the demo key pair (default: a fresh temporary directory).")
@click.option("--send-log", "send_log_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Append one line per sent frame (venue, market, key, send ns) to this file.")
@click.option("--close-after", callback=_parse_close_after, default="7200,21600", show_default=True,
              metavar="FIRST,LAST", help="Seconds after start at which the first and the last game close "
              "(then are determined and settle; see markets/sim/lifecycle.py).")
@click.option("--control-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the HTTP control server on 127.0.0.1 (pause, gaps, fair values; 0 = ephemeral).")
@click.option("--fair-feed", callback=_parse_fair_feed, metavar="ENDPOINT",
              help="Publish each game's hidden fair value on a ZeroMQ PUB socket bound here, "
                   "e.g. ipc:///tmp/arbees/fair.sock or tcp://127.0.0.1:5601.")
@click.option("--fair-interval", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, help="Seconds between full rounds of the fair-value feed "
                                      "(a value that moves goes out at once).")
@click.option("--activity", callback=_parse_activity, default=None, metavar="mix|KEY=VALUE,...",
              help="Realistic activity instead of every market at --rate: 'mix' (5% of markets change "
                   "every ~0.3 s, the rest every ~3 min) or busy_share=,busy_interval=,quiet_interval=.")
def sim(host: str, allow_remote: bool, kalshi_port: int, polymarket_port: int, n_markets: int,
        rate: float, seed: int, faults: PolymarketFaultPlan, key_dir: Path | None,
        send_log_path: Path | None, control_port: int, fair_feed: str | None,
        fair_interval: float, close_after: LifecycleConfig, activity: ActivityMix | None) -> None:
    """Run local Kalshi and Polymarket simulators until Ctrl-C."""
    if not is_loopback(host) and not allow_remote:
        raise click.BadParameter(f"{host!r} is not a loopback address; add --allow-remote to "
                                 "serve the simulators beyond this machine", param_hint="--host")
    if fair_feed is not None and not is_local(fair_feed) and not allow_remote:
        raise click.BadParameter(f"{fair_feed!r} is not a loopback or ipc endpoint; add "
                                 "--allow-remote to publish beyond this machine", param_hint="--fair-feed")
    send_log = SendLog(path=send_log_path)
    venues = SimulatedVenues(n_markets=n_markets, seed=seed, rate=rate, host=host,
                             kalshi_port=kalshi_port, polymarket_port=polymarket_port,
                             faults=faults, key_dir=key_dir, send_log=send_log,
                             control_port=control_port, lifecycle=close_after, activity=activity)
    feed = (FairFeedPublisher(venues.fairs, fair_feed, interval=fair_interval, allow_remote=allow_remote)
            if fair_feed is not None else None)
    try:
        asyncio.run(serve(venues, sys.stdout, rate, seed, feed))
    except OSError as exc:
        raise click.ClickException(f"cannot start the simulators: {exc}") from None
    except EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        send_log.close()
