"""Order placement through the official CLOB V2 SDK, installed as an optional extra.

Orders on the CLOB must be EIP-712-signed (V2 order struct, exchange domain
version "2"; protocols/polymarket.md §8). That needs Ethereum signing libraries
the base install does not carry, so this module drives `py-clob-client-v2`
(``pip install 'arbees[polymarket-orders]'``) and says exactly that when it is
missing, rather than pretending to sign. The SDK is synchronous (httpx), so each
call runs in a worker thread and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from markets.models import POLYMARKET_SIZE_PLACES, TICKS_PER_DOLLAR, parse_fixed, parse_price_ticks

POLYGON_CHAIN_ID = 137
ORDERS_EXTRA = "polymarket-orders"
ORDER_TYPES = frozenset({"GTC", "GTD", "FOK", "FAK"})
ORDER_SIDES = frozenset({"BUY", "SELL"})
SIGNATURE_TYPES = ("0", "1", "2", "3")


class PolymarketOrdersUnavailable(RuntimeError):
    """The optional order-signing extra is not installed, or no order credentials were given."""


class PolymarketOrderError(ValueError):
    """An order argument is invalid; raised before anything is signed or sent."""


@dataclass(frozen=True)
class PolymarketOrderCredentials:
    """A wallet key (L1, signs orders) plus CLOB API credentials (L2, authenticates requests).

    Secrets are excluded from repr so a logged client never shows them.
    """

    private_key: str = field(repr=False)
    api_key: str
    api_secret: str = field(repr=False)
    api_passphrase: str = field(repr=False)
    funder: str | None = None
    signature_type: int | None = None

    @classmethod
    def from_env(cls) -> PolymarketOrderCredentials:
        """Read POLYMARKET_PRIVATE_KEY, POLYMARKET_API_KEY, POLYMARKET_API_SECRET,
        POLYMARKET_API_PASSPHRASE and optionally POLYMARKET_FUNDER / POLYMARKET_SIGNATURE_TYPE."""
        names = ("POLYMARKET_PRIVATE_KEY", "POLYMARKET_API_KEY", "POLYMARKET_API_SECRET",
                 "POLYMARKET_API_PASSPHRASE")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise PolymarketOrdersUnavailable(f"missing environment variables: {', '.join(missing)}")
        return cls(*(os.environ[name] for name in names),
                   funder=os.environ.get("POLYMARKET_FUNDER") or None,
                   signature_type=_signature_type(os.environ.get("POLYMARKET_SIGNATURE_TYPE")))


def _signature_type(value: str | None) -> int | None:
    """POLYMARKET_SIGNATURE_TYPE: 0 EOA, 1 POLY_PROXY, 2 POLY_GNOSIS_SAFE, 3 POLY_1271 (§8)."""
    if not value:
        return None
    if value.strip() not in SIGNATURE_TYPES:
        raise PolymarketOrdersUnavailable(
            f"POLYMARKET_SIGNATURE_TYPE must be one of {', '.join(SIGNATURE_TYPES)}, got {value!r}")
    return int(value)


def load_sdk() -> Any:
    """Import the SDK or explain how to install it."""
    try:
        import py_clob_client_v2
    except ImportError as exc:
        raise PolymarketOrdersUnavailable(
            "placing Polymarket orders needs EIP-712 order signing from the official SDK "
            f"'py-clob-client-v2', which is not installed; install it with "
            f"pip install 'arbees[{ORDERS_EXTRA}]'") from exc
    return py_clob_client_v2


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated limit order: prices and sizes checked before anything is signed."""

    token_id: str
    side: str
    price: float
    size: float
    order_type: str = "GTC"
    tick_size: str | None = None
    neg_risk: bool | None = None
    post_only: bool = False

    @classmethod
    def build(cls, token_id: str, side: str, price: str | float, size: str | float, *,
              order_type: str = "GTC", tick_size: str | None = None, neg_risk: bool | None = None,
              post_only: bool = False) -> OrderRequest:
        if not isinstance(token_id, str) or not token_id.isdigit():
            raise PolymarketOrderError(f"token_id must be a decimal token id string, got {token_id!r}")
        if side not in ORDER_SIDES:
            raise PolymarketOrderError(f"side must be one of {sorted(ORDER_SIDES)}, got {side!r}")
        if order_type not in ORDER_TYPES:
            raise PolymarketOrderError(f"order_type must be one of {sorted(ORDER_TYPES)}, got {order_type!r}")
        if post_only and order_type in ("FOK", "FAK"):
            raise PolymarketOrderError("post_only cannot be combined with FOK/FAK orders")
        try:
            ticks = parse_price_ticks(price)
            units = parse_fixed(size, POLYMARKET_SIZE_PLACES)
        except ValueError as exc:
            raise PolymarketOrderError(str(exc)) from None
        if not 0 < ticks < TICKS_PER_DOLLAR:
            raise PolymarketOrderError(f"price must be strictly between 0 and 1, got {price!r}")
        if units <= 0:
            raise PolymarketOrderError(f"size must be positive, got {size!r}")
        return cls(token_id, side, ticks / TICKS_PER_DOLLAR, units / 10**POLYMARKET_SIZE_PLACES, order_type, tick_size,
                   neg_risk, post_only)


class OrderPlacer:
    """Signs and posts orders with the SDK's `ClobClient` (one per placer, reused)."""

    def __init__(self, clob_url: str, credentials: PolymarketOrderCredentials,
                 chain_id: int = POLYGON_CHAIN_ID) -> None:
        sdk = load_sdk()
        self._sdk = sdk
        self._client = sdk.ClobClient(
            host=clob_url, chain_id=chain_id, key=credentials.private_key,
            creds=sdk.ApiCreds(api_key=credentials.api_key, api_secret=credentials.api_secret,
                               api_passphrase=credentials.api_passphrase),
            signature_type=credentials.signature_type, funder=credentials.funder)

    async def place(self, order: OrderRequest) -> Any:
        sdk = self._sdk
        args = sdk.OrderArgs(token_id=order.token_id, price=order.price, size=order.size, side=order.side)
        options = sdk.PartialCreateOrderOptions(tick_size=order.tick_size, neg_risk=order.neg_risk)
        return await asyncio.to_thread(self._client.create_and_post_order, args, options,
                                       order.order_type, order.post_only)
