"""Polymarket market-channel wire text: prices, sizes, hashes and event payloads.

The simulator keeps books in integer ticks of $0.0001 (YES scale) and sizes in
integer hundredths of a share; this module is the only place that turns those into
the venue's strings, so every quirk a client must survive lives here: prices are
minimal decimal strings (``"0.5"``, ``"0.031"``), some `book` frames drop the leading
zero exactly as the docs example does (``".48"``), sizes carry no trailing zeros
(``"70281.2"``), timestamps are millisecond strings, and an empty side in
``best_bid``/``best_ask`` is ``"0"``/``"1"``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from markets.models import TICKS_PER_DOLLAR, format_fixed, format_price

SIZE_PLACES = 2
"""Ladder sizes are hundredths of a share."""

TICK_CENT = 100
TICK_DECI_CENT = 10
TICK_SIZE_TEXT = {TICK_CENT: "0.01", TICK_DECI_CENT: "0.001"}

EMPTY_BID = "0"
EMPTY_ASK = "1"


def _minimal(fixed: str) -> str:
    """Drop the trailing zeros of a fixed-point string, and the point if nothing follows it."""
    return fixed.rstrip("0").rstrip(".")


def _spell(ticks: int) -> str:
    return _minimal(format_price(min(max(ticks, 0), TICKS_PER_DOLLAR)))


# Every price is one of 10 001 strings; spelling them once keeps formatting off the
# per-entry path (each price_change entry carries three prices).
_PRICE_TEXT = [_spell(ticks) for ticks in range(TICKS_PER_DOLLAR + 1)]
_BARE_PRICE_TEXT = [text[1:] if text.startswith("0.") else text for text in _PRICE_TEXT]


def price_text(ticks: int) -> str:
    """Minimal decimal string of a price in ticks: 5000 -> "0.5", 310 -> "0.031"."""
    return _PRICE_TEXT[ticks] if 0 <= ticks <= TICKS_PER_DOLLAR else _spell(ticks)


def bare_price_text(ticks: int) -> str:
    """The docs-example spelling without the leading zero: 4800 -> ".48"."""
    return _BARE_PRICE_TEXT[ticks] if 0 <= ticks <= TICKS_PER_DOLLAR else _spell(ticks)


def padded_price_text(ticks: int, tick: int) -> str:
    """Price padded to the grid's decimals, as `last_trade_price` is sent ("0.920").

    Never rounds: a trade made on a finer grid keeps its extra digit ("0.045").
    """
    whole, _, frac = price_text(ticks).partition(".")
    places = 2 if tick >= TICK_CENT else 3
    return f"{whole}.{frac.ljust(places, '0')}"


def size_text(hundredths: int) -> str:
    """Share count without trailing zeros: 7477 -> "74.77", 20000 -> "200"."""
    return _minimal(format_fixed(hundredths, SIZE_PLACES))


def now_ms_text() -> str:
    return str(time.time_ns() // 1_000_000)


def mirror_price(ticks: int) -> int:
    """A YES level at p is the same liquidity as a NO level at 1 - p."""
    return TICKS_PER_DOLLAR - ticks


class HashMint:
    """Unique 40-hex-character hashes (SHA-1 shaped, no ``0x``), one per entry/book.

    The venue's per-entry hash identifies the order that caused a change; the
    simulator needs uniqueness (the SendLog key) and a realistic look. An odd
    multiplier modulo 2**160 is a bijection, so successive counters map to distinct,
    scattered-looking values without hashing anything on the hot path.
    """

    __slots__ = ("_offset", "_counter")

    _MULTIPLIER = int(hashlib.sha1(b"arbees-sim-polymarket").hexdigest(), 16) | 1
    _MASK = (1 << 160) - 1

    def __init__(self, salt: str) -> None:
        self._offset = int(hashlib.sha1(salt.encode()).hexdigest(), 16)
        self._counter = 0

    def next(self) -> str:
        self._counter += 1
        return f"{(self._counter * self._MULTIPLIER + self._offset) & self._MASK:040x}"


def levels_worst_to_best(
    levels: Mapping[int, int], *, bids: bool, bare: bool = False
) -> list[dict[str, str]]:
    """Levels in the venue's order: bids ascending, asks descending (best last)."""
    fmt = bare_price_text if bare else price_text
    return [
        {"price": fmt(price), "size": size_text(levels[price])}
        for price in sorted(levels, reverse=not bids)
    ]


