"""A worker's venue clients: one hybrid client per venue, subscriptions following the assignment.

The control loop only states what it wants (`want(venue, market_ids)`); one task per
venue turns the difference into subscribe/unsubscribe calls, in chunks, so a large
reassignment or a slow REST resolution (Polymarket condition ids) never blocks the
loop that answers heartbeats and snapshot requests. A venue failure (auth refused,
unresolvable market) is logged and counted; the task retries after a backoff and
the worker lives on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from broker.price_sources import KalshiEndpoint, PolymarketEndpoint
from markets.backoff import backoff_delay
from markets.hybrid import WebSocketPrices
from markets.kalshi.client import HybridKalshiClient
from markets.models import MarketPrice, Platform
from markets.polymarket.client import HybridPolymarketClient
from markets.ws_stats import LogLimiter

log = logging.getLogger(__name__)

SUBSCRIBE_CHUNK = 100


class VenueFeed:
    """One venue's client and the markets it should be streaming."""

    def __init__(self, venue: Platform, client: WebSocketPrices, on_price: Callable[[MarketPrice], None]) -> None:
        self.venue = venue
        self.client = client
        self.wanted: set[str] = set()
        self.failures = 0
        self._changed = asyncio.Event()
        self._log_limit = LogLimiter()
        client.ws.add_listener(on_price)

    def want(self, market_ids: set[str]) -> None:
        self.wanted = set(market_ids)
        self._changed.set()

    async def run(self) -> None:
        rng = random.Random()
        attempt = 0
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._apply()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a venue failure must never end the worker
                self.failures += 1
                held = self._log_limit.allow("subscribe")
                if held is not None:
                    log.error("%s: could not follow the assignment: %s (%d similar not logged)", self.venue.value,
                              exc, held)
                await asyncio.sleep(backoff_delay(attempt, 0.5, 30.0, rng))
                attempt += 1
                self._changed.set()

    async def _apply(self) -> None:
        ws = self.client.ws
        current = ws.subscribed
        gone = sorted(current - self.wanted)
        if gone:
            await ws.unsubscribe(gone)
        new = sorted(self.wanted - current)
        started = time.monotonic()
        for start in range(0, len(new), SUBSCRIBE_CHUNK):
            await ws.subscribe(new[start:start + SUBSCRIBE_CHUNK])
        if new or gone:
            log.info("%s: subscribed %d, unsubscribed %d market(s) in %.3f s", self.venue.value, len(new), len(gone),
                     time.monotonic() - started)

    def counters(self) -> dict[str, Any]:
        stats = self.client.ws.stats.snapshot()
        stats["subscribe_failures"] = self.failures
        stats["rest_requests"] = self.client.request_count
        return stats


class VenueFeeds:
    """The worker's configured venues; a market of an unconfigured venue is reported, not streamed."""

    def __init__(self, kalshi: KalshiEndpoint | None, polymarket: PolymarketEndpoint | None,
                 on_price: Callable[[MarketPrice], None]) -> None:
        self.feeds: dict[Platform, VenueFeed] = {}
        if kalshi is not None:
            self.feeds[Platform.KALSHI] = VenueFeed(Platform.KALSHI, HybridKalshiClient(
                kalshi.credentials, rest_url=kalshi.rest_url, ws_url=kalshi.ws_url), on_price)
        if polymarket is not None:
            self.feeds[Platform.POLYMARKET] = VenueFeed(Platform.POLYMARKET, HybridPolymarketClient(
                clob_url=polymarket.clob_url, gamma_url=polymarket.gamma_url, ws_url=polymarket.ws_url), on_price)
        self.unconfigured: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(f.run(), name=f"feed-{v.value}") for v, f in self.feeds.items()]

    def want(self, wanted: dict[Platform, set[str]]) -> None:
        missing = {f"{v.value}/{m}" for v, ids in wanted.items() if v not in self.feeds for m in ids}
        if missing - self.unconfigured:
            log.error("assigned %d market(s) of a venue this worker has no configuration for: %s",
                      len(missing), ", ".join(sorted(missing)[:5]))
        self.unconfigured = missing
        for venue, feed in self.feeds.items():
            feed.want(wanted.get(venue, set()))

    def latest(self, venue: Platform, market_id: str) -> MarketPrice | None:
        feed = self.feeds.get(venue)
        return None if feed is None else feed.client.ws.latest_price(market_id)

    def counters(self) -> dict[str, Any]:
        return {v.value: f.counters() for v, f in self.feeds.items()}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for feed in self.feeds.values():
            with contextlib.suppress(Exception):
                await feed.client.close()
