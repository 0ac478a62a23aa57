"""KalshiClient's event and series calls against the Kalshi simulator (issue 9, item 9).

`get_event`, `get_series_list` and `get_series` were only ever tried against a stub
that answered one canned document; the simulator now serves `/events/{ticker}`,
`/series` and `/series/{ticker}` for its universe, so the calls are checked against
what they describe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from markets.base import VenueError
from markets.kalshi.client import KalshiClient
from markets.sim.kalshi import KalshiSimulator
from tests.conftest import StartKalshi

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim_and_client(start_kalshi: StartKalshi) -> AsyncIterator[tuple[KalshiSimulator, KalshiClient]]:
    sim = await start_kalshi(6, seed=4, rate_limit=None)
    async with KalshiClient(base_url=sim.rest_url, read_rate=1000, backoff_initial=0.001, backoff_max=0.01) as client:
        yield sim, client


async def test_get_event_returns_the_event_with_its_markets(
        sim_and_client: tuple[KalshiSimulator, KalshiClient]) -> None:
    sim, client = sim_and_client
    market = sim.universe.markets[2]
    for nested in (False, True):
        event = await client.get_event(market.event_ticker, with_nested_markets=nested)
        assert (event["event_ticker"], event["series_ticker"]) == (market.event_ticker, market.series_ticker)
        assert [m["ticker"] for m in event["markets"]] == [market.kalshi_ticker], \
            "markets come back inside the event whichever form the venue used"
        assert event["markets"][0]["status"] == "active"
    with pytest.raises(VenueError, match="404"):
        await client.get_event("KXNOPE-26NOV01XY")


async def test_series_list_and_one_series(sim_and_client: tuple[KalshiSimulator, KalshiClient]) -> None:
    sim, client = sim_and_client
    leagues = list(dict.fromkeys(m.series_ticker for m in sim.universe.markets))
    listed: list[dict[str, Any]] = await client.get_series_list()
    assert [s["ticker"] for s in listed] == leagues
    assert [s["ticker"] for s in await client.get_series_list(category="Sports", tags="Hockey")] == \
        [t for t in leagues if t == "KXNHLGAME"]
    one = await client.get_series(leagues[0])
    assert one == listed[0] and one["category"] == "Sports" and one["fee_type"] == "quadratic"
    with pytest.raises(VenueError, match="404"):
        await client.get_series("KXNOPE")
