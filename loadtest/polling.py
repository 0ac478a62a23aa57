"""The REST polling baseline on the same simulators: how late a poller sees each book change.

Truth comes from the WebSocket: a `VenueFeeds` (the worker's own venue clients) in
this process streams the same markets and records when each top of book first
appeared, within a fraction of a millisecond of the simulator's change. The
pollers are the venues' REST clients' `poll_prices` (one request per market per
round, `interval` apart, rate-limited by the clients' token buckets, retries on the
simulators' 429s counted). A poll that returns the top the stream showed from
transition j on has seen every change up to j that the market's previous poll had
not: each such change's latency is that poll's receive time (when `poll_prices`
yields it) minus when the stream first showed the change. A change superseded
before any poll is thus seen, as a polling consumer would see it, only once a later
state is.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.price_sources import KalshiEndpoint, PolymarketEndpoint
from broker.universe import Game
from markets.base import BaseMarketClient
from markets.kalshi.client import KalshiClient
from markets.models import MarketPrice, Platform
from markets.polymarket.client import PolymarketClient
from workers.feeds import VenueFeeds

Top = tuple[float | None, float | None, float | None, float | None]
TRUTH_READY_TIMEOUT = 60.0


def top_of(price: MarketPrice) -> Top:
    return price.yes_bid, price.yes_ask, price.yes_bid_size, price.yes_ask_size


@dataclass
class PollingResult:
    latencies_ns: list[int] = field(default_factory=list)
    rest_calls: int = 0
    elapsed_s: float = 0.0
    changes_made: int = 0
    """Top-of-book changes the stream saw during the window."""
    unexplained: int = 0
    """Polls whose top the stream never showed (a REST answer racing the stream's start)."""


class Timeline:
    """Per market, the stream's (first-seen ns, top) transitions in time order."""

    def __init__(self) -> None:
        self.times: dict[str, list[int]] = {}
        self.tops: dict[str, list[Top]] = {}

    def add(self, price: MarketPrice) -> None:
        tops = self.tops.setdefault(price.market_id, [])
        top = top_of(price)
        if not tops or tops[-1] != top:
            tops.append(top)
            self.times.setdefault(price.market_id, []).append(time.time_ns())

    def index_of(self, market_id: str, top: Top, seen_ns: int) -> int | None:
        """The transition that made `top` the market's top, the last one at or before `seen_ns` (None if none)."""
        times, tops = self.times.get(market_id, []), self.tops.get(market_id, [])
        for index in range(bisect.bisect_right(times, seen_ns) - 1, -1, -1):
            if tops[index] == top:
                return index
        return None

    def changes_between(self, start_ns: int, end_ns: int) -> int:
        return sum(bisect.bisect_left(t, end_ns) - bisect.bisect_left(t, start_ns) for t in self.times.values())


async def measure_polling(kalshi: KalshiEndpoint, polymarket: PolymarketEndpoint, games: list[Game],
                          interval: float, duration: float, stop: asyncio.Event,
                          on_progress: Callable[[float], None]) -> PollingResult:
    """Poll every market of `games` for `duration` seconds (or until `stop`) and time what it sees."""
    ids = {venue: [m.market_id for g in games for m in g.markets if m.venue is venue] for venue in Platform}
    timeline = Timeline()
    feeds = VenueFeeds(kalshi, polymarket, timeline.add)
    pollers: dict[Platform, BaseMarketClient] = {
        Platform.KALSHI: KalshiClient(kalshi.credentials, base_url=kalshi.rest_url),
        Platform.POLYMARKET: PolymarketClient(clob_url=polymarket.clob_url, gamma_url=polymarket.gamma_url)}
    result = PollingResult()
    seen: list[tuple[str, Top, int]] = []
    try:
        feeds.start()
        feeds.want({venue: set(v) for venue, v in ids.items()})
        await _wait_truth(feeds, ids, stop)
        before = _rest_calls(pollers)
        start_ns = time.time_ns()
        tasks = [asyncio.create_task(_poll(pollers[venue], ids[venue], interval, seen)) for venue in ids if ids[venue]]
        started = time.monotonic()
        while not stop.is_set() and (elapsed := time.monotonic() - started) < duration:
            on_progress(elapsed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result.elapsed_s = time.monotonic() - started
        result.rest_calls = _rest_calls(pollers) - before
        result.changes_made = timeline.changes_between(start_ns, time.time_ns())
    finally:
        await feeds.close()
        for client in pollers.values():
            await client.close()
    # A poll that shows transition j has seen every change since the previous poll's transition,
    # each as late as the poll: a change that was superseded before any poll is seen only then.
    previous: dict[str, int] = {}
    for market_id, top, seen_ns in seen:
        index = timeline.index_of(market_id, top, seen_ns)
        if index is None:
            result.unexplained += 1
            continue
        last = previous.get(market_id)
        previous[market_id] = index if last is None else max(last, index)
        if last is not None:
            times = timeline.times[market_id]
            result.latencies_ns.extend(seen_ns - times[k] for k in range(last + 1, index + 1))
    return result


async def _wait_truth(feeds: VenueFeeds, ids: dict[Platform, list[str]], stop: asyncio.Event) -> None:
    deadline = time.monotonic() + TRUTH_READY_TIMEOUT
    while not stop.is_set():
        if all(feeds.latest(venue, m) is not None for venue, markets in ids.items() for m in markets):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the reference stream did not see every market within {TRUTH_READY_TIMEOUT:g} s")
        await asyncio.sleep(0.1)


async def _poll(client: BaseMarketClient, market_ids: list[str], interval: float,
                seen: list[tuple[str, Top, int]]) -> None:
    async for price in client.poll_prices(market_ids, interval):
        seen.append((price.market_id, top_of(price), time.time_ns()))


def _rest_calls(pollers: dict[Platform, BaseMarketClient]) -> int:
    total = 0
    for client in pollers.values():
        total += client.request_count
        gamma = getattr(client, "gamma", None)
        if gamma is not None:
            total += gamma.request_count
    return total
