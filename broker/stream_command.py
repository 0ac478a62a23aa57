"""`arbees stream`: watch live prices from the venues in one process (no ZeroMQ).

The command is a thin shell around the hybrid clients: it opens one *price
source* per venue (a hybrid client plus the markets to stream), pumps each
source's `stream_prices` into one shared `PriceTable`, and renders that table.
Adding a venue means writing one more ``_<venue>_source`` opener and appending
its result to the list in `_open_sources`; the table, the display and the
shutdown logic do not change.

With no venue configuration at all it starts the simulators in-process and
streams their whole universe with the demo key pair, so the command works
out of the box and in CI.  Any Kalshi option (or its environment variable)
switches Kalshi to the real venue.

Output adapts to where it goes: on a terminal the table is redrawn in place
at a bounded rate (the data may change thousands of times a second; the eye
does not need that); into a pipe or a CI log it prints one line per update,
which greps and diffs well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Protocol, TypeVar
from urllib.parse import urlsplit

import click

from markets.base import VenueError
from markets.base_ws import WebSocketAuthError
from markets.kalshi.auth import ENV_KEY_ID, ENV_PRIVATE_KEY_PATH, KalshiAuthError, KalshiCredentials
from markets.kalshi.client import KALSHI_REST_URL, HybridKalshiClient
from markets.kalshi.ws_client import KALSHI_WS_URL
from markets.models import MarketPrice
from markets.polymarket.client import POLYMARKET_CLOB_URL, POLYMARKET_GAMMA_URL, HybridPolymarketClient
from markets.polymarket.ws_client import POLYMARKET_WS_URL

T = TypeVar("T")

DEFAULT_MAX_MARKETS = 200
DISCOVERY_PAGE_SIZE = 200
CLEAR_SCREEN = "\x1b[H\x1b[2J"
_NUMERIC_COLUMNS = frozenset({2, 3, 4, 5, 6})


class StreamingClient(Protocol):
    """What the command needs from a venue's hybrid client."""

    def stream_prices(self, market_ids: Iterable[str]) -> AsyncIterator[MarketPrice]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class PriceSource:
    """One venue's contribution to the table: a streaming client and its markets."""

    venue: str
    client: StreamingClient
    market_ids: tuple[str, ...]


@dataclass(frozen=True)
class KalshiEndpoint:
    """Where and as whom to reach Kalshi (a real venue or the simulator)."""

    rest_url: str
    ws_url: str
    credentials: KalshiCredentials


@dataclass(frozen=True)
class PolymarketEndpoint:
    """Where to reach Polymarket (public market data: no credentials)."""

    clob_url: str
    gamma_url: str
    ws_url: str


@dataclass(frozen=True)
class StreamOptions:
    """Parsed command-line options; with neither venue configured, the simulators are used."""

    kalshi: KalshiEndpoint | None
    polymarket: PolymarketEndpoint | None
    markets: tuple[str, ...]
    polymarket_markets: tuple[str, ...]
    max_markets: int
    duration: float | None
    use_yes_price: bool
    refresh_hz: float
    table: bool


# -- the table ------------------------------------------------------------------------


@dataclass
class Row:
    price: MarketPrice
    received_ns: int


