"""The fair-value feed's wire: one game's model probability per ZeroMQ message.

A GameShard weighs market prices against a win probability per game, from any
source (the simulators' hidden fair value in the demo, a real model later), so the
record and its topic live here, apart from every producer. Messages are multipart
``[topic, payload]``:

* topic ``fair/{game_id}|`` — terminated like the market topics (markets/codec.py),
  since ZeroMQ matches subscriptions by prefix: without the ``|`` a subscription to
  game ``nba-1`` would also receive ``nba-10``. ``fair/`` alone matches every game.
* payload — a MessagePack array ``[version, game_id, fair, ts_ns, source]``:
  positional and versioned like the price codec, so a consumer built for another
  schema fails loudly rather than misreading fields.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgpack

from markets.codec import TOPIC_TERMINATOR

SCHEMA_VERSION = 1
TOPIC_PREFIX = b"fair/"
"""Subscribe to this to receive every game's fair value."""

_packer = msgpack.Packer(autoreset=True, use_bin_type=True)


class FairFeedError(ValueError):
    """A fair-value record, payload or game id that this schema cannot carry."""


class FairValue(NamedTuple):
    """The probability `fair` that the YES outcome of the game's markets wins.

    `ts_ns` is when the source computed it (`time.time_ns()`), so a consumer can
    refuse a value that is too old; `source` names the producer (e.g. "sim").
    """

    game_id: str
    fair: float
    ts_ns: int
    source: str


def fair_topic(game_id: str) -> bytes:
    """The exact-match topic of one game's fair value."""
    _check_game_id(game_id)
    return TOPIC_PREFIX + f"{game_id}{TOPIC_TERMINATOR}".encode()


def encode_fair(value: FairValue) -> bytes:
    """Serialize a record after checking it, so a bad value fails at its producer."""
    _check(value)
    return _packer.pack((SCHEMA_VERSION, *value))


def decode_fair(payload: bytes) -> FairValue:
    """Deserialize and validate a payload; FairFeedError says what is wrong."""
    try:
        fields = msgpack.unpackb(payload, use_list=False, raw=False)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise FairFeedError(f"malformed fair-value payload: {exc}") from None
    if not isinstance(fields, tuple) or not fields:
        raise FairFeedError(f"fair-value payload must be an array, got {type(fields).__name__}")
    if fields[0] != SCHEMA_VERSION:
        raise FairFeedError(f"fair-value schema version {fields[0]!r} is not {SCHEMA_VERSION}")
    if len(fields) != len(FairValue._fields) + 1:
        raise FairFeedError(f"fair-value payload has {len(fields) - 1} fields, "
                            f"expected {len(FairValue._fields)}")
    value = FairValue(*fields[1:])
    _check(value)
    return value


def _check(value: FairValue) -> None:
    _check_game_id(value.game_id)
    fair = value.fair
    if isinstance(fair, bool) or not isinstance(fair, (int, float)) or not (
            math.isfinite(fair) and 0.0 <= fair <= 1.0):
        raise FairFeedError(f"fair must be a probability in [0, 1], got {fair!r}")
    if isinstance(value.ts_ns, bool) or not isinstance(value.ts_ns, int) or value.ts_ns < 0:
        raise FairFeedError(f"ts_ns must be a non-negative integer, got {value.ts_ns!r}")
    if not isinstance(value.source, str):
        raise FairFeedError(f"source must be a string, got {value.source!r}")


def _check_game_id(game_id: object) -> None:
    if not isinstance(game_id, str) or not game_id or TOPIC_TERMINATOR in game_id:
        raise FairFeedError(f"game id must be a non-empty string without {TOPIC_TERMINATOR!r}, "
                            f"got {game_id!r}")
