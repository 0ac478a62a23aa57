"""Polymarket market metadata: which token pays on which outcome.

Gamma hands out `clobTokenIds`, `outcomes` and `outcomePrices` as JSON-encoded
*strings* (Protocol-V2 markets carry `positionIds` as a real array instead), and the
CLOB `/markets` endpoints carry a `tokens` array of objects. Both decode here into one
record, `PolymarketMarketInfo`, whose tokens are paired with outcomes by index.

Outcome labels are not always "Yes"/"No": sports markets are often team-vs-team
("Celtics"/"Lakers"). Nothing downstream may assume "first token = YES" without
looking, so every token records the outcome it pays on, and `yes_token` states the
rule in one place: the token paired with "Yes" when there is one, else outcome 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markets.models import parse_price_ticks, ticks_to_dollars


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class CatalogDecodeError(ValueError):
    """A market record whose outcome/token fields cannot be decoded or paired."""


@dataclass(frozen=True, slots=True)
class OutcomeToken:
    """One outcome token: its id, the outcome it pays on, its index and quoted price."""

    token_id: str
    outcome: str
    index: int
    price: float | None = None


@dataclass(frozen=True, slots=True)
class PolymarketMarketInfo:
    """One binary (or n-ary) market as the venue describes it."""

    condition_id: str
    tokens: tuple[OutcomeToken, ...]
    question: str | None = None
    slug: str | None = None
    gamma_id: str | None = None
    active: bool | None = None
    closed: bool | None = None
    accepting_orders: bool | None = None
    enable_order_book: bool | None = None
    tick_size: float | None = None
    min_order_size: float | None = None
    neg_risk: bool | None = None
    end_date: str | None = None

    @property
    def yes_token(self) -> OutcomeToken:
        """The token whose book is the market's YES side.

        For Yes/No markets that is the token paying on "Yes" wherever it sits; for
        other labels (teams, Up/Down) the market's YES proposition is outcome 0.
        """
        if not self.tokens:
            raise CatalogDecodeError(f"market {self.condition_id} has no CLOB tokens")
        for token in self.tokens:
            if token.outcome.casefold() == "yes":
                return token
        return self.tokens[0]

    @property
    def token_ids(self) -> tuple[str, ...]:
        return tuple(token.token_id for token in self.tokens)

    def token(self, token_id: str) -> OutcomeToken:
        for token in self.tokens:
            if token.token_id == token_id:
                return token
        raise KeyError(f"token {token_id} is not part of market {self.condition_id}")


@dataclass(frozen=True, slots=True)
class GammaEvent:
    """A Gamma event (e.g. one game) and the markets listed under it.

    `undecodable` holds, for each embedded market that could not be decoded, why:
    one legacy market must not hide its event's other markets.
    """

    event_id: str
    title: str | None
    slug: str | None
    markets: tuple[PolymarketMarketInfo, ...]
    undecodable: tuple[str, ...] = ()


def _json_list(raw: Any, field: str, ref: str) -> list[Any]:
    """Decode a Gamma list field that is usually a JSON string, tolerating a real array."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CatalogDecodeError(f"market {ref}: {field} is not valid JSON ({exc.msg}): {raw[:80]!r}") from None
    if not isinstance(raw, list):
        raise CatalogDecodeError(f"market {ref}: {field} must be a list, got {type(raw).__name__}")
    return raw