class PriceTable:
    """Latest price per (venue, market); rendering as a table or as one line per update."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.updates = 0

    def update(self, venue: str, price: MarketPrice) -> Row:
        row = Row(price, price.recv_ts_ns or time.time_ns())
        self.rows[(venue, price.market_id)] = row
        self.updates += 1
        return row

    def render(self, now_ns: int, header: str) -> str:
        columns = ("VENUE", "MARKET", "BID", "BID SIZE", "ASK", "ASK SIZE", "AGE", "STATUS")
        body = [
            (venue, market, _price(r.price.yes_bid), _size(r.price.yes_bid_size), _price(r.price.yes_ask),
             _size(r.price.yes_ask_size), _age(now_ns - r.received_ns), str(r.price.status))
            for (venue, market), r in sorted(self.rows.items())
        ]
        widths = [max(len(cells[i]) for cells in (columns, *body)) for i in range(len(columns))]
        lines = [header, ""] + ["  ".join(c.rjust(w) if i in _NUMERIC_COLUMNS else c.ljust(w)
                                          for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
                                for cells in (columns, *body)]
        return "\n".join(lines) + "\n"


def format_update(venue: str, row: Row) -> str:
    """One self-contained line per update, timestamped in UTC, for logs and pipes."""
    p = row.price
    stamp = datetime.fromtimestamp(row.received_ns / 1e9, UTC).isoformat(timespec="milliseconds")
    return (f"{stamp} {venue} {p.market_id} bid {_price(p.yes_bid)} x {_size(p.yes_bid_size)} "
            f"ask {_price(p.yes_ask)} x {_size(p.yes_ask_size)} {p.status}")


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _size(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _age(ns: int) -> str:
    seconds = max(0, ns) / 1e9
    return f"{seconds:.1f}s" if seconds < 100 else f"{seconds / 60:.0f}m"


# -- displays -------------------------------------------------------------------------


class Display(Protocol):
    def on_update(self, venue: str, row: Row) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...


class LineDisplay:
    """One line per update; for pipes and CI logs."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def on_update(self, venue: str, row: Row) -> None:
        self.out.write(format_update(venue, row) + "\n")

    async def run(self, stop: asyncio.Event) -> None:
        # Flushing per batch of lines instead of per line keeps a fast feed cheap.
        while not stop.is_set():
            self.out.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
        self.out.flush()


class TableDisplay:
    """The whole table redrawn in place, at most `refresh_hz` times a second."""

    def __init__(self, out: IO[str], table: PriceTable, refresh_hz: float, title: str) -> None:
        self.out = out
        self.table = table
        self.period = 1.0 / refresh_hz
        self.title = title
        self.started = time.monotonic()

    def on_update(self, venue: str, row: Row) -> None:
        """Updates only change the table; the redraw loop shows them."""

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            self._draw()
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period)

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.started
        header = (f"{self.title} | {len(self.table.rows)} markets | {self.table.updates} updates "
                  f"| {elapsed:.0f}s | Ctrl-C to stop")
        self.out.write(CLEAR_SCREEN + self.table.render(time.time_ns(), header))
        self.out.flush()


# -- sources --------------------------------------------------------------------------


async def _discover_kalshi_markets(client: HybridKalshiClient, limit: int) -> tuple[str, ...]:
    """Open markets from REST, at most `limit` of them."""
    tickers: list[str] = []
    markets = client.iter_markets(status="open", page_size=min(limit, DISCOVERY_PAGE_SIZE))
    async with contextlib.aclosing(markets):
        async for market in markets:
            ticker = market.get("ticker")
            if isinstance(ticker, str):
                tickers.append(ticker)
            if len(tickers) >= limit:
                break
    return tuple(tickers)


async def _source(venue: str, client: StreamingClient, stack: contextlib.AsyncExitStack,
                  markets: tuple[str, ...], discover: Callable[[], Awaitable[tuple[str, ...]]],
                  none_found: str) -> PriceSource:
    """The client (closed with `stack`) and the markets given, or, when none were, those discovered."""
    stack.push_async_callback(client.close)
    markets = markets or await discover()
    if not markets:
        raise click.ClickException(none_found)
    return PriceSource(venue, client, markets)


async def _kalshi_source(endpoint: KalshiEndpoint, options: StreamOptions,
                         stack: contextlib.AsyncExitStack) -> PriceSource:
    client = HybridKalshiClient(endpoint.credentials, rest_url=endpoint.rest_url, ws_url=endpoint.ws_url,
                                use_yes_price=options.use_yes_price)
    return await _source("kalshi", client, stack, options.markets,
                         lambda: _discover_kalshi_markets(client, options.max_markets),
                         f"no open Kalshi markets found at {endpoint.rest_url}")


