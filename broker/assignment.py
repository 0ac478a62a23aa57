"""Which worker owns which market, and the epoch of every ownership (pure; no sockets).

Rendezvous (highest-random-weight) hashing: every (market, worker) pair gets a
score from a stable hash and a market goes to the live worker with the highest
score that still has room. A worker that joins takes exactly the markets whose
top score is now its own; a worker that leaves gives up only its own markets,
each to its runner-up. No table of hash ranges to keep, and every broker computes
the same answer from the same set of workers, which is what lets a restarted
broker agree with the markets already flowing.

Epochs fence ownership: every time a market is given to a worker its epoch rises,
and consumers drop records older than the directory's epoch for that market.
Epochs start at `incarnation << 16`, where the incarnation is the broker's start
time in milliseconds since 2025, and rise by one per assignment: a restarted broker
issues epochs above every one the previous broker issued, unless that one made more
than 65,536 assignments per millisecond of its life.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from broker.protocol import MarketKey, key_text

_EPOCH_SHIFT = 16
_INCARNATION_BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def score(key: MarketKey, worker_id: str) -> int:
    """Stable across processes and runs (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(f"{key_text(key)}\0{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(key: MarketKey, workers: Iterable[str]) -> list[str]:
    """Workers in order of preference for one market."""
    return sorted(workers, key=lambda w: score(key, w), reverse=True)


@dataclass
class Assignment:
    """The broker's ownership table: market -> (worker, epoch), with per-worker capacity."""

    capacity: dict[str, int] = field(default_factory=dict)
    venues: dict[str, frozenset[str]] = field(default_factory=dict)
    """The venues each worker is configured for (a worker absent here serves every venue)."""
    owner: dict[MarketKey, tuple[str, int]] = field(default_factory=dict)
    incarnation: int = field(default_factory=lambda: time.time_ns() // 1_000_000 - _INCARNATION_BASE_MS)
    _last_epoch: int = 0

    def next_epoch(self) -> int:
        self._last_epoch = max(self._last_epoch + 1, self.incarnation << _EPOCH_SHIFT)
        return self._last_epoch

    def markets_of(self, worker_id: str) -> dict[MarketKey, int]:
        return {key: epoch for key, (owner, epoch) in self.owner.items() if owner == worker_id}

    def load(self) -> dict[str, int]:
        counts = dict.fromkeys(self.capacity, 0)
        for owner, _ in self.owner.values():
            if owner in counts:
                counts[owner] += 1
        return counts

    def adopt(self, worker_id: str, owned: Mapping[MarketKey, int], universe: set[MarketKey]) -> set[MarketKey]:
        """A (re)registering worker reports what it publishes. Keep each claim that is in the
        universe and not contradicted by a newer epoch held by someone else; return the keys
        whose claim was refused (the worker must drop them)."""
        refused = set()
        for key, epoch in owned.items():
            current = self.owner.get(key)
            if key not in universe or (current is not None and current[0] != worker_id and current[1] >= epoch):
                refused.add(key)
            else:
                self.owner[key] = (worker_id, epoch)
                # The next move must fence this claim even if our clock is behind the broker that issued it.
                self._last_epoch = max(self._last_epoch, epoch)
        return refused

    def candidates(self, key: MarketKey) -> list[str]:
        """Workers that can stream this market, best first."""
        venue = key[0].value
        return rank(key, [w for w in self.capacity if venue in self.venues.get(w, (venue,))])

    def remove_worker(self, worker_id: str) -> set[MarketKey]:
        """Forget a worker; its markets become unowned (returned)."""
        self.capacity.pop(worker_id, None)
        self.venues.pop(worker_id, None)
        orphaned = {key for key, (owner, _) in self.owner.items() if owner == worker_id}
        for key in orphaned:
            del self.owner[key]
        return orphaned

    def place(self, keys: Iterable[MarketKey]) -> set[str]:
        """Give each unowned key to its best-ranked live worker with room; return the workers touched.
        A key no worker has room for stays unowned (reported by `unowned`)."""
        touched: set[str] = set()
        load = self.load()
        for key in sorted(keys, key=key_text):
            if key in self.owner:
                continue
            for worker_id in self.candidates(key):
                if load[worker_id] < self.capacity[worker_id]:
                    self.owner[key] = (worker_id, self.next_epoch())
                    load[worker_id] += 1
                    touched.add(worker_id)
                    break
        return touched

    def rebalance(self, universe: Iterable[MarketKey], joiner: str) -> set[str]:
        """After `joiner` joined: give it each owned market it outranks the owner for, while it has room.

        Only the joiner gains markets. Letting every worker take back markets it outranks
        their owners for would cascade under capacity limits (a worker that loses markets
        to the joiner gains room and pulls others from a third worker): moves a join does
        not need. Returns the workers touched (losers and the joiner)."""
        touched: set[str] = set()
        room = self.capacity.get(joiner, 0) - self.load().get(joiner, 0)
        for key in sorted(universe, key=key_text):
            if room <= 0:
                break
            current = self.owner.get(key)
            serves = key[0].value in self.venues.get(joiner, (key[0].value,))
            if (serves and current is not None and current[0] != joiner
                    and score(key, joiner) > score(key, current[0])):
                self.owner[key] = (joiner, self.next_epoch())
                room -= 1
                touched |= {current[0], joiner}
        return touched

    def unowned(self, universe: Iterable[MarketKey]) -> list[MarketKey]:
        return [key for key in universe if key not in self.owner]
