"""WebSocketConnection: one supervised venue socket and the markets subscribed over it.

A `BaseWebSocketClient` owns the books and the consumers; a connection owns
exactly one socket at a time and the subset of markets subscribed over it. It
knows sockets, not markets: everything about books goes back to the client
(`_connection_up`, `_connection_down`, `_check_markets`, and `_handle_message`
for every frame).

Per connection there is one *supervisor* task. It opens the socket (fresh upgrade
headers from `_authenticate()` on every attempt), resubscribes the connection's
markets, and then runs two child tasks until either ends:

* the reader -- the only task that ever calls `receive()` on that socket. It stamps
  each frame once with `time.time_ns()`, counts it, and hands it to
  `_handle_message`. It never waits on a consumer.
* the housekeeper -- wakes every `watchdog_interval` (or when asked) to run the
  per-market staleness watchdog, to escalate snapshot requests that did not land
  in `resync_timeout`, to apply the connection-wide `receive_timeout`, to send
  venue keep-alives, and to flush frames queued by synchronous code.

Whatever ends a session -- the peer's CLOSE, a CLOSED or ERROR frame, aiohttp's own
ping/pong heartbeat failing (dead peer), a receive timeout, a send that could not
be written within `send_timeout` (a peer that stopped reading would otherwise hold
the sender, and with it the timers, forever), or a resync that could not be
repaired -- takes the same path: the supervisor cancels both children,
closes the socket, marks the connection's books STALE (and emits that), waits an
exponential backoff with jitter (reset once a session delivered every snapshot it
awaited, or stayed up for `healthy_after` seconds), and connects again. There is no detached reconnect task
and no second reader. Handshakes refused for our credentials (the client's
`_is_auth_refusal`: 401/403 by default, never on a public feed, where a 403/429
comes from a CDN and is a backoff) are counted; after `max_auth_failures` in a
row the supervisor stops retrying and fails the client with the
`WebSocketAuthError` the client builds (the refused credentials are the
client's, and so is telling the consumers).

Liveness. A connection is alive while frames of any kind arrive: data, replies,
and the venue's protocol PING and our pings' PONG. The reader sees the control
frames itself (aiohttp's autoping would answer and swallow them), answers each
PING at once and stamps `last_frame_ns` for both, so `receive_timeout` means "no
frame at all" -- a quiet but healthy socket (pings flowing, no data) is never
reconnected for its silence. Heartbeats are watched both ways: a peer that stops
answering our pings is dead by aiohttp's heartbeat (nothing received within half a
`ping_interval` of a ping), and on a venue that promises pings of its own
(`venue_ping_timeout`, Kalshi) their absence ends the session too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType

if TYPE_CHECKING:
    from markets.base_ws import BaseWebSocketClient

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_PING = WSMsgType.PING
_PONG = WSMsgType.PONG
_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})


class WebSocketConnection:
    """One supervised socket and the markets subscribed over it (see the module docstring)."""

    def __init__(self, client: BaseWebSocketClient, index: int) -> None:
        self.client = client
        self.name = f"{client.platform}-ws-{index}"
        self.markets: set[str] = set()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sessions = 0
        self.connected_ns = 0
        self.delivered = False
        """This session brought every awaited snapshot: it worked, whatever ended it, so the
        next reconnect starts from the bottom of the backoff. Without it, a venue that drops
        connections every few seconds would push every reconnect to the backoff's ceiling
        although each session streams fine (found by the soak); `healthy_after` still resets
        it for sessions that never had anything to await."""
        self.last_frame_ns = 0
        self.last_ping_ns = 0
        self.established: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox: list[str] = []
        self._drop_reason: str | None = None
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # a no-op on a supervisor that already ended
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- sending -----------------------------------------------------------------

    def queue(self, frames: Iterable[str]) -> None:
        """Queue frames from synchronous code; the reader or housekeeper sends them next."""
        if self.ws is not None:
            self._outbox.extend(frames)
            self._wake.set()

    async def send(self, frames: Iterable[str]) -> None:
        """Send now (after anything already queued). Without a socket, or on one that
        is going down, frames are lost, which is fine: every session starts by
        resubscribing everything."""
        ws = self.ws
        if ws is not None:
            self._outbox.extend(frames)
            await self._flush(ws)

    async def _flush(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send the outbox in order; the lock keeps batches from interleaving when a
        send waits for the socket to drain. A drain that does not come within
        `send_timeout` (the peer stopped reading) ends the session: waiting longer
        would hold the housekeeper, and through the lock the reader, indefinitely.
        Frames past the client's command budget (`_frames_admitted`) stay queued, in
        order, for a later flush (the housekeeper flushes on every tick)."""
        async with self._send_lock:
            admitted = self.client._frames_admitted(self._outbox)
            frames, self._outbox = self._outbox[:admitted], self._outbox[admitted:]
            try:
                async with asyncio.timeout(self.client.send_timeout):
                    for frame in frames:
                        await ws.send_str(frame)
            except TimeoutError:
                log.warning("%s: peer not reading; %d frame(s) unsent after %.3f s", self.name,
                            len(frames), self.client.send_timeout)
                self.request_reconnect("send_timeout")
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                log.debug("%s: send failed (%s); the next session resubscribes", self.name, exc)

    def request_reconnect(self, reason: str) -> None:
        """Ask the supervisor to end this session and reconnect (safe from sync code)."""
        if self.ws is not None and self._drop_reason is None:
            self._drop_reason = reason
            self._wake.set()

    # -- supervision -------------------------------------------------------------

    async def _supervise(self) -> None:
        client = self.client
        loop = asyncio.get_running_loop()
        attempt = 0
        auth_failures = 0
        try:
            while True:
                try:
                    ws = await self._open()
                except aiohttp.WSServerHandshakeError as exc:
                    client.stats.handshake_failures[str(exc.status)] += 1
                    if client._is_auth_refusal(exc.status):
                        auth_failures += 1
                        if auth_failures >= client.max_auth_failures:
                            client._fail(self, client._auth_error(exc, auth_failures))
                            return
                    log.warning("%s: handshake refused: HTTP %s %s", self.name, exc.status, exc.message)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    client.stats.handshake_failures[type(exc).__name__] += 1
                    log.warning("%s: cannot connect to %s: %r", self.name, client.url, exc)
                else:
                    auth_failures = 0
                    started = loop.time()
                    self.delivered = False
                    await self._run_session(ws)
                    if self.delivered or loop.time() - started >= client.healthy_after:
                        attempt = 0
                delay = client._backoff_delay(attempt)
                attempt += 1
                log.info("%s: reconnecting in %.3f s (attempt %d)", self.name, delay, attempt)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: fail loudly, never silently
            log.exception("%s: supervisor failed", self.name)
            client._fail(self, exc)

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        client = self.client
        headers = await client._authenticate()
        async with asyncio.timeout(client.connect_timeout):
            return await client._http().ws_connect(
                client.url,
                headers=headers,
                autoping=False,
                heartbeat=client.ping_interval,
                max_msg_size=client.max_msg_size,
                compress=client.compress,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=client.close_timeout),
            )

    async def _run_session(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        client = self.client
        now = time.time_ns()
        self.ws = ws
        self.connected_ns = self.last_frame_ns = self.last_ping_ns = now
        self._drop_reason = None
        client.stats.connects += 1
        if self.sessions:
            client.stats.reconnects += 1
        self.sessions += 1
        reason = "stopped"
        try:
            client._connection_up(self, now)
            if not self.established.done():
                self.established.set_result(None)
            await self._flush(ws)
            reason = await self._serve(ws)
        finally:
            self.ws = None
            self._outbox.clear()
            client._connection_down(self, reason)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(client.close_timeout):
                    await ws.close()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Run reader and housekeeper until one of them ends; return why."""
        reader = asyncio.create_task(self._read(ws), name=f"{self.name}-reader")
        keeper = asyncio.create_task(self._housekeep(ws), name=f"{self.name}-housekeeper")
        try:
            done, _ = await asyncio.wait((reader, keeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            keeper.cancel()
            await asyncio.gather(reader, keeper, return_exceptions=True)
        finished = done.pop()
        if finished.cancelled():
            return "stopped"
        error = finished.exception()
        if error is not None:
            log.error("%s: session task failed: %r", self.name, error, exc_info=error)
            return "internal_error"
        return finished.result()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """The only receive loop of this socket. Returns why the socket ended."""
        client = self.client
        stats = client.stats
        handle = client._handle_message
        receive = ws.receive
        while True:
            msg = await receive()
            kind = msg.type
            if kind is _TEXT:
                data = msg.data
            elif kind is _BINARY:
                try:
                    data = msg.data.decode()
                except UnicodeDecodeError:
                    client._reject("binary_not_utf8", len(msg.data), "")
                    continue
            elif kind in _ENDED:
                log.warning("%s: closed by peer (code %s)", self.name, ws.close_code)
                return "peer_closed"
            elif kind is _PING:
                self.last_frame_ns = self.last_ping_ns = time.time_ns()
                stats.pings_received += 1
                try:
                    await ws.pong(msg.data)
                except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                    log.debug("%s: pong failed (%s); the reader sees the socket end next", self.name, exc)
                continue
            elif kind is _PONG:
                self.last_frame_ns = time.time_ns()
                stats.pongs_received += 1
                continue
            elif kind is WSMsgType.ERROR:
                error = msg.data
                if isinstance(error, aiohttp.WebSocketError) and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                    client._reject("oversized", error, "")
                    return "oversized_frame"
                log.warning("%s: socket error: %r", self.name, error)
                return "socket_error"
            else:
                continue
            recv_ns = time.time_ns()
            stats.messages += 1
            stats.bytes += len(data)
            self.last_frame_ns = recv_ns
            try:
                handle(data, recv_ns)
            except Exception:
                stats.rejected["handler_error"] += 1
                held = client._log_limit.allow("handler_error")
                if held is not None:
                    log.exception("%s: handler failed on frame %.200s (%d similar not logged)",
                                  self.name, data, held)
            if self._outbox:
                await self._flush(ws)

    async def _housekeep(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Timers of one session: watchdog, resync deadlines, receive timeout, keep-alives."""
        client = self.client
        wake = self._wake
        receive_timeout_ns = None if client.receive_timeout is None else int(client.receive_timeout * _NS)
        venue_ping_ns = None if client.venue_ping_timeout is None else int(client.venue_ping_timeout * _NS)
        keepalive_ns = None if client.keepalive_interval is None else int(client.keepalive_interval * _NS)
        next_keepalive = self.connected_ns + (keepalive_ns or 0)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(client.watchdog_interval):
                    await wake.wait()
            wake.clear()
            now = time.time_ns()
            if self._drop_reason is None:
                if (receive_timeout_ns is not None and self.markets
                        and now - self.last_frame_ns > receive_timeout_ns):
                    log.warning("%s: no frame for %.3f s", self.name, (now - self.last_frame_ns) / _NS)
                    self._drop_reason = "receive_timeout"
                elif venue_ping_ns is not None and self.markets and now - self.last_ping_ns > venue_ping_ns:
                    log.warning("%s: no ping from the venue for %.3f s", self.name, (now - self.last_ping_ns) / _NS)
                    self._drop_reason = "venue_ping_timeout"
                else:
                    client._check_markets(self, now)
            if self._drop_reason is not None:
                return self._drop_reason
            if keepalive_ns is not None and now >= next_keepalive:
                self._outbox.extend(client._keepalive())
                next_keepalive = now + keepalive_ns
            if self._outbox:
                await self._flush(ws)
