"""Kalshi's view of the shared game timetable: REST statuses and `market_lifecycle_v2` messages.

protocols/kalshi.md (appendix, and docs.kalshi.com getting_started/market_lifecycle):
a market is `active`, paused (`inactive`, event `deactivated`, back with
`activated`), `closed` at `close_time` with **no** event, `determined` when the
result is known, and `finalized` once settled (event `settled`). An early close
is announced with `close_date_updated`. The `GET /markets?status=` filter speaks
another vocabulary (`open`, `paused`, `closed`, `settled`), and the `open`
listing is known to lag a just-closed market by about 30 s (gotcha #7), which the
simulator reproduces with `LifecycleConfig.listing_lag`: the lagging listing shows
the market as the stale index still has it, `active`, with its past `close_time`.
"""

from __future__ import annotations

from typing import Any

from markets.sim.lifecycle import Change, Lifecycle, Phase, Transition
from markets.sim.universe import SimMarket

STATUS = {Phase.OPEN: "active", Phase.PAUSED: "inactive", Phase.CLOSED: "closed",
          Phase.DETERMINED: "determined", Phase.SETTLED: "finalized"}
"""Market.status in REST responses, per phase."""

FILTERS = {"open": frozenset({Phase.OPEN}), "paused": frozenset({Phase.PAUSED}),
           "closed": frozenset({Phase.CLOSED, Phase.DETERMINED}), "settled": frozenset({Phase.SETTLED}),
           "unopened": frozenset()}
"""`GET /markets?status=` values and the phases they match (every simulated market has opened)."""


def listed_phase(lifecycle: Lifecycle, market: SimMarket, status_filter: str | None,
                 now: float | None = None) -> Phase | None:
    """The phase a listing filtered by `status_filter` shows the market in, or None if it
    leaves the market out. Only the `open` listing lags: a market closed less than
    `listing_lag` seconds ago is still in it, shown as the index last saw it (OPEN)."""
    phase = lifecycle.phase(market, now)
    if status_filter is None:
        return phase
    if phase in FILTERS[status_filter]:
        return phase
    if status_filter == "open" and phase is Phase.CLOSED:
        closed_for = lifecycle.elapsed(now) - lifecycle.timetable(market).close
        if closed_for < lifecycle.config.listing_lag:
            return Phase.OPEN
    return None


def result(lifecycle: Lifecycle, market: SimMarket, phase: Phase) -> str:
    """Market.result: empty until determined, then "yes" or "no"."""
    if phase not in (Phase.DETERMINED, Phase.SETTLED):
        return ""
    return "yes" if lifecycle.timetable(market).yes_wins else "no"


def lifecycle_msg(lifecycle: Lifecycle, transition: Transition) -> dict[str, Any] | None:
    """The `msg` of the `market_lifecycle_v2` frame for a transition; None for a silent one
    (the close itself, which has no event)."""
    change = transition.change
    if change is Change.CLOSED:
        return None
    market = transition.market
    msg: dict[str, Any] = {"market_ticker": market.kalshi_ticker, "event_type": change.value}
    at = int(lifecycle.at(transition.at))
    if change is Change.PAUSED:
        msg["is_deactivated"] = True
    elif change is Change.RESUMED:
        msg["is_deactivated"] = False
    elif change is Change.CLOSE_MOVED:
        msg["close_ts"] = at
    elif change is Change.DETERMINED:
        msg["result"] = result(lifecycle, market, Phase.DETERMINED)
        msg["determination_ts"] = at
    elif change is Change.SETTLED:
        msg["settled_ts"] = at
    return msg
