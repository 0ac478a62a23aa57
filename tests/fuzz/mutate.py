"""Seeded frame mutation: what a broken or hostile venue sends instead of a valid frame.

Every mutation makes the frame *detectably* wrong for a client that checks what it
reads: a value no field may hold (no number a price, size or delta could take, so a
mutated frame never passes for a different valid update), a missing or mistyped key,
an id that is not an integer, an unknown or unhashable type, a market nobody
subscribed, broken JSON. A mutation that turned one valid update into another valid
one could not be caught by any client (only the venue knows its book), so there is
none here; the crossing injection in the venue harnesses covers valid-looking but
impossible books.

`ARBEES_FUZZ_FRAMES` sets how many frames each venue's fuzz test sends (10,000 by
default, a few seconds), `ARBEES_FUZZ_SEED` the seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import orjson

FRAMES = int(os.environ.get("ARBEES_FUZZ_FRAMES", "10000"))
SEED = int(os.environ.get("ARBEES_FUZZ_SEED", "0"))

HOSTILE: tuple[Any, ...] = (
    None, True, False, "", " ", {}, [[]], [1, 2, 3], {"value": "1"}, "nan", "NaN", "inf", "-inf",
    "1e999999999", "-1e999999999", "1E+400", "0.5e1000000000000000000", "9" * 40, "1" * 5000,
    "١٢", "0x10", "--1", "0.5.5", "YES", "BUY ", "\u00a0", 1e308, -1e308, 1.5e300,
)
"""Values that are wrong for every field a client reads (prices, sizes, deltas, sides,
ids, tickers, sequence numbers): none is a finite number in range or a known word.
(No ``[]``: an empty array is a valid, empty, book side.)"""

BAD_IDS: tuple[Any, ...] = (True, False, 1.0, 2.0, "1", None, [1], {"sid": 1}, 0, -1, 1e20, -2**63)
"""Command ids and sids that must not be taken for a real one: JSON true and 1.0 equal
1 in Python, and a list or object is unhashable."""

BAD_TYPES: tuple[Any, ...] = (["orderbook_delta"], {"t": 1}, 1, 1.0, True, None, "", "orderbook_deltx",
                              "BOOK", "price_changes")


class Mutator:
    """Picks and applies one mutation; `counts` records how often each kind was used."""

    def __init__(self, rng: random.Random, foreign_ids: tuple[str, ...]) -> None:
        self.rng = rng
        self.foreign_ids = foreign_ids
        self.counts: dict[str, int] = {}
        self._kinds: list[tuple[str, Callable[[Any], str]]] = [
            ("replace_value", self._replace_value),
            ("delete_key", self._delete_key),
            ("bad_type", self._bad_type),
            ("bad_id", self._bad_id),
            ("foreign_market", self._foreign_market),
            ("truncate", self._truncate),
            ("garbage", self._garbage),
            ("not_an_object", self._not_an_object),
        ]

    def mutate(self, frame: Any) -> str:
        """The text of a mutated copy of `frame` (a decoded JSON value).

        A stray byte can rename a key whose absence is legal (an empty snapshot
        side), which makes another valid frame; such a draw is discarded."""
        while True:
            kind, mutation = self.rng.choice(self._kinds)
            text = mutation(orjson.loads(orjson.dumps(frame)))
            if not _loses_optional_key(frame, text):
                self.counts[kind] = self.counts.get(kind, 0) + 1
                return text

    # -- mutations -------------------------------------------------------------------

    def _replace_value(self, frame: Any) -> str:
        holder, key = self._pick_slot(frame, lambda k: k not in _IGNORED_KEYS)
        if holder is not None:
            holder[key] = self.rng.choice(HOSTILE)
        return _dumps(frame)

    def _delete_key(self, frame: Any) -> str:
        holder, key = self._pick_slot(frame, lambda k: isinstance(k, str) and k not in _OPTIONAL_KEYS)
        if isinstance(holder, dict):
            del holder[key]
        return _dumps(frame)

    def _bad_type(self, frame: Any) -> str:
        target = _first_dict(frame)
        if target is not None:
            target["event_type" if "event_type" in target else "type"] = self.rng.choice(BAD_TYPES)
        return _dumps(frame)

    def _bad_id(self, frame: Any) -> str:
        holder, key = self._pick_slot(frame, lambda k: k in ("sid", "seq", "id"))
        if holder is None:
            return self._replace_value(frame)
        holder[key] = self.rng.choice(BAD_IDS)
        return _dumps(frame)

    def _foreign_market(self, frame: Any) -> str:
        holder, key = self._pick_slot(frame, lambda k: k in ("market_ticker", "asset_id", "assets_ids"))
        if holder is None:
            return self._replace_value(frame)
        holder[key] = self.rng.choice(self.foreign_ids)
        return _dumps(frame)

    def _truncate(self, frame: Any) -> str:
        text = _dumps(frame)
        return text[: self.rng.randrange(1, max(2, len(text)))]

    def _garbage(self, frame: Any) -> str:
        text = _dumps(frame)
        at = self.rng.randrange(len(text))
        return text[:at] + self.rng.choice(("\x00", "}", "{", '"', ",", "\\", "\ufffd", "]")) + text[at + 1:]

    def _not_an_object(self, frame: Any) -> str:
        return self.rng.choice(('42', '"orderbook_delta"', 'null', 'true', '[[1]]', 'PONG!', '', ' '))

    # -- helpers -----------------------------------------------------------------------

    def _pick_slot(self, frame: Any, accept: Callable[[Any], bool]) -> tuple[Any, Any]:
        """A random (container, key) pair in the tree whose key `accept`s; (None, None) if none."""
        slots: list[tuple[Any, Any]] = []
        stack = [frame]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, value in items:
                if accept(key):
                    slots.append((node, key))
                if isinstance(value, (dict, list)):
                    stack.append(value)
        return self.rng.choice(slots) if slots else (None, None)


_IGNORED_KEYS = frozenset({"market_id", "hash", "market", "fee_rate_bps", "trade_id", "sending_ts_ms",
                           "ts_ms", "timestamp", "count_fp", "taker_side", "ts", "spread", "code"})
"""Keys a client reads as metadata or not at all: a bad value there loses no update
(a bad stamp is counted and dropped, the data still applies), so replacing one is
not the kind of mutation this module makes."""

_OPTIONAL_KEYS = _IGNORED_KEYS | {"yes_dollars_fp", "no_dollars_fp", "last_trade_price", "tick_size",
                                  "old_tick_size", "best_bid", "best_ask", "price_dollars"}
"""Keys whose absence is legal (an empty snapshot side, an unchecked best price, a
ticker without a price): deleting them yields another valid frame."""


_READ_KEYS = frozenset({
    "type", "sid", "seq", "id", "msg", "channel", "market_ticker", "price_dollars", "yes_price_dollars",
    "delta_fp", "side", "yes_dollars_fp", "no_dollars_fp", "event_type", "asset_id", "assets_ids", "bids",
    "asks", "price", "size", "price_changes", "new_tick_size", "old_tick_size", "tick_size", "last_trade_price",
    "best_bid", "best_ask"})
"""Keys one of the clients reads; an unknown key is legal (venues add fields) and ignored."""
CHECK_KEYS = frozenset({"best_bid", "best_ask"})
"""A `price_change` entry's post-change top: a check the client reads on a token's last
entry only, so a bad one elsewhere loses nothing and need not be counted (but the
frame proves nothing about the book either)."""


def changes_meaning(original: Any, text: str, keys: frozenset[str] = _READ_KEYS) -> bool:
    """Whether the mutated `text` says anything different from `original` in `keys`
    (by default every field a client reads: a stray byte in a `hash` does not count)."""
    try:
        mutated = orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return _meaning(mutated, keys) != _meaning(original, keys)


def changes_data(original: Any, text: str) -> bool:
    """Whether the mutation reaches data a client must read (not only a check field)."""
    return changes_meaning(original, text, _READ_KEYS - CHECK_KEYS)


def _meaning(node: Any, keys: frozenset[str]) -> Any:
    if isinstance(node, dict):
        return {k: _meaning(v, keys) for k, v in node.items() if k in keys}
    if isinstance(node, list):
        return [_meaning(v, keys) for v in node]
    return type(node).__name__, node  # 2.0 == 2 == True in Python; not on the wire


def _loses_optional_key(original: Any, text: str) -> bool:
    try:
        mutated = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return _lost(original, mutated)


def _lost(original: Any, mutated: Any) -> bool:
    if isinstance(original, dict) and isinstance(mutated, dict):
        if any(k in original and k not in mutated for k in _OPTIONAL_KEYS):
            return True
        return any(_lost(v, mutated[k]) for k, v in original.items() if k in mutated)
    if isinstance(original, list) and isinstance(mutated, list):
        return any(_lost(a, b) for a, b in zip(original, mutated, strict=False))  # truncated: shorter
    return False


def _first_dict(frame: Any) -> dict[str, Any] | None:
    if isinstance(frame, dict):
        return frame
    if isinstance(frame, list):
        return next((e for e in frame if isinstance(e, dict)), None)
    return None


def _dumps(frame: Any) -> str:
    return orjson.dumps(frame).decode()
