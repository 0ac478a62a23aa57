"""Market placement (rendezvous hashing with capacities) and ownership epochs: broker/assignment.py.

The broker's promises rest on this table: a join or a leave moves only the
markets it must, a full worker is never given more, and every move fences the old
owner with a strictly higher epoch, also after the broker restarts. The helpers
below drive `Assignment` the way the broker does (`broker.broker.Broker._on_register`
and `_housekeeping`): a join is capacity + `place(unowned)` + `rebalance`, a leave is
`remove_worker` + `place`.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.assignment import Assignment, rank
from broker.protocol import MarketKey
from markets.models import Platform

AMPLE = 1_000_000
INCARNATION = 1_000


def universe(n: int) -> list[MarketKey]:
    """n markets over both venues."""
    return [(Platform.KALSHI if i % 2 else Platform.POLYMARKET, f"M-{i}") for i in range(n)]


def join(table: Assignment, worker: str, markets: list[MarketKey], capacity: int = AMPLE) -> None:
    table.capacity[worker] = capacity
    table.place(table.unowned(markets))
    table.rebalance(markets, worker)


def leave(table: Assignment, worker: str, markets: list[MarketKey]) -> None:
    table.remove_worker(worker)
    table.place(table.unowned(markets))


def built(workers: list[str], markets: list[MarketKey], capacity: int = AMPLE) -> Assignment:
    table = Assignment(incarnation=INCARNATION)
    for worker in workers:
        join(table, worker, markets, capacity)
    return table


def owners(table: Assignment) -> dict[MarketKey, str]:
    return {key: worker for key, (worker, _) in table.owner.items()}


MARKETS = universe(300)


def test_placement_is_deterministic_whatever_the_order_workers_arrive_in() -> None:
    first = built(["w0", "w1", "w2"], MARKETS)
    second = built(["w2", "w0", "w1"], MARKETS)
    assert owners(first) == owners(second)
    assert owners(first) == {key: rank(key, ["w0", "w1", "w2"])[0] for key in MARKETS}
    assert set(owners(first).values()) == {"w0", "w1", "w2"}, "300 markets should spread over every worker"


def test_a_joining_worker_takes_only_markets_it_now_ranks_first_for_and_the_rest_keep_their_epoch() -> None:
    table = built(["w0", "w1"], MARKETS)
    before = dict(table.owner)
    top_epoch = max(epoch for _, epoch in before.values())
    join(table, "w2", MARKETS)
    moved = {key for key in MARKETS if table.owner[key] != before[key]}
    assert moved == set(table.markets_of("w2"))
    assert moved == {key for key in MARKETS if rank(key, ["w0", "w1", "w2"])[0] == "w2"}
    assert 0 < len(moved) < len(MARKETS)
    assert all(table.owner[key][1] > top_epoch for key in moved)
    assert all(table.owner[key] == before[key] for key in set(MARKETS) - moved)


def test_a_leaving_worker_gives_up_only_its_own_markets_each_to_its_runner_up() -> None:
    workers = ["w0", "w1", "w2"]
    table = built(workers, MARKETS)
    before = dict(table.owner)
    top_epoch = max(epoch for _, epoch in before.values())
    leave(table, "w1", MARKETS)
    moved = {key for key in MARKETS if table.owner[key] != before[key]}
    assert moved == {key for key, (worker, _) in before.items() if worker == "w1"}
    for key in moved:
        assert table.owner[key][0] == rank(key, workers)[1]
        assert table.owner[key][1] > top_epoch
    assert "w1" not in table.capacity and not table.markets_of("w1")


def test_capacity_is_respected_and_markets_nobody_has_room_for_stay_unowned() -> None:
    markets = universe(10)
    table = Assignment(incarnation=INCARNATION)
    table.capacity.update({"full": 0, "small": 3, "medium": 4})
    touched = table.place(markets)
    assert touched == {"small", "medium"}
    assert table.load() == {"full": 0, "small": 3, "medium": 4}
    assert len(table.unowned(markets)) == 3
    # A worker with room arriving takes the leftovers; the full one still gets none.
    join(table, "big", markets, capacity=10)
    assert table.unowned(markets) == []
    assert not table.markets_of("full")
    assert all(table.load()[w] <= table.capacity[w] for w in table.capacity)


def test_under_capacity_a_join_moves_markets_only_to_the_joiner() -> None:
    """Regression: rebalancing used to let every worker with freed room pull markets from the others."""
    markets = universe(20)
    capacity = {"w0": 12, "w1": 6, "w2": 0, "w3": 4, "w4": 8, "w5": 7}
    table = Assignment(incarnation=INCARNATION)
    for worker in ("w1", "w5", "w3", "w4", "w2"):
        join(table, worker, markets, capacity[worker])
    before = dict(table.owner)
    join(table, "w0", markets, capacity["w0"])
    changed = {k for k in markets if table.owner.get(k) != before.get(k)}
    assert changed, "w0 should take some markets"
    assert changed == set(table.markets_of("w0"))
    assert all(table.load()[w] <= capacity[w] for w in table.capacity)


def test_a_worker_is_given_only_markets_of_the_venues_it_serves() -> None:
    table = built(["w0"], MARKETS)
    table.venues["kalshi-only"] = frozenset({"kalshi"})
    join(table, "kalshi-only", MARKETS)
    taken = table.markets_of("kalshi-only")
    assert taken and {venue for venue, _ in taken} == {Platform.KALSHI}
    leave(table, "w0", MARKETS)
    assert {venue for venue, _ in table.unowned(MARKETS)} == {Platform.POLYMARKET}
    assert all(key[0] is Platform.KALSHI for key in table.markets_of("kalshi-only"))


def test_every_move_gets_an_epoch_above_all_earlier_ones() -> None:
    table = built(["w0"], MARKETS[:50])
    issued = [epoch for _, epoch in table.owner.values()]
    assert len(set(issued)) == len(issued)
    join(table, "w1", MARKETS[:50])
    leave(table, "w0", MARKETS[:50])
    later = [epoch for _, epoch in table.owner.values()]
    assert min(later) > max(issued)
    assert min(issued) >= INCARNATION << 16


def test_a_restarted_broker_issues_epochs_above_the_previous_one(monkeypatch) -> None:
    clock = iter([5_000_000_000_000_000_000, 5_000_000_001_000_000_000])  # two starts one second apart
    monkeypatch.setattr("broker.assignment.time.time_ns", lambda: next(clock))
    old = Assignment()
    old.capacity.update({"w0": AMPLE, "w1": AMPLE})
    for _ in range(3):  # churn: many epochs issued by the old broker
        old.place(old.unowned(MARKETS))
        old.remove_worker("w1")
        old.capacity["w1"] = AMPLE
    old.place(old.unowned(MARKETS))
    old_top = max(epoch for _, epoch in old.owner.values())

    new = Assignment()
    assert new.incarnation > old.incarnation
    new.capacity.update({"w0": AMPLE, "w1": AMPLE})
    for worker in ("w0", "w1"):
        assert new.adopt(worker, old.markets_of(worker), set(MARKETS)) == set()
    assert new.owner == old.owner, "adopted claims keep their worker and epoch (nothing moves)"
    leave(new, "w1", MARKETS)
    assert all(epoch > old_top for key, (_, epoch) in new.owner.items() if old.owner[key][0] == "w1")


def test_a_move_after_adopting_a_claim_gets_an_epoch_above_that_claim() -> None:
    """Even if the restarted broker's clock is behind the one that issued the claim (a clock step back):
    a new owner with a lower epoch than the old one would have its records dropped as zombies."""
    table = Assignment(incarnation=INCARNATION)
    key = MARKETS[0]
    claimed = (INCARNATION + 5_000) << 16
    table.capacity.update({"w0": AMPLE, "w1": AMPLE})
    assert table.adopt("w0", {key: claimed}, {key}) == set()
    leave(table, "w0", [key])
    assert table.owner[key][0] == "w1"
    assert table.owner[key][1] > claimed


def test_adopt_keeps_claims_in_the_universe_and_refuses_contradicted_or_foreign_ones() -> None:
    table = Assignment(incarnation=INCARNATION)
    a, b, c, outside = universe(4)
    table.owner[b] = ("w1", 500)
    table.owner[c] = ("w1", 100)
    refused = table.adopt("w0", {a: 10, b: 400, c: 200, outside: 10}, {a, b, c})
    assert refused == {b, outside}
    assert table.owner[a] == ("w0", 10)
    assert table.owner[b] == ("w1", 500), "a newer epoch held by another worker wins"
    assert table.owner[c] == ("w0", 200), "an older epoch held by another worker loses"
    assert outside not in table.owner
    # Equal epochs held by someone else cannot be told apart: the holder keeps it.
    assert table.adopt("w2", {a: 10}, {a}) == {a}
    # A worker re-claiming its own market with any epoch keeps it.
    assert table.adopt("w0", {a: 10}, {a}) == set()


# -- properties ----------------------------------------------------------------------------

events = st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=12)
"""(join?, worker number): a join of a worker already present, or a leave of one absent, is skipped."""


def check_table(table: Assignment, markets: list[MarketKey], history: dict[MarketKey, int]) -> None:
    """Owners are live workers within capacity, a market's epoch only ever rises, and a market is
    unowned only when no worker has room."""
    for key, (worker, epoch) in table.owner.items():
        assert worker in table.capacity
        assert epoch >= history.get(key, 0)
        history[key] = epoch
    assert all(table.load()[w] <= table.capacity[w] for w in table.capacity)
    if table.unowned(markets):
        assert all(table.load()[w] == table.capacity[w] for w in table.capacity)


def run_events(table: Assignment, markets: list[MarketKey], plan: list[tuple[bool, int]],
               capacity_of: list[int]) -> None:
    history: dict[MarketKey, int] = {}
    epoch_of = {key: epoch for key, (_, epoch) in table.owner.items()}
    for is_join, number in plan:
        worker = f"w{number}"
        if is_join == (worker in table.capacity):
            continue
        before = dict(table.owner)
        issued_before = max((e for _, e in before.values()), default=0)
        if is_join:
            join(table, worker, markets, capacity_of[number])
            changed = {k for k in table.owner if table.owner[k] != before.get(k)}
            assert changed == set(table.markets_of(worker)), "a join moves (or places) markets to the joiner only"
        else:
            leave(table, worker, markets)
            assert all(table.owner.get(k) == before[k] for k, (w, _) in before.items() if w != worker)
        for key, owned in table.owner.items():
            if owned != before.get(key):
                assert owned[1] > issued_before, "a move must get an epoch above every earlier one"
            else:
                assert owned[1] == epoch_of[key]
            epoch_of[key] = owned[1]
        check_table(table, markets, history)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 40), events)
def test_joins_and_leaves_with_room_move_only_what_they_must(n_markets: int, plan: list[tuple[bool, int]]) -> None:
    run_events(Assignment(incarnation=INCARNATION), universe(n_markets), plan, [AMPLE] * 6)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 40), events, st.lists(st.integers(0, 12), min_size=6, max_size=6))
def test_joins_and_leaves_under_capacity_keep_the_table_sound(n_markets: int, plan: list[tuple[bool, int]],
                                                              capacity_of: list[int]) -> None:
    run_events(Assignment(incarnation=INCARNATION), universe(n_markets), plan, capacity_of)
