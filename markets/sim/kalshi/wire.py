"""Kalshi wire shapes: fixed-point strings, WebSocket envelopes, corrupted variants.

The venue sends prices as dollar strings with 4 decimals, sometimes 3 ("0.9600"
and "0.960" are the same level), and counts as 2-decimal strings; some frames
carry the same fields as JSON numbers instead (0.96, 12.5), as has been seen live
(protocols/kalshi.md appendix), so a client that insists on strings fails here.
Only the fixed-point fields are sent: the integer-cent fields were removed from
the venue in 2026, so a client that still reads them must fail against the simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from markets.models import KALSHI_SIZE_PLACES, PRICE_PLACES, TICKS_PER_DOLLAR, format_fixed, format_price
from markets.sim.faults import Corruption
from markets.sim.universe import SimMarket

JSON = dict[str, Any]
Number = str | float
"""A price or count as sent: a fixed-point string, or (some frames) a JSON number."""


def price_str(ticks: int, short: bool = False) -> str:
    """Dollar string; `short` uses 3 decimals when the price allows it, as the venue sometimes does."""
    if short and ticks % 10 == 0:
        return format_fixed(ticks // 10, PRICE_PLACES - 1)
    return format_price(ticks)


def count_str(hundredths: int) -> str:
    """Fixed-point count with 2 decimals ("-54.00", "74.77")."""
    return format_fixed(hundredths, KALSHI_SIZE_PLACES)


def price_value(ticks: int, short: bool = False, numeric: bool = False) -> Number:
    """A price as a frame carries it: a dollar string, or with `numeric` a JSON number."""
    return ticks / TICKS_PER_DOLLAR if numeric else price_str(ticks, short)


def count_value(hundredths: int, numeric: bool = False) -> Number:
    """A count as a frame carries it: a fixed-point string, or with `numeric` a JSON number."""
    return hundredths / 100 if numeric else count_str(hundredths)


def levels(book: Mapping[int, int], prices: Iterable[int], short: bool = False,
           numeric: bool = False) -> list[list[Number]]:
    """[[price, count], ...] in the order of `prices`.

    The caller picks the order because the venue does not keep one: the WS
    order is unspecified, and the REST book, documented ascending, was recorded
    live descending.  A client that reads "best = last element" must fail here.
    """
    return [[price_value(p, short, numeric), count_value(book[p], numeric)] for p in prices]


def dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def data_frame(frame_type: str, sid: int, seq: int | None, msg_json: str) -> str:
    """A data frame around an already-serialized `msg`, so a payload shared by
    many subscriptions is serialized once and only the envelope differs.

    A frame without `seq` (ticker) carries the top-level `sending_ts_ms` of the
    docs' market-ticker example: a client must accept envelope keys beyond
    `type`/`sid`/`seq`/`msg`.
    """
    if seq is None:
        sent = time.time_ns() // 1_000_000
        return f'{{"type":"{frame_type}","sending_ts_ms":{sent},"sid":{sid},"msg":{msg_json}}}'
    return f'{{"type":"{frame_type}","sid":{sid},"seq":{seq},"msg":{msg_json}}}'


def reply(frame_type: str, cmd_id: int | None, **fields: object) -> str:
    """A command reply; the id is echoed only when the client sent a non-zero one."""
    body: JSON = {"id": cmd_id} if cmd_id else {}
    body["type"] = frame_type
    body.update(fields)
    return dumps(body)


def error_reply(cmd_id: int | None, code: int, text: str, **extra: object) -> str:
    return reply("error", cmd_id, msg={"code": code, "msg": text, **extra})


def snapshot_msg(market: SimMarket, yes: Mapping[int, int], no: Mapping[int, int], short: bool,
                 ts_ms: int | None, order: Callable[[Iterable[int]], list[int]],
                 numeric: bool = False) -> JSON:
    """Snapshot payload; a side with no levels has no key at all (venue behaviour).

    `ts_ms` is None for a snapshot sent without one: the docs page lists no
    `ts_ms` on snapshots, so a client may not count on it.
    """
    msg: JSON = {"market_ticker": market.kalshi_ticker, "market_id": market.kalshi_market_id}
    if yes:
        msg["yes_dollars_fp"] = levels(yes, order(yes), short, numeric)
    if no:
        msg["no_dollars_fp"] = levels(no, order(no), short, numeric)
    if ts_ms is not None:
        msg["ts_ms"] = ts_ms
    return msg


def delta_msg(market: SimMarket, side: str, price: int, delta: int, short: bool, ts_ms: int,
              numeric: bool = False) -> JSON:
    return {
        "market_ticker": market.kalshi_ticker,
        "market_id": market.kalshi_market_id,
        "price_dollars": price_value(price, short, numeric),
        "delta_fp": count_value(delta, numeric),
        "side": side,
        "ts_ms": ts_ms,
    }


def corrupt_msg(msg: JSON, corruption: Corruption, old_size: int) -> JSON:
    """A copy of `msg` with a wrong-typed field or an impossible (negative) size.

    A negative delta is sized to take the client's level (`old_size`, in
    hundredths) one contract below zero; a snapshot gets one negative level.
    """
    bad = dict(msg)
    if corruption is Corruption.WRONG_TYPE:
        for key in ("delta_fp", "yes_dollars_fp", "no_dollars_fp", "count_fp", "yes_bid_dollars",
                    "market_ticker"):
            if key in bad:
                bad[key] = {"value": bad[key]}
                return bad
    for key in ("yes_dollars_fp", "no_dollars_fp"):
        if key in bad:
            first, *rest = bad[key]
            count = first[1]
            bad[key] = [[first[0], -count if isinstance(count, float) else "-" + count], *rest]
            return bad
    if "delta_fp" in bad:
        bad["delta_fp"] = count_str(-(old_size + 100))
    elif "count_fp" in bad:
        bad["count_fp"] = "-" + bad["count_fp"]
    elif "yes_bid_size_fp" in bad:
        bad["yes_bid_size_fp"] = "-" + bad["yes_bid_size_fp"]
    return bad


def unknown_frame(sid: int, ticker: str) -> str:
    """A frame of a type no client knows, as venues add message types without notice."""
    return dumps({"type": "orderbook_imbalance", "sid": sid,
                  "msg": {"market_ticker": ticker, "imbalance_fp": "0.00"}})
