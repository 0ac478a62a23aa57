"""Fault injection on the Kalshi simulator, one fault at a time, seen by a plain client.

Frame counting: the snapshot sent on subscribe is data frame 1; each delta after
it is the next frame.  Markets are moved by hand (`rate=0`) so counts are exact.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from markets.sim.faults import FaultPlan
from markets.sim.kalshi import RateLimit
from tests.clients.conftest import wsk_eventually

if TYPE_CHECKING:
    from tests.conftest import StartKalshi
    from tests.sim.conftest import ClientBook, ConnectKalshi, DemoKey, KalshiWire

pytestmark = pytest.mark.timeout(30)
WS_PATH = "/trade-api/ws/v2"
CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def _subscribed_client(sim: Any, kalshi_ws: ConnectKalshi, **ws_options: Any) -> tuple[KalshiWire, str]:
    """A client subscribed to one market's book; the subscribe reply is consumed."""
    ticker = sim.universe.markets[0].kalshi_ticker
    client = await kalshi_ws(sim, **ws_options)
    await client.command("subscribe", {"channels": ["orderbook_delta"], "market_ticker": ticker})
    reply = await client.recv()
    assert reply["type"] == "subscribed"
    return client, ticker


def _step(sim: Any, ticker: str, times: int) -> None:
    market = sim.universe.by_kalshi_ticker[ticker]
    for _ in range(times):
        sim.step_market(market)


async def _raw_frames(client: KalshiWire) -> list[str]:
    """Every text frame queued before a list_subscriptions reply, unparsed."""
    probe = await client.command("list_subscriptions")
    frames: list[str] = []
    async with asyncio.timeout(3):
        while True:
            msg = await client.recv_raw()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            try:
                parsed = json.loads(msg.data)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("id") == probe:
                return frames
            frames.append(msg.data)


async def _fault_frames(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi, plan: FaultPlan,
                        steps: int = 6, **options: Any) -> tuple[Any, list[str]]:
    sim = await start_kalshi(faults=plan, **options)
    client, ticker = await _subscribed_client(sim, kalshi_ws)
    _step(sim, ticker, steps)
    return sim, await _raw_frames(client)


async def test_faults_are_off_by_default(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                         new_book: type[ClientBook]) -> None:
    assert not FaultPlan().frame_faults_enabled
    sim, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(), steps=30)
    book = new_book()
    for text in frames:
        book.apply(json.loads(text))
    assert book.books[sim.universe.markets[0].kalshi_ticker] == sim.book_levels(
        sim.universe.markets[0].kalshi_ticker)


