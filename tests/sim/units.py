"""Price and quantity parsing for the simulator tests, written with `Decimal` directly.

Deliberately not `markets.models`: the simulator tests check the wire against the
protocol as documented, not against the project's own parsers.
"""

from __future__ import annotations

from decimal import Decimal

TICKS = Decimal(10_000)


def _decimal(value: str | float) -> Decimal:
    """A wire number: a decimal string, or a JSON number read as the decimal it spells."""
    return Decimal(value if isinstance(value, str) else repr(value))


def ticks(price: str | float) -> int:
    """A price string (".48", "0.5", "0.031") or JSON number as integer ticks of $0.0001."""
    value = _decimal(price) * TICKS
    assert value == value.to_integral_value(), f"price {price} finer than $0.0001"
    return int(value)


def hundredths(quantity: str | float) -> int:
    """A count or size string (or JSON number) as integer hundredths."""
    value = _decimal(quantity) * 100
    assert value == value.to_integral_value(), f"quantity {quantity} finer than 0.01"
    return int(value)
