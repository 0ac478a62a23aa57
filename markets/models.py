"""Venue-neutral vocabulary: platforms, price statuses, exact units, and `MarketPrice`.

Books never hold floats. Prices are integer ticks of $0.0001 for both venues (Kalshi
has deci-cent grids, Polymarket ticks go down to 0.0001) and sizes are integer
fixed-point units, so that ``"0.5"``, ``".50"`` and ``"0.50"`` are one level and
additive Kalshi deltas sum exactly. Floats appear only at the edge, in `MarketPrice`,
which is what consumers read.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import NamedTuple

TICKS_PER_DOLLAR = 10_000
PRICE_PLACES = 4

KALSHI_SIZE_PLACES = 2
"""Kalshi counts have a 0.01-contract granularity; deltas add, so they must sum exactly."""

POLYMARKET_SIZE_PLACES = 6
"""Polymarket conditional tokens carry 6 decimals on chain."""


class Platform(StrEnum):
    KALSHI = "kalshi"
    POLYMARKET = "polymarket"


class PriceStatus(StrEnum):
    """Whether a consumer may act on a price.

    LIVE: the book is known to be exact. STALE: not known to be right, for now: the
    connection is down, the book is unverified, or it disagrees with itself for a
    moment (a crossed or locked top inside its grace: the record then carries the
    last good top, never the crossed one). RESYNCING: the book is known to be wrong
    (a sequence gap, an impossible level, a crossing that outlived its grace) and
    waits for a fresh snapshot. CLOSED: the market no longer trades.
    """

    LIVE = "live"
    STALE = "stale"
    RESYNCING = "resyncing"
    CLOSED = "closed"


MAX_MAGNITUDE_DIGITS = 12
"""A wire number must be below 10**12 in magnitude (a trillion contracts, shares or
dollars). Nothing real comes near it; anything larger is a broken or hostile frame,
and refusing it here keeps every size a finite float when the record is built and
keeps Decimal from overflowing on exponents like ``"1e999999999"``."""
_MAX_WHOLE = 10**MAX_MAGNITUDE_DIGITS


def parse_fixed(value: str | int | float, places: int) -> int:
    """Parse a decimal number into an integer count of 10**-places units.

    Wire values are decimal strings (``"0.960"``, ``".48"``, ``"-54.00"``), though
    some venues have been seen sending JSON numbers, so ints and floats are accepted
    too. Extra digits are rounded half away from zero, never truncated. Anything that
    is not a finite ASCII decimal below 10**12 in magnitude raises ValueError naming
    the value (never a `decimal` exception or OverflowError, which callers would not
    expect from bad input).
    """
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii():  # str.isdigit() and Decimal would accept other scripts' digits
            raise ValueError(f"not an ASCII decimal number: {value!r:.80}")
        negative = text.startswith("-")
        digits = text[1:] if negative or text.startswith("+") else text
        whole, dot, frac = digits.partition(".")
        if (whole.isdigit() or (whole == "" and frac)) and (frac.isdigit() or frac == ""):
            if len(whole) > MAX_MAGNITUDE_DIGITS and whole.lstrip("0")[MAX_MAGNITUDE_DIGITS:]:
                raise ValueError(f"number out of range: {value!r:.80}")
            scale = 10**places
            units = int(whole or "0") * scale
            if len(frac) <= places:
                units += int(frac.ljust(places, "0") or "0")
            else:
                units += int(frac[:places]) + (frac[places] >= "5")
            return _bounded(-units if negative else units, places, value)
        return _parse_fixed_slow(text, places, value)
    if isinstance(value, bool):
        raise ValueError(f"expected a decimal number, got boolean {value!r}")
    if isinstance(value, int):
        return _bounded(value * 10**places, places, value)
    if isinstance(value, float):
        return _parse_fixed_slow(repr(value), places, value)
    raise ValueError(f"expected a decimal number, got {type(value).__name__} {value!r:.80}")


def _bounded(units: int, places: int, value: object) -> int:
    if -_MAX_WHOLE * 10**places < units < _MAX_WHOLE * 10**places:
        return units
    raise ValueError(f"number out of range: {value!r:.80}")


def _parse_fixed_slow(text: str, places: int, value: object) -> int:
    """Exponents, float reprs and other rare spellings go through Decimal.

    The magnitude is checked before scaling, so no exponent can make Decimal
    overflow or run past its precision."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r:.80}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r:.80}")
    if number and number.adjusted() >= MAX_MAGNITUDE_DIGITS:
        raise ValueError(f"number out of range: {value!r:.80}")
    if number.adjusted() < -places - 1:  # rounds to zero at this precision
        return 0
    try:
        units = int(number.scaleb(places).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except ArithmeticError:  # more digits than the context's 28 (only for a large `places`)
        raise ValueError(f"number out of range: {value!r:.80}") from None
    return _bounded(units, places, value)


_PRICE_CACHE: dict[str, int] = {}
_PRICE_CACHE_LIMIT = 1 << 16


def parse_price_ticks(value: str | int | float) -> int:
    """Parse a dollar price into ticks of $0.0001 and insist it lies in [0, 1].

    A book sees the same few hundred price strings over and over, so valid string
    prices are memoized. The memo stops growing at a fixed size, so a feed full of
    odd spellings costs speed, never memory.
    """
    cached = _PRICE_CACHE.get(value) if isinstance(value, str) else None
    if cached is not None:
        return cached
    ticks = parse_fixed(value, PRICE_PLACES)
    if not 0 <= ticks <= TICKS_PER_DOLLAR:
        raise ValueError(f"price out of range [0, 1]: {value!r}")
    if isinstance(value, str) and len(_PRICE_CACHE) < _PRICE_CACHE_LIMIT:
        _PRICE_CACHE[value] = ticks
    return ticks


MAX_VENUE_TS_MS = 1 << 64
"""A millisecond stamp at or above this cannot be carried by the bus encoding (MessagePack
integers stop at 2**64 - 1; orjson already decodes any larger JSON integer as a float)."""


def venue_timestamp_ms(value: object) -> int | None:
    """A venue's millisecond timestamp as a non-negative int; None stays None.

    Venues send integers or digit strings; anything else (floats, negative numbers,
    RFC 3339 text, values too large for the bus) raises ValueError naming the value,
    so a bad stamp is counted and dropped instead of being published: a consumer's
    decoder refuses a `MarketPrice` whose `venue_ts_ms` is not such an int.
    """
    if value is None:
        return None
    if type(value) is int:
        ms = value
    elif type(value) is str and value.isascii() and value.isdigit() and len(value) <= 19:
        ms = int(value)
    else:
        raise ValueError(f"not a millisecond timestamp: {value!r:.80}")
    if not 0 <= ms < MAX_VENUE_TS_MS:
        raise ValueError(f"millisecond timestamp out of range: {value!r:.80}")
    return ms


def ticks_to_dollars(ticks: int) -> float:
    return ticks / TICKS_PER_DOLLAR


def format_price(ticks: int) -> str:
    """Render ticks the way the venues write prices: four decimals of a dollar."""
    return f"{ticks // TICKS_PER_DOLLAR}.{ticks % TICKS_PER_DOLLAR:04d}"


def format_fixed(units: int, places: int) -> str:
    """Render fixed-point units as a decimal string with exactly `places` decimals."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"


class MarketPrice(NamedTuple):
    """The normalized top of book of one binary market, as published on the bus.

    Dollars are floats in [0, 1] for consumers; an empty side is None, never a
    0.0/1.0 that would read as a price. NO-side prices and the mid are derived, not
    stored, so they can never disagree with the YES side. A NamedTuple keeps the
    record immutable and cheap to build on the per-message path.

    `seq` and `epoch` belong to the publishing worker: `seq` rises by one per record
    it publishes for the market (a consumer sees a gap), `epoch` is the broker's
    ownership epoch of the market when it was assigned to that worker (a consumer
    drops records from an owner older than the directory's). Both are 0 outside the
    sharded runtime.
    """

    market_id: str
    yes_bid: float | None
    yes_ask: float | None
    yes_bid_size: float | None
    yes_ask_size: float | None
    platform: Platform
    status: PriceStatus = PriceStatus.LIVE
    last_trade: float | None = None
    venue_ts_ms: int | None = None
    recv_ts_ns: int = 0
    publish_ts_ns: int = 0
    seq: int = 0
    epoch: int = 0

    @property
    def no_bid(self) -> float | None:
        """A YES ask at X is a NO bid at 1 - X."""
        return None if self.yes_ask is None else round(1.0 - self.yes_ask, PRICE_PLACES)

    @property
    def no_ask(self) -> float | None:
        return None if self.yes_bid is None else round(1.0 - self.yes_bid, PRICE_PLACES)

    @property
    def mid(self) -> float | None:
        """Mid of the YES side; None unless both sides are quoted."""
        if self.yes_bid is None or self.yes_ask is None:
            return None
        return (self.yes_bid + self.yes_ask) / 2

    @property
    def spread(self) -> float | None:
        if self.yes_bid is None or self.yes_ask is None:
            return None
        return round(self.yes_ask - self.yes_bid, PRICE_PLACES)

    @property
    def is_crossed(self) -> bool:
        """A bid at or above the ask. Locked (bid == ask) counts: a matching venue would
        have traded the two orders, so such a top is not a book anyone can trade on.
        The same rule as `LocalOrderBook.is_crossed`."""
        return self.yes_bid is not None and self.yes_ask is not None and self.yes_bid >= self.yes_ask
