"""`arbees launch`: the whole runtime on one machine -- simulators (by default), broker, workers, shards.

Every role is its own supervised process (`broker.launcher`), talking over ipc
files in a private runtime directory (or loopback tcp with `--transport tcp`).
With no venue configured it first starts `arbees sim` with its demo probability
feed, so the command shows live prices and signals with no credentials at all.
The launcher itself follows the whole universe like any subscriber (snapshots
first, then updates) and renders it (`broker.launch_view`). It records its broker
endpoint where `arbees status` and `arbees tail` look for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click
import msgpack
import zmq
import zmq.asyncio

from broker import security
from broker.endpoints import (
    EndpointError,
    clear_current,
    new_runtime_dir,
    write_current,
)
from broker.launch_view import LaunchModel, run_lines, run_table
from broker.launcher import Child, LaunchError, Supervisor
from broker.protocol import MAX_CONTROL_BYTES
from broker.roles import (
    curve_dir_option,
    load_curve,
    log_format_option,
    run_foreground,
    setup_logging,
)
from broker.signals import install_stop_signals
from broker.universe import ConfigError, games_from_config, load_config
from broker.venue_options import (
    LIVE_ENV,
    VenueEndpoints,
    env_from_config,
    kalshi_endpoint,
    polymarket_endpoint,
    venue_options,
)
from markets.kalshi.auth import ENV_KEY_ID, ENV_PRIVATE_KEY_PATH
from shard.subscriber import Directory, PriceSubscriber

log = logging.getLogger(__name__)

BROKER_READY = "listening on "


@dataclass(frozen=True)
class LaunchOptions:
    workers: int
    shards: int
    transport: str
    config: Path | None
    venues: VenueEndpoints
    discovery: tuple[str, ...]
    """`arbees broker` discovery options, passed through."""
    sim_markets: int
    sim_seed: int
    sim_rate: float
    sim_faults: str
    sim_activity: str | None
    dead_after: float
    duration: float | None
    display: str
    sort: str
    refresh_hz: float
    status_every: float
    log_level: str
    log_format: str = "text"
    curve: security.CurveKeys | None = None
    """Curve keys for every role (they get `--curve-dir`) and the launcher's own sockets."""


class Endpoints:
    """Where each role binds: ipc files in the runtime directory, or fixed loopback tcp ports.

    Fixed ports rather than `*`, because a restarted broker (or simulator feed) must
    come back where its peers already point.
    """

    def __init__(self, transport: str, rundir: Path) -> None:
        self.transport = transport
        self.rundir = rundir

    def __call__(self, name: str) -> str:
        if self.transport == "ipc":
            return f"ipc://{self.rundir}/{name}"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def parse_exports(lines: list[str]) -> dict[str, str]:
    """`export NAME=value` lines (the simulators' banner) into a dict."""
    found = {}
    for line in lines:
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export "):].partition("=")
            found[name.strip()] = value.strip()
    return found


async def run_launch(options: LaunchOptions, out: IO[str]) -> Supervisor:
    stop = asyncio.Event()
    install_stop_signals(stop)
    rundir = new_runtime_dir()
    endpoint = Endpoints(options.transport, rundir)
    supervisor = Supervisor(on_output=None if options.display == "table" else _echo_child)
    groups: dict[str, list[Child]] = {"sim": [], "broker": [], "workers": [], "shards": []}
    tasks: list[asyncio.Task[None]] = []
    try:
        worker_env = dict(options.venues.given)
        fair_feed = None
        if not options.venues.configured:
            fair_feed = endpoint("fair")
            args = ["sim", "--markets", str(options.sim_markets), "--seed", str(options.sim_seed), "--rate",
                    str(options.sim_rate), "--fair-feed", fair_feed]
            if options.sim_faults:
                args += ["--faults", options.sim_faults]
            if options.sim_activity:
                args += ["--activity", options.sim_activity]
            sim = await _start(supervisor, stop, Child("sim", args, {}, "Press Ctrl-C", [fair_feed]))
            if sim is None:
                return supervisor
            groups["sim"].append(sim)
            exports = parse_exports(sim.banner)
            worker_env.update({k: v for k, v in exports.items() if k.startswith(("KALSHI_", "POLYMARKET_"))})
            fair_feed = exports.get("ARBEES_FAIR_FEED", fair_feed)
        broker_endpoint = endpoint("broker")
        logs = ["--log-level", options.log_level, "--log-format", options.log_format]
        if options.curve is not None:
            logs += ["--curve-dir", str(options.curve.directory)]
        args = ["broker", "--endpoint", broker_endpoint, "--dead-after", str(options.dead_after), *logs]
        if options.config:
            args += ["--config", str(options.config)]
        elif options.discovery:
            args += list(options.discovery)
        else:
            args += ["--sim-markets", str(options.sim_markets), "--sim-seed", str(options.sim_seed)]
        broker = await _start(supervisor, stop, Child("broker", args, worker_env, BROKER_READY, [broker_endpoint]))
        if broker is None:
            return supervisor
        groups["broker"].append(broker)
        broker_endpoint = next(line for line in broker.banner if BROKER_READY in line) \
            .split(BROKER_READY, 1)[1].split()[0]
        write_current(broker_endpoint, os.getpid(), rundir)
        print(f"arbees launch: broker listening on {broker_endpoint} (`arbees status` and `arbees tail` in "
              f"another terminal find it); {options.workers} workers, {options.shards} shards"
              + ("" if options.venues.configured else ", simulated venues"), file=sys.stderr, flush=True)
        for k in range(options.workers):
            pub, snap = endpoint(f"w{k}-pub"), endpoint(f"w{k}-snap")
            args = ["worker", "--id", f"w{k}", "--broker", broker_endpoint, "--pub", pub, "--snapshot", snap, *logs]
            groups["workers"].append(Child(f"worker-{k}", args, worker_env, None, [pub, snap]))
        for j in range(options.shards):
            signals = endpoint(f"s{j}-sig")
            args = ["shard", "--id", f"s{j}", "--broker", broker_endpoint, "--signals", signals, *logs]
            if fair_feed:
                args += ["--fair-feed", fair_feed]
            groups["shards"].append(Child(f"shard-{j}", args, {}, None, [signals]))
        for child in (*groups["workers"], *groups["shards"]):
            await supervisor.start(child)
        tasks = _view_tasks(options, broker_endpoint, supervisor, out, stop)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *tasks], timeout=options.duration, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await supervisor.stop([groups["shards"], groups["workers"], groups["broker"], groups["sim"]])
        clear_current(os.getpid())
        shutil.rmtree(rundir, ignore_errors=True)
    return supervisor