def book_event(
    *,
    market: str,
    asset_id: str,
    bids: Mapping[int, int],
    asks: Mapping[int, int],
    timestamp: str,
    hash_: str,
    last_trade_price: str | None,
    bare: bool,
) -> dict[str, Any]:
    """A `book` object with the fields of the AsyncAPI schema and of a recorded frame.

    No `tick_size`: it belongs to the REST `/book` summary, not to the WS event,
    so a client learns a tick change only from `tick_size_change` (or REST).
    """
    event: dict[str, Any] = {
        "market": market,
        "asset_id": asset_id,
        "timestamp": timestamp,
        "hash": hash_,
        "bids": levels_worst_to_best(bids, bids=True, bare=bare),
        "asks": levels_worst_to_best(asks, bids=False, bare=bare),
        "event_type": "book",
    }
    if last_trade_price is not None:
        event["last_trade_price"] = last_trade_price
    return event


def top_text(best_bid: int | None, best_ask: int | None) -> tuple[str, str]:
    return (
        EMPTY_BID if best_bid is None else price_text(best_bid),
        EMPTY_ASK if best_ask is None else price_text(best_ask),
    )


def price_change_entry(
    *,
    asset_id: str,
    price: int,
    size: int,
    buy: bool,
    hash_: str,
    best_bid: int | None,
    best_ask: int | None,
) -> dict[str, str]:
    bid_text, ask_text = top_text(best_bid, best_ask)
    return {
        "asset_id": asset_id,
        "price": price_text(price),
        "size": size_text(size),
        "side": "BUY" if buy else "SELL",
        "hash": hash_,
        "best_bid": bid_text,
        "best_ask": ask_text,
    }


def price_change_event(
    market: str, entries: Iterable[dict[str, str]], timestamp: str
) -> dict[str, Any]:
    return {
        "market": market,
        "price_changes": list(entries),
        "timestamp": timestamp,
        "event_type": "price_change",
    }


def last_trade_event(
    *, market: str, asset_id: str, price: int, size: int, buy: bool, timestamp: str
) -> dict[str, str]:
    return {
        "asset_id": asset_id,
        "event_type": "last_trade_price",
        "fee_rate_bps": "0",
        "market": market,
        "price": price_text(price),
        "side": "BUY" if buy else "SELL",
        "size": size_text(size),
        "timestamp": timestamp,
    }


def tick_size_change_event(
    *, market: str, asset_id: str, old_tick: int, new_tick: int, timestamp: str
) -> dict[str, str]:
    return {
        "event_type": "tick_size_change",
        "asset_id": asset_id,
        "market": market,
        "old_tick_size": TICK_SIZE_TEXT[old_tick],
        "new_tick_size": TICK_SIZE_TEXT[new_tick],
        "timestamp": timestamp,
    }


def best_bid_ask_event(
    *, market: str, asset_id: str, best_bid: int | None, best_ask: int | None, timestamp: str
) -> dict[str, str]:
    """`best_bid_ask` (custom features only): top of one token after a change."""
    bid_text, ask_text = top_text(best_bid, best_ask)
    # An empty side counts as the edge of the price range (bid 0, ask 1).
    spread = price_text((TICKS_PER_DOLLAR if best_ask is None else best_ask) - (best_bid or 0))
    return {
        "event_type": "best_bid_ask",
        "market": market,
        "asset_id": asset_id,
        "best_bid": bid_text,
        "best_ask": ask_text,
        "spread": spread,
        "timestamp": timestamp,
    }
