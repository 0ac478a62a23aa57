"""Kalshi market lifecycle: the `market_lifecycle_v2` channel and what REST says of a market.

Wire (protocols/kalshi.md §5 and appendix; docs.kalshi.com
websockets/market-and-event-lifecycle): ``{"type": "market_lifecycle_v2", "sid",
"seq", "msg": {"market_ticker", "event_type", ...}}`` for *every* market on the
venue (the channel takes no ticker filter), plus `event_lifecycle` (and
`event_fee_update`) frames on the same sid. A market's move from active to closed
at `close_time` has no event at all, so REST's `close_time` (and
`close_date_updated`) is what lets a client close a market itself.

What each event means for a streamed book:

* `deactivated` -- trading paused: CLOSED (`Closure.PAUSED`), reopened by
  `activated` (which also cancels every resting order: a fresh snapshot is needed);
* `close_date_updated` -- a new close time (`close_ts`, Unix seconds): an early
  close, or a reopening when it moves into the future;
* `determined`, `settled` -- the market will never trade again (`Closure.FINAL`);
* `created`, `metadata_updated`, `price_level_structure_updated` and anything
  newer -- nothing for a book.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markets.market_lifecycle import Closure

CHANNEL = "market_lifecycle_v2"
EVENT_FRAMES = frozenset({"event_lifecycle", "event_fee_update"})
"""Other frame types the lifecycle subscription carries (they consume its seq)."""

CLOSING_EVENTS = {"deactivated": Closure.PAUSED, "determined": Closure.FINAL, "settled": Closure.FINAL}
REOPENING_EVENTS = {"activated": Closure.PAUSED}
CLOSE_MOVED = "close_date_updated"

_CLOSED_STATUSES = {"inactive": Closure.PAUSED, "closed": Closure.CLOSE_TIME, "determined": Closure.FINAL,
                    "disputed": Closure.FINAL, "amended": Closure.FINAL, "finalized": Closure.FINAL,
                    "settled": Closure.FINAL}
"""REST `Market.status` values of markets that do not trade now, and what may reopen them
(`initialized` is not here: it opens by itself at `open_time`, with no event)."""


class LifecycleError(ValueError):
    """A lifecycle message that cannot be read."""


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One market's lifecycle event; `close_ts` (Unix seconds) only on `close_date_updated`."""

    ticker: str
    event_type: str
    close_ts: int | None = None


def parse_lifecycle(msg: Any) -> LifecycleEvent:
    """The event in a `market_lifecycle_v2` frame's `msg`; LifecycleError if unreadable."""
    if type(msg) is not dict:
        raise LifecycleError(f"msg must be an object, got {type(msg).__name__}")
    ticker, event_type = msg.get("market_ticker"), msg.get("event_type")
    if type(ticker) is not str or not ticker:
        raise LifecycleError(f"market_ticker must be a non-empty string, got {ticker!r}")
    if type(event_type) is not str:
        raise LifecycleError(f"event_type must be a string, got {event_type!r}")
    close_ts = None
    if event_type == CLOSE_MOVED:
        close_ts = msg.get("close_ts")
        if type(close_ts) is not int or close_ts < 0:
            raise LifecycleError(f"close_date_updated needs close_ts in Unix seconds, got {close_ts!r}")
    return LifecycleEvent(ticker, event_type, close_ts)


def parse_close_time(market: Mapping[str, Any]) -> datetime | None:
    """A REST market's `close_time` (RFC 3339, e.g. "2026-08-02T04:00:00Z"), None if absent.

    LifecycleError if present but unreadable or without a timezone: guessing would
    move a close by hours.
    """
    raw = market.get("close_time")
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise LifecycleError(f"close_time is not an RFC 3339 time with a zone: {raw!r}")
    return moment


def market_closure(market: Mapping[str, Any], now: datetime | None = None) -> Closure | None:
    """Why a REST `Market` does not trade now, or None if nothing says so.

    Its status, or for an `active` market a `close_time` already past: the close
    itself has no event, and the `status=open` listing is known to keep a
    just-closed market for ~30 s (gotcha #7). An unreadable `close_time` counts as
    closed: better one market missed than a dead one streamed as live.
    """
    closure = _CLOSED_STATUSES.get(market.get("status"))  # type: ignore[arg-type]
    if closure is not None:
        return closure
    try:
        close = parse_close_time(market)
    except LifecycleError:
        return Closure.FINAL
    if close is not None and close <= (now or datetime.now(UTC)):
        return Closure.CLOSE_TIME
    return None


def is_streamable(market: Mapping[str, Any], now: datetime | None = None) -> bool:
    """The discovery rule: stream only markets that are `active` and not past `close_time`."""
    return market.get("status") == "active" and market_closure(market, now) is None