async def _start(supervisor: Supervisor, stop: asyncio.Event, child: Child) -> Child | None:
    """Start a child unless Ctrl-C comes first (then None)."""
    starting = asyncio.create_task(supervisor.start(child))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        if child not in supervisor.children:
            supervisor.children.append(child)  # so that stop() reaps it if it was spawned
        return None
    return starting.result()


def _real_venues(venues: VenueEndpoints, config: Path | None, live: bool) -> VenueEndpoints:
    """The venues the options, the config file's venue tables and --live configure together.

    Precedence: options and environment, then the config file, then --live's production
    URLs; the result is re-read through the same rules the workers will apply.
    """
    given = dict(venues.given)
    if config is not None:
        try:
            parsed = load_config(config)
            games_from_config(parsed, str(config))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        given = {**env_from_config(parsed, str(config)), **given}
    if live:
        given = {**LIVE_ENV, **given}
        if not (given.get(ENV_KEY_ID) and given.get(ENV_PRIVATE_KEY_PATH)):
            for name in ("KALSHI_WS_URL", "KALSHI_REST_URL"):
                given.pop(name, None)
            click.echo(f"arbees launch: no Kalshi credentials ({ENV_KEY_ID}, {ENV_PRIVATE_KEY_PATH}): "
                       "streaming Polymarket only", err=True)
    if given == venues.given:
        return venues
    return VenueEndpoints(
        kalshi_endpoint(given.get("KALSHI_WS_URL"), given.get("KALSHI_REST_URL"), given.get(ENV_KEY_ID),
                        given.get(ENV_PRIVATE_KEY_PATH)),
        polymarket_endpoint(given.get("POLYMARKET_WS_URL"), given.get("POLYMARKET_CLOB_URL"),
                            given.get("POLYMARKET_GAMMA_URL")),
        given)