async def _discover_polymarket_markets(client: HybridPolymarketClient, limit: int) -> tuple[str, ...]:
    """Condition ids of active, order-book-enabled markets from Gamma, at most `limit` of them.

    Offset pagination over a listing that changes meanwhile can list a market
    twice, hence the de-duplication (insertion-ordered).
    """
    found: dict[str, None] = {}
    markets = client.gamma.iter_markets(active=True, closed=False)
    async with contextlib.aclosing(markets):
        async for market in markets:
            if market.tokens and market.enable_order_book is not False:
                found[market.condition_id] = None
            if len(found) >= limit:
                break
    return tuple(found)


async def _polymarket_source(endpoint: PolymarketEndpoint, options: StreamOptions,
                             stack: contextlib.AsyncExitStack) -> PriceSource:
    client = HybridPolymarketClient(clob_url=endpoint.clob_url, gamma_url=endpoint.gamma_url,
                                    ws_url=endpoint.ws_url)
    return await _source("polymarket", client, stack, options.polymarket_markets,
                         lambda: _discover_polymarket_markets(client, options.max_markets),
                         f"no active Polymarket markets found at {endpoint.gamma_url}")


async def _open_sources(options: StreamOptions, stack: contextlib.AsyncExitStack) -> list[PriceSource]:
    """Every configured venue's price source; with none configured, both simulators are started here."""
    kalshi, polymarket = options.kalshi, options.polymarket
    if kalshi is None and polymarket is None:
        from markets.sim.venues import SimulatedVenues

        venues = await stack.enter_async_context(SimulatedVenues())
        kalshi = KalshiEndpoint(venues.kalshi.rest_url, venues.kalshi.ws_url,
                                KalshiCredentials.from_files(venues.key_id, venues.private_key_path))
        polymarket = PolymarketEndpoint(venues.polymarket.clob_url, venues.polymarket.gamma_url,
                                        venues.polymarket.ws_url)
    sources = []
    if kalshi is not None:
        sources.append(await _kalshi_source(kalshi, options, stack))
    if polymarket is not None:
        sources.append(await _polymarket_source(polymarket, options, stack))
    return sources


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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_stop_signals(stop: asyncio.Event) -> None:
    """The first SIGINT/SIGTERM sets `stop` for a clean shutdown; a second one is not ignored.

    The first signal also removes the handlers, restoring the default actions
    (KeyboardInterrupt for SIGINT, termination for SIGTERM), so that if the
    clean shutdown ever hangs, pressing Ctrl-C again still ends the process.
    """
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-POSIX / non-main thread
            loop.add_signal_handler(sig, on_signal)


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
        sources = await _unless_stopped(_open_sources(options, stack), stop)
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


