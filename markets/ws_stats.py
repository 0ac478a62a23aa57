"""What a WebSocket client counts, and how it keeps its problem logging bounded.

Problems are counted every time but logged through a per-kind limiter
(`LogLimiter`): a venue that starts sending a new message type, or a handler bug
that trips on every frame, must cost a counter increment per frame, not a log
line (a log record costs more than handling the frame).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class LogLimiter:
    """Lets the first occurrence of each kind of problem through, then one per
    `interval` seconds, reporting how many were held back in between.

    Kinds are fixed strings chosen by the code (rejection reasons and the like),
    never text from the wire, so the table stays as small as the code's vocabulary.
    """

    __slots__ = ("interval", "_next", "_held")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, kind: str) -> int | None:
        """None: do not log this one. Otherwise log it, with the returned count of
        occurrences held back since the last line of this kind."""
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._held[kind] += 1
            return None
        self._next[kind] = now + self.interval
        return self._held.pop(kind, 0)


@dataclass(slots=True)
class ClientStats:
    """Counters a worker reads for its status report.

    `rejected` counts bad frames by reason (malformed JSON, unknown type, a wrong
    field, an impossible level, ...); `dropped` counts frames discarded on purpose
    (duplicates, deltas that arrive while a snapshot is awaited, frames for a market
    just unsubscribed). `pings_received` and `pongs_received` count the venue's
    protocol pings and its answers to ours (what keeps a quiet socket alive); `verifications` counts quiet-book checks by outcome and the
    REST requests they cost (Polymarket). `disagreements` counts frames after which a
    book disagreed with the venue's own best prices but not yet for long enough to
    be called wrong (Polymarket; a persistent one is a resync, counted in `gaps`). `bytes` counts the characters of every frame handled, text or
    UTF-8 binary (JSON is ASCII, so that is bytes). `last_message_ns` is the receive
    time of the last data frame per market.
    """

    messages: int = 0
    bytes: int = 0
    connects: int = 0
    reconnects: int = 0
    resyncs: int = 0
    stale_trips: int = 0
    gaps: int = 0
    listener_errors: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    venue_errors: Counter[str] = field(default_factory=Counter)
    handshake_failures: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    pings_received: int = 0
    pongs_received: int = 0
    verifications: Counter[str] = field(default_factory=Counter)
    disagreements: int = 0
    last_message_ns: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """Plain-data copy (safe to serialize or compare later)."""
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "resyncs": self.resyncs,
            "stale_trips": self.stale_trips,
            "gaps": self.gaps,
            "listener_errors": self.listener_errors,
            "rejected": dict(self.rejected),
            "dropped": dict(self.dropped),
            "venue_errors": dict(self.venue_errors),
            "handshake_failures": dict(self.handshake_failures),
            "disconnects": dict(self.disconnects),
            "pings_received": self.pings_received,
            "pongs_received": self.pongs_received,
            "verifications": dict(self.verifications),
            "disagreements": self.disagreements,
            "last_message_ns": dict(self.last_message_ns),
        }
