"""Where `arbees stream` gets its prices: venue endpoints, market discovery, opening clients.

A *price source* is one venue's hybrid client plus the markets to stream from
it.  Adding a venue means writing one more ``_<venue>_source`` opener and
appending its result to the list in `open_sources`; the table, the display and
the shutdown logic do not change.

With neither venue configured, `open_sources` starts the simulators in-process
and streams their whole universe with the demo key pair, so the command works
out of the box and in CI.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import click

from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.client import HybridKalshiClient
from markets.kalshi.lifecycle import is_streamable
from markets.models import MarketPrice
from markets.polymarket.catalog import why_not_streamable
from markets.polymarket.client import HybridPolymarketClient

DISCOVERY_PAGE_SIZE = 200


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


async def _discover_kalshi_markets(client: HybridKalshiClient, limit: int) -> tuple[str, ...]:
    """Open markets from REST, at most `limit` of them; the `open` listing can still hold a
    just-closed market, so each is checked by the library's rule (`is_streamable`)."""
    tickers: list[str] = []
    markets = client.iter_markets(status="open", page_size=min(limit, DISCOVERY_PAGE_SIZE))
    async with contextlib.aclosing(markets):
        async for market in markets:
            ticker = market.get("ticker")
            if isinstance(ticker, str) and is_streamable(market):
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
    """Condition ids of markets with a live book to stream (`why_not_streamable`), at most `limit`.

    Offset pagination over a listing that changes meanwhile can list a market
    twice, hence the de-duplication (insertion-ordered).
    """
    found: dict[str, None] = {}
    markets = client.gamma.iter_markets(active=True, closed=False)
    async with contextlib.aclosing(markets):
        async for market in markets:
            if why_not_streamable(market) is None:
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


async def open_sources(options: StreamOptions, stack: contextlib.AsyncExitStack) -> list[PriceSource]:
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
