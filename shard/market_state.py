"""One market as a subscriber sees it: the clone pattern's ordering and the epoch fence (pure).

The worker that owns a market publishes its records with a per-market `seq` (+1 per
record) and the ownership `epoch` the broker gave it. A subscriber:

* subscribes first, then asks the owner's snapshot service for the current record,
  and holds every update that arrives meanwhile (`awaiting`);
* when the snapshot lands, takes it and then the held updates whose seq follows it;
* on a seq that skips (the PUB dropped at its high-water mark), holds again and asks
  for a new snapshot instead of showing a price it cannot vouch for;
* drops a record whose epoch is older than the directory's for that market (a worker
  declared dead that comes back, or a late record from the previous owner). A
  record from a *newer* epoch than the directory knows is held until the directory
  catches up (the new owner may publish before the broker's message arrives).

`MarketState` decides; the caller does the I/O (sends the snapshot request the
returned action asks for). Outcomes are returned as small strings so a caller can
count them without this module knowing about metrics.
"""

from __future__ import annotations

from markets.models import MarketPrice

MAX_HELD = 256
"""Updates held while a snapshot is on its way; past this the oldest go (the snapshot covers them)."""

APPLIED = "applied"
HELD = "held"
DUPLICATE = "duplicate"
ZOMBIE = "zombie"
GAP = "gap"
"""`on_update` outcomes. GAP: the caller must request a snapshot (the update is held)."""


class MarketState:
    """The latest trustworthy record of one market and the bookkeeping to keep it so."""

    __slots__ = ("awaiting", "confirmed_ns", "epoch", "held", "latest", "requested_ns")

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch
        """The directory's epoch for this market: records below it are dropped."""
        self.latest: MarketPrice | None = None
        self.awaiting = True
        """A snapshot is needed (or on its way); updates are held, not applied."""
        self.held: list[MarketPrice] = []
        self.requested_ns = 0
        """When the outstanding snapshot was asked for (0: none asked yet)."""
        self.confirmed_ns = 0
        """When the subscriber last had proof `latest` is current (an update, or a snapshot that
        shows nothing newer): how old a quiet market's price really is."""

    def set_epoch(self, epoch: int) -> bool:
        """The directory moved the market to a new owner. True if a snapshot is now needed."""
        if epoch <= self.epoch:
            return False
        self.epoch = epoch
        self.held = [r for r in self.held if r.epoch >= epoch]
        if self.latest is None or self.latest.epoch < epoch:
            # Ask the new owner even when the old one had published nothing: the new owner's first
            # records may already be held (they can beat the directory here), and only a snapshot
            # (or its `pending`) replays them; without one they would wait for the next gap.
            self.awaiting = True
            self.requested_ns = 0
        return self.awaiting

    def on_update(self, record: MarketPrice) -> str:
        if record.epoch < self.epoch:
            return ZOMBIE
        if record.epoch > self.epoch or self.awaiting:
            self._hold(record)
            return HELD
        latest = self.latest
        if latest is None and record.seq == 1:
            self.latest = record  # the owner's first record: nothing can precede it
            return APPLIED
        if latest is None or latest.epoch != record.epoch:
            self._hold(record)
            self.awaiting = True
            return GAP
        if record.seq <= latest.seq:
            return DUPLICATE
        if record.seq == latest.seq + 1:
            self.latest = record
            return APPLIED
        self._hold(record)
        self.awaiting = True
        return GAP

    def on_snapshot(self, record: MarketPrice | None) -> bool:
        """Take the owner's current record (None: it has none yet) and replay what was held.

        Returns True if `latest` changed. A snapshot from an owner older than the
        directory's is ignored (the caller asks the current owner). A snapshot older than
        what is already held applied leaves `latest` alone.
        """
        if record is None:
            if self.latest is None or self.latest.epoch < self.epoch:
                # The owner has published nothing yet: its first record (seq 1) will start the stream.
                self.awaiting = False
                self.latest = None
                return self._replay()
            return False
        if record.epoch < self.epoch:
            return False
        if record.epoch > self.epoch:
            self.epoch = record.epoch
        changed = False
        latest = self.latest
        if latest is None or latest.epoch != record.epoch or record.seq > latest.seq:
            self.latest = record
            changed = True
        self.awaiting = False
        return self._replay() or changed

    def _replay(self) -> bool:
        """Apply held updates in seq order; stop (awaiting again) at a gap."""
        changed = False
        held, self.held = sorted(self.held, key=lambda r: (r.epoch, r.seq)), []
        for index, record in enumerate(held):
            if record.epoch != self.epoch:
                continue
            latest = self.latest
            if latest is None:
                if record.seq == 1:
                    self.latest, changed = record, True
                    continue
            elif record.seq <= latest.seq:
                continue
            elif record.seq == latest.seq + 1:
                self.latest, changed = record, True
                continue
            self.held = held[index:]
            self.awaiting = True
            self.requested_ns = 0
            return changed
        return changed

    def _hold(self, record: MarketPrice) -> None:
        self.held.append(record)
        if len(self.held) > MAX_HELD:
            del self.held[0]
