"""What both venues' fuzz runs share: a socket stand-in, the price audit, book states.

The clients are driven through `_handle_message` directly: no socket is needed to
test how a frame is read, and without one ten thousand frames cost a second. The
one connection a client gets is a real `WebSocketConnection` whose supervisor is
never started; the harness plays its socket (`FakeSocket` collects what the client
writes) and its supervisor (`reconnect`), so the client's own code decides what to
send, when to resync and when to give up on a session.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from markets.base_ws import BaseWebSocketClient
from markets.models import MarketPrice, PriceStatus
from markets.ws_connection import WebSocketConnection
from tests.fuzz.mutate import FRAMES, SEED, Mutator, changes_data, changes_meaning

MUTATED_SHARE = 0.25
CLOCK_EVERY = 16
"""Every this many market moves the harness lets the client's clock jump past its
deadlines (snapshot ladders, crossed-book grace), as the housekeeper would over time."""


@dataclass
class Sent:
    """One frame as the venue means it, and what it says about the markets it carries."""

    payload: Any
    markets: set[str]
    stream: set[Hashable] = field(default_factory=set)
    """The update streams the frame belongs to (Kalshi: its sid; Polymarket: its tokens).
    A mutated frame of a stream loses an update; a later valid one lets the client see it."""

    @property
    def text(self) -> str:
        return orjson.dumps(self.payload).decode()


class FuzzVenue(Protocol):
    """What `run` needs from a venue double."""

    markets: Any

    def answer(self, text: str) -> list[Sent]: ...
    def concerned(self, text: str, payload: Any) -> set[str]: ...
    def step(self) -> list[Sent]: ...
    def streams_of(self, market: str) -> Iterable[Hashable]: ...
    def exact(self, client: BaseWebSocketClient, market: str) -> bool: ...
    def reset(self) -> None: ...


class FakeSocket:
    """Stands in for the aiohttp socket: records every frame the client writes."""

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(text)

    async def close(self) -> None:
        self.closed = True


def attach(client: BaseWebSocketClient) -> WebSocketConnection:
    """Give `client` one connection with an open (fake) session and no supervisor task."""
    connection = client._add_connection()
    connection.start = lambda: None  # type: ignore[method-assign]  # the harness supervises
    connection.ws = FakeSocket()  # type: ignore[assignment]
    client._connection_up(connection, time.time_ns())
    return connection


async def outgoing(connection: WebSocketConnection) -> list[str]:
    """Frames the client wrote since the last call, in order, after flushing what it
    queued through its own send path (which applies any command budget it keeps)."""
    socket: FakeSocket = connection.ws  # type: ignore[assignment]
    await connection._flush(connection.ws)  # type: ignore[arg-type]
    frames, socket.sent = socket.sent, []
    return frames


def reconnect_if_asked(client: BaseWebSocketClient, connection: WebSocketConnection) -> bool:
    """Do what the supervisor does when the client asked for a reconnect; True if it did."""
    reason = connection._drop_reason
    if reason is None:
        return False
    client._connection_down(connection, reason)
    connection._drop_reason = None
    client._connection_up(connection, time.time_ns())
    return True


class Clock:
    """The housekeeper's clock, jumping ahead: each reading is past every snapshot
    deadline and crossed-book grace set before it, including those set from an
    earlier reading (so a snapshot ladder climbs one step per reading)."""

    def __init__(self, client: BaseWebSocketClient) -> None:
        self.step = 2 * (client._resync_timeout_ns + client._crossed_grace_ns)
        self.now = time.time_ns()
        """Also the receive time of every frame, so that time passes only in jumps and a
        seeded run is the same run however fast the machine is."""

    def later(self) -> int:
        self.now = max(self.now, time.time_ns()) + self.step
        return self.now


def book_state(client: BaseWebSocketClient, market_id: str) -> tuple[Any, ...]:
    """Everything a frame could change about one market: levels, status, last trade, last price."""
    book = client.book(market_id)
    assert book is not None
    return dict(book.bids), dict(book.asks), book.status, book.last_trade_ticks, client.latest_price(market_id)


class PriceAudit:
    """A listener that checks every published price for what may never be published."""

    def __init__(self) -> None:
        self.published = 0
        self.by_status: dict[str, int] = {}
        self.violations: list[str] = []

    def __call__(self, price: MarketPrice) -> None:
        self.published += 1
        self.by_status[price.status.value] = self.by_status.get(price.status.value, 0) + 1
        for name in ("yes_bid", "yes_ask", "last_trade"):
            value = getattr(price, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                self.violations.append(f"{name} {value!r} outside [0, 1]: {price}")
        for name in ("yes_bid_size", "yes_ask_size"):
            value = getattr(price, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                self.violations.append(f"{name} {value!r} not a finite size >= 0: {price}")
        if price.is_crossed:
            self.violations.append(f"crossed or locked price published ({price.status}): {price}")


def live(client: BaseWebSocketClient, market_id: str) -> bool:
    """Whether a consumer would act on the market now: its last published price is LIVE."""
    price = client.latest_price(market_id)
    return price is not None and price.status is PriceStatus.LIVE


@dataclass
class FuzzReport:
    frames: int = 0
    mutated: int = 0

    def line(self, venue: str, seed: int, client: BaseWebSocketClient, audit: PriceAudit, mutator: Mutator) -> str:
        stats = client.stats
        return (f"{venue} fuzz (seed {seed}): {self.frames} frames, {self.mutated} mutated "
                f"{dict(sorted(mutator.counts.items()))}; rejected {dict(sorted(stats.rejected.items()))}; "
                f"dropped {dict(sorted(stats.dropped.items()))}; gaps {stats.gaps}, resyncs {stats.resyncs}, "
                f"reconnects {stats.disconnects.total()}; published {audit.by_status}")


async def run(client: BaseWebSocketClient, venue: FuzzVenue, connection: WebSocketConnection,
              rng: random.Random, mutator: Mutator, frames: int) -> FuzzReport:
    """Send `frames` frames of valid traffic, a share of them mutated, and check after each.

    After every frame: `_handle_message` did not raise; a mutated frame of an update
    stream was counted; markets the frame does not concern are unchanged; no market
    whose book is crossed is LIVE. Whenever every frame sent so far is delivered: each
    LIVE market whose streams had a valid frame since their last mutated one is
    exactly the venue's (`venue.exact`), so a lost update, or a crossing the venue
    made up, never leaves a market LIVE once the client could know. Every published
    price passes `PriceAudit` (the caller asserts it at the end).
    """
    clock = Clock(client)
    report = FuzzReport()
    doubt: set[Hashable] = set()
    backlog: list[Sent] = []

    async def deliver(frame: Sent) -> None:
        text, payload = frame.text, frame.payload
        mutated = rng.random() < MUTATED_SHARE
        if mutated:
            text = mutator.mutate(payload)
            mutated = changes_meaning(frame.payload, text)
            try:
                payload = orjson.loads(text)
            except orjson.JSONDecodeError:
                payload = None
        report.mutated += mutated
        concerned = venue.concerned(frame.text, frame.payload) | venue.concerned(text, payload)
        before = {m: book_state(client, m) for m in venue.markets if m not in concerned}
        counted = problems(client)
        client._handle_message(text, clock.now)  # must not raise, whatever the frame
        report.frames += 1
        for market, state in before.items():
            assert book_state(client, market) == state, f"{market} changed by a frame for {concerned}: {text:.300}"
        if mutated:
            if frame.stream and changes_data(frame.payload, text):  # a reply may differ where nothing is read
                assert problems(client) > counted, f"mutated frame not counted: {text:.300}"
            doubt.update(frame.stream)
        else:
            doubt.difference_update(frame.stream)
        for market in venue.markets:
            book = client.book(market)
            assert book is None or not book.is_crossed or not live(client, market), f"{market}: crossed and LIVE"
        backlog.extend(s for command in await outgoing(connection) for s in venue.answer(command))

    backlog.extend(s for command in await outgoing(connection) for s in venue.answer(command))
    moves = 0
    while report.frames < frames:
        while backlog:
            await deliver(backlog.pop(0))
        for market in venue.markets:
            if any(s in doubt for s in venue.streams_of(market)) or not live(client, market):
                continue
            assert venue.exact(client, market), f"{market} LIVE but not the venue's book"
        moves += 1
        backlog.extend(venue.step())
        if moves % CLOCK_EVERY == 0:
            client._check_markets(connection, clock.later())
            backlog.extend(s for command in await outgoing(connection) for s in venue.answer(command))
        if reconnect_if_asked(client, connection):
            venue.reset()
            backlog = [s for command in await outgoing(connection) for s in venue.answer(command)]
    return report


async def fuzz(client: BaseWebSocketClient, venue: FuzzVenue, name: str, foreign_ids: tuple[str, ...]) -> None:
    """Subscribe `client` to every market of `venue`, run `FRAMES` frames through `run`,
    print what happened and check what must hold over the whole run."""
    rng = random.Random(SEED + 1)  # the venue owns the seed's first stream
    audit = PriceAudit()
    client.add_listener(audit)
    mutator = Mutator(rng, foreign_ids)
    connection = attach(client)
    await client.subscribe(list(venue.markets))
    report = await run(client, venue, connection, rng, mutator, FRAMES)
    print("\n" + report.line(name, SEED, client, audit, mutator))
    assert not audit.violations, audit.violations[:5]
    assert client.stats.listener_errors == 0 and "handler_error" not in client.stats.rejected
    assert client.stats.rejected["crossed_book"] > 0, "no crossed book outlived its grace: the run tested little"
    assert audit.by_status.get("live", 0) > FRAMES // 50, "too few LIVE prices: the run tested little"


def problems(client: BaseWebSocketClient) -> int:
    """Everything the client counts when it refuses or discards what it read."""
    stats = client.stats
    return stats.rejected.total() + stats.dropped.total() + stats.gaps + stats.venue_errors.total()
