"""Exact local order books and the per-venue update rules.

Both venues end up in one shape: a two-sided book on the YES scale, prices in ticks
of $0.0001, sizes in integer fixed-point units. Kalshi sends bids only (YES bids and
NO bids); a NO bid at q is stored as the YES ask it is (1 - q, or q when the
subscription asked for YES-scale NO prices). Polymarket sends a two-sided book per
token.

The best price of each side is cached. A change can only move the top when it
touches a price at or better than the current best, so the top is known after every
update in O(1); the side is rescanned only when its best level is removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from markets.models import (
    KALSHI_SIZE_PLACES,
    POLYMARKET_SIZE_PLACES,
    TICKS_PER_DOLLAR,
    MarketPrice,
    Platform,
    PriceStatus,
    format_fixed,
    parse_fixed,
    parse_price_ticks,
)


class BookError(ValueError):
    """An update the book cannot apply; the book now needs a fresh snapshot."""


class BookNotReady(BookError):
    """A level update arrived for a book that has no valid snapshot."""


class LocalOrderBook:
    """A two-sided YES-scale book with an O(1) top of book.

    `bids` and `asks` map price ticks to size units (10**-size_places of a contract
    or share). A book starts RESYNCING: it is not usable until a snapshot arrives.
    """

    __slots__ = ("platform", "market_id", "size_places", "bids", "asks", "status",
                 "last_trade_ticks", "venue_ts_ms", "_best_bid", "_best_ask")

    def __init__(self, platform: Platform, market_id: str, size_places: int) -> None:
        self.platform = platform
        self.market_id = market_id
        self.size_places = size_places
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.status = PriceStatus.RESYNCING
        self.last_trade_ticks: int | None = None
        self.venue_ts_ms: int | None = None
        self._best_bid: int | None = None
        self._best_ask: int | None = None

    # -- state ---------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        """Whether the levels reflect a snapshot plus every update since."""
        return self.status in (PriceStatus.LIVE, PriceStatus.STALE)

    def mark_stale(self) -> None:
        """No data for too long: the levels may still be right, but nobody knows."""
        if self.status is PriceStatus.LIVE:
            self.status = PriceStatus.STALE

    def mark_verified(self) -> None:
        """The venue just confirmed the top of a STALE book another way (a REST check of
        a quiet market): LIVE again. Other statuses are left alone."""
        if self.status is PriceStatus.STALE:
            self.status = PriceStatus.LIVE

    def mark_resyncing(self) -> None:
        """The levels are known to be wrong; drop them until the next snapshot."""
        self.status = PriceStatus.RESYNCING
        self._clear()

    def mark_closed(self) -> None:
        self.status = PriceStatus.CLOSED

    def set_last_trade(self, price: str | int | float) -> None:
        self.last_trade_ticks = parse_price_ticks(price)

    # -- top of book ---------------------------------------------------------------

    @property
    def best_bid(self) -> tuple[int, int] | None:
        """(price ticks, size units) of the best bid, or None for an empty side."""
        best = self._best_bid
        return None if best is None else (best, self.bids[best])

    @property
    def best_ask(self) -> tuple[int, int] | None:
        best = self._best_ask
        return None if best is None else (best, self.asks[best])

    @property
    def is_crossed(self) -> bool:
        """A bid at or above the ask: impossible on a matching venue, so a sign of a bad book.

        Locked (bid == ask) counts as crossed: the venue would have matched the two
        orders. `MarketPrice.is_crossed` applies the same rule to a record."""
        return (self._best_bid is not None and self._best_ask is not None
                and self._best_bid >= self._best_ask)

    @property
    def is_empty(self) -> bool:
        return not self.bids and not self.asks

    def to_market_price(self, recv_ts_ns: int = 0) -> MarketPrice:
        """The normalized record; an empty side is None, never a placeholder price.

        A crossed or locked book is never reported LIVE, whoever asks (the WebSocket
        emit path, a REST snapshot): its status reads STALE, "not known to be right",
        while its levels stay as they are (it may be a moment's disagreement that the
        next update resolves; `BaseWebSocketClient._emit` decides when it is not).

        `publish_ts_ns` and `seq` stay 0: they belong to whoever publishes the record
        (the design has the publishing worker assign the per-market sequence)."""
        scale = 10**self.size_places
        bid, ask, last = self._best_bid, self._best_ask, self.last_trade_ticks
        status = self.status
        if status is PriceStatus.LIVE and bid is not None and ask is not None and bid >= ask:
            status = PriceStatus.STALE
        return MarketPrice(
            self.market_id,
            None if bid is None else bid / TICKS_PER_DOLLAR,
            None if ask is None else ask / TICKS_PER_DOLLAR,
            None if bid is None else self.bids[bid] / scale,
            None if ask is None else self.asks[ask] / scale,
            self.platform,
            status,
            None if last is None else last / TICKS_PER_DOLLAR,
            self.venue_ts_ms,
            recv_ts_ns,
        )

    # -- level primitives ----------------------------------------------------------

    def _touch(self, ts_ms: int | None) -> bool:
        """Record that an update arrived; a STALE book revives, which is itself a change to publish."""
        if ts_ms is not None:
            self.venue_ts_ms = ts_ms
        if self.status is PriceStatus.STALE:
            self.status = PriceStatus.LIVE
            return True
        return False

    def _clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._best_bid = self._best_ask = None

    def _load(self, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]]) -> None:
        """Replace both sides; zero-size levels are simply absent."""
        self._clear()
        for price, size in bids:
            if size:
                self.bids[price] = size
        for price, size in asks:
            if size:
                self.asks[price] = size
        self._best_bid = max(self.bids) if self.bids else None
        self._best_ask = min(self.asks) if self.asks else None
        self.status = PriceStatus.LIVE

    def _set_bid(self, price: int, size: int) -> bool:
        """Set a bid level to an absolute size (0 removes); return whether the top may have changed."""
        best = self._best_bid
        if size:
            self.bids[price] = size
            if best is None or price > best:
                self._best_bid = price
                return True
            return price == best
        if self.bids.pop(price, None) is None:
            return False
        if price == best:
            self._best_bid = max(self.bids) if self.bids else None
            return True
        return False

    def _set_ask(self, price: int, size: int) -> bool:
        best = self._best_ask
        if size:
            self.asks[price] = size
            if best is None or price < best:
                self._best_ask = price
                return True
            return price == best
        if self.asks.pop(price, None) is None:
            return False
        if price == best:
            self._best_ask = min(self.asks) if self.asks else None
            return True
        return False


Level = Sequence[str | int | float]
KalshiSide = Literal["yes", "no"]


class KalshiOrderBook(LocalOrderBook):
    """Kalshi's bids-only book, kept as YES bids and the YES asks that NO bids imply.

    `delta_fp` is a change of quantity added to the level, so quantities are integer
    hundredths of a contract: exact sums, and a level that empties is removed
    exactly. A level driven below zero means a delta was lost or doubled; it is not
    clamped, the book goes RESYNCING and the caller must fetch a snapshot.

    `use_yes_price` must be what the subscription asked for: with it, NO levels
    already carry YES-scale prices (the YES ask); without it, a NO bid at q is a YES
    ask at 1 - q. The conversion happens in exactly one place.
    """

    __slots__ = ("use_yes_price",)

    def __init__(self, market_id: str, *, use_yes_price: bool) -> None:
        super().__init__(Platform.KALSHI, market_id, KALSHI_SIZE_PLACES)
        self.use_yes_price = use_yes_price

    def _ask_ticks(self, no_price: int) -> int:
        return no_price if self.use_yes_price else TICKS_PER_DOLLAR - no_price

    def apply_snapshot(self, yes: Sequence[Level] = (), no: Sequence[Level] = (),
                       ts_ms: int | None = None) -> None:
        """Replace both sides from `yes_dollars_fp` / `no_dollars_fp`.

        The venue omits the key of an empty side; the caller passes that as ``()``.
        Any value that is not an array (``null``, ``""``, ``0``, ``false``, ``{}``) is
        a malformed frame, not an empty side, and is refused like a bad level.
        """
        try:
            bids = self._parse_levels(yes, "yes")
            no_levels = self._parse_levels(no, "no")
            asks = [(self._ask_ticks(price), size) for price, size in no_levels]
        except BookError:
            self.mark_resyncing()
            raise
        self._load(bids, asks)
        self.venue_ts_ms = ts_ms

    def apply_delta(self, price: str | float, delta: str | float, side: str,
                    ts_ms: int | None = None) -> bool:
        """Add `delta_fp` at (`side`, `price_dollars`); return whether the top of book may have changed."""
        if not self.is_ready:
            raise BookNotReady(f"{self.market_id}: orderbook_delta before a snapshot")
        ticks = parse_price_ticks(price)
        change = parse_fixed(delta, KALSHI_SIZE_PLACES)
        if side == "yes":
            levels, set_level = self.bids, self._set_bid
        elif side == "no":
            ticks = self._ask_ticks(ticks)
            levels, set_level = self.asks, self._set_ask
        else:
            raise ValueError(f"{self.market_id}: side must be 'yes' or 'no', got {side!r}")
        resting = levels.get(ticks, 0)
        size = resting + change
        if size < 0:
            self.mark_resyncing()
            raise BookError(f"{self.market_id}: {side} level {price} would go negative "
                            f"({format_fixed(resting, KALSHI_SIZE_PLACES)} + {delta})")
        return self._touch(ts_ms) | set_level(ticks, size)

    @property
    def yes_bids(self) -> dict[int, int]:
        return self.bids

    @property
    def no_bids(self) -> dict[int, int]:
        """NO bids on the NO scale (price q = 1 - YES ask), whatever the subscription scale."""
        return {TICKS_PER_DOLLAR - price: size for price, size in self.asks.items()}

    def _parse_levels(self, levels: Sequence[Level], side: KalshiSide) -> list[tuple[int, int]]:
        _require_array(levels, self.market_id, side)
        parsed = []
        for level in levels:
            if not isinstance(level, (list, tuple)) or len(level) != 2:
                raise BookError(f"{self.market_id}: {side} level must be [price, count], got {level!r}")
            try:
                price, size = parse_price_ticks(level[0]), parse_fixed(level[1], KALSHI_SIZE_PLACES)
            except ValueError as exc:
                raise BookError(f"{self.market_id}: {side} level {level!r}: {exc}") from None
            if size < 0:
                raise BookError(f"{self.market_id}: negative count in {side} level {level!r}")
            parsed.append((price, size))
        return parsed


PolymarketSide = Literal["BUY", "SELL"]


class PolymarketOrderBook(LocalOrderBook):
    """One Polymarket token's two-sided book.

    `book` replaces everything; a `price_change` entry carries the new absolute size
    of a level (0 removes it), BUY for bids and SELL for asks. After a tick-size
    change the old levels may sit off the new grid, so the book empties and ignores
    level updates until the venue's next full `book`.
    """

    __slots__ = ("token_id", "tick_size")

    def __init__(self, token_id: str, market_id: str | None = None) -> None:
        super().__init__(Platform.POLYMARKET, market_id or token_id, POLYMARKET_SIZE_PLACES)
        self.token_id = token_id
        self.tick_size: int | None = None

    def apply_snapshot(self, bids: Sequence[Mapping[str, object]], asks: Sequence[Mapping[str, object]],
                       ts_ms: int | None = None) -> None:
        """Replace the book from a `book` event's levels (any order; the venue sends worst to best).

        Each side must be an array of ``{"price", "size"}`` objects; anything else is refused."""
        try:
            parsed_bids, parsed_asks = self._parse_levels(bids, "bids"), self._parse_levels(asks, "asks")
        except BookError:
            self.mark_resyncing()
            raise
        self._load(parsed_bids, parsed_asks)
        self.venue_ts_ms = ts_ms

    apply_book = apply_snapshot

    def apply_delta(self, price: str | float, size: str | float, side: str,
                    ts_ms: int | None = None) -> bool:
        """Set a level to its new absolute size; return whether the top of book may have changed.

        Updates that arrive while the book waits for a snapshot (after a tick-size
        change or a detected inconsistency) are dropped: the next `book` carries them.
        """
        if not self.is_ready:
            return False
        ticks = parse_price_ticks(price)
        units = parse_fixed(size, POLYMARKET_SIZE_PLACES)
        if units < 0:
            raise ValueError(f"{self.token_id}: negative size {size!r} at {price!r}")
        if side == "BUY":
            set_level = self._set_bid
        elif side == "SELL":
            set_level = self._set_ask
        else:
            raise ValueError(f"{self.token_id}: side must be 'BUY' or 'SELL', got {side!r}")
        return self._touch(ts_ms) | set_level(ticks, units)

    def apply_tick_size_change(self, new_tick_size: str | float,
                               old_tick_size: str | float | None = None) -> bool:
        """Start a new book epoch; return False when the tick did not actually change.

        The WebSocket `book` does not carry the tick, so until the first change the
        book may not know it; the event's `old_tick_size` fills that in, which keeps a
        no-op change from emptying a good book.
        """
        ticks = parse_price_ticks(new_tick_size)
        if self.tick_size is None and old_tick_size is not None:
            self.tick_size = parse_price_ticks(old_tick_size)
        if ticks == self.tick_size:
            return False
        self.tick_size = ticks
        self.mark_resyncing()
        return True

    def matches_best(self, best_bid: str | float | None, best_ask: str | float | None) -> bool:
        """Check a `price_change` entry's post-change top against this book.

        The venue writes an empty bid side as ``"0"`` and an empty ask side as
        ``"1"``; a missing field cannot be checked and counts as a match.
        """
        if best_bid is not None and _or_empty(parse_price_ticks(best_bid), 0) != self._best_bid:
            return False
        if best_ask is not None and _or_empty(parse_price_ticks(best_ask), TICKS_PER_DOLLAR) != self._best_ask:
            return False
        return True

    def _parse_levels(self, levels: Sequence[Mapping[str, object]], side: str) -> list[tuple[int, int]]:
        _require_array(levels, self.token_id, side)
        parsed = []
        for level in levels:
            if not isinstance(level, Mapping):
                raise BookError(f"{self.token_id}: {side} level must be an object, got {level!r:.80}")
            try:
                price = parse_price_ticks(level["price"])  # type: ignore[arg-type]
                size = parse_fixed(level["size"], POLYMARKET_SIZE_PLACES)  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError) as exc:
                raise BookError(f"{self.token_id}: bad {side} level {level!r}: {exc}") from None
            if size < 0:
                raise BookError(f"{self.token_id}: negative size in {side} level {level!r}")
            parsed.append((price, size))
        return parsed


def _require_array(levels: object, market_id: str, side: str) -> None:
    """A snapshot side is a JSON array; a string, number, boolean or object in its place
    is a broken frame, and reading it as an empty side would publish a wrong book."""
    if not isinstance(levels, (list, tuple)):
        raise BookError(f"{market_id}: {side} side must be an array of levels, got {levels!r:.80}")


def _or_empty(ticks: int, empty_sentinel: int) -> int | None:
    return None if ticks == empty_sentinel else ticks
