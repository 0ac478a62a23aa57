"""The shared simulator modules: universe, ladder, faults, send log, demo keys."""

from __future__ import annotations

import random
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from markets.sim.faults import NO_FAULTS, Corruption, FaultPlan, FaultState
from markets.sim.keys import generate_demo_keypair
from markets.sim.ladder import LevelChange, PriceGrid, SimLadder
from markets.sim.sendlog import SendLog, read_send_log
from markets.sim.universe import FAIR_MAX, FAIR_MIN, build_universe


# -- universe ------------------------------------------------------------------------------

def test_universe_is_deterministic_and_well_formed() -> None:
    a, b = build_universe(20, seed=3), build_universe(20, seed=3)
    assert a.markets == b.markets
    assert build_universe(20, seed=4).markets != a.markets
    assert len({m.kalshi_ticker for m in a.markets}) == 20
    assert len({m.game.game_id for m in a.markets}) == 20
    for m in a.markets:
        assert re.fullmatch(r"[A-Z0-9-]+", m.kalshi_ticker)
        assert m.kalshi_ticker.startswith(m.event_ticker + "-")
        assert m.event_ticker.startswith(m.series_ticker + "-")
        assert re.fullmatch(r"0x[0-9a-f]{64}", m.condition_id)
        assert m.yes_token_id.isdigit() and m.no_token_id.isdigit() and m.yes_token_id != m.no_token_id
        assert a.by_token[m.yes_token_id] is m and a.by_token[m.no_token_id] is m
        assert a.by_condition[m.condition_id] is m and a.by_kalshi_ticker[m.kalshi_ticker] is m
        assert FAIR_MIN < a.fair(m.game.game_id) < FAIR_MAX
    assert {m.price_level_structure for m in a.markets} == {"linear_cent", "tapered_deci_cent"}
    assert ("Yes", "No") in {m.outcomes for m in a.markets}
    assert any(m.outcomes != ("Yes", "No") for m in a.markets)


def test_fair_walk_moves_and_stays_in_bounds() -> None:
    universe = build_universe(5, seed=1)
    walk = universe.walk()
    start = {m.game.game_id: universe.fair(m.game.game_id) for m in universe.markets}
    assert start == {game_id: walk.fair(game_id) for game_id in start}
    for _ in range(20_000):
        walk.step()
    for game_id, p in start.items():
        now = walk.fair(game_id)
        assert FAIR_MIN < now < FAIR_MAX and now != p
    assert universe.fair(next(iter(start))) == start[next(iter(start))], "the universe keeps round 0"


def test_every_walk_of_a_universe_agrees_round_by_round() -> None:
    """Two venues' copies of the walk match at equal rounds, however they interleave."""
    universe = build_universe(5, seed=2)
    game_ids = [m.game.game_id for m in universe.markets]
    ahead, behind = universe.walk(), universe.walk()
    for _ in range(30):
        ahead.step()
    for _ in range(30):
        behind.step()
    assert [ahead.fair(g) for g in game_ids] == [behind.fair(g) for g in game_ids]
    assert ahead.rounds == behind.rounds == 30


def test_build_universe_rejects_zero_markets() -> None:
    with pytest.raises(ValueError, match="n_markets"):
        build_universe(0)


# -- ladder ----------------------------------------------------------------------------------

def test_tapered_grid_uses_fine_ticks_in_the_tails() -> None:
    grid = PriceGrid(100, tail_tick=10)
    assert [grid.up(p) for p in (980, 990, 1000, 8900, 9000)] == [990, 1000, 1100, 9000, 9010]
    assert [grid.down(p) for p in (1000, 1100, 9000, 9010)] == [990, 1000, 8900, 9000]
    assert grid.contains(950) and grid.contains(9_990) and not grid.contains(955)
    assert grid.contains(5_500) and not grid.contains(5_550) and not grid.contains(10_000)
    assert grid.floor(5_555) == 5_500 and grid.ceil(5_555) == 5_600 and grid.ceil(955) == 960
    assert grid.ranges() == [(0, 1000, 10), (1000, 9000, 100), (9000, 10_000, 10)]
    with pytest.raises(ValueError):
        PriceGrid(300)


@pytest.mark.parametrize(("tick", "tail", "fair"), [(100, None, 0.5), (100, 10, 0.05),
                                                    (100, 10, 0.95), (10, None, 0.3), (1, None, 0.6)])
