"""KalshiWebSocketClient against the Kalshi simulator over real loopback sockets.

Most tests run the simulator at rate 0 and move markets with `sim.step_market`, so
the simulator is quiescent when the books are compared: the client's books must
then equal the simulator's own state exactly, level by level.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from markets.base_ws import WebSocketAuthError
from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import KalshiWebSocketClient
from markets.models import MarketPrice, PriceStatus
from markets.sim.faults import FaultPlan
from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from tests.clients.conftest import WskMakeClient, WskStartSim, wsk_eventually


def tickers_of(sim: KalshiSimulator) -> list[str]:
    return [m.kalshi_ticker for m in sim.universe.markets]


def book_matches(client: KalshiWebSocketClient, sim: KalshiSimulator, ticker: str) -> bool:
    """The client's YES bids and NO bids equal the simulator's, level by level."""
    book = client.book(ticker)
    if book is None or book.status is not PriceStatus.LIVE:
        return False
    yes, no = sim.book_levels(ticker)
    return book.yes_bids == yes and book.no_bids == no


def all_match(client: KalshiWebSocketClient, sim: KalshiSimulator) -> bool:
    return all(book_matches(client, sim, t) for t in tickers_of(sim))


def step_all(sim: KalshiSimulator, rounds: int) -> None:
    for _ in range(rounds):
        for market in sim.universe.markets:
            sim.step_market(market)


class Recorder:
    """Collects every price a stream yields, per market, in a background task."""

    def __init__(self, client: KalshiWebSocketClient, tickers: list[str]) -> None:
        self.prices: list[MarketPrice] = []
        self.error: BaseException | None = None
        self.ended = False
        self._task = asyncio.create_task(self._run(client, tickers))

    async def _run(self, client: KalshiWebSocketClient, tickers: list[str]) -> None:
        try:
            async for price in client.stream_prices(tickers):
                self.prices.append(price)
        except Exception as exc:  # recorded for the test to assert on
            self.error = exc
        self.ended = True

    def statuses(self, ticker: str) -> list[PriceStatus]:
        return [p.status for p in self.prices if p.market_id == ticker]

    def saw(self, ticker: str, *sequence: PriceStatus) -> bool:
        """Whether the statuses of `ticker` contain `sequence` in order (not necessarily adjacent)."""
        remaining = list(sequence)
        for status in self.statuses(ticker):
            if remaining and status is remaining[0]:
                remaining.pop(0)
        return not remaining

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_signed_handshake_accepted_and_books_match_simulator(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=6)
    client = wsk_make_client(sim.ws_url)
    await asyncio.wait_for(client.connect(), 5)
    assert client.stats.connects == 1 and sim.connection_count == 1
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all_match(client, sim), what="initial snapshots applied")
    step_all(sim, 40)
    await wsk_eventually(lambda: all_match(client, sim), what="books equal after 240 updates")
    assert client.stats.gaps == 0 and not client.stats.rejected and client.stats.resyncs == 0
    # Prices published match the books they came from.
    for ticker in tickers_of(sim):
        price, book = client.latest_price(ticker), client.book(ticker)
        assert price is not None and book is not None and price.status is PriceStatus.LIVE
        best_bid, best_ask = book.best_bid, book.best_ask
        assert price.yes_bid == (None if best_bid is None else best_bid[0] / 10_000)
        assert price.yes_ask == (None if best_ask is None else best_ask[0] / 10_000)


async def test_unregistered_key_fails_fast_with_auth_error(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient, tmp_path: Path) -> None:
    sim = await wsk_start_sim()
    key_id, path, _ = generate_demo_keypair(tmp_path / "unregistered")
    client = wsk_make_client(sim.ws_url, KalshiCredentials.from_files(key_id, path), max_auth_failures=3)
    with pytest.raises(WebSocketAuthError, match="401.*3 times in a row"):
        await asyncio.wait_for(client.connect(), 5)
    assert client.stats.handshake_failures["401"] == 3
    assert client.stats.connects == 0
    # The failure is sticky: a stream started now raises it instead of hanging or ending.
    with pytest.raises(WebSocketAuthError):
        async with asyncio.timeout(2):
            async for _ in client.stream_prices(tickers_of(sim)):
                pass


async def test_refused_handshakes_are_retried_with_backoff(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(faults=FaultPlan(refuse_handshakes=3))
    client = wsk_make_client(sim.ws_url)
    await asyncio.wait_for(client.connect(), 5)
    assert client.stats.handshake_failures["503"] == 3
    assert client.stats.connects == 1
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all_match(client, sim))


async def test_seq_gap_triggers_resync_and_book_is_right_afterwards(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=4, faults=FaultPlan(skip_seq_every=15))
    client = wsk_make_client(sim.ws_url)
    recorder = Recorder(client, tickers_of(sim))
    await wsk_eventually(lambda: all_match(client, sim), what="initial snapshots")
    step_all(sim, 30)
    await wsk_eventually(lambda: client.stats.gaps >= 3, what="gaps detected")
    sim.apply_faults_now(FaultPlan())
    step_all(sim, 5)
    await wsk_eventually(lambda: all_match(client, sim), what="books right after resync")
    # Gaps seen while a snapshot is already on its way do not ask for another one.
    assert client.stats.gaps > 0 and 0 < client.stats.resyncs <= client.stats.gaps
    assert client.stats.reconnects == 0
    # The stream's consumer runs after the client: wait for what it saw, do not assume it.
    await wsk_eventually(lambda: any(recorder.saw(t, PriceStatus.LIVE, PriceStatus.RESYNCING, PriceStatus.LIVE)
                                     for t in tickers_of(sim)), what="the stream to see a resync")
    # No price is ever published from a book known to be wrong.
    assert all(p.yes_bid is None and p.yes_ask is None
               for p in recorder.prices if p.status is PriceStatus.RESYNCING)
    await recorder.stop()


async def test_dropped_connection_reconnects_resubscribes_and_prices_flow_again(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=4, rate=100.0, faults=FaultPlan(drop_after=150))
    client = wsk_make_client(sim.ws_url)
    recorder = Recorder(client, tickers_of(sim))
    await wsk_eventually(lambda: client.stats.reconnects >= 2, what="two reconnects")
    sim.faults = FaultPlan()  # from the next connection on, no more drops
    seen = len(recorder.prices)
    await wsk_eventually(lambda: len(recorder.prices) > seen + 50, what="prices flow after reconnect")
    assert client.stats.disconnects["peer_closed"] + client.stats.disconnects["socket_error"] >= 2
    ticker = tickers_of(sim)[0]
    assert recorder.saw(ticker, PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.LIVE)
    assert recorder.error is None and not recorder.ended
    await recorder.stop()


async def test_a_silent_feed_with_pings_flowing_is_quiet_not_stale(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    """Data stops after 40 frames while the venue keeps pinging: on Kalshi that is a
    quiet market (its sid's seq is continuous, the socket is alive), so nothing may
    go STALE, resync or reconnect -- not after many `stale_after`s, and not after
    the no-frame `receive_timeout` either, because the venue's pings are frames.

    This replaces `test_silent_stall_trips_watchdog_then_recovers`, which asserted
    the opposite (the stall trips the watchdog, the ladder reconnects). Its
    intermittent failure was a race in the test, not in the client: it asserted on
    what its stream consumer (`Recorder`) had seen right after polling the client's
    state. The client publishes into the stream's queue in the reader task; the
    consumer runs one loop turn later. When the recovery snapshots and the test's
    10 ms poll timer became ready in the same loop turn -- a loaded machine that
    held the process for a moment after the simulator wrote them -- the reader ran,
    then the test saw every book LIVE and asserted before the consumer had taken the
    final LIVE, so `saw(LIVE, STALE, LIVE)` failed with every counter right. (Holding
    the loop 15 ms after each recovery snapshot reproduces it 9 times in 10.) Tests
    here now wait for what the consumer saw (see the next test).
    """
    sim = await wsk_start_sim(n_markets=3, rate=60.0, faults=FaultPlan(stall_after=40), ping_interval=0.1)
    client = wsk_make_client(sim.ws_url, stale_after=0.2, resync_timeout=0.3, receive_timeout=0.6,
                             venue_ping_timeout=0.6)
    recorder = Recorder(client, tickers_of(sim))
    stats = client.stats.snapshot
    await wsk_eventually(lambda: client.stats.pings_received >= 10, what="the venue's pings", state=stats)
    silent_from = client.stats.messages
    # 20 more pings: at least 2 s of silence, 10 x stale_after and 3 x receive_timeout.
    await wsk_eventually(lambda: client.stats.pings_received >= 30 or client.stats.reconnects > 0,
                         what="two seconds of pings", state=stats)
    assert client.stats.messages == silent_from, "data kept flowing: the stall fault did not apply"
    assert client.stats.stale_trips == 0 and client.stats.resyncs == 0, stats()
    assert client.stats.reconnects == 0 and not client.stats.disconnects, stats()
    for ticker in tickers_of(sim):
        assert client.book(ticker).status is PriceStatus.LIVE  # type: ignore[union-attr]
        assert set(recorder.statuses(ticker)) == {PriceStatus.LIVE}, recorder.statuses(ticker)
    await recorder.stop()


async def test_a_peer_that_goes_silent_both_ways_is_reconnected(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    """A real stall on Kalshi is a dead connection: no data, no pings, no PONG for ours.
    Our heartbeat notices, the books go STALE with the socket (not by the per-market
    watchdog), and a fresh session brings them back LIVE and exact."""
    sim = await wsk_start_sim(n_markets=3, faults=FaultPlan(mute_after=10))
    client = wsk_make_client(sim.ws_url, ping_interval=1.0, stale_after=0.2)
    recorder = Recorder(client, tickers_of(sim))
    stats = client.stats.snapshot
    await wsk_eventually(lambda: all_match(client, sim), what="initial snapshots", state=stats)
    sim.faults = FaultPlan()  # the first connection keeps its plan; the next ones are healthy
    step_all(sim, 20)  # past the 10th data frame the first connection is a black hole
    await wsk_eventually(lambda: client.stats.reconnects >= 1, what="the dead peer to be replaced", state=stats)
    await wsk_eventually(lambda: all_match(client, sim), what="recovery", state=stats)
    # The stream's consumer runs after the client: wait for what it saw, do not assume it.
    await wsk_eventually(lambda: all(recorder.saw(t, PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.LIVE)
                                     for t in tickers_of(sim)), what="the stream to see the recovery",
                         state=lambda: {t: recorder.statuses(t) for t in tickers_of(sim)})
    assert client.stats.stale_trips == 0 and client.stats.disconnects["receive_timeout"] == 0, stats()
    await recorder.stop()


async def test_a_venue_that_stops_pinging_is_reconnected(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    """Heartbeats both ways: our pings are answered here, but the venue's own pings
    (every 10 s on Kalshi) stopped, so the session is not trusted and is replaced."""
    sim = await wsk_start_sim(n_markets=2, ping_interval=60.0)
    client = wsk_make_client(sim.ws_url, venue_ping_timeout=0.5, ping_interval=0.2, stale_after=30.0)
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: client.stats.disconnects["venue_ping_timeout"] >= 1,
                         what="the session without venue pings to end", state=client.stats.snapshot)
    assert client.stats.pongs_received >= 1  # the socket itself still answered ours
    await wsk_eventually(lambda: all_match(client, sim), what="books after the reconnect")


async def test_bad_frames_are_counted_by_reason_and_survived(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    plan = FaultPlan(malformed_every=11, truncated_every=13, unknown_type_every=7,
                     wrong_type_every=17, negative_size_every=19)
    sim = await wsk_start_sim(n_markets=5, faults=plan)
    # One market per sid: with a shared sid every lost frame resyncs all of them, and
    # the deltas that carry the faults would be dropped while the snapshots are awaited.
    client = wsk_make_client(sim.ws_url, markets_per_subscription=1)
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all(client.book(t).status is PriceStatus.LIVE  # type: ignore[union-attr]
                                     for t in tickers_of(sim)), what="initial snapshots")
    step_all(sim, 60)
    rejected = client.stats.rejected
    await wsk_eventually(lambda: all(rejected[r] > 0 for r in (
        "malformed_json", "truncated_json", "unknown_type", "negative_level")), what="every kind seen")
    await wsk_eventually(lambda: rejected["bad_field"] + rejected["bad_snapshot"] > 0)
    sim.apply_faults_now(FaultPlan())
    step_all(sim, 3)
    await wsk_eventually(lambda: all_match(client, sim), what="every book exact after the faults")
    assert client.stats.connects == 1 and not client.stats.disconnects
    assert rejected["handler_error"] == 0


async def test_duplicates_are_dropped_not_treated_as_gaps(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=3, faults=FaultPlan(duplicate_every=4))
    client = wsk_make_client(sim.ws_url)
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all_match(client, sim), what="initial snapshots")
    step_all(sim, 30)
    await wsk_eventually(lambda: all_match(client, sim) and client.stats.dropped["duplicate"] >= 20)
    assert client.stats.gaps == 0 and client.stats.resyncs == 0 and not client.stats.rejected


async def test_use_yes_price_true_and_false_give_the_same_yes_quotes(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=5)
    yes_scale = wsk_make_client(sim.ws_url, use_yes_price=True)
    no_scale = wsk_make_client(sim.ws_url, use_yes_price=False)
    for client in (yes_scale, no_scale):
        await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all_match(yes_scale, sim) and all_match(no_scale, sim))
    step_all(sim, 25)
    await wsk_eventually(lambda: all_match(yes_scale, sim) and all_match(no_scale, sim))
    for ticker in tickers_of(sim):
        a, b = yes_scale.latest_price(ticker), no_scale.latest_price(ticker)
        assert a is not None and b is not None
        assert (a.yes_bid, a.yes_ask, a.yes_bid_size, a.yes_ask_size) == \
               (b.yes_bid, b.yes_ask, b.yes_bid_size, b.yes_ask_size)


async def test_unsubscribe_stops_the_feed_and_forgets_the_book(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=3)
    client = wsk_make_client(sim.ws_url)
    gone, kept, _ = tickers_of(sim)
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all_match(client, sim))
    await client.unsubscribe([gone])
    assert gone not in client.subscribed and client.book(gone) is None and client.latest_price(gone) is None
    assert gone not in client.stats.last_message_ns
    await wsk_eventually(lambda: sim.subscribers("orderbook_delta", gone) == 0, what="the venue to drop the sid")
    before = client.stats.messages
    for _ in range(10):
        sim.step_market(sim.universe.by_kalshi_ticker[gone])
    sim.step_market(sim.universe.by_kalshi_ticker[kept])  # a marker: arrives after anything sent before
    await wsk_eventually(lambda: client.stats.messages > before and book_matches(client, sim, kept))
    # Only the kept market's frames arrived: nothing was sent for the unsubscribed one.
    assert client.stats.messages - before <= 3
    assert not client.stats.dropped


async def test_twenty_markets_stream_concurrently_over_one_connection(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=20, rate=20.0)
    client = wsk_make_client(sim.ws_url)
    seen: dict[str, int] = {}
    async with asyncio.timeout(10):
        async for price in client.stream_prices(tickers_of(sim)):
            if price.status is PriceStatus.LIVE:
                seen[price.market_id] = seen.get(price.market_id, 0) + 1
            if len(seen) == 20 and min(seen.values()) >= 5:
                break
    assert len(client.connections) == 1 and sim.connection_count == 1
    assert client.stats.connects == 1 and not client.stats.rejected


async def test_closing_the_client_ends_the_stream_cleanly(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=2, rate=50.0)
    client = wsk_make_client(sim.ws_url)
    recorder = Recorder(client, tickers_of(sim))
    await wsk_eventually(lambda: len(recorder.prices) > 10)
    await asyncio.wait_for(client.close(), 3)
    await wsk_eventually(lambda: recorder.ended, what="stream ended after close")
    assert recorder.error is None
    with pytest.raises(RuntimeError, match="closed"):
        await client.subscribe(tickers_of(sim))


async def test_slow_consumer_sees_latest_price_per_market(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=4, rate=200.0)
    client = wsk_make_client(sim.ws_url)
    received = 0
    async with asyncio.timeout(10):
        async for price in client.stream_prices(tickers_of(sim)):
            # Conflation: what a late consumer gets is the market's newest price.
            assert price is client.latest_price(price.market_id)
            received += 1
            if received == 15:
                break
            seen = client.stats.messages  # far slower than the feed: counted in frames, not in time
            await wsk_eventually(lambda: client.stats.messages > seen + 5, 5.0, "the feed to move on")
    assert client.stats.messages > 5 * received


async def test_a_terminal_venue_error_is_answered_by_resubscribing(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    # Every 15th data frame, the simulator ends that frame's subscription with error 17.
    sim = await wsk_start_sim(n_markets=4, faults=FaultPlan(terminal_error_every=15))
    client = wsk_make_client(sim.ws_url)
    await client.subscribe(tickers_of(sim))
    for _ in range(3):
        step_all(sim, 10)
        await wsk_eventually(lambda: all_match(client, sim), what="every book exact again")
    assert client.stats.venue_errors["17"] >= 2
    assert all(sim.subscribers("orderbook_delta", t) == 1 for t in tickers_of(sim))
    assert client.stats.connects == 1 and not client.stats.disconnects
