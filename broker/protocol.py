"""The control protocol between broker, workers, shards and tools: one module both sides import.

Every control message is one ZeroMQ frame holding a MessagePack map with a type
(`"t"`) and a protocol version (`"v"`). Maps rather than positional arrays: control
traffic is a few messages a second, so self-describing fields cost nothing and let
an operator read a capture. Decoding validates every field it hands out and raises
`ProtocolError` naming the problem, so a malformed or hostile message is counted
and dropped by the receiver instead of reaching its state.

Sockets (all loopback ipc/tcp unless configured otherwise):
  broker ROUTER  <-  worker DEALER (identity = worker id), shard DEALER (identity =
                     shard id), tool DEALER (random identity)
  worker PUB     ->  shard SUB / tail SUB: `[topic, MarketPrice payload]`
  worker ROUTER  <-  shard DEALER: snapshot requests (the clone pattern)
  shard PUB      ->  tail SUB: `[game topic, signal payload]`

Messages:
  worker -> broker  REGISTER  worker id, endpoints, capacity, venues, markets owned
                              (with epochs: how a restarted broker rebuilds)
                    HEARTBEAT worker id, counters
  broker -> worker  ASSIGN    the worker's complete market set with epochs, version
                    REREGISTER the broker does not know this worker (restart, or it
                              was declared dead): register again
                    ACK       broker liveness (answers every heartbeat)
  shard -> broker   HELLO     shard id, signal endpoint, fixed games (or none: the
                              broker spreads games over shards), counters; also its
                              heartbeat
  broker -> shard   DIRECTORY version, workers' endpoints, market -> (worker, epoch),
                              the shard's games
  tool -> broker    STATUS_REQUEST / DIRECTORY_REQUEST -> STATUS / DIRECTORY (all games)
  shard -> worker   SNAPSHOT_REQUEST request id, market keys (empty: all)
  worker -> shard   SNAPSHOT  request id, list of encoded MarketPrice payloads, the
                              worker's epoch view
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from markets.models import Platform

PROTOCOL_VERSION = 1
MAX_CONTROL_BYTES = 16 * 1024 * 1024
"""Bound on one control frame (ZeroMQ MAXMSGSIZE on every control socket)."""

REGISTER = "register"
HEARTBEAT = "heartbeat"
ASSIGN = "assign"
REREGISTER = "reregister"
ACK = "ack"
HELLO = "hello"
DIRECTORY = "directory"
STATUS_REQUEST = "status_request"
STATUS = "status"
DIRECTORY_REQUEST = "directory_request"
SNAPSHOT_REQUEST = "snapshot_request"
SNAPSHOT = "snapshot"
ERROR = "error"

MESSAGE_TYPES = frozenset({REGISTER, HEARTBEAT, ASSIGN, REREGISTER, ACK, HELLO, DIRECTORY, STATUS_REQUEST,
                           STATUS, DIRECTORY_REQUEST, SNAPSHOT_REQUEST, SNAPSHOT, ERROR})

MarketKey = tuple[Platform, str]
"""A market across venues: (venue, the venue's market id)."""


class ProtocolError(ValueError):
    """A control message that is not one this protocol version understands."""


def market_key(venue: Platform | str, market_id: str) -> MarketKey:
    """ValueError for an unknown venue or a market id that is not a string (keys are hashed: a list would raise)."""
    if not isinstance(market_id, str):
        raise ValueError(f"market id must be a string, got {type(market_id).__name__}")
    return Platform(venue), market_id


def key_text(key: MarketKey) -> str:
    """`venue/market_id`: how a market is named in logs, status and JSON."""
    return f"{key[0].value}/{key[1]}"


def encode(kind: str, **fields: Any) -> bytes:
    """One control frame."""
    if kind not in MESSAGE_TYPES:
        raise ValueError(f"unknown control message type {kind!r}")
    return msgpack.packb({"t": kind, "v": PROTOCOL_VERSION, **fields}, use_bin_type=True)


def decode(frame: bytes) -> Message:
    """Parse one control frame into a `Message`; raise ProtocolError naming what is wrong."""
    if len(frame) > MAX_CONTROL_BYTES:
        raise ProtocolError(f"control frame of {len(frame)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"malformed control frame: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"control frame must be a map, got {type(body).__name__}")
    version = body.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise ProtocolError(f"control protocol version {version!r} is not {PROTOCOL_VERSION}")
    kind = body.get("t")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown control message type {kind!r:.60}")
    return Message(kind, body)


@dataclass(frozen=True)
class Message:
    """A decoded control message; the typed getters validate as they read."""

    kind: str
    body: Mapping[str, Any]

    def text(self, name: str, *, optional: bool = False, limit: int = 1024) -> str:
        value = self.body.get(name)
        if value is None and optional:
            return ""
        if not isinstance(value, str) or not value or len(value) > limit:
            raise ProtocolError(f"{self.kind}: field {name!r} must be a non-empty string, got {value!r:.80}")
        return value

    def integer(self, name: str, *, minimum: int = 0, default: int | None = None) -> int:
        value = self.body.get(name, default)
        if type(value) is not int or value < minimum:
            raise ProtocolError(f"{self.kind}: field {name!r} must be an integer >= {minimum}, got {value!r:.80}")
        return value

    def mapping(self, name: str) -> Mapping[str, Any]:
        value = self.body.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ProtocolError(f"{self.kind}: field {name!r} must be a map with string keys")
        return value

    def sequence(self, name: str, *, optional: bool = False) -> list[Any] | None:
        value = self.body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, list):
            raise ProtocolError(f"{self.kind}: field {name!r} must be a list, got {type(value).__name__}")
        return value

    def strings(self, name: str, *, optional: bool = False) -> list[str] | None:
        values = self.sequence(name, optional=optional)
        if values is None:
            return None
        if not all(isinstance(v, str) and v for v in values):
            raise ProtocolError(f"{self.kind}: field {name!r} must be a list of non-empty strings")
        return values

    def owned_markets(self, name: str) -> dict[MarketKey, int]:
        """`[[venue, market_id, epoch], ...]` into {key: epoch}."""
        owned: dict[MarketKey, int] = {}
        for entry in self.sequence(name) or []:
            if not (isinstance(entry, list) and len(entry) == 3):
                raise ProtocolError(f"{self.kind}: {name} entries must be [venue, market_id, epoch]")
            venue, market_id, epoch = entry
            owned[_checked_key(self.kind, venue, market_id)] = _checked_epoch(self.kind, epoch)
        return owned

    def placed_markets(self, name: str) -> dict[MarketKey, tuple[str, int]]:
        """`[[venue, market_id, worker_id, epoch], ...]` into {key: (worker, epoch)}."""
        placed: dict[MarketKey, tuple[str, int]] = {}
        for entry in self.sequence(name) or []:
            if not (isinstance(entry, list) and len(entry) == 4):
                raise ProtocolError(f"{self.kind}: {name} entries must be [venue, market_id, worker, epoch]")
            venue, market_id, worker, epoch = entry
            if not isinstance(worker, str) or not worker:
                raise ProtocolError(f"{self.kind}: worker id must be a non-empty string, got {worker!r:.80}")
            placed[_checked_key(self.kind, venue, market_id)] = (worker, _checked_epoch(self.kind, epoch))
        return placed


def owned_wire(owned: Mapping[MarketKey, int]) -> list[list[Any]]:
    return [[venue.value, market_id, epoch] for (venue, market_id), epoch in owned.items()]


def placed_wire(placed: Mapping[MarketKey, tuple[str, int]]) -> list[list[Any]]:
    return [[venue.value, market_id, worker, epoch] for (venue, market_id), (worker, epoch) in placed.items()]


def _checked_key(kind: str, venue: object, market_id: object) -> MarketKey:
    try:
        platform = Platform(venue)
    except ValueError:
        raise ProtocolError(f"{kind}: unknown venue {venue!r:.40}") from None
    if not isinstance(market_id, str) or not market_id or "|" in market_id or len(market_id) > 256:
        raise ProtocolError(f"{kind}: bad market id {market_id!r:.80}")
    return platform, market_id


def _checked_epoch(kind: str, epoch: object) -> int:
    if type(epoch) is not int or epoch < 1 or epoch >= 1 << 63:
        raise ProtocolError(f"{kind}: epoch must be a positive integer, got {epoch!r:.40}")
    return epoch