def _echo_child(child: Child, line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _view_tasks(options: LaunchOptions, broker_endpoint: str, supervisor: Supervisor, out: IO[str],
                stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The launcher's own subscriber (all games), its signal listener, and the display."""
    signals_sock: list[zmq.asyncio.Socket] = []
    connected: set[str] = set()

    def on_directory(directory: Directory) -> None:
        if signals_sock:
            for endpoint in set(directory.shards.values()) - connected:
                signals_sock[0].connect(endpoint)
                connected.add(endpoint)

    subscriber = PriceSubscriber(broker_endpoint, on_directory=on_directory, curve=options.curve)
    model = LaunchModel(subscriber, restarts=lambda: supervisor.restarts)

    async def listen_signals() -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
        security.client(sock, options.curve)
        sock.setsockopt(zmq.SUBSCRIBE, b"signal/")
        signals_sock.append(sock)
        try:
            while not stop.is_set():
                parts = await sock.recv_multipart()
                with contextlib.suppress(Exception):  # a malformed signal is not the launcher's problem
                    body = msgpack.unpackb(parts[-1], raw=False)
                    if isinstance(body, dict):
                        model.add_signal(body)
        finally:
            sock.close(linger=0)
            ctx.term()

    display = (run_table(model, out, stop, options.refresh_hz, options.sort) if options.display == "table"
               else run_lines(model, out, stop, options.status_every))
    return [asyncio.create_task(subscriber.run(stop), name="launch-subscriber"),
            asyncio.create_task(listen_signals(), name="launch-signals"),
            asyncio.create_task(display, name="launch-display")]


@click.command("launch")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker processes.")
@click.option("--shards", type=click.IntRange(1, 64), default=2, show_default=True, help="GameShard processes.")
@click.option("--transport", type=click.Choice(["ipc", "tcp"]), default="ipc", show_default=True,
              help="ipc files in a private runtime directory, or tcp on 127.0.0.1.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file listing the games (see README); default: the simulators' universe.")
@venue_options
@click.option("--live", is_flag=True,
              help="Use the production venues (Kalshi only with credentials from the environment or the "
                   "config file's [kalshi] table); games from --config or discovery.")
@click.option("--kalshi-series", multiple=True, metavar="TICKERS", help="Discover these Kalshi series' markets.")
@click.option("--polymarket-tag", "polymarket_tags", multiple=True, type=int, metavar="ID",
              help="Discover this Gamma tag's markets.")
@click.option("--polymarket-slug", "polymarket_slugs", multiple=True, metavar="SLUGS",
              help="Discover these Gamma market slugs.")
@click.option("--sim-markets", type=click.IntRange(min=1), default=20, show_default=True,
              help="Simulated games (each listed on both venues) when no venue is configured.")
@click.option("--sim-seed", type=int, default=0, show_default=True, help="Seed of the simulated universe.")
@click.option("--sim-rate", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Simulated book updates per second per market.")
@click.option("--sim-faults", default="", metavar="KEY=VALUE,...", help="Fault plan for the simulators.")
@click.option("--sim-activity", default=None, metavar="mix|KEY=VALUE,...",
              help="Realistic simulated activity instead of every market at --sim-rate (see `arbees sim --help`).")
@click.option("--dead-after", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds without a heartbeat before a worker is declared dead.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--display", type=click.Choice(["auto", "table", "lines"]), default="auto", show_default=True,
              help="auto: a live table on a terminal, signal and status lines into a pipe.")
@click.option("--sort", type=click.Choice(["edge", "activity"]), default="edge", show_default=True,
              help="Table order: best cross-venue edge first, or most recently updated first.")
@click.option("--refresh", "refresh_hz", type=click.FloatRange(min=0.2, max=30), default=4.0, show_default=True,
              help="Table redraws per second.")
@click.option("--status-every", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between status lines (lines display).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              show_default=True, help="Log level of the role processes (their lines go to stderr, prefixed).")
@log_format_option
@curve_dir_option
def launch(workers: int, shards: int, transport: str, config: Path | None, venues: VenueEndpoints, live: bool,
           kalshi_series: tuple[str, ...], polymarket_tags: tuple[int, ...], polymarket_slugs: tuple[str, ...],
           sim_markets: int, sim_seed: int, sim_rate: float, sim_faults: str, sim_activity: str | None,
           dead_after: float, duration: float | None, display: str,
           sort: str, refresh_hz: float, status_every: float, log_level: str, log_format: str,
           curve_dir: Path | None) -> None:
    """Run broker, workers and shards (and, with no venue configured, the simulators) until Ctrl-C."""
    setup_logging("warning", log_format, "launch")
    venues = _real_venues(venues, config, live)
    discovery = tuple([*(a for s in kalshi_series for a in ("--kalshi-series", s)),
                       *(a for t in polymarket_tags for a in ("--polymarket-tag", str(t))),
                       *(a for s in polymarket_slugs for a in ("--polymarket-slug", s))])
    if venues.configured and config is None and not discovery:
        raise click.ClickException("real venues need games: give --config FILE or discovery options "
                                   "(--kalshi-series, --polymarket-tag, --polymarket-slug)")
    if not venues.configured and (config is not None or discovery):
        raise click.ClickException("--config and discovery name real markets: configure the venues too (--live, "
                                   "venue options, or the KALSHI_* / POLYMARKET_* environment variables)")
    out = sys.stdout
    options = LaunchOptions(workers, shards, transport, config, venues, discovery, sim_markets, sim_seed, sim_rate,
                            sim_faults, sim_activity,
                            dead_after, duration, "table" if display == "table" or (display == "auto" and out.isatty())
                            else "lines", sort, refresh_hz, status_every, log_level, log_format,
                            load_curve(curve_dir))
    started = time.monotonic()
    try:
        supervisor = run_foreground(lambda: asyncio.run(run_launch(options, out)), out)
    except (LaunchError, EndpointError) as exc:
        raise click.ClickException(str(exc)) from None
    if supervisor is None:
        return
    click.echo(f"arbees launch: stopped after {time.monotonic() - started:.1f}s "
               f"({supervisor.restarts} restarts)", err=True)