def test_ladder_steps_replay_exactly_and_never_cross(tick: int, tail: int | None, fair: float) -> None:
    rng = random.Random(tick + int(fair * 100))
    ladder = SimLadder(tick, rng, fair, tail_tick=tail)
    bids, asks = ladder.snapshot()
    for _ in range(5_000):
        fair = min(max(fair + rng.gauss(0, 0.003), 0.02), 0.98)
        changes = ladder.step(fair)
        assert 1 <= len(changes) <= 3
        for c in changes:
            book = bids if c.side == "bid" else asks
            assert book.get(c.price, 0) == c.old_size and c.new_size >= 0
            if c.new_size:
                book[c.price] = c.new_size
            else:
                del book[c.price]
        assert (bids, asks) == ladder.snapshot()
        assert all(ladder.grid.contains(p) for p in (*bids, *asks))
        if bids and asks:
            assert max(bids) < min(asks)
    assert any(s % 100 for s in (*bids.values(), *asks.values())), "fractional sizes occur"


def test_set_tick_regrids_outward() -> None:
    ladder = SimLadder(10, random.Random(5), 0.42)
    before = ladder.snapshot()
    changes = ladder.set_tick(100)
    bids, asks = ladder.snapshot()
    assert all(p % 100 == 0 for p in (*bids, *asks)) and max(bids) < min(asks)
    assert sum(bids.values()) <= sum(before[0].values())
    replay = {p: s for p, s in before[0].items()}
    for c in changes:
        if c.side == "bid":
            replay[c.price] = c.new_size
    assert {p: s for p, s in replay.items() if s} == bids


def test_clear_side_reports_every_level() -> None:
    ladder = SimLadder(100, random.Random(2), 0.5)
    asks = dict(ladder.asks)
    changes = ladder.clear_side("ask")
    assert not ladder.asks
    assert {c.price: c.old_size for c in changes} == asks
    assert all(c == LevelChange("ask", c.price, asks[c.price], 0) for c in changes)


# -- faults ----------------------------------------------------------------------------------

def test_fault_plan_parse() -> None:
    plan = FaultPlan.parse("drop_after=500, malformed_every=100,snapshot_delay=0.5")
    assert (plan.drop_after, plan.malformed_every, plan.snapshot_delay) == (500, 100, 0.5)
    assert FaultPlan.parse("") == FaultPlan()


@pytest.mark.parametrize(("spec", "named"), [("explode=1", "explode"), ("drop_after=x", "drop_after"),
                                             ("drop_after=0", "drop_after"), ("drop_after", "drop_after"),
                                             ("snapshot_delay=-1", "snapshot_delay"),
                                             ("refuse_handshakes=1.5", "refuse_handshakes")])
def test_fault_plan_parse_errors_name_the_problem(spec: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        FaultPlan.parse(spec)


def test_fault_state_counts_frames_per_connection() -> None:
    plan = FaultPlan(duplicate_every=2, malformed_every=3, drop_after=4)
    a, b = FaultState(plan), FaultState(plan)
    decisions = [a.next_frame() for _ in range(4)]
    assert decisions[0] is NO_FAULTS
    assert decisions[1].duplicate and decisions[2].replace is Corruption.MALFORMED
    assert decisions[3].duplicate and decisions[3].drop_after_send
    assert b.next_frame() is NO_FAULTS  # another connection counts on its own
    stalled = FaultState(FaultPlan(stall_after=1))
    assert stalled.next_frame() is NO_FAULTS
    assert stalled.next_frame().stalled and stalled.next_frame().stalled
    a.reset(FaultPlan())
    assert a.next_frame() is NO_FAULTS


# -- send log and keys -----------------------------------------------------------------------

def test_send_log_ring_and_file(tmp_path: Path) -> None:
    path = tmp_path / "send.tsv"
    log = SendLog(maxlen=3, path=path)
    stamps = [log.stamp("kalshi", "T", f"1:{i}") for i in range(5)]
    assert [r.key for r in log.records()] == ["1:2", "1:3", "1:4"]
    assert log.lookup("1:0") is None
    record = log.lookup("1:4", venue="kalshi")
    assert record is not None and record.send_ns == stamps[4]
    log.close()
    assert [r.key for r in read_send_log(path)] == [f"1:{i}" for i in range(5)]
    assert stamps == sorted(stamps)


def test_demo_keypair_is_private_pkcs8(tmp_path: Path) -> None:
    key_id, path, public_pem = generate_demo_keypair(tmp_path / "keys")
    assert re.fullmatch(r"[0-9a-f-]{36}", key_id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert serialization.load_pem_public_key(public_pem).public_numbers() == key.public_key().public_numbers()
