"""Fixtures for the simulator tests: request signing with the demo key pair, and
deliberately plain WebSocket clients for both venues (the simulators themselves are
started by the factories in tests/conftest.py).

Signing, frame parsing and book arithmetic are written out here with
`cryptography`, `json` and `Decimal` directly — not with the project's venue
clients — so the simulator is checked against the protocol as documented
rather than against our own implementation of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.polymarket import PolymarketSimulator
from tests.conftest import DemoKeyPair
from tests.sim.test_polymarket_sim_support import PolyClient
from tests.sim.units import hundredths, ticks

WS_PATH = "/trade-api/ws/v2"


@dataclass(frozen=True)
class DemoKey:
    key_id: str
    path: Path
    public_pem: bytes
    private_key: rsa.RSAPrivateKey

    def headers(self, method: str, path: str, *, ts_ms: int | None = None,
                salt_length: int | None = None) -> dict[str, str]:
        """The three KALSHI-ACCESS-* headers for `method` + `path` (no query string)."""
        stamp = str(ts_ms if ts_ms is not None else time.time_ns() // 1_000_000)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                          salt_length=salt_length if salt_length is not None else padding.PSS.DIGEST_LENGTH)
        signature = self.private_key.sign(f"{stamp}{method}{path}".encode(), pss, hashes.SHA256())
        return {"KALSHI-ACCESS-KEY": self.key_id, "KALSHI-ACCESS-TIMESTAMP": stamp,
                "KALSHI-ACCESS-SIGNATURE": base64.b64encode(signature).decode()}


def _load_key(keypair: DemoKeyPair) -> DemoKey:
    key_id, path, public_pem = keypair
    private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    return DemoKey(key_id, path, public_pem, private_key)


@pytest.fixture(scope="session")
def demo_key(demo_keypair: DemoKeyPair) -> DemoKey:
    """The key pair `start_kalshi` registers with every simulator it starts."""
    return _load_key(demo_keypair)


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> DemoKey:
    """A second, valid key pair that is NOT registered with the simulator."""
    return _load_key(generate_demo_keypair(tmp_path_factory.mktemp("kalshi-other-key")))


class KalshiWire:
    """One WebSocket connection with JSON helpers and a per-sid seq check."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next_id = 1

    async def command(self, cmd: str, params: dict[str, Any] | None = None) -> int:
        cmd_id = self._next_id
        self._next_id += 1
        body: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
        if params is not None:
            body["params"] = params
        await self.ws.send_str(json.dumps(body))
        return cmd_id

    async def recv_raw(self, timeout: float = 2.0) -> aiohttp.WSMessage:
        return await asyncio.wait_for(self.ws.receive(), timeout)

    async def recv(self, timeout: float = 2.0) -> dict[str, Any]:
        msg = await self.recv_raw(timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type}"
        frame = json.loads(msg.data)
        assert isinstance(frame, dict)
        return frame

    async def until_reply(self, cmd_id: int, timeout: float = 3.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(frames received before the reply to `cmd_id`, that reply)."""
        before: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("id") == cmd_id:
                    return before, frame
                before.append(frame)

    async def subscribe(self, **params: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Send subscribe; return (replies with this id, data frames seen meanwhile),
        reading until a list_subscriptions round-trip proves all replies arrived."""
        cmd_id = await self.command("subscribe", params)
        probe = await self.command("list_subscriptions")
        frames, _ = await self.until_reply(probe)
        replies = [f for f in frames if f.get("id") == cmd_id]
        data = [f for f in frames if f.get("id") != cmd_id]
        return replies, data

    async def drain(self) -> list[dict[str, Any]]:
        """Every frame queued so far (a list_subscriptions reply marks the end)."""
        frames, _ = await self.until_reply(await self.command("list_subscriptions"))
        return frames


class ClientBook:
    """The test's own reconstruction of Kalshi books: YES bids and NO bids per ticker."""

    ticks = staticmethod(ticks)
    hundredths = staticmethod(hundredths)

    def __init__(self) -> None:
        self.books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
        self.last_seq: dict[int, int] = {}

    def apply(self, frame: dict[str, Any]) -> None:
        sid, seq, msg = frame["sid"], frame["seq"], frame["msg"]
        if sid in self.last_seq:
            assert seq == self.last_seq[sid] + 1, f"seq gap on sid {sid}: {self.last_seq[sid]} -> {seq}"
        self.last_seq[sid] = seq
        ticker = msg["market_ticker"]
        if frame["type"] == "orderbook_snapshot":
            self.books[ticker] = (
                {ticks(p): hundredths(c) for p, c in msg.get("yes_dollars_fp", [])},
                {ticks(p): hundredths(c) for p, c in msg.get("no_dollars_fp", [])},
            )
            return
        assert frame["type"] == "orderbook_delta", frame
        assert ticker in self.books, f"delta for {ticker} before its snapshot"
        side = self.books[ticker][0 if msg["side"] == "yes" else 1]
        price = ticks(msg["price_dollars"])
        size = side.get(price, 0) + hundredths(msg["delta_fp"])
        assert size >= 0, f"level {msg['price_dollars']} went below zero"
        if size:
            side[price] = size
        else:
            side.pop(price, None)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


OpenWs = Callable[..., Awaitable[aiohttp.ClientWebSocketResponse]]
ConnectKalshi = Callable[..., Awaitable[KalshiWire]]
ConnectPoly = Callable[..., Awaitable[PolyClient]]


@pytest.fixture
async def open_ws(http: aiohttp.ClientSession) -> AsyncIterator[OpenWs]:
    """Factory: `await open_ws(url, **ws_connect_options)`; every socket opened is closed at teardown."""
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(url: str, **options: Any) -> aiohttp.ClientWebSocketResponse:
        ws = await http.ws_connect(url, **options)
        opened.append(ws)
        return ws

    yield connect
    for ws in opened:
        await ws.close()


@pytest.fixture
def kalshi_ws(open_ws: OpenWs, demo_key: DemoKey) -> ConnectKalshi:
    """Factory: `await kalshi_ws(sim, **ws_connect_options)` -> a signed `KalshiWire`."""

    async def connect(sim: KalshiSimulator, **options: Any) -> KalshiWire:
        return KalshiWire(await open_ws(sim.ws_url, headers=demo_key.headers("GET", WS_PATH), **options))

    return connect


@pytest.fixture
def poly_ws(open_ws: OpenWs) -> ConnectPoly:
    """Factory: `await poly_ws(sim)` -> a connected `PolyClient`."""

    async def connect(sim: PolymarketSimulator) -> PolyClient:
        return PolyClient(await open_ws(sim.ws_url))

    return connect


@pytest.fixture
def new_book() -> type[ClientBook]:
    """The `ClientBook` class: `new_book()` for a fresh book, `new_book.ticks("0.5")` to parse."""
    return ClientBook
