"""PolymarketWebSocketClient against the Polymarket simulator over real loopback sockets.

The simulator runs with rate 0: books move only when a test steps a market, so
after each burst the client's books can be compared with the simulator's truth
(`true_book`, hundredths of a share) exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from markets.book import PolymarketOrderBook
from markets.models import MarketPrice, PriceStatus
from markets.polymarket.client import PolymarketClient
from markets.polymarket.ws_client import PolymarketWebSocketClient
from markets.sim.faults import FaultPlan
from markets.sim.polymarket import PolymarketFaultPlan, PolymarketSimulator
from markets.sim.universe import SimMarket, build_universe
from tests.clients.conftest import WskScriptedVenue, wsk_eventually

HUNDREDTHS_TO_UNITS = 10_000
"""The simulator counts hundredths of a share; books count 10**-6 of a share."""

FAST = {"backoff_initial": 0.01, "backoff_max": 0.1, "resync_timeout": 1.0, "ping_interval": 0.2}


def matches_truth(client: PolymarketWebSocketClient, sim: PolymarketSimulator, market_id: str) -> bool:
    book = client.book(market_id)
    token = client.token_of(market_id)
    if not isinstance(book, PolymarketOrderBook) or token is None or book.status is not PriceStatus.LIVE:
        return False
    bids, asks = sim.true_book(token)
    return (book.bids == {p: s * HUNDREDTHS_TO_UNITS for p, s in bids.items()}
            and book.asks == {p: s * HUNDREDTHS_TO_UNITS for p, s in asks.items()})


async def converged(client: PolymarketWebSocketClient, sim: PolymarketSimulator, market_ids: list[str],
                    timeout: float = 5.0) -> None:
    await wsk_eventually(lambda: all(matches_truth(client, sim, m) for m in market_ids), timeout,
                f"books of {len(market_ids)} market(s) to match the simulator")


async def step(sim: PolymarketSimulator, markets: list[SimMarket], rounds: int) -> None:
    """Move each market `rounds` times, yielding between rounds so frames interleave with reads."""
    for _ in range(rounds):
        for market in markets:
            sim.step_market(market)
        await asyncio.sleep(0.005)


@pytest.fixture
async def sim() -> AsyncIterator[PolymarketSimulator]:
    async with PolymarketSimulator(build_universe(8, seed=11), rate=0, book_after_tick_delay=0.05,
                                   ping_timeout=2.0) as simulator:
        yield simulator


@pytest.fixture
async def make_client(sim: PolymarketSimulator) -> AsyncIterator[Callable[..., PolymarketWebSocketClient]]:
    """Clients of `venue` (default: the `sim` fixture), each resolving condition ids over its REST."""
    opened: list[PolymarketWebSocketClient | PolymarketClient] = []

    def make(venue: PolymarketSimulator | None = None, **options: Any) -> PolymarketWebSocketClient:
        venue = venue or sim
        rest = PolymarketClient(clob_url=venue.clob_url, gamma_url=venue.gamma_url, rate=1000)
        client = PolymarketWebSocketClient(url=venue.ws_url, resolver=rest, **{**FAST, **options})
        opened.extend((client, rest))
        return client

    yield make
    for item in opened:
        await item.close()


def collect(client: PolymarketWebSocketClient) -> list[MarketPrice]:
    seen: list[MarketPrice] = []
    client.add_listener(seen.append)
    return seen


async def test_initial_array_dump_seeds_books_keyed_by_condition_id(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    client = make_client()
    markets = sim.universe.markets[:3]
    ids = [m.condition_id for m in markets]
    async with asyncio.timeout(5):
        await client.connect()
    await client.subscribe(ids)
    await converged(client, sim, ids)
    for market in markets:
        assert client.token_of(market.condition_id) == market.yes_token_id
        price = client.latest_price(market.condition_id)
        assert price is not None and price.market_id == market.condition_id
        assert price.yes_bid == max(sim.true_book(market.yes_token_id)[0]) / 10_000
    assert client.stats.rejected == {} and client.stats.gaps == 0


async def test_team_market_publishes_outcome_zero_and_records_the_pairing(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    team = next(m for m in sim.universe.markets if m.outcomes != ("Yes", "No"))
    client = make_client()
    await client.subscribe([team.condition_id])
    await converged(client, sim, [team.condition_id])
    info = client.markets[team.condition_id]
    assert [(t.token_id, t.outcome) for t in info.tokens] == [
        (team.yes_token_id, team.outcomes[0]), (team.no_token_id, team.outcomes[1])]


async def test_price_changes_across_both_tokens_keep_both_books_exact(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    market = sim.universe.markets[0]
    client = make_client()
    seen = collect(client)
    tokens = [market.yes_token_id, market.no_token_id]
    await client.subscribe(tokens)
    await converged(client, sim, tokens)
    for _ in range(10):
        await step(sim, [market], 3)
        await converged(client, sim, tokens)
    yes, no = client.latest_price(tokens[0]), client.latest_price(tokens[1])
    assert yes is not None and no is not None
    assert no.yes_bid == pytest.approx(yes.no_bid) and no.yes_ask == pytest.approx(yes.no_ask)
    assert {p.market_id for p in seen} == set(tokens)
    assert client.stats.gaps == 0 and client.stats.resyncs == 0 and client.stats.rejected == {}


async def test_inconsistent_best_is_caught_resynced_and_repaired(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    market = sim.universe.markets[1]
    # Every frame wrong: a disagreement that persists (one or two would be transient).
    sim.faults = PolymarketFaultPlan(inconsistent_top_every=1)
    client = make_client()
    seen = collect(client)
    await client.subscribe([market.condition_id])
    await converged(client, sim, [market.condition_id])
    await step(sim, [market], 20)
    await wsk_eventually(lambda: client.stats.gaps >= 1, what="a best_bid/best_ask mismatch")
    assert client.stats.resyncs >= 1
    assert PriceStatus.RESYNCING in {p.status for p in seen if p.market_id == market.condition_id}
    sim.apply_faults_now(PolymarketFaultPlan())
    await step(sim, [market], 3)
    await converged(client, sim, [market.condition_id])
    assert client.stats.reconnects == 0


async def test_tick_size_change_opens_an_epoch_until_the_next_book(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    market = sim.universe.markets[0]
    client = make_client()
    seen = collect(client)
    await client.subscribe([market.condition_id])
    await converged(client, sim, [market.condition_id])
    new_tick = 10 if sim.tick_size(market.yes_token_id) == 100 else 100
    sim.change_tick_size(market.condition_id, new_tick)
    await wsk_eventually(lambda: any(p.status is PriceStatus.RESYNCING for p in seen), what="the epoch to start")
    await converged(client, sim, [market.condition_id])
    book = client.book(market.condition_id)
    assert isinstance(book, PolymarketOrderBook) and book.tick_size == new_tick
    assert client.stats.gaps == 0 and client.stats.reconnects == 0


async def test_text_ping_keeps_the_socket_open(make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    async with PolymarketSimulator(build_universe(2, seed=3), rate=0, ping_timeout=0.3) as quick:
        client = make_client(quick, ping_interval=0.05)
        ids = [quick.universe.markets[0].yes_token_id]
        await client.subscribe(ids)
        await converged(client, quick, ids)
        await asyncio.sleep(1.0)
        assert client.stats.reconnects == 0 and client.connections[0].connected
        await client.close()


async def test_without_ping_the_venue_drops_the_socket_and_the_client_reconnects(
        make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    async with PolymarketSimulator(build_universe(2, seed=3), rate=0, ping_timeout=0.3) as quick:
        client = make_client(quick, ping_interval=None, receive_timeout=30.0)
        ids = [quick.universe.markets[0].yes_token_id]
        await client.subscribe(ids)
        await converged(client, quick, ids)
        await wsk_eventually(lambda: client.stats.reconnects >= 1, what="the venue to drop an unpinged socket")
        assert client.stats.disconnects["peer_closed"] >= 1
        await converged(client, quick, ids)
        await client.close()


async def test_reconnect_replays_the_initial_subscribe_then_operations(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    first, second = sim.universe.markets[:2]
    sim.faults = FaultPlan(drop_after=2)
    client = make_client()
    await client.subscribe([first.condition_id])
    await converged(client, sim, [first.condition_id])
    sim.faults = FaultPlan()  # connections opened from now on behave
    await step(sim, [first], 3)
    await wsk_eventually(lambda: client.stats.reconnects >= 1, what="the fault to drop the socket")
    await step(sim, [first], 2)
    await converged(client, sim, [first.condition_id])
    await client.subscribe([second.condition_id])  # an `operation` on the new session
    await converged(client, sim, [first.condition_id, second.condition_id])
    assert client.stats.rejected["invalid_operation"] == 0


async def test_dynamic_subscribe_and_unsubscribe(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    first, second = sim.universe.markets[2:4]
    client = make_client()
    await client.subscribe([first.condition_id])
    await converged(client, sim, [first.condition_id])
    await client.subscribe([second.yes_token_id])
    await converged(client, sim, [first.condition_id, second.yes_token_id])
    await client.unsubscribe([first.condition_id])
    assert client.subscribed == {second.yes_token_id} and client.latest_price(first.condition_id) is None
    await wsk_eventually(lambda: all(first.yes_token_id not in c.assets for c in sim._connections), 5.0,
                         "the venue to process the unsubscribe")
    sent_before = sum(1 for r in sim.send_log.records() if r.market_id == first.yes_token_id)
    await step(sim, [first, second], 5)
    await converged(client, sim, [second.yes_token_id])
    assert sum(1 for r in sim.send_log.records() if r.market_id == first.yes_token_id) == sent_before
    assert client.stats.rejected["invalid_operation"] == 0


async def test_one_token_cannot_be_published_under_two_ids(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    market = sim.universe.markets[0]
    client = make_client()
    with pytest.raises(ValueError, match="already published"):
        await client.subscribe([market.condition_id, market.yes_token_id])
    with pytest.raises(ValueError, match="neither a condition id"):
        await client.subscribe(["KXNBAGAME-26NOV25BOSLAL-BOS"])
    assert client.subscribed == set()


async def test_twenty_markets_stream_concurrently(make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    async with PolymarketSimulator(build_universe(20, seed=4), rate=0, book_after_tick_delay=0.05) as big:
        client = make_client(big)
        ids = [m.condition_id for m in big.universe.markets]
        received: set[str] = set()

        async def consume() -> None:
            async for price in client.stream_prices(ids):
                received.add(price.market_id)

        consumer = asyncio.create_task(consume())
        try:
            await converged(client, big, ids)
            await step(big, big.universe.markets, 10)
            await converged(client, big, ids)
            await wsk_eventually(lambda: received == set(ids), what="a streamed price for every market")
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        assert client.stats.gaps == 0 and client.stats.rejected == {}


async def test_tokens_are_sharded_over_supervised_connections(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    client = make_client(max_tokens_per_connection=3)
    ids = [m.condition_id for m in sim.universe.markets]
    await client.subscribe(ids)
    await converged(client, sim, ids)
    assert len(client.connections) == 3 and sorted(len(c.markets) for c in client.connections) == [2, 3, 3]
    assert sim.connection_count == 3
    await step(sim, sim.universe.markets, 4)
    await converged(client, sim, ids)


async def test_malformed_frames_are_survived_and_counted(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    markets = sim.universe.markets[:2]
    ids = [m.condition_id for m in markets]
    sim.faults = FaultPlan(malformed_every=5, truncated_every=7, unknown_type_every=4, wrong_type_every=9,
                           negative_size_every=11, duplicate_every=3)
    client = make_client()
    await client.subscribe(ids)
    await wsk_eventually(lambda: all(client.latest_price(m) is not None for m in ids), what="first snapshots")
    await step(sim, markets, 25)
    await wsk_eventually(lambda: sum(client.stats.rejected.values()) >= 6, what="bad frames to be counted")
    rejected = client.stats.rejected
    assert rejected["malformed_json"] >= 1 and rejected["unknown_event_type"] >= 1
    assert rejected["bad_price_change"] + rejected["bad_book"] >= 1
    sim.apply_faults_now(FaultPlan())
    await step(sim, markets, 3)
    await converged(client, sim, ids)
    assert client.stats.rejected["handler_error"] == 0


async def test_a_silently_stalled_feed_is_noticed_and_reconnected(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    """The venue keeps answering PING but sends no data: the per-token watchdog must notice."""
    market = sim.universe.markets[0]
    sim.faults = FaultPlan(stall_after=4)
    client = make_client(stale_after=0.3, resync_timeout=0.2)
    seen = collect(client)
    await client.subscribe([market.condition_id])
    await converged(client, sim, [market.condition_id])
    sim.faults = FaultPlan()  # the next connection is healthy

    async def keep_moving() -> None:
        while True:
            sim.step_market(market)
            await asyncio.sleep(0.02)

    mover = asyncio.create_task(keep_moving())
    try:
        await wsk_eventually(lambda: client.stats.reconnects >= 1, what="the stalled socket to be replaced")
    finally:
        mover.cancel()
        await asyncio.gather(mover, return_exceptions=True)
    assert client.stats.stale_trips >= 1 and client.stats.disconnects["resync_failed"] == 1
    assert PriceStatus.STALE in {p.status for p in seen}
    await converged(client, sim, [market.condition_id])


async def test_after_a_reconnect_no_update_applies_before_the_new_book(wsk_venue: WskScriptedVenue) -> None:
    """The old book missed whatever changed while the socket was down; an update that
    arrives before this session's `book` (the venue is known to skip initial
    snapshots) must not revive it, even when it agrees with the old top."""
    token = "71321045679252212594626385532706912750332728571942532289631379312455583992563"

    def book(bid: str, bid_size: str) -> str:
        return orjson.dumps([{"event_type": "book", "asset_id": token, "market": "0x01", "timestamp": "1",
                              "bids": [{"price": bid, "size": bid_size}], "asks": [{"price": "0.52", "size": "10"}]}
                             ]).decode()

    client = PolymarketWebSocketClient(url=wsk_venue.url, ping_interval=None, backoff_initial=0.01,
                                       backoff_max=0.1, resync_timeout=5.0)
    try:
        seen = collect(client)
        await client.subscribe([token])
        first = await wsk_venue.accept()
        assert (await first.recv_json())["type"] == "market"
        await first.send(book("0.50", "10"))
        await wsk_eventually(lambda: client.latest_price(token) is not None)
        await first.close()
        second = await wsk_venue.accept()
        assert (await second.recv_json()) == {"assets_ids": [token], "initial_dump": True, "type": "market",
                                              "custom_feature_enabled": True}
        await wsk_eventually(lambda: client.book(token).status is PriceStatus.STALE)  # type: ignore[union-attr]
        before = client.stats.messages
        entry = {"asset_id": token, "price": "0.50", "size": "7", "side": "BUY", "best_bid": "0.50", "best_ask": "0.52"}
        await second.send({"event_type": "price_change", "market": "0x01", "timestamp": "2", "price_changes": [entry]})
        await wsk_eventually(lambda: client.stats.messages == before + 1, what="the update to be handled")
        assert client.book(token).status is PriceStatus.STALE  # type: ignore[union-attr]
        assert client.book(token).bids == {5000: 10_000_000}  # type: ignore[union-attr]
        assert client.stats.dropped["awaiting_snapshot"] == 1
        await second.send(book("0.49", "4"))
        await wsk_eventually(lambda: client.book(token).status is PriceStatus.LIVE)  # type: ignore[union-attr]
        assert client.book(token).bids == {4900: 4_000_000}  # type: ignore[union-attr]
        assert [p.status for p in seen] == [PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.LIVE]
    finally:
        await client.close()
