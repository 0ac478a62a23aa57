"""The clone ordering and the epoch fence of one market as a subscriber sees it: shard/market_state.py.

Example tests pin each rule; a stateful model then plays whole histories: owners
(epochs) that publish records seq 1..n, a bus that loses, duplicates and delivers
each owner's records in order but interleaves owners freely (a superseded owner
may still be publishing), a directory that learns of a new owner late, and
snapshots taken at any moment and delivered at any later one. The subscriber's
side is played as `shard.subscriber.PriceSubscriber` plays it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from markets.models import MarketPrice, Platform
from shard.market_state import APPLIED, DUPLICATE, GAP, HELD, ZOMBIE, MarketState


def rec(epoch: int, seq: int) -> MarketPrice:
    """A record whose prices tell epoch and seq apart, so equal records are the same record."""
    return MarketPrice("KX-M", seq / 1000, None, float(epoch), None, Platform.KALSHI, seq=seq, epoch=epoch)


def live(epoch: int, latest: MarketPrice | None) -> MarketState:
    """A state past its first snapshot."""
    state = MarketState(epoch)
    state.on_snapshot(latest)
    assert not state.awaiting
    return state


# -- the rules, one by one -----------------------------------------------------------------


def test_updates_are_held_while_a_snapshot_is_awaited_then_replayed_after_it() -> None:
    state = MarketState(5)
    assert state.awaiting
    assert [state.on_update(rec(5, s)) for s in (3, 4)] == [HELD, HELD]
    assert state.latest is None
    assert state.on_snapshot(rec(5, 2))
    assert state.latest == rec(5, 4) and not state.awaiting and state.held == []


def test_records_of_an_older_epoch_are_zombies() -> None:
    state = live(5, rec(5, 1))
    assert state.on_update(rec(4, 99)) == ZOMBIE
    assert state.latest == rec(5, 1)


def test_a_record_already_applied_is_a_duplicate() -> None:
    state = live(5, rec(5, 3))
    assert state.on_update(rec(5, 3)) == DUPLICATE
    assert state.on_update(rec(5, 2)) == DUPLICATE
    assert state.on_update(rec(5, 4)) == APPLIED
    assert state.latest == rec(5, 4)


def test_a_skipped_seq_is_a_gap_and_holds_until_a_snapshot() -> None:
    state = live(5, rec(5, 3))
    assert state.on_update(rec(5, 5)) == GAP
    assert state.awaiting and state.latest == rec(5, 3)
    assert state.on_update(rec(5, 6)) == HELD
    assert state.on_snapshot(rec(5, 4))
    assert state.latest == rec(5, 6) and not state.awaiting


def test_a_pending_snapshot_then_the_owners_first_record_applies() -> None:
    state = MarketState(5)
    assert not state.on_snapshot(None), "the owner has nothing yet: nothing to show"
    assert not state.awaiting and state.latest is None
    assert state.on_update(rec(5, 1)) == APPLIED
    assert state.latest == rec(5, 1)


def test_a_first_record_after_a_pending_snapshot_that_is_not_seq_1_is_a_gap() -> None:
    state = live(5, None)
    assert state.on_update(rec(5, 2)) == GAP
    assert state.awaiting


def test_a_record_of_a_newer_epoch_waits_for_the_directory() -> None:
    state = live(5, rec(5, 7))
    assert state.on_update(rec(6, 1)) == HELD
    assert state.latest == rec(5, 7)
    assert state.set_epoch(6), "a new owner needs a snapshot"
    assert state.on_snapshot(rec(6, 1))
    assert state.latest == rec(6, 1)


def test_replay_stops_at_a_gap_and_keeps_the_rest() -> None:
    state = MarketState(5)
    for seq in (3, 4, 6, 7):
        state.on_update(rec(5, seq))
    assert state.on_snapshot(rec(5, 2))
    assert state.latest == rec(5, 4)
    assert state.awaiting, "seq 5 is missing: a new snapshot is needed"
    assert [r.seq for r in state.held] == [6, 7]
    assert state.on_snapshot(rec(5, 5))
    assert state.latest == rec(5, 7) and not state.awaiting


def test_a_snapshot_from_an_older_owner_is_ignored() -> None:
    state = live(6, rec(6, 2))
    assert not state.on_snapshot(rec(5, 9))
    assert state.latest == rec(6, 2)


def test_a_snapshot_older_than_what_is_applied_leaves_latest_alone() -> None:
    state = live(5, rec(5, 8))
    assert not state.on_snapshot(rec(5, 6))
    assert state.latest == rec(5, 8)


def test_a_directory_epoch_that_is_not_newer_changes_nothing() -> None:
    state = live(5, rec(5, 2))
    assert not state.set_epoch(5)
    assert not state.set_epoch(4)
    assert state.epoch == 5 and not state.awaiting


def test_a_new_owners_first_record_held_before_the_directory_knew_it_is_not_lost() -> None:
    """The previous owner had published nothing (pending snapshot); the new owner's seq 1 arrives
    before the directory names it. Once the directory does, that record must not be stranded."""
    state = live(5, None)
    assert state.on_update(rec(6, 1)) == HELD
    state.set_epoch(6)
    if state.awaiting:
        state.on_snapshot(rec(6, 1))  # what the new owner's snapshot service answers
    assert state.latest == rec(6, 1) and not state.awaiting
    assert state.on_update(rec(6, 2)) == APPLIED


# -- the model -----------------------------------------------------------------------------


@dataclass
class Owner:
    """One ownership of the market: the records it published, and those still on the bus."""

    epoch: int
    published: list[MarketPrice] = field(default_factory=list)
    in_flight: deque[MarketPrice] = field(default_factory=deque)

    def publish(self) -> None:
        record = rec(self.epoch, len(self.published) + 1)
        self.published.append(record)
        self.in_flight.append(record)

    @property
    def latest(self) -> MarketPrice | None:
        return self.published[-1] if self.published else None


def order(record: MarketPrice) -> tuple[int, int]:
    return record.epoch, record.seq


class CloneOrdering(RuleBasedStateMachine):
    """See the module docstring. `lost` holds (epoch, seq) of every record the bus dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.owners = [Owner(1)]
        self.state = MarketState()
        self.snapshots: list[tuple[int, MarketPrice | None]] = []
        self.lost: set[tuple[int, int]] = set()
        self.high: tuple[int, int] = (0, 0)
        self.directory(1)

    # -- the world ------------------------------------------------------------------------

    def pick(self, which: int) -> Owner:
        """The newest owner, its predecessor or the one before: where the races are."""
        return self.owners[-min(which, len(self.owners))]

    @rule(step=st.integers(1, 3))
    def new_owner(self, step: int) -> None:
        self.owners.append(Owner(self.owners[-1].epoch + step))

    @precondition(lambda self: sum(len(o.published) for o in self.owners) < 200)
    @rule(which=st.integers(1, 3), count=st.integers(1, 4))
    def publish(self, which: int, count: int) -> None:
        owner = self.pick(which)
        for _ in range(count):
            owner.publish()

    @rule(which=st.integers(1, 3), fate=st.sampled_from(["deliver", "drop", "duplicate"]))
    def bus(self, which: int, fate: str) -> None:
        owner = self.pick(which)
        if not owner.in_flight:
            return
        record = owner.in_flight.popleft()
        if fate == "drop":
            self.lost.add(order(record))
            return
        self.deliver(record)
        if fate == "duplicate":
            assert self.deliver(record) in (DUPLICATE, HELD, ZOMBIE)

    @rule(which=st.integers(1, 3))
    def directory(self, which: int) -> None:
        """The broker names an owner (directories only move forward; an older one is ignored)."""
        self.state.set_epoch(self.pick(which).epoch)

    @rule(which=st.integers(1, 3))
    def take_snapshot(self, which: int) -> None:
        """An owner's snapshot service answers now; the answer travels for a while."""
        owner = self.pick(which)
        self.snapshots.append((owner.epoch, owner.latest))

    @precondition(lambda self: self.snapshots)
    @rule(which=st.integers(0, 7))
    def deliver_snapshot(self, which: int) -> None:
        epoch, record = self.snapshots.pop(which % len(self.snapshots))
        self.apply_snapshot(epoch, record)

    @rule()
    def settle(self) -> None:
        """The directory names the newest owner, the bus delivers everything left without loss,
        and that owner's snapshot arrives: the market must then show exactly its latest record."""
        current = self.owners[-1]
        self.state.set_epoch(current.epoch)
        for owner in self.owners:
            while owner.in_flight:
                self.deliver(owner.in_flight.popleft())
        self.apply_snapshot(current.epoch, current.latest)
        assert not self.state.awaiting
        assert self.state.latest == current.latest

    # -- the subscriber, as PriceSubscriber drives MarketState ------------------------------

    def deliver(self, record: MarketPrice) -> str:
        state = self.state
        before, awaiting, epoch = state.latest, state.awaiting, state.epoch
        outcome = state.on_update(record)
        if record.epoch < epoch:
            assert outcome == ZOMBIE
        elif record.epoch > epoch or awaiting:
            assert outcome == HELD
        else:
            base = before.seq if before is not None else 0
            missing = {(record.epoch, seq) for seq in range(base + 1, record.seq)}
            if record.seq <= base:
                assert outcome == DUPLICATE
            elif missing & self.lost:
                assert outcome == GAP, "a lost record must be noticed"
            else:
                assert outcome == APPLIED, f"nothing was lost before seq {record.seq}, yet {outcome}"
                assert state.latest == record
        if outcome != APPLIED:
            assert state.latest == before
        return outcome

    def apply_snapshot(self, epoch: int, record: MarketPrice | None) -> None:
        if record is not None:
            self.state.on_snapshot(record)
        elif self.state.awaiting and epoch == self.state.epoch:
            self.state.on_snapshot(None)  # a `pending` entry of the current owner

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def latest_only_moves_forward(self) -> None:
        latest = self.state.latest
        if latest is None:
            assert self.high < (self.state.epoch, 0), "latest may only be cleared by a newer owner"
            return
        assert order(latest) >= self.high
        self.high = order(latest)

    @invariant()
    def what_is_shown_belongs_to_the_current_owner(self) -> None:
        state = self.state
        if state.latest is not None:
            assert state.latest.epoch <= state.epoch
            assert state.latest in self.owners_by_epoch()[state.latest.epoch].published
        if not state.awaiting:
            assert state.latest is None or state.latest.epoch == state.epoch
            assert all(r.epoch != state.epoch for r in state.held), "a record is stranded in `held`"

    def owners_by_epoch(self) -> dict[int, Owner]:
        return {o.epoch: o for o in self.owners}


CloneOrdering.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_clone_ordering = CloneOrdering.TestCase
