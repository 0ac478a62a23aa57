"""The Kalshi simulator's WebSocket protocol, checked with a plain aiohttp client.

Most tests run the simulator with `rate=0` and move markets by hand
(`sim.step_market`), so every frame the client should see is known exactly.
"""

from __future__ import annotations

import asyncio
import json
import time

from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.clients.conftest import wsk_eventually

if TYPE_CHECKING:
    from tests.conftest import StartKalshi
    from tests.sim.conftest import ClientBook, ConnectKalshi, DemoKey

pytestmark = pytest.mark.timeout(30)
WS_PATH = "/trade-api/ws/v2"


def _tickers(sim) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.kalshi_ticker for m in sim.universe.markets]


def _step(sim, ticker: str, times: int = 1) -> None:  # type: ignore[no-untyped-def]
    market = sim.universe.by_kalshi_ticker[ticker]
    for _ in range(times):
        sim.step_market(market)


# -- handshake authentication --------------------------------------------------------

async def test_signed_handshake_is_accepted(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    client = await kalshi_ws(sim)
    replies, _ = await client.subscribe(channels=["ticker"])
    assert replies[0]["type"] == "subscribed"


@pytest.mark.parametrize("case", ["missing", "unknown_key", "bad_signature", "wrong_path",
                                  "stale", "seconds", "max_salt"])
async def test_bad_handshake_gets_401_before_upgrade(
        case: str, start_kalshi: StartKalshi, http: aiohttp.ClientSession,
        demo_key: DemoKey, other_key: DemoKey) -> None:
    sim = await start_kalshi(auth_tolerance_ms=2_000)
    now_ms = time.time_ns() // 1_000_000
    headers = {
        "missing": {},
        "unknown_key": other_key.headers("GET", WS_PATH),
        # A valid signature by the wrong private key under the registered key id.
        "bad_signature": {**other_key.headers("GET", WS_PATH), "KALSHI-ACCESS-KEY": demo_key.key_id},
        "wrong_path": demo_key.headers("GET", "/trade-api/v2/ws"),
        "stale": demo_key.headers("GET", WS_PATH, ts_ms=now_ms - 60_000),
        "seconds": demo_key.headers("GET", WS_PATH, ts_ms=now_ms // 1000),
        "max_salt": demo_key.headers("GET", WS_PATH, salt_length=222),
    }[case]
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(sim.ws_url, headers=headers)
    assert err.value.status == 401
    assert sim.connection_count == 0


async def test_missing_single_header_is_named_in_401(start_kalshi: StartKalshi,
                                                     http: aiohttp.ClientSession,
                                                     demo_key: DemoKey) -> None:
    sim = await start_kalshi()
    headers = demo_key.headers("GET", WS_PATH)
    del headers["KALSHI-ACCESS-SIGNATURE"]
    async with http.get(sim.ws_url.replace("ws://", "http://"), headers=headers) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert "KALSHI-ACCESS-SIGNATURE" in body["message"]


# -- subscribe / sids ----------------------------------------------------------------------

async def test_sids_are_per_connection_from_one(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    tickers = _tickers(sim)
    first = await kalshi_ws(sim)
    replies, _ = await first.subscribe(channels=["orderbook_delta", "ticker"], market_ticker=tickers[0])
    assert [(r["type"], r["msg"]["channel"], r["msg"]["sid"]) for r in replies] == [
        ("subscribed", "orderbook_delta", 1), ("subscribed", "ticker", 2)]
    replies, _ = await first.subscribe(channels=["trade"])
    assert replies[0]["msg"]["sid"] == 3
    # A second connection (as after a reconnect) starts again at sid 1.
    second = await kalshi_ws(sim)
    replies, _ = await second.subscribe(channels=["trade"])
    assert replies[0]["msg"]["sid"] == 1


async def test_snapshot_first_then_deltas_with_seq_per_sid(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi, new_book: type[ClientBook]) -> None:
    sim = await start_kalshi(numeric_share=0)  # asserts the string spelling
    tickers = _tickers(sim)
    client = await kalshi_ws(sim)
    book = new_book()
    _, first = await client.subscribe(channels=["orderbook_delta"], market_tickers=tickers[:2],
                                      use_yes_price=False)
    _, second = await client.subscribe(channels=["orderbook_delta"], market_ticker=tickers[2])
    for ticker in tickers[:3]:
        _step(sim, ticker, 20)
    frames = first + second + await client.drain()
    seqs: dict[int, list[int]] = {}
    seen_snapshot: set[tuple[int, str]] = set()
    for frame in frames:
        assert set(frame) == {"type", "sid", "seq", "msg"}
        seqs.setdefault(frame["sid"], []).append(frame["seq"])
        key = (frame["sid"], frame["msg"]["market_ticker"])
        if frame["type"] == "orderbook_snapshot":
            seen_snapshot.add(key)
        else:
            assert key in seen_snapshot, "delta before the snapshot of its market"
            msg = frame["msg"]
            assert set(msg) == {"market_ticker", "market_id", "price_dollars", "delta_fp", "side", "ts_ms"}
            assert msg["side"] in ("yes", "no")
            assert isinstance(msg["price_dollars"], str) and isinstance(msg["delta_fp"], str)
            assert msg["market_id"] == sim.universe.by_kalshi_ticker[msg["market_ticker"]].kalshi_market_id
        book.apply(frame)
    assert seqs[1] == list(range(1, len(seqs[1]) + 1))
    assert seqs[2] == list(range(1, len(seqs[2]) + 1))
    assert len(seqs[1]) > 20 and len(seqs[2]) > 10
    for ticker in tickers[:3]:
        assert book.books[ticker] == sim.book_levels(ticker)


async def test_snapshot_levels_are_fixed_point_strings(start_kalshi: StartKalshi,
                                                       kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(n_markets=6, numeric_share=0)
    client = await kalshi_ws(sim)
    _, frames = await client.subscribe(channels=["orderbook_delta"], market_tickers=_tickers(sim))
    snapshots = [f for f in frames if f["type"] == "orderbook_snapshot"]
    assert len(snapshots) == 6
    for snap in snapshots:
        for key in ("yes_dollars_fp", "no_dollars_fp"):
            for level in snap["msg"].get(key, []):
                assert len(level) == 2 and all(isinstance(x, str) for x in level)
                assert len(level[0].split(".")[1]) in (3, 4)
                assert len(level[1].split(".")[1]) == 2
        assert "yes" not in snap["msg"] and "no" not in snap["msg"]


async def test_price_strings_vary_between_3_and_4_decimals(start_kalshi: StartKalshi,
                                                           kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(numeric_share=0)
    ticker = _tickers(sim)[0]
    client = await kalshi_ws(sim)
    await client.subscribe(channels=["orderbook_delta"], market_ticker=ticker)
    _step(sim, ticker, 80)
    decimals = {len(f["msg"]["price_dollars"].split(".")[1])
                for f in await client.drain() if f["type"] == "orderbook_delta"}
    assert decimals == {3, 4}


async def test_tapered_market_has_sub_penny_levels(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                                   new_book: type[ClientBook]) -> None:
    sim = await start_kalshi()
    tapered = next(m.kalshi_ticker for m in sim.universe.markets
                   if m.price_level_structure == "tapered_deci_cent")
    client = await kalshi_ws(sim)
    _, frames = await client.subscribe(channels=["orderbook_delta"], market_ticker=tapered)
    prices = [new_book.ticks(p) for side in ("yes_dollars_fp", "no_dollars_fp")
              for p, _ in frames[0]["msg"].get(side, [])]
    assert any(p % 100 for p in prices), "tapered tails should quote below a cent"


async def test_empty_side_has_no_key(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                     new_book: type[ClientBook]) -> None:
    sim = await start_kalshi()
    ticker = _tickers(sim)[0]
    market = sim.universe.by_kalshi_ticker[ticker]
    sim.publish(market, sim.ladders[ticker].clear_side("ask"))
    client = await kalshi_ws(sim)
    _, frames = await client.subscribe(channels=["orderbook_delta"], market_ticker=ticker)
    assert "no_dollars_fp" not in frames[0]["msg"]
    assert frames[0]["msg"]["yes_dollars_fp"]
    book = new_book()
    book.apply(frames[0])
    assert book.books[ticker] == sim.book_levels(ticker)


async def test_use_yes_price_mirrors_no_levels(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                               new_book: type[ClientBook]) -> None:
    sim = await start_kalshi()
    ticker = _tickers(sim)[0]
    client = await kalshi_ws(sim)
    _, no_scale = await client.subscribe(channels=["orderbook_delta"], market_ticker=ticker)
    _, yes_scale = await client.subscribe(channels=["orderbook_delta"], market_ticker=ticker,
                                          use_yes_price=True)
    _step(sim, ticker, 30)
    frames = no_scale + yes_scale + await client.drain()
    books = {1: new_book(), 2: new_book()}
    for frame in frames:
        books[frame["sid"]].apply(frame)
    yes_a, no_a = books[1].books[ticker]
    yes_b, no_b = books[2].books[ticker]
    assert yes_a == yes_b
    assert no_b == {10_000 - p: s for p, s in no_a.items()}
    # NO-scale NO bids sit at 1 - (YES ask): the truth's asks, mirrored.
    assert no_a == sim.book_levels(ticker)[1]
    assert no_b == sim.ladders[ticker].asks
    assert max(yes_a) < min(no_b), "best YES bid below best YES ask"


async def test_live_market_matches_get_snapshot(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                                new_book: type[ClientBook]) -> None:
    """Under the running driver: the client's book, built from snapshot + deltas,
    equals the snapshot `get_snapshot` returns at that point of the stream."""
    sim = await start_kalshi(rate=400.0)
    tickers = _tickers(sim)
    client = await kalshi_ws(sim)
    book = new_book()
    _, frames = await client.subscribe(channels=["orderbook_delta"], market_tickers=tickers)
    for frame in frames:
        book.apply(frame)
    sent = len(sim.send_log.records())  # let the stream run on: a count of frames, not a time
    await wsk_eventually(lambda: len(sim.send_log.records()) > sent + 60, 10.0, "60 more frames from the driver")
    cmd = await client.command("update_subscription", {"sid": 1, "action": "get_snapshot",
                                                       "market_tickers": [tickers[0]]})
    frames, ok = await client.until_reply(cmd)
    assert ok["type"] == "ok"
    for frame in frames:
        book.apply(frame)
    assert len(frames) > 50
    async with asyncio.timeout(3):
        while True:
            frame = await client.recv()
            if frame["type"] == "orderbook_snapshot":
                break
            book.apply(frame)
    check = new_book()
    check.apply({**frame, "seq": 1, "sid": 99})
    assert book.books[tickers[0]] == check.books[tickers[0]]
    assert frame["seq"] == book.last_seq[1] + 1



async def test_snapshot_level_order_and_ts_ms_are_not_promised(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi, new_book: type[ClientBook]) -> None:
    """The docs leave WS level order unspecified and list no `ts_ms` on snapshots:
    over repeated `get_snapshot`s both vary, and each snapshot is still the true book."""
    sim = await start_kalshi()
    ticker = _tickers(sim)[0]
    client = await kalshi_ws(sim)
    await client.subscribe(channels=["orderbook_delta"], market_ticker=ticker)
    orders, stamped = set(), set()
    for _ in range(15):
        cmd = await client.command("update_subscription", {"sid": 1, "action": "get_snapshot",
                                                           "market_ticker": ticker})
        await client.until_reply(cmd)
        (snap,) = [f for f in await client.drain() if f["type"] == "orderbook_snapshot"]
        stamped.add("ts_ms" in snap["msg"])
        for key in ("yes_dollars_fp", "no_dollars_fp"):
            prices = [new_book.ticks(p) for p, _ in snap["msg"][key]]
            orders.add("ascending" if prices == sorted(prices) else
                       "descending" if prices == sorted(prices, reverse=True) else "unordered")
        check = new_book()
        check.apply(snap)
        assert check.books[ticker] == sim.book_levels(ticker)
    assert orders == {"ascending", "descending", "unordered"}
    assert stamped == {True, False}

# -- update_subscription / unsubscribe / list ---------------------------------------------

async def test_update_subscription_add_and_delete_markets(start_kalshi: StartKalshi,
                                                          kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    a, b, c = _tickers(sim)[:3]
    client = await kalshi_ws(sim)
    await client.subscribe(channels=["orderbook_delta"], market_ticker=a)
    cmd = await client.command("update_subscription", {"sids": [1], "action": "add_markets",
                                                       "market_tickers": [b, c]})
    _, ok = await client.until_reply(cmd)
    assert ok == {"id": cmd, "sid": 1, "seq": 1, "type": "ok", "msg": {"market_tickers": [a, b, c]}}
    snaps = [f for f in await client.drain() if f["type"] == "orderbook_snapshot"]
    assert [(f["msg"]["market_ticker"], f["seq"]) for f in snaps] == [(b, 2), (c, 3)]

    cmd = await client.command("update_subscription", {"sid": 1, "action": "delete_markets",
                                                       "market_tickers": [a]})
    _, ok = await client.until_reply(cmd)
    assert ok["msg"] == {"market_tickers": [b, c]}
    _step(sim, a, 10)
    _step(sim, b, 3)
    tickers_seen = {f["msg"]["market_ticker"] for f in await client.drain()}
    assert tickers_seen == {b}


async def test_update_subscription_get_snapshot_keeps_subscription(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    a, b = _tickers(sim)[:2]
    client = await kalshi_ws(sim)
    await client.subscribe(channels=["orderbook_delta"], market_tickers=[a, b])
    _step(sim, a, 2)
    await client.drain()
    cmd = await client.command("update_subscription", {"sid": 1, "action": "get_snapshot",
                                                       "market_tickers": [b]})
    _, ok = await client.until_reply(cmd)
    assert ok["msg"] == {"market_tickers": [a, b]}
    frame = await client.recv()
    assert frame["type"] == "orderbook_snapshot" and frame["msg"]["market_ticker"] == b
    assert frame["seq"] == ok["seq"] + 1
    cmd = await client.command("update_subscription", {"sid": 1, "action": "get_snapshot",
                                                       "market_tickers": [_tickers(sim)[3]]})
    _, err = await client.until_reply(cmd)
    assert err["type"] == "error" and err["msg"]["code"] == 11


async def test_update_subscription_requires_exactly_one_sid(start_kalshi: StartKalshi,
                                                            kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    a = _tickers(sim)[0]
    client = await kalshi_ws(sim)
    await client.subscribe(channels=["orderbook_delta"], market_ticker=a)
    await client.subscribe(channels=["orderbook_delta"], market_ticker=a)
    cases = [({"sids": [1, 2], "action": "add_markets", "market_tickers": [a]}, 12),
             ({"sids": [], "action": "add_markets", "market_tickers": [a]}, 12),
             ({"sid": 9, "action": "add_markets", "market_tickers": [a]}, 7),
             ({"sid": 1, "market_tickers": [a]}, 15),
             ({"sid": 1, "action": "rename", "market_tickers": [a]}, 13),
             ({"sid": 1, "action": "add_markets"}, 14)]
    for params, code in cases:
        _, reply = await client.until_reply(await client.command("update_subscription", params))
        assert reply["type"] == "error" and reply["msg"]["code"] == code, (params, reply)


async def test_unsubscribe_replies_with_seq_and_stops_data(start_kalshi: StartKalshi,
                                                           kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    a = _tickers(sim)[0]
    client = await kalshi_ws(sim)
    await client.subscribe(channels=["orderbook_delta"], market_ticker=a)
    await client.subscribe(channels=["ticker"], market_ticker=a)
    _step(sim, a, 5)
    last_seq = max(f["seq"] for f in await client.drain() if f["sid"] == 1)
    cmd = await client.command("unsubscribe", {"sids": [1]})
    _, reply = await client.until_reply(cmd)
    assert reply == {"id": cmd, "sid": 1, "seq": last_seq, "type": "unsubscribed"}
    _step(sim, a, 10)
    assert all(f["sid"] != 1 for f in await client.drain())
    _, listing = await client.until_reply(await client.command("list_subscriptions"))
    assert listing["type"] == "ok" and listing["msg"] == [{"channel": "ticker", "sid": 2}]


async def test_list_subscriptions(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    client = await kalshi_ws(sim)
    await client.subscribe(channels=["orderbook_delta", "trade"], market_ticker=_tickers(sim)[0])
    await client.subscribe(channels=["ticker"])
    cmd = await client.command("list_subscriptions")
    _, reply = await client.until_reply(cmd)
    assert reply == {"id": cmd, "type": "ok", "msg": [
        {"channel": "orderbook_delta", "sid": 1}, {"channel": "trade", "sid": 2},
        {"channel": "ticker", "sid": 3}]}


@pytest.mark.parametrize(("command", "code"), [
    ({"cmd": "subscribe_all", "params": {}}, 5),
    ({"cmd": "subscribe", "params": {"channels": ["orderbook"], "market_ticker": "X"}}, 8),
    ({"cmd": "subscribe", "params": {"channels": ["multivariate"]}}, 8),
    ({"cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}}, 14),
    ({"cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": "NOPE-1"}}, 16),
    ({"cmd": "subscribe", "params": {"channels": ["ticker"], "market_tickers": ["NOPE-1"]}}, 16),
    ({"cmd": "subscribe", "params": {"channels": []}}, 3),
    ({"cmd": "subscribe"}, 2),
    ({"cmd": "subscribe", "params": {"channels": ["ticker"], "use_yes_price": "yes"}}, 11),
    ({"cmd": "unsubscribe", "params": {"sids": [42]}}, 7),
    ({"cmd": "unsubscribe", "params": {}}, 4),
])
async def test_command_errors(command: dict, code: int, start_kalshi: StartKalshi,
                              kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    client = await kalshi_ws(sim)
    await client.ws.send_str(json.dumps({"id": 77, **command}))
    reply = await client.recv()
    assert reply["id"] == 77 and reply["type"] == "error"
    assert reply["msg"]["code"] == code and reply["msg"]["msg"]
    if code == 16:
        assert reply["msg"]["market_ticker"] == "NOPE-1"
    # The connection survives every bad command.
    replies, _ = await client.subscribe(channels=["ticker"])
    assert replies[0]["type"] == "subscribed"


async def test_garbage_is_answered_not_fatal(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    client = await kalshi_ws(sim)
    for garbage in ("{not json", "[1, 2]", '{"id": "seven", "cmd": "subscribe"}'):
        await client.ws.send_str(garbage)
        reply = await client.recv()
        assert reply["type"] == "error" and reply["msg"]["code"] in (1, 11)
    replies, _ = await client.subscribe(channels=["ticker"])
    assert replies[0]["type"] == "subscribed"


async def test_market_ids_rejected_for_orderbook(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    market = sim.universe.markets[0]
    client = await kalshi_ws(sim)
    _, err = await client.until_reply(await client.command(
        "subscribe", {"channels": ["orderbook_delta"], "market_id": market.kalshi_market_id}))
    assert err["msg"]["code"] == 11
    replies, _ = await client.subscribe(channels=["ticker"], market_ids=[market.kalshi_market_id])
    assert replies[0]["type"] == "subscribed"


# -- ticker and trade channels -------------------------------------------------------------

async def test_ticker_and_trade_frames(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                       new_book: type[ClientBook]) -> None:
    sim = await start_kalshi()
    ticker = _tickers(sim)[0]
    client = await kalshi_ws(sim)
    replies, initial = await client.subscribe(channels=["ticker"], market_ticker=ticker,
                                              send_initial_snapshot=True)
    assert len(initial) == 1 and initial[0]["type"] == "ticker"
    await client.subscribe(channels=["trade"])
    _step(sim, ticker, 200)
    frames = initial + await client.drain()
    tickers = [f for f in frames if f["type"] == "ticker"]
    trades = [f for f in frames if f["type"] == "trade"]
    assert len(tickers) > 10 and trades
    for frame in tickers:
        assert "seq" not in frame and frame["sid"] == 1
        assert isinstance(frame["sending_ts_ms"], int)  # the market-ticker page's envelope key
        msg = frame["msg"]
        for key in ("price_dollars", "yes_bid_dollars", "yes_ask_dollars", "volume_fp",
                    "open_interest_fp", "yes_bid_size_fp", "yes_ask_size_fp"):
            assert isinstance(msg[key], str), key
        assert isinstance(msg["ts_ms"], int)
    last = tickers[-1]["msg"]
    yes_bids, no_bids = sim.book_levels(ticker)
    assert new_book.ticks(last["yes_bid_dollars"]) == max(yes_bids)
    assert new_book.ticks(last["yes_ask_dollars"]) == 10_000 - max(no_bids)
    assert [f["seq"] for f in trades] == list(range(1, len(trades) + 1))
    for frame in trades:
        msg = frame["msg"]
        assert msg["taker_side"] in ("yes", "no") and msg["taker_outcome_side"] == msg["taker_side"]
        assert new_book.ticks(msg["yes_price_dollars"]) + new_book.ticks(msg["no_price_dollars"]) == 10_000
        assert new_book.hundredths(msg["count_fp"]) > 0


# -- keep-alive and slow readers -------------------------------------------------------------

async def test_heartbeat_pings_and_silent_client_is_dropped(start_kalshi: StartKalshi,
                                                            kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(ping_interval=0.1)
    silent = await kalshi_ws(sim, autoping=False)
    polite = await kalshi_ws(sim)  # aiohttp answers pings while it reads

    async def keep_reading() -> None:
        async for _ in polite.ws:
            pass

    reader = asyncio.create_task(keep_reading())
    try:
        msg = await silent.recv_raw()
        assert msg.type == aiohttp.WSMsgType.PING and msg.data == b"heartbeat"
        async with asyncio.timeout(2):
            while True:
                msg = await silent.recv_raw()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR):
                    break
                assert msg.type == aiohttp.WSMsgType.PING
        await asyncio.sleep(0.4)  # several more intervals
        assert not polite.ws.closed
        assert sim.connection_count == 1
    finally:
        reader.cancel()


async def test_client_ping_is_answered(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    client = await kalshi_ws(sim, autoping=False)
    await client.ws.ping(b"are-you-there")
    msg = await client.recv_raw()
    assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are-you-there"


async def test_slow_reader_overflow_gives_error_25(start_kalshi: StartKalshi,
                                                   kalshi_ws: ConnectKalshi) -> None:
    """A reader that stops reading loses its subscriptions (code 25); one that
    keeps reading the same stream does not."""
    sim = await start_kalshi(outbound_limit=200, send_buffer_bytes=8192)
    tickers = _tickers(sim)
    slow, fast = await kalshi_ws(sim), await kalshi_ws(sim)
    for client in (slow, fast):
        await client.subscribe(channels=["orderbook_delta"], market_tickers=tickers)
    transport = slow.ws._response.connection.transport  # type: ignore[union-attr]
    transport.pause_reading()  # the slow process stops reading; socket buffers fill up

    async def keep_reading() -> int:
        frames = 0
        async for _ in fast.ws:
            frames += 1
        return frames

    reader = asyncio.create_task(keep_reading())
    try:
        async with asyncio.timeout(15):
            while sim.subscribers("orderbook_delta", tickers[0]) == 2:
                for ticker in tickers:
                    _step(sim, ticker, 2)  # ~16 frames a round: far below the limit
                await asyncio.sleep(0.002)
    finally:
        transport.resume_reading()
    assert not reader.done() and not fast.ws.closed
    reader.cancel()
    async with asyncio.timeout(10):
        while True:
            frame = await slow.recv()
            if frame["type"] == "error":
                break
    assert frame == {"type": "error", "sid": 1, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}
    _, listing = await slow.until_reply(await slow.command("list_subscriptions"), timeout=10)
    assert listing["msg"] == []


# -- send log --------------------------------------------------------------------------------

async def test_every_data_frame_is_stamped(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    ticker = _tickers(sim)[0]
    client = await kalshi_ws(sim)
    _, frames = await client.subscribe(channels=["orderbook_delta"], market_ticker=ticker)
    _step(sim, ticker, 10)
    frames += await client.drain()
    received_ns = time.time_ns()
    for frame in frames:
        record = sim.send_log.lookup(f"{frame['sid']}:{frame['seq']}", venue="kalshi")
        assert record is not None and record.market_id == ticker
        assert record.send_ns <= received_ns
    assert len(sim.send_log) == len(frames)


async def test_same_seed_same_market_whoever_listens(start_kalshi: StartKalshi,
                                                     kalshi_ws: ConnectKalshi) -> None:
    """Reproducible for a seed, and listening does not change how the market moves."""
    watched, quiet = await start_kalshi(seed=11), await start_kalshi(seed=11)
    client = await kalshi_ws(watched)
    await client.subscribe(channels=["orderbook_delta"], market_tickers=_tickers(watched))
    await client.subscribe(channels=["ticker", "trade"])
    for sim in (watched, quiet):
        for _ in range(50):
            sim.step_round()
    assert len(await client.drain()) > 100
    for ticker in _tickers(watched):
        assert watched.book_levels(ticker) == quiet.book_levels(ticker)
    other = await start_kalshi(seed=12)
    assert [other.book_levels(t) for t in _tickers(other)] != [quiet.book_levels(t) for t in _tickers(quiet)]
