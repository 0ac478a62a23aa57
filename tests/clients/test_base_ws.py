"""BaseWebSocketClient's supervision, against a hand-scripted venue on loopback.

`ToyClient` is the smallest venue subclass: a frame {"m", "bid", "ask"} replaces a
market's book. Everything else -- reconnects, timeouts, watchdog, sharding,
listeners, streams -- is the base class under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
import pytest
from aiohttp import web

from markets.base_ws import BaseWebSocketClient, ClientClosedError, WebSocketAuthError
from markets.book import PolymarketOrderBook
from markets.models import MarketPrice, Platform, PriceStatus
from tests.clients.conftest import (
    WSK_FAST_OPTIONS,
    WskScriptedConnection,
    WskScriptedVenue,
    serve_app,
    wsk_eventually,
)


class ToyClient(BaseWebSocketClient):
    platform = Platform.POLYMARKET

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url=url, **(WSK_FAST_OPTIONS | options))
        self.auth_calls = 0
        self.backoff_attempts: list[int] = []

    async def _authenticate(self) -> dict[str, str]:
        self.auth_calls += 1
        return {"X-Attempt": str(self.auth_calls)}

    def _new_book(self, market_id: str) -> PolymarketOrderBook:
        return PolymarketOrderBook(market_id)

    def _build_subscribe_message(self, market_ids: list[str]) -> list[str]:
        return [orjson.dumps({"op": "sub", "ids": market_ids}).decode()]

    def _build_unsubscribe_message(self, market_ids: list[str]) -> list[str]:
        return [orjson.dumps({"op": "unsub", "ids": market_ids}).decode()]

    def _handle_message(self, data: str, recv_ns: int) -> None:
        frame = orjson.loads(data)
        if frame.get("boom"):
            raise RuntimeError("a bug in the venue handler")
        book = self._books.get(frame["m"])
        if book is None:
            return
        book.apply_snapshot([{"price": frame["bid"], "size": "1"}], [{"price": frame["ask"], "size": "1"}])
        self.stats.last_message_ns[book.market_id] = recv_ns
        self._emit(book, recv_ns)

    def _keepalive(self) -> list[str]:
        return ["PING"]

    def _backoff_delay(self, attempt: int) -> float:
        self.backoff_attempts.append(attempt)
        return super()._backoff_delay(attempt)


@pytest.fixture
async def make_toy() -> Any:
    clients: list[ToyClient] = []

    def make(url: str, **options: Any) -> ToyClient:
        client = ToyClient(url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await asyncio.wait_for(client.close(), 5)


async def quote(conn: WskScriptedConnection, market: str, bid: str = "0.40", ask: str = "0.60") -> None:
    await conn.send({"m": market, "bid": bid, "ask": ask})


async def subscribed(venue: WskScriptedVenue) -> tuple[WskScriptedConnection, list[str]]:
    """Accept the next connection and read its subscribe frame."""
    conn = await venue.accept()
    frame = await conn.recv_json()
    assert frame["op"] == "sub"
    return conn, frame["ids"]


async def collect(stream: Any, into: list[MarketPrice]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        async for price in stream:
            into.append(price)


async def test_only_changes_are_emitted_and_the_stream_sees_them(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url)
    emitted: list[MarketPrice] = []
    client.add_listener(emitted.append)
    streamed: list[MarketPrice] = []
    task = asyncio.create_task(collect(client.stream_prices(["m1"]), streamed))
    conn, ids = await subscribed(wsk_venue)
    assert ids == ["m1"]
    for sent, bid in enumerate(("0.40", "0.40", "0.41", "0.41"), start=1):
        await quote(conn, "m1", bid=bid)
        await wsk_eventually(lambda: client.stats.messages == sent  # noqa: B023
                             and streamed[-1] is client.latest_price("m1"))
    assert [(p.yes_bid, p.status) for p in emitted] == [(0.40, PriceStatus.LIVE), (0.41, PriceStatus.LIVE)]
    assert streamed == emitted
    task.cancel()
    await task


async def test_receive_timeout_reconnects_with_fresh_auth_and_resubscribes(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url, receive_timeout=0.3, stale_after=5.0)
    await client.subscribe(["m1", "m2"])
    first, _ = await subscribed(wsk_venue)
    await quote(first, "m1")
    second, ids = await subscribed(wsk_venue)  # the first one went silent
    assert sorted(ids) == ["m1", "m2"]
    assert first.headers["X-Attempt"] == "1" and second.headers["X-Attempt"] == "2"
    assert client.stats.disconnects["receive_timeout"] == 1 and client.stats.reconnects == 1
    assert client.latest_price("m1").status is PriceStatus.STALE  # type: ignore[union-attr]
    await quote(second, "m1")
    await wsk_eventually(lambda: client.latest_price("m1").status is PriceStatus.LIVE)  # type: ignore[union-attr]


async def test_dead_peer_is_detected_by_our_pings(make_toy: Any) -> None:
    venue = WskScriptedVenue(autoping=False)  # never answers a ping
    await venue.start()
    try:
        client = make_toy(venue.url, ping_interval=0.2, receive_timeout=None, stale_after=30.0)
        await client.subscribe(["m1"])
        await subscribed(venue)
        await subscribed(venue)  # reconnected after the missing pong
        assert client.stats.reconnects == 1
        assert client.stats.disconnects["receive_timeout"] == 0 and sum(client.stats.disconnects.values()) == 1
    finally:
        await venue.stop()


async def test_oversized_and_buggy_frames_are_counted_and_survived(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url, max_msg_size=1024)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    await conn.send({"boom": True})
    await conn.ws.send_bytes(orjson.dumps({"m": "m1", "bid": "0.30", "ask": "0.70"}))
    await wsk_eventually(lambda: client.latest_price("m1") is not None)
    assert client.stats.rejected == {"handler_error": 1}
    assert client.latest_price("m1").yes_bid == 0.30  # type: ignore[union-attr]
    await conn.send({"m": "m1", "pad": "x" * 2000, "bid": "0.31", "ask": "0.70"})
    again, _ = await subscribed(wsk_venue)
    assert client.stats.rejected["oversized"] == 1 and client.stats.disconnects["oversized_frame"] == 1
    await quote(again, "m1", bid="0.32")
    await wsk_eventually(lambda: client.latest_price("m1").yes_bid == 0.32)  # type: ignore[union-attr]


async def test_listener_errors_are_counted_and_others_still_called(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url)
    seen: list[MarketPrice] = []

    def broken(price: MarketPrice) -> None:
        raise ValueError("consumer bug")

    client.add_listener(broken)
    client.add_listener(seen.append)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    await quote(conn, "m1")
    await wsk_eventually(lambda: len(seen) == 1)
    assert client.stats.listener_errors == 1
    client.remove_listener(broken)
    await quote(conn, "m1", bid="0.45")
    await wsk_eventually(lambda: len(seen) == 2)
    assert client.stats.listener_errors == 1


async def test_application_keepalives_are_sent(wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url, keepalive_interval=0.05)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    assert await asyncio.wait_for(conn.received.get(), 2) == "PING"
    assert await asyncio.wait_for(conn.received.get(), 2) == "PING"


async def test_markets_are_sharded_over_connections_into_one_stream(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url, max_markets_per_connection=2)
    markets = ["m1", "m2", "m3", "m4", "m5"]
    prices: list[MarketPrice] = []
    task = asyncio.create_task(collect(client.stream_prices(markets), prices))
    shards = [await subscribed(wsk_venue) for _ in range(3)]
    assert sorted(sorted(ids) for _, ids in shards) == [["m1", "m2"], ["m3", "m4"], ["m5"]]
    for conn, ids in shards:
        for market in ids:
            await quote(conn, market)
    await wsk_eventually(lambda: {p.market_id for p in prices} == set(markets))
    assert len(client.connections) == 3
    await client.subscribe(["m6"])  # fills the connection with room
    conn, ids = next((c, i) for c, i in shards if len(i) == 1)
    assert (await conn.recv_json()) == {"op": "sub", "ids": ["m6"]}
    task.cancel()
    await task


async def test_watchdog_marks_stale_resyncs_then_reconnects(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url, stale_after=0.2, resync_timeout=0.1, resync_attempts=2,
                      receive_timeout=None)
    prices: list[MarketPrice] = []
    client.add_listener(prices.append)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    await quote(conn, "m1")
    # Silence: STALE, then the default resync (unsubscribe + subscribe), answered this time.
    assert (await conn.recv_json()) == {"op": "unsub", "ids": ["m1"]}
    assert (await conn.recv_json()) == {"op": "sub", "ids": ["m1"]}
    await quote(conn, "m1")
    await wsk_eventually(lambda: [p.status for p in prices] == [
        PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.LIVE])
    assert client.stats.stale_trips == 1 and client.stats.resyncs == 1
    # Silence again and no answer to either resync attempt: the session is given up.
    for _ in range(2):
        assert (await conn.recv_json())["op"] == "unsub"
        assert (await conn.recv_json())["op"] == "sub"
    await subscribed(wsk_venue)
    assert client.stats.disconnects["resync_failed"] == 1 and client.stats.reconnects == 1


async def test_backoff_grows_until_a_session_stays_healthy(wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    wsk_venue.refuse = [503, 503, 503]
    client = make_toy(wsk_venue.url, healthy_after=30.0)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    assert client.backoff_attempts == [0, 1, 2]
    await conn.close()  # a short session does not reset the backoff
    conn, _ = await subscribed(wsk_venue)
    assert client.backoff_attempts == [0, 1, 2, 3]
    client.healthy_after = 0.0  # now every session counts as healthy
    await conn.close()
    await subscribed(wsk_venue)
    assert client.backoff_attempts == [0, 1, 2, 3, 0]


def test_backoff_delay_is_exponential_capped_and_jittered() -> None:
    client = ToyClient("ws://127.0.0.1:9/ws", backoff_initial=0.1, backoff_max=1.0)
    for attempt, ceiling in ((0, 0.1), (1, 0.2), (3, 0.8), (4, 1.0), (60, 1.0)):
        delays = [BaseWebSocketClient._backoff_delay(client, attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_refusals_end_in_a_clear_error_after_bounded_tries(
        wsk_venue: WskScriptedVenue, make_toy: Any, status: int) -> None:
    wsk_venue.refuse = [status] * 10
    client = make_toy(wsk_venue.url, max_auth_failures=2)
    prices: list[MarketPrice] = []
    with pytest.raises(WebSocketAuthError, match=f"HTTP {status}.*2 times in a row"):
        async with asyncio.timeout(5):
            async for price in client.stream_prices(["m1"]):
                prices.append(price)
    assert wsk_venue.handshakes == 2 and not prices
    with pytest.raises(WebSocketAuthError):
        await client.connect()


async def test_auth_failure_on_reconnect_reaches_a_running_stream(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url, max_auth_failures=3)
    outcome: list[BaseException] = []

    async def consume() -> None:
        try:
            async for _ in client.stream_prices(["m1"]):
                pass
        except WebSocketAuthError as exc:
            outcome.append(exc)

    task = asyncio.create_task(consume())
    conn, _ = await subscribed(wsk_venue)
    wsk_venue.refuse = [401] * 10  # e.g. the key was revoked
    await conn.close()
    await asyncio.wait_for(task, 5)
    assert len(outcome) == 1 and client.stats.handshake_failures["401"] == 3


async def test_unsubscribe_sends_and_forgets(wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url)
    await client.subscribe(["m1", "m2"])
    conn, _ = await subscribed(wsk_venue)
    await quote(conn, "m1")
    await wsk_eventually(lambda: client.latest_price("m1") is not None)
    await client.unsubscribe(["m1", "unknown"])
    assert (await conn.recv_json()) == {"op": "unsub", "ids": ["m1"]}
    assert client.subscribed == {"m2"} and client.book("m1") is None and client.latest_price("m1") is None


async def test_close_ends_streams_cleanly_and_the_client_stays_closed(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url)
    prices: list[MarketPrice] = []

    async def consume() -> str:
        async for price in client.stream_prices(["m1"]):
            prices.append(price)
        return "ended"

    task = asyncio.create_task(consume())
    conn, _ = await subscribed(wsk_venue)
    await quote(conn, "m1")
    await wsk_eventually(lambda: len(prices) == 1)
    await client.close()
    assert await asyncio.wait_for(task, 2) == "ended"
    with pytest.raises(RuntimeError, match="closed"):
        await client.connect()


@pytest.mark.parametrize("option", ["stale_after", "resync_timeout", "backoff_initial", "ping_interval"])
def test_invalid_options_are_refused(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        ToyClient("ws://127.0.0.1:9/ws", **{option: 0})


async def test_close_while_connecting_wakes_connect_and_ends_streams(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    wsk_venue.refuse = [503] * 1000  # the venue is down
    client = make_toy(wsk_venue.url)
    connecting = asyncio.create_task(client.connect())
    streamed: list[MarketPrice] = []
    streaming = asyncio.create_task(collect(client.stream_prices(["m1"]), streamed))
    await wsk_eventually(lambda: wsk_venue.handshakes >= 2)
    await client.close()
    with pytest.raises(ClientClosedError):
        await asyncio.wait_for(connecting, 2)
    await asyncio.wait_for(streaming, 2)  # ended cleanly, no exception
    assert not streamed


class NonReadingVenue:
    """Accepts the WebSocket upgrade and then never reads: the client's sends back
    up through aiohttp's buffer, the kernel's socket buffers and finally the
    client's own transport, whose writes then wait for a drain that never comes."""

    def __init__(self) -> None:
        self.accepted = 0
        self.url = ""
        self._serving = contextlib.AsyncExitStack()

    async def __aenter__(self) -> NonReadingVenue:
        app = web.Application()
        app.router.add_get("/ws", self._handler)
        root = await self._serving.enter_async_context(serve_app(app))
        self.url = root.replace("http://", "ws://") + "/ws"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.aclose()

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self.accepted += 1
        await asyncio.Event().wait()  # never reads; cancelled at cleanup
        return ws


