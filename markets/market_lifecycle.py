"""What a streaming client knows about markets ending: close times and closures.

Markets end (protocols/kalshi.md and polymarket.md, appendices of 2026-11-30), and
the book channel does not say so: a Kalshi market closes at `close_time` with no
event at all. A client therefore has to close a market itself when its close time
passes, and has to remember *why* a market is closed, because that decides what
may bring it back:

* `Closure.CLOSE_TIME` -- its close time passed; the venue can still move the
  close into the future (Kalshi `close_date_updated`), which reopens it.
* `Closure.PAUSED` -- the venue paused trading (Kalshi `deactivated`); it comes
  back when the venue reactivates it (`activated`).
* `Closure.FINAL` -- determined, settled, resolved, or unknown to the venue: it
  never trades again.

A closed or paused market is published CLOSED ("the market does not trade now"),
not STALE: STALE means "might be right, nobody knows", would invite resyncs, and
would let a consumer think a price it cannot trade on is merely delayed. When a
market comes back its book is rebuilt from a fresh snapshot (a reactivation also
cancels every resting order on Kalshi, so the old levels are worthless).

`MarketLifecycle` is plain bookkeeping without sockets, so a worker can feed it
close times from any source (REST at subscribe time, a lifecycle event, a
configuration file) and the client's housekeeping asks it which closes are due.
"""

from __future__ import annotations

import heapq
import math
from datetime import datetime
from enum import StrEnum

_NS = 1_000_000_000


class Closure(StrEnum):
    """Why a market is closed, which decides what reopens it (see the module docstring)."""

    CLOSE_TIME = "close_time"
    PAUSED = "paused"
    FINAL = "final"


def to_ns(when: datetime | float) -> int:
    """Unix nanoseconds of a timezone-aware datetime or of Unix seconds.

    A naive datetime is refused: guessing its zone would move a close by hours.
    """
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(f"close time {when!r} has no timezone")
        return int(when.timestamp() * _NS)
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        raise ValueError(f"close time must be a datetime or Unix seconds, got {when!r}")
    return int(when * _NS)


class MarketLifecycle:
    """Close times (with a heap, so finding the due ones is cheap) and closures, by market id."""

    __slots__ = ("_close_ns", "_closed", "_heap")

    def __init__(self) -> None:
        self._close_ns: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._closed: dict[str, Closure] = {}

    def set_close_time(self, market_id: str, when: datetime | float | None) -> int | None:
        """Record (or with None forget) the market's close; returns it in Unix ns."""
        if when is None:
            self._close_ns.pop(market_id, None)
            return None
        close_ns = to_ns(when)
        self._close_ns[market_id] = close_ns
        heapq.heappush(self._heap, (close_ns, market_id))
        return close_ns

    def close_time_ns(self, market_id: str) -> int | None:
        return self._close_ns.get(market_id)

    def passed(self, market_id: str, now_ns: int) -> bool:
        """Whether the market's known close time is not in the future."""
        close_ns = self._close_ns.get(market_id)
        return close_ns is not None and close_ns <= now_ns

    def due(self, now_ns: int) -> list[str]:
        """Markets whose close time came since the last call (each once per close time set);
        entries superseded by a later `set_close_time` are skipped."""
        heap, current = self._heap, self._close_ns
        found: list[str] = []
        while heap and heap[0][0] <= now_ns:
            close_ns, market_id = heapq.heappop(heap)
            if current.get(market_id) == close_ns:
                found.append(market_id)
        return found

    def closure(self, market_id: str) -> Closure | None:
        return self._closed.get(market_id)

    def record_close(self, market_id: str, closure: Closure) -> None:
        """Remember why the market is closed; a FINAL closure is never weakened."""
        if self._closed.get(market_id) is not Closure.FINAL:
            self._closed[market_id] = closure

    def reopen(self, market_id: str, closure: Closure, now_ns: int) -> bool:
        """Lift a closure of kind `closure` (only that kind: an activation does not undo a
        settlement); False if the market stays closed, e.g. its close time has passed meanwhile."""
        if self._closed.get(market_id) is not closure:
            return False
        if self.passed(market_id, now_ns):
            self._closed[market_id] = Closure.CLOSE_TIME
            return False
        del self._closed[market_id]
        return True

    def forget(self, market_id: str) -> None:
        """Drop what is known of the market (it was unsubscribed); a heap entry left
        behind is skipped by `due`."""
        self._close_ns.pop(market_id, None)
        self._closed.pop(market_id, None)

    def closed_reason(self, market_id: str, now_ns: int) -> Closure | None:
        """Why the market must not be streamed now: a recorded closure, or a passed close time."""
        closure = self._closed.get(market_id)
        if closure is None and self.passed(market_id, now_ns):
            closure = self._closed[market_id] = Closure.CLOSE_TIME
        return closure
