"""The fair-value record and its topic (`shard.fair_feed`): round trips, and every
malformed record refused with a FairFeedError that names the problem."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shard.fair_feed import (SCHEMA_VERSION, TOPIC_PREFIX, FairFeedError, FairValue, decode_fair,
                             encode_fair, fair_topic)

game_ids = st.text(min_size=1, max_size=40).filter(lambda text: "|" not in text)


@given(game_ids, st.floats(min_value=0.0, max_value=1.0), st.integers(min_value=0, max_value=2**63 - 1),
       st.text(max_size=10))
def test_every_valid_record_round_trips(game_id: str, fair: float, ts_ns: int, source: str) -> None:
    value = FairValue(game_id, fair, ts_ns, source)
    assert decode_fair(encode_fair(value)) == value


@given(game_ids, game_ids)
def test_one_games_topic_never_prefixes_anothers(one: str, other: str) -> None:
    """ZeroMQ subscriptions match by prefix; the terminator makes a topic match only itself."""
    if one != other:
        assert not fair_topic(other).startswith(fair_topic(one))
    assert fair_topic(one).startswith(TOPIC_PREFIX)


def test_topic_shape() -> None:
    assert fair_topic("nba-20261103-phi-phx") == b"fair/nba-20261103-phi-phx|"


@pytest.mark.parametrize(("value", "problem"), [
    (FairValue("", 0.5, 1, "sim"), "game id"),
    (FairValue("a|b", 0.5, 1, "sim"), "game id"),
    (FairValue("g", 1.5, 1, "sim"), "fair must be a probability"),
    (FairValue("g", -0.1, 1, "sim"), "fair must be a probability"),
    (FairValue("g", math.nan, 1, "sim"), "fair must be a probability"),
    (FairValue("g", True, 1, "sim"), "fair must be a probability"),
    (FairValue("g", 0.5, -1, "sim"), "ts_ns"),
    (FairValue("g", 0.5, 1.0, "sim"), "ts_ns"),  # type: ignore[arg-type]
    (FairValue("g", 0.5, 1, None), "source"),  # type: ignore[arg-type]
])
def test_a_bad_record_is_refused_at_both_ends(value: FairValue, problem: str) -> None:
    with pytest.raises(FairFeedError, match=problem):
        encode_fair(value)
    with pytest.raises(FairFeedError, match=problem):
        decode_fair(msgpack.packb([SCHEMA_VERSION, *value]))


@pytest.mark.parametrize(("payload", "problem"), [
    (b"\xc1", "malformed"),
    (msgpack.packb({"game_id": "g"}), "must be an array"),
    (msgpack.packb([]), "must be an array"),
    (msgpack.packb([SCHEMA_VERSION + 1, "g", 0.5, 1, "sim"]), "schema version"),
    (msgpack.packb([SCHEMA_VERSION, "g", 0.5, 1]), "has 3 fields, expected 4"),
])
def test_a_payload_of_another_shape_is_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(FairFeedError, match=problem):
        decode_fair(payload)


def test_the_error_is_a_value_error_for_consumers_that_catch_broadly() -> None:
    assert issubclass(FairFeedError, ValueError)
    with pytest.raises(FairFeedError):
        fair_topic("")
