"""The named fault mixes parse as `arbees sim --faults` reads them, and each is what its name says."""

from __future__ import annotations

from dataclasses import fields

from markets.sim import fault_mixes
from markets.sim.polymarket import PolymarketFaultPlan


def plan(spec: str) -> PolymarketFaultPlan:
    return PolymarketFaultPlan.parse(spec)


def test_all_turns_on_every_fault_a_run_can_survive() -> None:
    every = plan(fault_mixes.ALL)
    off = {f.name for f in fields(every) if getattr(every, f.name) in (None, 0, 0.0)}
    # Off on purpose: a stall proves itself only after a minute (mute_after is Kalshi's, in KALSHI_DEAD_PEER),
    # a terminal error and REST failures are covered by the venue layer's own tests.
    assert off == {"stall_after", "mute_after", "terminal_error_every", "rest_429_every", "rest_5xx_every"}
    assert every.drop_after is not None and every.drop_after >= 100, "a few hundred frames per connection"
    assert every.refuse_status == 503, "a 403 would read as refused credentials on Kalshi"


def test_the_kalshi_mixes_differ_from_all_only_where_they_say() -> None:
    every, dead, tail = plan(fault_mixes.ALL), plan(fault_mixes.KALSHI_DEAD_PEER), plan(fault_mixes.KALSHI_TAIL)
    assert (dead.mute_after, dead.drop_after) == (300, None)
    changed = {f.name for f in fields(every) if getattr(every, f.name) != getattr(dead, f.name)}
    assert changed == {"mute_after", "drop_after"}
    assert (tail.malformed_every, tail.truncated_every) == (None, None)
    changed = {f.name for f in fields(dead) if getattr(dead, f.name) != getattr(tail, f.name)}
    assert changed == {"malformed_every", "truncated_every"}
