"""The Gamma discovery API under `/gamma`: `/markets` and `/events` with their filters.

Behaviour a discovery client must cope with is kept: `limit` is silently capped
at 100 (and defaults lower, so a client that does not paginate sees only the
first page), `offset` beyond 10000 is a 422, `closed` defaults to false, list
filters take repeated or comma-separated values, and `outcomes`,
`outcomePrices` and `clobTokenIds` are JSON-encoded strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .catalog import Directory, Listing, gamma_event, gamma_market
from .lifecycle import flags
from .clob import json_response

PREFIX = "/gamma"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 10_000
MAX_IDS = 100
ORDER_FIELDS: dict[str, Callable[[Listing], Any]] = {
    "id": lambda item: int(item.gamma_id),
    "slug": lambda item: item.slug,
    "endDate": lambda item: item.end_date,
    "startDate": lambda item: item.created_at,
    "conditionId": lambda item: item.market.condition_id,
}


class QueryError(ValueError):
    """A bad query parameter; the message names it and is sent back as a 422."""


def _unprocessable(message: str) -> web.Response:
    return json_response({"type": "validation error", "error": message}, 422)


def _bool(query: Any, name: str) -> bool | None:
    raw = query.get(name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise QueryError(f"{name} must be true or false, got {raw!r}")
    return lowered == "true"


def _int(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise QueryError(f"{name} must be a non-negative integer, got {raw!r}")
    return value


def _values(query: Any, name: str) -> set[str] | None:
    """A list filter given as `name=a&name=b` or `name=a,b`; None when absent."""
    raw = query.getall(name, [])
    if not raw:
        return None
    values = {v.strip() for item in raw for v in item.split(",") if v.strip()}
    if len(values) > MAX_IDS:
        raise QueryError(f"{name} takes at most {MAX_IDS} values, got {len(values)}")
    return values


def _page(query: Any, items: list[Listing]) -> list[Listing]:
    limit = min(_int(query, "limit", DEFAULT_LIMIT), MAX_LIMIT)
    offset = _int(query, "offset", 0)
    if offset > MAX_OFFSET:
        raise QueryError(f"offset must be <= {MAX_OFFSET}, got {offset}")
    order = query.get("order", "id")
    key = ORDER_FIELDS.get(order)
    if key is None:
        raise QueryError(f"cannot order by {order!r}; use one of {', '.join(ORDER_FIELDS)}")
    ascending = _bool(query, "ascending")
    ordered = sorted(items, key=key, reverse=ascending is False)
    return ordered[offset: offset + limit]


def _status_matches(query: Any, closed_now: bool) -> bool:
    """Do the status filters admit a market that is `closed_now` (and, like every simulated
    market, active and not archived)? `closed` defaults to false."""
    wanted_closed = _bool(query, "closed") or False
    active = _bool(query, "active")
    archived = _bool(query, "archived")
    return wanted_closed == closed_now and active is not False and archived is not True


class GammaRoutes:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def _status_matches(self, query: Any, listing: Listing) -> bool:
        return _status_matches(query, flags(self.directory.phase_of(listing))[0])

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{PREFIX}/markets", self.markets)
        app.router.add_get(f"{PREFIX}/events", self.events)

    async def markets(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            filters: list[tuple[set[str] | None, Callable[[Listing], set[str]]]] = [
                (_values(query, "id"), lambda item: {item.gamma_id}),
                (_values(query, "slug"), lambda item: {item.slug}),
                (_values(query, "condition_ids"), lambda item: {item.market.condition_id}),
                (_values(query, "question_ids"), lambda item: {item.question_id}),
                (_values(query, "clob_token_ids"),
                 lambda item: {item.market.yes_token_id, item.market.no_token_id}),
                (_values(query, "tag_id"), lambda item: {tag["id"] for tag in item.tags}),
            ]
            matching = [item for item in self.directory.listings if self._status_matches(query, item)
                        and all(wanted is None or wanted & ids(item) for wanted, ids in filters)]
            page = _page(query, matching)
        except QueryError as exc:
            return _unprocessable(str(exc))
        return json_response([gamma_market(item, self.directory.state_of(item), with_events=True,
                                           phase=self.directory.phase_of(item))
                              for item in page])

    async def events(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            ids = _values(query, "id")
            slugs = _values(query, "slug")
            tags = _values(query, "tag_id")
            heads = [group[0] for group in self.directory.events.values()]
            matching = [head for head in heads if self._status_matches(query, head)
                        and (ids is None or head.event_id in ids)
                        and (slugs is None or head.slug in slugs)
                        and (tags is None or tags & {tag["id"] for tag in head.tags})]
            page = _page(query, matching)
        except QueryError as exc:
            return _unprocessable(str(exc))
        events = self.directory.events
        return json_response([gamma_event(events[head.market.game.game_id], self.directory)
                              for head in page])