def _check_url(value: str | None, schemes: tuple[str, ...], option: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise click.BadParameter(f"{value!r} is not a {'/'.join(schemes)} URL", param_hint=option)
    return value


def _kalshi_endpoint(ws_url: str | None, rest_url: str | None, key_id: str | None,
                     private_key: str | None) -> KalshiEndpoint | None:
    """The real Kalshi endpoint, or None (use the simulator) when nothing was configured."""
    ws_url = _check_url(ws_url, ("ws", "wss"), "--kalshi-ws-url")
    rest_url = _check_url(rest_url, ("http", "https"), "--kalshi-rest-url")
    if not any((ws_url, rest_url, key_id, private_key)):
        return None
    try:
        credentials = KalshiCredentials.resolve(key_id, private_key, environ={})
    except KalshiAuthError as exc:
        hint = f" (use --key-id/--private-key or {ENV_KEY_ID}/{ENV_PRIVATE_KEY_PATH})"
        raise click.ClickException(f"{exc}{hint}") from None
    return KalshiEndpoint(rest_url or KALSHI_REST_URL, ws_url or KALSHI_WS_URL, credentials)


def _polymarket_endpoint(ws_url: str | None, clob_url: str | None,
                         gamma_url: str | None) -> PolymarketEndpoint | None:
    """The real Polymarket endpoint, or None when no Polymarket option was given."""
    ws_url = _check_url(ws_url, ("ws", "wss"), "--polymarket-ws-url")
    clob_url = _check_url(clob_url, ("http", "https"), "--polymarket-clob-url")
    gamma_url = _check_url(gamma_url, ("http", "https"), "--polymarket-gamma-url")
    if not any((ws_url, clob_url, gamma_url)):
        return None
    return PolymarketEndpoint(clob_url or POLYMARKET_CLOB_URL, gamma_url or POLYMARKET_GAMMA_URL,
                              ws_url or POLYMARKET_WS_URL)


def _parse_markets(values: tuple[str, ...]) -> tuple[str, ...]:
    """Tickers from repeated and/or comma-separated --markets values, deduplicated in order."""
    tickers = (t.strip() for v in values for t in v.split(","))
    return tuple(dict.fromkeys(t for t in tickers if t))


@click.command("stream")
@click.option("--kalshi-ws-url", envvar="KALSHI_WS_URL", show_envvar=True,
              help="Kalshi WebSocket URL (default: production when any Kalshi option is set).")
@click.option("--kalshi-rest-url", envvar="KALSHI_REST_URL", show_envvar=True,
              help="Kalshi REST base URL (default: production when any Kalshi option is set).")
@click.option("--key-id", envvar=ENV_KEY_ID, show_envvar=True, help="Kalshi API key id.")
@click.option("--private-key", envvar=ENV_PRIVATE_KEY_PATH, show_envvar=True,
              help="Kalshi private key PEM file (PKCS#1 or PKCS#8, mode 0600).")
@click.option("--markets", "markets", multiple=True, metavar="TICKERS",
              help="Tickers to stream (comma-separated or repeated); default: open markets found over REST.")
@click.option("--polymarket-ws-url", envvar="POLYMARKET_WS_URL", show_envvar=True,
              help="Polymarket market-channel URL (default: production when any Polymarket option is set).")
@click.option("--polymarket-clob-url", envvar="POLYMARKET_CLOB_URL", show_envvar=True,
              help="Polymarket CLOB REST URL (default: production when any Polymarket option is set).")
@click.option("--polymarket-gamma-url", envvar="POLYMARKET_GAMMA_URL", show_envvar=True,
              help="Polymarket Gamma REST URL (default: production when any Polymarket option is set).")
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
def stream(kalshi_ws_url: str | None, kalshi_rest_url: str | None, key_id: str | None, private_key: str | None,
           markets: tuple[str, ...], polymarket_ws_url: str | None, polymarket_clob_url: str | None,
           polymarket_gamma_url: str | None, polymarket_markets: tuple[str, ...], max_markets: int, duration: float | None, use_yes_price: bool,
           refresh_hz: float, display: str) -> None:
    """Stream live prices into a table; with no venue configured, from in-process simulators."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = sys.stdout
    options = StreamOptions(
        kalshi=_kalshi_endpoint(kalshi_ws_url, kalshi_rest_url, key_id, private_key),
        polymarket=_polymarket_endpoint(polymarket_ws_url, polymarket_clob_url, polymarket_gamma_url),
        markets=_parse_markets(markets),
        polymarket_markets=_parse_markets(polymarket_markets),
        max_markets=max_markets,
        duration=duration,
        use_yes_price=use_yes_price,
        refresh_hz=refresh_hz,
        table=display == "table" or (display == "auto" and out.isatty()),
    )
    started = time.monotonic()
    try:
        table = asyncio.run(run_stream(options, out))
    except (VenueError, KalshiAuthError, WebSocketAuthError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers were installed, or a second Ctrl-C while shutting down.
        return
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python's
        # final flush of stdout from raising again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return
    click.echo(f"stopped after {time.monotonic() - started:.1f}s: {table.updates} updates "
               f"for {len(table.rows)} markets", err=True)