async def test_a_peer_that_stops_reading_cannot_wedge_the_connection(make_toy: Any) -> None:
    async with NonReadingVenue() as venue:
        client = make_toy(venue.url, send_timeout=0.3, receive_timeout=None, ping_interval=None)
        await asyncio.wait_for(client.connect(), 3)
        # Far more than every buffer between the two ends can hold.
        await asyncio.wait_for(client.connections[0].send(["x" * 1_000_000] * 40), 5)
        await wsk_eventually(lambda: venue.accepted == 2, what="a reconnect after the stuck send")
        assert client.stats.disconnects == {"send_timeout": 1}


async def test_one_market_without_a_snapshot_does_not_reconnect_the_others(
        wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    client = make_toy(wsk_venue.url, resync_timeout=0.1, resync_attempts=2, stale_after=30.0,
                      receive_timeout=None)
    prices: list[MarketPrice] = []
    client.add_listener(prices.append)
    await client.subscribe(["m1", "m2"])
    conn, ids = await subscribed(wsk_venue)
    assert sorted(ids) == ["m1", "m2"]
    await quote(conn, "m1")  # m1 is live; m2's snapshot never comes
    # Attempt 1 resubscribes m2; when the attempts are used up the connection, which
    # still carries a live book, is kept and m2's ladder starts again after a pause.
    for _ in range(3):
        assert (await conn.recv_json()) == {"op": "unsub", "ids": ["m2"]}
        assert (await conn.recv_json()) == {"op": "sub", "ids": ["m2"]}
    await quote(conn, "m2")
    await wsk_eventually(lambda: client.latest_price("m2") is not None
                         and client.latest_price("m2").status is PriceStatus.LIVE)  # type: ignore[union-attr]
    assert client.stats.reconnects == 0 and not client.stats.disconnects
    assert [p.status for p in prices if p.market_id == "m1"] == [PriceStatus.LIVE]


async def test_handler_bugs_are_counted_every_time_but_logged_at_a_bounded_rate(
        wsk_venue: WskScriptedVenue, make_toy: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_toy(wsk_venue.url)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    with caplog.at_level(logging.WARNING, logger="markets.ws_connection"):
        for _ in range(50):
            await conn.send({"boom": True})
        await quote(conn, "m1")
        await wsk_eventually(lambda: client.latest_price("m1") is not None)
    assert client.stats.rejected["handler_error"] == 50
    assert len([r for r in caplog.records if "handler failed" in r.getMessage()]) == 1


async def test_a_session_that_delivered_its_snapshots_resets_the_backoff(wsk_venue: WskScriptedVenue,
                                                                        make_toy: Any) -> None:
    wsk_venue.refuse = [503, 503]
    client = make_toy(wsk_venue.url, healthy_after=30.0)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    assert client.backoff_attempts == [0, 1]
    await conn.send({"m": "m1", "bid": "0.40", "ask": "0.42"})
    await wsk_eventually(lambda: client.book("m1").status is PriceStatus.LIVE, what="m1 LIVE")
    await conn.close()  # short, but it streamed: the next reconnect starts from the bottom
    await subscribed(wsk_venue)
    assert client.backoff_attempts == [0, 1, 0]
