"""Price and quantity parsing for the simulator tests, written with `Decimal` directly.

Deliberately not `markets.models`: the simulator tests check the wire against the
protocol as documented, not against the project's own parsers.
"""

from __future__ import annotations

from decimal import Decimal

TICKS = Decimal(10_000)


def ticks(price: str) -> int:
    """A price string (".48", "0.5", "0.031") as integer ticks of $0.0001."""
    value = Decimal(price) * TICKS
    assert value == value.to_integral_value(), f"price {price} finer than $0.0001"
    return int(value)


def hundredths(quantity: str) -> int:
    """A count or size string as integer hundredths."""
    value = Decimal(quantity) * 100
    assert value == value.to_integral_value(), f"quantity {quantity} finer than 0.01"
    return int(value)
