"""The latest price per market, and the two ways `arbees stream` shows it.

Output adapts to where it goes: on a terminal the table is redrawn in place
at a bounded rate (the data may change thousands of times a second; the eye
does not need that); into a pipe or a CI log it prints one line per update,
which greps and diffs well.  The displays only read the table, so neither the
price sources nor the command's run loop depend on which one is chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Protocol

from markets.models import MarketPrice

CLEAR_SCREEN = "\x1b[H\x1b[2J"
_NUMERIC_COLUMNS = frozenset({2, 3, 4, 5, 6})


@dataclass
class Row:
    price: MarketPrice
    received_ns: int


class PriceTable:
    """Latest price per (venue, market); rendering as a table or as one line per update."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.updates = 0

    def update(self, venue: str, price: MarketPrice) -> Row:
        row = Row(price, price.recv_ts_ns or time.time_ns())
        self.rows[(venue, price.market_id)] = row
        self.updates += 1
        return row

    def render(self, now_ns: int, header: str) -> str:
        columns = ("VENUE", "MARKET", "BID", "BID SIZE", "ASK", "ASK SIZE", "AGE", "STATUS")
        body = [
            (venue, market, _price(r.price.yes_bid), _size(r.price.yes_bid_size), _price(r.price.yes_ask),
             _size(r.price.yes_ask_size), _age(now_ns - r.received_ns), str(r.price.status))
            for (venue, market), r in sorted(self.rows.items())
        ]
        widths = [max(len(cells[i]) for cells in (columns, *body)) for i in range(len(columns))]
        lines = [header, ""] + ["  ".join(c.rjust(w) if i in _NUMERIC_COLUMNS else c.ljust(w)
                                          for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
                                for cells in (columns, *body)]
        return "\n".join(lines) + "\n"


def format_update(venue: str, row: Row) -> str:
    """One self-contained line per update, timestamped in UTC, for logs and pipes."""
    p = row.price
    stamp = datetime.fromtimestamp(row.received_ns / 1e9, UTC).isoformat(timespec="milliseconds")
    return (f"{stamp} {venue} {p.market_id} bid {_price(p.yes_bid)} x {_size(p.yes_bid_size)} "
            f"ask {_price(p.yes_ask)} x {_size(p.yes_ask_size)} {p.status}")


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _size(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _age(ns: int) -> str:
    seconds = max(0, ns) / 1e9
    return f"{seconds:.1f}s" if seconds < 100 else f"{seconds / 60:.0f}m"


# -- displays -------------------------------------------------------------------------


class Display(Protocol):
    def on_update(self, venue: str, row: Row) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...


class LineDisplay:
    """One line per update; for pipes and CI logs."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def on_update(self, venue: str, row: Row) -> None:
        self.out.write(format_update(venue, row) + "\n")

    async def run(self, stop: asyncio.Event) -> None:
        # Flushing per batch of lines instead of per line keeps a fast feed cheap.
        while not stop.is_set():
            self.out.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
        self.out.flush()


class TableDisplay:
    """The whole table redrawn in place, at most `refresh_hz` times a second."""

    def __init__(self, out: IO[str], table: PriceTable, refresh_hz: float, title: str) -> None:
        self.out = out
        self.table = table
        self.period = 1.0 / refresh_hz
        self.title = title
        self.started = time.monotonic()

    def on_update(self, venue: str, row: Row) -> None:
        """Updates only change the table; the redraw loop shows them."""

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            self._draw()
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period)

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.started
        header = (f"{self.title} | {len(self.table.rows)} markets | {self.table.updates} updates "
                  f"| {elapsed:.0f}s | Ctrl-C to stop")
        self.out.write(CLEAR_SCREEN + self.table.render(time.time_ns(), header))
        self.out.flush()
