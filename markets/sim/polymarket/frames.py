"""Serialized market-channel frames and the Polymarket way of corrupting them.

A `Frame` is serialized once and the same text goes to every subscriber; only a
connection whose fault plan hits that frame gets a corrupted copy built from the
payload. `PolymarketFaultPlan` adds the one fault that exists only on this venue:
a `price_change` whose `best_bid`/`best_ask` disagree with the true book, which
is what a client's cross-check (there are no sequence numbers here) must catch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from markets.models import TICKS_PER_DOLLAR
from markets.sim.faults import Corruption, FaultPlan, malformed_text, truncated_text
from markets.sim.server import Stamps

from .wire import price_text

UNKNOWN_EVENT_TYPE = "market_stats"


@dataclass
class PolymarketFaultPlan(FaultPlan):
    """`FaultPlan` plus `inconsistent_top_every`: every Nth `price_change` frame of a
    connection reports a `best_bid`/`best_ask` that is not the true top of book."""

    inconsistent_top_every: int | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One data frame: its payload (for corruption), its text, and its send-log stamps.

    `stamps` holds every (asset, hash) pair the frame carries, because a
    `price_change` or an initial dump holds several hashes and each must be
    findable in the send log.
    """

    payload: Any
    text: str
    stamps: Stamps

    @classmethod
    def build(cls, payload: Any, stamps: Iterable[tuple[str, str]] = ()) -> Frame:
        return cls(payload, orjson.dumps(payload).decode(), tuple(stamps))


def corrupted_text(frame: Frame, corruption: Corruption) -> str:
    """The text a faulty wire would carry instead of `frame`."""
    if corruption is Corruption.MALFORMED:
        return malformed_text(frame.text)
    if corruption is Corruption.TRUNCATED:
        return truncated_text(frame.text)
    payload = copy.deepcopy(frame.payload)
    if corruption is Corruption.WRONG_TYPE:
        _rewrite_first(payload, ("size", "price", "new_tick_size", "best_bid"), lambda v: [v])
    else:
        _rewrite_first(payload, ("size",), lambda v: v if v.startswith("-") else "-" + v)
    return orjson.dumps(payload).decode()


def unknown_event_text(frame: Frame) -> str:
    """A well-formed event of a type no client knows, as a venue adding features sends."""
    first = frame.payload[0] if isinstance(frame.payload, list) and frame.payload else frame.payload
    market = first.get("market", "") if isinstance(first, dict) else ""
    return orjson.dumps({
        "event_type": UNKNOWN_EVENT_TYPE,
        "market": market,
        "open_interest": "1000",
        "timestamp": first.get("timestamp", "0") if isinstance(first, dict) else "0",
    }).decode()


def inconsistent_top_text(frame: Frame, tick: int) -> str:
    """The `price_change` with its last entry's best bid one tick off the truth.

    The last entry is chosen because it carries the post-event top, which is what
    a client compares after applying the whole event. An empty side ("0") becomes a
    phantom bid one tick up; otherwise the bid moves one tick down (or up at the floor).
    """
    payload = copy.deepcopy(frame.payload)
    entry = payload["price_changes"][-1]
    bid = round(float(entry["best_bid"]) * TICKS_PER_DOLLAR)
    shifted = bid - tick if bid - tick > 0 else bid + tick
    entry["best_bid"] = price_text(shifted)
    return orjson.dumps(payload).decode()


def _rewrite_first(node: Any, keys: tuple[str, ...], rewrite: Any) -> bool:
    """Apply `rewrite` to the first string value under one of `keys` (depth first)."""
    if isinstance(node, dict):
        for key in keys:
            value = node.get(key)
            if isinstance(value, str):
                node[key] = rewrite(value)
                return True
        return any(_rewrite_first(v, keys, rewrite) for v in node.values()
                   if isinstance(v, (dict, list)))
    if isinstance(node, list):
        return any(_rewrite_first(v, keys, rewrite) for v in node)
    return False
