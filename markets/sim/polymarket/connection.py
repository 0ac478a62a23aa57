"""One client socket on `/ws/market`: its subscriptions, keep-alive clock and faults.

The simulator decides WHAT a market event is; a `Connection` decides what this
particular client gets of it: nothing while stalled, a corrupted copy when its
fault plan says so, an extra unknown-type or duplicate frame, an abort after N
frames. Frames go through the shared `Outbound` queue, so a client that stops
reading is cut off (as a real venue would) instead of stalling the market.
"""

from __future__ import annotations

import logging

from aiohttp import web

from markets.sim.faults import NO_FAULTS, FaultState
from markets.sim.sendlog import SendLog
from markets.sim.server import Outbound, Stamps

from .frames import Frame, PolymarketFaultPlan, corrupted_text, inconsistent_top_text
from .frames import unknown_event_text

log = logging.getLogger(__name__)

VENUE = "polymarket"


class Connection:
    """Per-socket state; `deliver` is called from the driver and never awaits."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, faults: FaultState,
                 send_log: SendLog, outbound_limit: int, now: float) -> None:
        self.ws = ws
        self.faults = faults
        self.outbound = Outbound(ws, request, VENUE, send_log, outbound_limit)
        self.assets: set[str] = set()
        self.initialized = False
        self.custom_features = False
        self.last_ping = now
        self.last_no_new_assets = now
        self.closing = False
        self._price_changes = 0
        self._plan_seen = faults.plan

    def control(self, text: str) -> None:
        """A reply that is not market data (PONG, INVALID OPERATION): never faulted."""
        if not self.closing:
            self.outbound.put_control(text)

    def deliver(self, frame: Frame, *, price_change_tick: int | None = None) -> None:
        """Queue one data frame, applying this connection's fault plan to it.

        `price_change_tick` is given for `price_change` frames only; it is the
        market's tick, by which the inconsistent-top fault shifts the best bid.
        """
        if self.closing:
            return
        decision = self.faults.next_frame()
        text = frame.text
        if price_change_tick is not None and self._inconsistent_top_due():
            text = inconsistent_top_text(frame, price_change_tick)
        if decision is not NO_FAULTS:
            if decision.stalled:
                return
            if decision.unknown_type:
                self._put(unknown_event_text(frame), ())
            if decision.replace is not None:
                text = corrupted_text(frame, decision.replace)
        self._put(text, frame.stamps)
        if decision.duplicate:
            self._put(text, frame.stamps)
        if decision.drop_after_send:
            self.abort("fault plan: drop_after")

    def abort(self, reason: str) -> None:
        """Cut the TCP connection without a close frame once queued frames are out."""
        if not self.closing:
            log.info("polymarket sim: dropping connection (%s)", reason)
            self.closing = True
            self.outbound.put_drop()

    def _put(self, text: str, stamps: Stamps) -> None:
        if not self.outbound.put(text, stamps):
            self.abort(f"slow consumer: {self.outbound.limit} frames unread")

    def _inconsistent_top_due(self) -> bool:
        plan = self.faults.plan
        if plan is not self._plan_seen:
            self._plan_seen = plan
            self._price_changes = 0
        every = plan.inconsistent_top_every if isinstance(plan, PolymarketFaultPlan) else None
        if every is None:
            return False
        self._price_changes += 1
        return self._price_changes % every == 0
