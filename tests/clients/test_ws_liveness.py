"""What keeps a connection alive: frames of any kind, protocol pings and pongs included.

Against the hand-scripted venue of `test_base_ws` (`ToyClient`), so that only the
connection's liveness rule is under test: no data is ever sent here after the first
quote, yet a socket whose pings flow must never be taken for a dead one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType, web

from markets.models import PriceStatus
from tests.clients import test_base_ws as base_tests
from tests.clients.conftest import WskScriptedVenue, serve_app, wsk_eventually
from tests.clients.test_base_ws import quote, subscribed

make_toy = base_tests.make_toy  # the ToyClient factory, shared as a fixture


async def test_pongs_to_our_pings_keep_a_silent_socket_alive(wsk_venue: WskScriptedVenue, make_toy: Any) -> None:
    """aiohttp's autoping used to swallow the PONGs, so a healthy but silent socket
    hit the no-frame `receive_timeout` and was reconnected."""
    client = make_toy(wsk_venue.url, ping_interval=0.1, receive_timeout=0.5, stale_after=30.0)
    await client.subscribe(["m1"])
    conn, _ = await subscribed(wsk_venue)
    await quote(conn, "m1")
    await wsk_eventually(lambda: client.stats.pongs_received >= 15, what="1.5 s of pongs (3 x receive_timeout)",
                         state=client.stats.snapshot)
    assert not client.stats.disconnects and client.stats.reconnects == 0
    assert client.latest_price("m1").status is PriceStatus.LIVE  # type: ignore[union-attr]


async def test_the_venue_pings_are_answered_and_keep_a_silent_socket_alive(make_toy: Any) -> None:
    """A venue that pings (Kalshi, every 10 s) and expects PONGs, while we send no pings
    of our own: its pings are the liveness, and each gets its PONG."""
    pongs: list[bytes] = []

    async def venue(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.receive()  # the subscribe frame
        await ws.send_str('{"m": "m1", "bid": "0.40", "ask": "0.60"}')

        async def pinger() -> None:
            for n in range(1000):
                await ws.ping(str(n).encode())
                await asyncio.sleep(0.05)

        task = asyncio.create_task(pinger())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PONG:
                    pongs.append(msg.data)
        finally:
            task.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/ws", venue)
    async with serve_app(app) as root:
        client = make_toy(root.replace("http", "ws", 1) + "/ws", ping_interval=None, receive_timeout=0.4,
                          stale_after=30.0)
        await client.subscribe(["m1"])
        await wsk_eventually(lambda: len(pongs) >= 30, what="1.5 s of answered pings")
        assert pongs[:3] == [b"0", b"1", b"2"]  # each PING answered with its own payload
        assert client.stats.pings_received >= 30
        assert not client.stats.disconnects and client.stats.reconnects == 0
        await client.close()
