"""Swept levels whose removal the venue reports late: briefly self-inconsistent frames.

Seen live (protocols/polymarket.md appendix; nevuamarkets/poly-websockets #25): when a
trade sweeps a level, the `price_change` entries that follow already carry the
post-trade `best_bid`/`best_ask`, while the entry removing the swept level arrives
a few messages later. A client's book holds the swept level meanwhile, so its top
disagrees with the venue's for those messages, and then agrees again.

`LaggedRemovals` decides which removals of a top level are such sweeps and holds
them back, one sweep per market at a time: it is due after a random
1..`max_frames` later `price_change` frames of its market, and at the latest after
the simulator's timer, so a market that goes quiet does not keep a wrong level
forever. A new sweep starts only in a frame that held nothing, so a client's
disagreement never chains past `max_frames` frames. A held removal is
dropped, not sent, when a later change sets the same level again (sizes are
absolute: the later entry is the truth) or when a full `book` or a tick change
makes it moot.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from markets.sim.ladder import LevelChange

Top = tuple[int | None, int | None]


@dataclass(slots=True)
class _Held:
    """The removals held back for one market, and how many frames until they are due."""

    removals: list[LevelChange] = field(default_factory=list)
    frames_left: int = 0


class LaggedRemovals:
    """Per market (by condition id): swept top levels whose removal is not sent yet."""

    def __init__(self, share: float, max_frames: int, rng: random.Random) -> None:
        if not 0 <= share <= 1:
            raise ValueError(f"sweep_lag_share must be in [0, 1], got {share!r}")
        if max_frames < 1:
            raise ValueError(f"sweep_lag_frames must be >= 1, got {max_frames!r}")
        self.share = share
        self.max_frames = max_frames
        self._rng = rng
        self._held: dict[str, _Held] = {}

    def pick(self, market: str, changes: Sequence[LevelChange], tops: Sequence[Top]) -> int | None:
        """Index of a change to report as a sweep with a late removal, or None. The
        caller asks only when `market` holds nothing (see the module docstring).

        A sweep empties the best level of its side (`tops[k]` is the top before change
        k); a level the same batch sets again later is left alone, its removal is no lie.
        """
        if not self.share:
            return None
        for k, change in enumerate(changes):
            best = tops[k][0] if change.side == "bid" else tops[k][1]
            if change.new_size or change.price != best:
                continue
            if any((c.side, c.price) == (change.side, change.price) for c in changes[k + 1:]):
                continue
            if self._rng.random() >= self.share:
                return None
            self._held[market] = _Held([change], self._rng.randint(1, self.max_frames))
            return k
        return None

    def due(self, market: str, changes: Sequence[LevelChange]) -> list[LevelChange]:
        """Called once per `price_change` frame of `market`, before it is built: the held
        removals that go out in it. Removals of levels that `changes` set again are dropped."""
        held = self._held.get(market)
        if held is None:
            return []
        touched = {(c.side, c.price) for c in changes}
        held.removals = [r for r in held.removals if (r.side, r.price) not in touched]
        held.frames_left -= 1
        if held.removals and held.frames_left > 0:
            return []
        del self._held[market]
        return held.removals

    def flush(self, market: str) -> list[LevelChange]:
        """Every removal still held for `market` (its time is up)."""
        held = self._held.pop(market, None)
        return held.removals if held is not None else []

    def holding(self, market: str) -> bool:
        """Whether a sweep of `market` has its removal held back right now."""
        return market in self._held

    def discard(self, market: str) -> None:
        """A full `book` (or a tick change) supersedes whatever was held."""
        self._held.pop(market, None)