def _text(value: Any, field: str, ref: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise CatalogDecodeError(f"market {ref}: {field} must be a non-empty string, got {value!r}")


def _optional_float(value: Any, field: str, ref: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CatalogDecodeError(f"market {ref}: {field} is not a number: {value!r}") from None


def _optional_price(value: Any, field: str, ref: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return ticks_to_dollars(parse_price_ticks(value))
    except ValueError as exc:
        raise CatalogDecodeError(f"market {ref}: {field}: {exc}") from None


def _optional_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class _FieldNames:
    """The names one source gives the optional market fields that the two sources name
    differently: Gamma and the CLOB carry the same facts, camelCase vs snake_case and some
    renamed (`question`, `active` and `closed` are spelled alike and read directly)."""

    slug: str
    accepting_orders: str
    enable_order_book: str
    tick_size: str
    min_order_size: str
    neg_risk: str
    end_date: str


_GAMMA_FIELDS = _FieldNames(slug="slug", accepting_orders="acceptingOrders", enable_order_book="enableOrderBook",
                            tick_size="orderPriceMinTickSize", min_order_size="orderMinSize", neg_risk="negRisk",
                            end_date="endDate")
_CLOB_FIELDS = _FieldNames(slug="market_slug", accepting_orders="accepting_orders",
                           enable_order_book="enable_order_book", tick_size="minimum_tick_size",
                           min_order_size="minimum_order_size", neg_risk="neg_risk", end_date="end_date_iso")


def _market_info(raw: Mapping[str, Any], ref: str, condition_id: str, tokens: tuple[OutcomeToken, ...],
                 names: _FieldNames, gamma_id: str | None = None) -> PolymarketMarketInfo:
    """The decoded record, reading the optional fields under `names`."""
    return PolymarketMarketInfo(
        condition_id=condition_id,
        tokens=tokens,
        question=_optional_str(raw.get("question")),
        slug=_optional_str(raw.get(names.slug)),
        gamma_id=gamma_id,
        active=_optional_bool(raw.get("active")),
        closed=_optional_bool(raw.get("closed")),
        accepting_orders=_optional_bool(raw.get(names.accepting_orders)),
        enable_order_book=_optional_bool(raw.get(names.enable_order_book)),
        tick_size=_optional_float(raw.get(names.tick_size), names.tick_size, ref),
        min_order_size=_optional_float(raw.get(names.min_order_size), names.min_order_size, ref),
        neg_risk=_optional_bool(raw.get(names.neg_risk)),
        end_date=_optional_str(raw.get(names.end_date)),
    )


def _pair(ref: str, token_ids: Sequence[Any], outcomes: Sequence[Any],
          prices: Sequence[Any]) -> tuple[OutcomeToken, ...]:
    if len(token_ids) != len(outcomes):
        raise CatalogDecodeError(
            f"market {ref}: {len(token_ids)} token ids but {len(outcomes)} outcomes; cannot pair them")
    if prices and len(prices) != len(outcomes):
        raise CatalogDecodeError(
            f"market {ref}: {len(prices)} outcome prices for {len(outcomes)} outcomes")
    return tuple(
        OutcomeToken(
            token_id=_text(token_id, f"token id #{i}", ref),
            outcome=_text(outcome, f"outcome #{i}", ref),
            index=i,
            price=_optional_price(prices[i], f"outcome price #{i}", ref) if prices else None,
        )
        for i, (token_id, outcome) in enumerate(zip(token_ids, outcomes))
    )


def decode_gamma_market(raw: Mapping[str, Any]) -> PolymarketMarketInfo:
    """Decode one Gamma `/markets` (or embedded `/events`) market object."""
    if not isinstance(raw, Mapping):
        raise CatalogDecodeError(f"a Gamma market must be an object, got {type(raw).__name__}")
    ref = str(raw.get("conditionId") or raw.get("id") or "?")
    condition_id = _text(raw.get("conditionId"), "conditionId", ref)
    token_field = "positionIds" if raw.get("clobTokenIds") in (None, "") and "positionIds" in raw else "clobTokenIds"
    tokens = _pair(
        ref,
        _json_list(raw.get(token_field), token_field, ref),
        _json_list(raw.get("outcomes"), "outcomes", ref),
        _json_list(raw.get("outcomePrices"), "outcomePrices", ref),
    )
    gamma_id = None if raw.get("id") is None else str(raw["id"])
    return _market_info(raw, ref, condition_id, tokens, _GAMMA_FIELDS, gamma_id)


def decode_gamma_event(raw: Mapping[str, Any]) -> GammaEvent:
    """Decode one Gamma `/events` object with its embedded markets."""
    if not isinstance(raw, Mapping):
        raise CatalogDecodeError(f"a Gamma event must be an object, got {type(raw).__name__}")
    markets = raw.get("markets") or []
    if not isinstance(markets, list):
        raise CatalogDecodeError(f"event {raw.get('id')!r}: markets must be a list")
    event_id = _text(raw.get("id"), "event id", str(raw.get("slug")))
    decoded: list[PolymarketMarketInfo] = []
    undecodable: list[str] = []
    for market in markets:
        try:
            decoded.append(decode_gamma_market(market))
        except CatalogDecodeError as exc:
            undecodable.append(f"event {event_id}: {exc}")
    return GammaEvent(event_id=event_id, title=_optional_str(raw.get("title")), slug=_optional_str(raw.get("slug")),
                      markets=tuple(decoded), undecodable=tuple(undecodable))


def decode_clob_market(raw: Mapping[str, Any]) -> PolymarketMarketInfo:
    """Decode one CLOB `/markets` entry, whose `tokens` are objects in outcome order."""
    if not isinstance(raw, Mapping):
        raise CatalogDecodeError(f"a CLOB market must be an object, got {type(raw).__name__}")
    ref = str(raw.get("condition_id") or "?")
    condition_id = _text(raw.get("condition_id"), "condition_id", ref)
    entries = raw.get("tokens") or []
    if not isinstance(entries, list) or not all(isinstance(entry, Mapping) for entry in entries):
        raise CatalogDecodeError(f"market {ref}: tokens must be a list of objects")
    tokens = _pair(
        ref,
        [entry.get("token_id") for entry in entries],
        [entry.get("outcome") for entry in entries],
        [entry.get("price") for entry in entries] if all("price" in entry for entry in entries) else [],
    )
    return _market_info(raw, ref, condition_id, tokens, _CLOB_FIELDS)


def why_not_streamable(info: PolymarketMarketInfo) -> str | None:
    """Why a listed market has no live book to stream, or None -- the discovery rule.

    A market that is closed (resolved), inactive, not accepting orders (its game is
    over, awaiting resolution) or without an order book has nothing to stream
    (protocols/polymarket.md appendix). Unknown flags (None) do not count against
    it. Polymarket's `endDate` is not a trading cutoff, so it is not checked.
    """
    if info.closed:
        return "closed"
    if info.active is False:
        return "not active"
    if info.accepting_orders is False:
        return "not accepting orders"
    if info.enable_order_book is False:
        return "no order book"
    if not info.tokens:
        return "no CLOB tokens"
    return None


def is_condition_id(market_id: str) -> bool:
    """Condition ids are ``0x`` + 64 hex digits; token ids are long decimal strings.

    Digits are checked one by one: `int(text, 16)` would also take ``_`` separators,
    a sign or surrounding spaces, none of which a condition id can hold.
    """
    return (len(market_id) == 66 and market_id.startswith(("0x", "0X"))
            and all(c in _HEX_DIGITS for c in market_id[2:]))
