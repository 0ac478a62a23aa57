"""What a client may send on `/ws/market`, parsed into commands.

The venue's vocabulary is tiny: the text `PING`, one initial
`{"assets_ids": [...], "type": "market", ...}` message, and later
`{"assets_ids": [...], "operation": "subscribe"|"unsubscribe"}` updates. Anything
else is answered with the venue's terse `INVALID OPERATION`; the parser still
names the exact problem so the simulator can log it for whoever is debugging a
client.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

PING = "PING"
PONG = "PONG"
INVALID_OPERATION = "INVALID OPERATION"
NO_NEW_ASSETS = "NO NEW ASSETS"

LEVELS = (1, 2, 3)


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Subscribe:
    """The initial message (`initial=True`) or a dynamic `operation: subscribe`."""

    assets: tuple[str, ...]
    initial: bool
    initial_dump: bool
    custom_features: bool | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    assets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str


Command = Ping | Subscribe | Unsubscribe | Invalid


def parse_client_text(text: str) -> Command:
    """Classify one text frame from a client; never raises."""
    if text == PING:
        return Ping()
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Invalid(f"neither PING nor JSON ({exc}): {text[:80]!r}")
    if not isinstance(message, dict):
        return Invalid(f"expected a JSON object, got {type(message).__name__}")
    assets = message.get("assets_ids")
    if not isinstance(assets, list) or not all(isinstance(a, str) for a in assets):
        return Invalid(f"assets_ids must be a list of token id strings, got {assets!r:.80}")
    problem = _check_options(message)
    if problem:
        return Invalid(problem)
    unique = tuple(dict.fromkeys(assets))
    custom = message.get("custom_feature_enabled")
    custom_features = custom if isinstance(custom, bool) else None
    if "operation" in message:
        operation = message["operation"]
        if operation == "subscribe":
            return Subscribe(unique, initial=False, initial_dump=bool(message.get("initial_dump", True)),
                             custom_features=custom_features)
        if operation == "unsubscribe":
            return Unsubscribe(unique)
        return Invalid(f"operation must be 'subscribe' or 'unsubscribe', got {operation!r}")
    channel = message.get("type")
    if isinstance(channel, str) and channel.lower() == "market":
        return Subscribe(unique, initial=True, initial_dump=bool(message.get("initial_dump", True)),
                         custom_features=custom_features)
    return Invalid(f"expected type 'market' or an operation, got type {channel!r}")


def _check_options(message: dict[str, object]) -> str | None:
    for name in ("initial_dump", "custom_feature_enabled"):
        if name in message and not isinstance(message[name], bool):
            return f"{name} must be a boolean, got {message[name]!r}"
    level = message.get("level", 2)
    if isinstance(level, bool) or level not in LEVELS:
        return f"level must be 1, 2 or 3, got {level!r}"
    return None
