"""`arbees stream`: watch live prices from the venues in one process (no ZeroMQ).

The command is a thin shell around the hybrid clients: it validates the
options into `StreamOptions`, opens one price source per venue
(`broker.price_sources`), pumps each source's `stream_prices` into one shared
`PriceTable`, and renders that table (`broker.price_table`).

With no venue configuration at all the simulators are started in-process, so
the command works out of the box and in CI.  Any option of a venue (or its
environment variable) streams that venue from the given endpoint, production
by default; a venue left unconfigured is then not streamed at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable
from typing import IO, TypeVar

import click

from broker.price_sources import PriceSource, StreamOptions, open_sources
from broker.price_table import Display, LineDisplay, PriceTable, TableDisplay
from broker.roles import run_foreground
from broker.signals import install_stop_signals
from broker.venue_options import VenueEndpoints, parse_id_list, venue_options
from markets.base import VenueError
from markets.base_ws import WebSocketAuthError
from markets.kalshi.auth import KalshiAuthError

T = TypeVar("T")

DEFAULT_MAX_MARKETS = 200


# -- running --------------------------------------------------------------------------


async def _pump(source: PriceSource, table: PriceTable, display: Display) -> None:
    """Feed one source into the table until cancelled; a stream that ends is an error."""
    prices = source.client.stream_prices(source.market_ids)
    try:
        async for price in prices:
            display.on_update(source.venue, table.update(source.venue, price))
    finally:
        aclose = getattr(prices, "aclose", None)
        if aclose is not None:
            await aclose()
    raise click.ClickException(f"{source.venue} price stream ended unexpectedly")


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await `work`, or cancel it and return None if `stop` is set first (Ctrl-C during startup)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def run_stream(options: StreamOptions, out: IO[str]) -> PriceTable:
    """Stream until the duration passes, a signal arrives, or a source fails."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    table = PriceTable()
    async with contextlib.AsyncExitStack() as stack:
        sources = await _unless_stopped(open_sources(options, stack), stop)
        if sources is None:
            return table
        title = "arbees stream: " + ", ".join(f"{s.venue} ({len(s.market_ids)})" for s in sources)
        display: Display = (TableDisplay(out, table, options.refresh_hz, title) if options.table
                            else LineDisplay(out))
        pumps = [asyncio.create_task(_pump(s, table, display), name=f"stream-{s.venue}") for s in sources]
        drawer = asyncio.create_task(display.run(stop), name="stream-display")
        stopper = asyncio.create_task(stop.wait(), name="stream-stop")
        try:
            done, _ = await asyncio.wait([*pumps, stopper], timeout=options.duration,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done & set(pumps):
                task.result()  # a failed source ends the command with its error
        finally:
            stop.set()
            for task in (*pumps, stopper):
                task.cancel()
            await asyncio.gather(*pumps, stopper, return_exceptions=True)
            await drawer
    return table


# -- command line ---------------------------------------------------------------------


@click.command("stream")
@venue_options
@click.option("--markets", "markets", multiple=True, metavar="TICKERS",
              help="Tickers to stream (comma-separated or repeated); default: open markets found over REST.")
@click.option("--polymarket-markets", "polymarket_markets", multiple=True, metavar="IDS",
              help="Polymarket condition or token ids (comma-separated or repeated); default: active markets.")
@click.option("--max-markets", type=click.IntRange(1, 10_000), default=DEFAULT_MAX_MARKETS, show_default=True,
              help="Upper bound on markets discovered over REST.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: run until Ctrl-C).")
@click.option("--use-yes-price/--no-use-yes-price", default=True, show_default=True,
              help="Ask Kalshi for NO levels on the YES scale (the announced future default).")
@click.option("--refresh", "refresh_hz", type=click.FloatRange(min=0.1, max=30), default=4.0, show_default=True,
              help="Table redraws per second on a terminal.")
@click.option("--display", type=click.Choice(["auto", "table", "lines"]), default="auto", show_default=True,
              help="auto: redrawn table on a terminal, one line per update otherwise.")
def stream(venues: VenueEndpoints, markets: tuple[str, ...], polymarket_markets: tuple[str, ...], max_markets: int,
           duration: float | None, use_yes_price: bool,
           refresh_hz: float, display: str) -> None:
    """Stream live prices into a table; with no venue configured, from in-process simulators."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = sys.stdout
    options = StreamOptions(
        kalshi=venues.kalshi,
        polymarket=venues.polymarket,
        markets=parse_id_list(markets),
        polymarket_markets=parse_id_list(polymarket_markets),
        max_markets=max_markets,
        duration=duration,
        use_yes_price=use_yes_price,
        refresh_hz=refresh_hz,
        table=display == "table" or (display == "auto" and out.isatty()),
    )
    started = time.monotonic()
    try:
        table = run_foreground(lambda: asyncio.run(run_stream(options, out)), out)
    except (VenueError, KalshiAuthError, WebSocketAuthError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if table is None:
        return
    click.echo(f"stopped after {time.monotonic() - started:.1f}s: {table.updates} updates "
               f"for {len(table.rows)} markets", err=True)


