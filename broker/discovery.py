"""The universe from the venues' REST listings: Kalshi series, Polymarket tags or slugs.

Each market found becomes a game of its own (one venue, no arbitrage signal):
matching a Kalshi ticker with a Polymarket condition id is a judgement about what
two texts mean, so pairs are written in a config file instead, where a person
says which outcome each market's YES pays on. Only markets that can trade now are
kept, by the venue library's own discovery rules (`markets.kalshi.lifecycle.is_streamable`,
`markets.polymarket.catalog.why_not_streamable`). Discovery runs once, when the
broker starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from broker.price_sources import KalshiEndpoint, PolymarketEndpoint
from broker.universe import ConfigError, Game, MarketRef, check_games
from markets.kalshi.client import KalshiClient
from markets.kalshi.lifecycle import is_streamable
from markets.models import Platform
from markets.polymarket.catalog import why_not_streamable
from markets.polymarket.client import GammaClient


@dataclass(frozen=True)
class DiscoveryPlan:
    kalshi_series: tuple[str, ...] = ()
    polymarket_tags: tuple[int, ...] = ()
    polymarket_slugs: tuple[str, ...] = ()
    limit: int = 200

    @property
    def requested(self) -> bool:
        return bool(self.kalshi_series or self.polymarket_tags or self.polymarket_slugs)


async def discover_games(plan: DiscoveryPlan, kalshi: KalshiEndpoint | None,
                         polymarket: PolymarketEndpoint | None) -> list[Game]:
    """Single-venue games for every streamable market the plan names, at most `plan.limit` per venue."""
    if plan.kalshi_series and kalshi is None:
        raise ConfigError("--kalshi-series needs the Kalshi venue configured (URLs and credentials)")
    if (plan.polymarket_tags or plan.polymarket_slugs) and polymarket is None:
        raise ConfigError("--polymarket-tag/--polymarket-slug need the Polymarket venue configured")
    games: list[Game] = []
    if plan.kalshi_series and kalshi is not None:
        games += await _kalshi_games(kalshi, plan)
    if (plan.polymarket_tags or plan.polymarket_slugs) and polymarket is not None:
        games += await _polymarket_games(polymarket, plan)
    return check_games(games)


async def _kalshi_games(endpoint: KalshiEndpoint, plan: DiscoveryPlan) -> list[Game]:
    found: dict[str, Game] = {}
    async with KalshiClient(endpoint.credentials, base_url=endpoint.rest_url) as client:
        for series in plan.kalshi_series:
            async for market in _bounded(client.iter_markets(status="open", series_ticker=series), plan.limit):
                ticker = market.get("ticker")
                if isinstance(ticker, str) and ticker not in found and is_streamable(market):
                    yes = str(market.get("yes_sub_title") or ticker.rsplit("-", 1)[-1])
                    title = str(market.get("title") or ticker)
                    found[ticker] = Game(ticker, title, (MarketRef(Platform.KALSHI, ticker, yes, yes),))
                if len(found) >= plan.limit:
                    break
    return list(found.values())


async def _polymarket_games(endpoint: PolymarketEndpoint, plan: DiscoveryPlan) -> list[Game]:
    found: dict[str, Game] = {}
    filters: list[dict[str, Any]] = [{"tag_id": tag} for tag in plan.polymarket_tags]
    if plan.polymarket_slugs:
        filters.append({"slug": list(plan.polymarket_slugs)})
    async with GammaClient(endpoint.gamma_url) as gamma:
        for extra in filters:
            async for info in _bounded(gamma.iter_markets(active=True, closed=False, **extra), plan.limit):
                if info.condition_id in found or why_not_streamable(info) is not None:
                    continue
                yes = info.yes_token.outcome
                found[info.condition_id] = Game(info.slug or info.condition_id, info.question or info.condition_id,
                                                (MarketRef(Platform.POLYMARKET, info.condition_id, yes, yes),))
                if len(found) >= plan.limit:
                    break
    return list(found.values())


async def _bounded(listing: AsyncIterator[Any], limit: int) -> AsyncIterator[Any]:
    """At most a few pages past `limit` entries of a listing, closed when left early."""
    async with contextlib.aclosing(listing):  # type: ignore[type-var]
        count = 0
        async for item in listing:
            yield item
            count += 1
            if count >= limit * 4:
                return
