"""Shared fixtures for the client tests (WS-K, REST-K and POLY add theirs here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import KalshiWebSocketClient
from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from tests.conftest import DemoKeyPair, StartKalshi


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 at an ephemeral port; yield its ``http://127.0.0.1:<port>`` root.

    For stub venues written inside a test, where a full simulator would not have the
    endpoint or the deliberately broken answer the test needs.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# -- REST-K: Kalshi demo key pair and credentials -------------------------------------------


@pytest.fixture
def rest_kalshi_keys(tmp_path: Path) -> tuple[str, Path, bytes]:
    """(key id, private key path (mode 0600), public key PEM) of a fresh demo key pair."""
    return generate_demo_keypair(tmp_path / "rest-kalshi-keys")


@pytest.fixture
def rest_kalshi_credentials(rest_kalshi_keys: tuple[str, Path, bytes]) -> KalshiCredentials:
    key_id, path, _ = rest_kalshi_keys
    return KalshiCredentials.from_files(key_id, path)


# -- WS-K: WebSocket client fixtures ------------------------------------------------------------
# A hand-scripted venue (a real aiohttp WebSocket server whose frames the test writes),
# a Kalshi simulator factory with short keep-alives (tests/conftest.py's `start_kalshi`,
# which registers the demo key pair), and a Kalshi WebSocket client factory with short
# timeouts and backoffs, so the suite runs in seconds.

WSK_FAST_OPTIONS: dict[str, Any] = {
    "stale_after": 1.0,
    "resync_timeout": 0.5,
    "receive_timeout": 5.0,
    "backoff_initial": 0.02,
    "backoff_max": 0.2,
    "healthy_after": 0.5,
    # Our pings need a PONG within half the interval. A loaded 2-core CI box can hold
    # the shared event loop (simulator and client in one process) for a few hundred
    # ms, so a tighter deadline would turn load into spurious dead-peer reconnects.
    "ping_interval": 2.0,
    "connect_timeout": 3.0,
    "close_timeout": 0.5,
    "watchdog_interval": 0.05,
}


async def wsk_eventually(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition",
                         state: Callable[[], object] | None = None) -> None:
    """Poll `predicate` until true; fail naming `what` (and `state()`, for the record) after `timeout` s."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        seen = "" if state is None else f"; state: {state()}"
        raise AssertionError(f"timed out after {timeout} s waiting for {what}{seen}") from None


class WskScriptedConnection:
    """The server side of one accepted socket: what the client sent, and a way to answer."""

    def __init__(self, ws: web.WebSocketResponse, headers: dict[str, str]) -> None:
        self.ws = ws
        self.headers = headers
        self.received: asyncio.Queue[str] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def send(self, frame: str | dict[str, Any]) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def recv_json(self, timeout: float = 3.0) -> Any:
        return orjson.loads(await asyncio.wait_for(self.received.get(), timeout))

    async def close(self) -> None:
        await self.ws.close()


class WskScriptedVenue:
    """A real WebSocket server on 127.0.0.1:0 whose every frame is written by the test.

    `refuse` holds HTTP statuses to answer the next handshakes with; `autoping=False`
    makes a peer that never answers pings (a dead peer, as the client sees it).
    """

    def __init__(self, *, autoping: bool = True) -> None:
        self.autoping = autoping
        self.refuse: list[int] = []
        self.handshakes = 0
        self.connections: asyncio.Queue[WskScriptedConnection] = asyncio.Queue()
        self._serving = AsyncExitStack()
        self._live: set[web.WebSocketResponse] = set()
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handler)
        root = await self._serving.enter_async_context(serve_app(app))
        self.url = root.replace("http://", "ws://", 1) + "/ws"

    async def stop(self) -> None:
        for ws in list(self._live):
            await ws.close()
        await self._serving.aclose()

    async def accept(self, timeout: float = 3.0) -> WskScriptedConnection:
        return await asyncio.wait_for(self.connections.get(), timeout)

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        if self.refuse:
            return web.Response(status=self.refuse.pop(0), text="refused by test")
        ws = web.WebSocketResponse(autoping=self.autoping, max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        connection = WskScriptedConnection(ws, dict(request.headers))
        self._live.add(ws)
        self.connections.put_nowait(connection)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    connection.received.put_nowait(msg.data)
        finally:
            self._live.discard(ws)
            connection.closed.set()
        return ws


@pytest.fixture
async def wsk_venue() -> AsyncIterator[WskScriptedVenue]:
    venue = WskScriptedVenue()
    await venue.start()
    yield venue
    await venue.stop()


@pytest.fixture(scope="session")
def wsk_credentials(demo_keypair: DemoKeyPair) -> KalshiCredentials:
    """Credentials of the demo key pair, which every `wsk_start_sim` simulator accepts."""
    key_id, path, _ = demo_keypair
    return KalshiCredentials.from_files(key_id, path)


WskStartSim = StartKalshi
WskMakeClient = Callable[..., KalshiWebSocketClient]


@pytest.fixture
def wsk_start_sim(start_kalshi: StartKalshi) -> WskStartSim:
    """Factory: `await wsk_start_sim(n_markets=4, rate=0.0, **simulator_options)`; rate 0
    means the test moves markets itself with `sim.step_market(...)`. Pings every second:
    short enough for the tests, long enough that a loaded machine does not drop clients."""

    async def start(n_markets: int = 4, seed: int = 11, **options: Any) -> KalshiSimulator:
        return await start_kalshi(n_markets, seed, **({"ping_interval": 1.0} | options))

    return start


@pytest.fixture
async def wsk_make_client(wsk_credentials: KalshiCredentials) -> AsyncIterator[WskMakeClient]:
    """Factory: `wsk_make_client(url, **options)` with the fast options; all closed at teardown.

    The lifecycle subscription is off unless asked for (`lifecycle=True`): hand-scripted
    venues answer the commands a test is about, and tests/clients/test_lifecycle.py
    covers the lifecycle channel.
    """
    clients: list[KalshiWebSocketClient] = []

    def make(url: str, credentials: KalshiCredentials | None = None, **options: Any) -> KalshiWebSocketClient:
        client = KalshiWebSocketClient(credentials or wsk_credentials, url=url,
                                       **({"lifecycle": False} | WSK_FAST_OPTIONS | options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await asyncio.wait_for(client.close(), 5)