async def test_drop_after(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(faults=FaultPlan(drop_after=5))
    client, ticker = await _subscribed_client(sim, kalshi_ws)
    _step(sim, ticker, 20)
    data = 0
    async with asyncio.timeout(3):
        while True:
            msg = await client.recv_raw()
            if msg.type in CLOSED:
                break
            data += 1
    assert data == 5
    await wsk_eventually(lambda: sim.connection_count == 0, 3.0, "the simulator to forget the dropped connection")


async def test_skip_seq_every(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(skip_seq_every=3), steps=10)
    seqs = [json.loads(f)["seq"] for f in frames][:7]
    assert seqs == [1, 2, 4, 5, 6, 8, 9]


async def test_stall_after_keeps_answering_pings(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(faults=FaultPlan(stall_after=3), ping_interval=0.1)
    client, ticker = await _subscribed_client(sim, kalshi_ws, autoping=False)
    _step(sim, ticker, 20)
    await client.ws.ping(b"still-there?")
    kinds: list[aiohttp.WSMsgType] = []
    data = 0
    async with asyncio.timeout(3):
        while len(kinds) < 5:
            msg = await client.recv_raw()
            if msg.type == aiohttp.WSMsgType.TEXT:
                data += 1
            elif msg.type == aiohttp.WSMsgType.PING:
                await client.ws.pong(msg.data)
                kinds.append(msg.type)
            else:
                assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"still-there?"
                kinds.append(msg.type)
    _step(sim, ticker, 20)
    assert await _raw_frames(client) == []  # commands answered, data silent
    assert data == 3
    assert aiohttp.WSMsgType.PONG in kinds and aiohttp.WSMsgType.PING in kinds


async def test_malformed_frame_replaces_one_update(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(malformed_every=2))
    with pytest.raises(json.JSONDecodeError):
        json.loads(frames[1])
    assert json.loads(frames[0])["seq"] == 1
    assert json.loads(frames[2])["seq"] == 3  # the malformed frame's seq is lost with it


async def test_truncated_frame(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(truncated_every=2))
    with pytest.raises(json.JSONDecodeError):
        json.loads(frames[1])
    assert frames[1].startswith('{"type":"orderbook_delta","sid":1,')
    assert json.loads(frames[2])["seq"] == 3


async def test_unknown_type_is_sent_alongside(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(unknown_type_every=2))
    parsed = [json.loads(f) for f in frames]
    types = [p["type"] for p in parsed]
    assert types[:4] == ["orderbook_snapshot", "orderbook_delta", "orderbook_imbalance", "orderbook_delta"]
    assert [p["seq"] for p in parsed if "seq" in p][:4] == [1, 2, 3, 4]


async def test_wrong_typed_field(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(wrong_type_every=2), numeric_share=0)
    bad = json.loads(frames[1])
    assert bad["type"] == "orderbook_delta" and bad["seq"] == 2
    assert isinstance(bad["msg"]["delta_fp"], dict)
    assert isinstance(json.loads(frames[2])["msg"]["delta_fp"], str)


async def test_negative_size_in_snapshot(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(negative_size_every=1), steps=0)
    snapshot = json.loads(frames[0])
    sizes = [c for side in ("yes_dollars_fp", "no_dollars_fp") for _, c in snapshot["msg"].get(side, [])]
    assert any(s.startswith("-") for s in sizes)


async def test_negative_size_delta_goes_below_zero(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                                   new_book: type[ClientBook]) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(negative_size_every=2))
    book = new_book()
    book.apply(json.loads(frames[0]))
    with pytest.raises(AssertionError, match="below zero"):
        book.apply(json.loads(frames[1]))


async def test_duplicate_frame(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    _, frames = await _fault_frames(start_kalshi, kalshi_ws, FaultPlan(duplicate_every=2))
    assert frames[1] == frames[2]
    assert [json.loads(f)["seq"] for f in frames[:4]] == [1, 2, 2, 3]


async def test_terminal_error_ends_the_subscription(start_kalshi: StartKalshi,
                                                    kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(faults=FaultPlan(terminal_error_every=3))
    client, ticker = await _subscribed_client(sim, kalshi_ws)
    _step(sim, ticker, 10)
    frames = [json.loads(f) for f in await _raw_frames(client)]
    assert [f["type"] for f in frames] == ["orderbook_snapshot", "orderbook_delta", "error"]
    assert frames[2]["sid"] == frames[0]["sid"] and frames[2]["msg"]["code"] == 17
    probe = await client.command("list_subscriptions")
    assert await client.recv() == {"id": probe, "type": "ok", "msg": []}


async def test_snapshot_delay_holds_deltas_back(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi,
                                                new_book: type[ClientBook]) -> None:
    sim = await start_kalshi(faults=FaultPlan(snapshot_delay=0.3), rate=300.0)
    ticker = sim.universe.markets[0].kalshi_ticker
    client = await kalshi_ws(sim)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    await client.command("subscribe", {"channels": ["orderbook_delta"], "market_ticker": ticker})
    assert (await client.recv())["type"] == "subscribed"
    first = await client.recv()
    assert first["type"] == "orderbook_snapshot" and first["seq"] == 1
    assert loop.time() - sent >= 0.25
    book = new_book()
    book.apply(first)
    async with asyncio.timeout(3):
        for _ in range(30):
            book.apply(await client.recv())


async def test_refused_handshakes_then_accepted(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                                demo_key: DemoKey) -> None:
    sim = await start_kalshi(faults=FaultPlan(refuse_handshakes=2))
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(sim.ws_url, headers=demo_key.headers("GET", WS_PATH))
        assert err.value.status == 503
    ws = await http.ws_connect(sim.ws_url, headers=demo_key.headers("GET", WS_PATH))
    await ws.close()


async def test_rest_faults_every_n(start_kalshi: StartKalshi, http: aiohttp.ClientSession) -> None:
    unlimited = RateLimit(read_refill=1e6, read_capacity=1e6)
    sim = await start_kalshi(faults=FaultPlan(rest_429_every=2, rest_5xx_every=3), rate_limit=unlimited)
    statuses = []
    for _ in range(6):
        async with http.get(sim.rest_url + "/markets") as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert "Retry-After" not in resp.headers
    assert statuses[0] == 200 and statuses[1] == 429 and statuses[2] >= 500
    assert statuses[3] == 429 and statuses[4] == 200 and statuses[5] == 429


async def test_faults_apply_now_to_live_connections(start_kalshi: StartKalshi,
                                                    kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi()
    client, ticker = await _subscribed_client(sim, kalshi_ws)
    await client.recv()  # snapshot
    sim.faults = FaultPlan(drop_after=1)  # only for connections opened later
    _step(sim, ticker, 3)
    assert await _raw_frames(client)
    sim.apply_faults_now(FaultPlan(drop_after=1))
    _step(sim, ticker, 3)
    async with asyncio.timeout(3):
        msg = await client.recv_raw()
        assert msg.type == aiohttp.WSMsgType.TEXT
        while msg.type not in CLOSED:
            msg = await client.recv_raw()
