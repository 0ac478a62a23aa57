"""How often each simulated market changes: a realistic mix instead of one rate for all.

Real venues are mostly quiet: the bulk of markets go minutes without a book change
while a few (the games being played right now) change several times a second
(protocols/kalshi.md and polymarket.md, "Quiet markets"). A simulator where every
market moves at the same brisk rate hides what a client does with silence -- the
old clients took a quiet market for a dead one. `ActivityMix` gives each market
its own mean interval between changes and `ActivityClock` turns those into
Poisson arrivals, so silence of any length happens naturally and reproducibly
for a seed.

The old uniform `rate` (every market `rate` times a second, round-robin) stays the
simulators' default: tests and benchmarks that count on a known rate keep it.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ActivityMix:
    """A share `busy_share` of markets changes on average every `busy_interval`
    seconds, the others every `quiet_interval` seconds (exponential gaps, so a quiet
    market is sometimes silent for many times its mean)."""

    busy_share: float = 0.05
    busy_interval: float = 0.3
    quiet_interval: float = 180.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.busy_share <= 1.0:
            raise ValueError(f"busy_share must be within [0, 1], got {self.busy_share!r}")
        for name in ("busy_interval", "quiet_interval"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")

    def mean_intervals(self, n_markets: int, rng: random.Random) -> list[float]:
        """Each market's mean interval; exactly round(n * busy_share) markets are busy,
        chosen by `rng`, so the mix does not depend on luck for small universes."""
        busy = set(rng.sample(range(n_markets), round(n_markets * self.busy_share)))
        return [self.busy_interval if i in busy else self.quiet_interval for i in range(n_markets)]

    @classmethod
    def parse(cls, spec: str) -> ActivityMix:
        """Parse "busy_share=0.05,busy_interval=0.3,quiet_interval=180" (empty = defaults)."""
        values: dict[str, float] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in cls.__dataclass_fields__:
                raise ValueError(f"activity item {item!r} must be one of "
                                 f"{', '.join(cls.__dataclass_fields__)}=<number>")
            try:
                values[key] = float(raw)
            except ValueError:
                raise ValueError(f"activity {key} must be a number, got {raw.strip()!r}") from None
        return cls(**values)


class ActivityClock:
    """When each market changes next: a heap of due times, refilled with an
    exponential gap around the market's own mean after every change."""

    def __init__(self, mean_intervals: list[float], rng: random.Random, start: float) -> None:
        self._means = mean_intervals
        self._rng = rng
        self._due = [(start + rng.expovariate(1.0 / mean), index) for index, mean in enumerate(mean_intervals)]
        heapq.heapify(self._due)

    def next_due(self) -> float:
        """The time of the next change (inf without markets)."""
        return self._due[0][0] if self._due else float("inf")

    def pop_due(self, now: float, limit: int) -> list[int]:
        """Indexes of markets due by `now` (at most `limit`, earliest first), each
        rescheduled after its change."""
        due, rng, means = self._due, self._rng, self._means
        ready: list[int] = []
        while due and due[0][0] <= now and len(ready) < limit:
            when, index = due[0]
            heapq.heapreplace(due, (when + rng.expovariate(1.0 / means[index]), index))
            ready.append(index)
        return ready
