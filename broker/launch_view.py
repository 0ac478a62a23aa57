"""What `arbees launch` shows: a live table by game on a terminal, signal lines into a pipe.

Both read one `LaunchModel`, which the launcher fills from an in-process
`PriceSubscriber` (every game's markets, from snapshots first) and a SUB on the
shards' signal sockets. The table is rich's (`Live` + `Table`): it fits the rows
to the terminal's height and sorts by best cross-venue edge (or by activity), so
hundreds of games stay readable; nothing here writes escape codes by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from broker.universe import Game
from markets.models import MarketPrice, Platform, PriceStatus
from shard.signals import FeeSchedule, best_cross_edge_cents
from shard.subscriber import PriceSubscriber

SIGNAL_ROWS = 6


@dataclass
class LaunchModel:
    subscriber: PriceSubscriber
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    signals: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    signal_count: int = 0
    restarts: Callable[[], int] = lambda: 0

    @property
    def games(self) -> list[Game]:
        return self.subscriber.directory.games

    def price(self, game: Game, venue: Platform) -> MarketPrice | None:
        market = game.market(venue)
        state = None if market is None else self.subscriber.states.get(market.key)
        return None if state is None else state.latest

    def owner(self, game: Game) -> str:
        owners = {self.subscriber.directory.placed.get(m.key, ("-", 0))[0] for m in game.markets}
        return ",".join(sorted(owners))

    def edge(self, game: Game) -> float | None:
        a, b = self.price(game, Platform.KALSHI), self.price(game, Platform.POLYMARKET)
        if a is None or b is None:
            return None
        return best_cross_edge_cents(a, b, inverted=game.inverted, fees=self.fees)

    def last_update_ns(self, game: Game) -> int:
        return max((p.recv_ts_ns for v in Platform if (p := self.price(game, v)) is not None), default=0)

    def add_signal(self, body: dict[str, Any]) -> None:
        self.signal_count += 1
        self.signals.append(body)

    def summary(self) -> str:
        states = self.subscriber.states.values()
        live = sum(1 for s in states if s.latest is not None and s.latest.status is PriceStatus.LIVE)
        directory = self.subscriber.directory
        return (f"{live}/{len(self.subscriber.states)} markets live, {len(directory.workers)} workers, "
                f"{len(directory.shards)} shards, {self.signal_count} signals, {self.restarts()} restarts")


def describe_signal(body: dict[str, Any]) -> str:
    """One line per signal: what to buy where, for how much, and the net edge."""
    game = body.get("game_id", "?")
    if body.get("kind") == "arbitrage":
        legs = " + ".join(f"{leg['side'].upper()} {leg['platform']} @ {leg['price']:.4f}" for leg in body["legs"])
        return (f"ARB  {game}: {legs} x{body['contracts']}: edge {body['edge_cents_per_contract']:.2f}c/contract, "
                f"${body['edge_dollars']:.2f} after ${body['fees_dollars']:.2f} fees")
    return (f"EDGE {game}: {str(body.get('side', '?')).upper()} {body.get('platform')} @ {body.get('price', 0):.4f} "
            f"vs model {body.get('fair', 0):.4f} x{body.get('contracts')}: "
            f"edge {body.get('edge_cents_per_contract', 0):.2f}c/contract")


def _quote(price: MarketPrice | None) -> Text:
    if price is None:
        return Text("…", style="dim")
    bid = "--" if price.yes_bid is None else f"{price.yes_bid:.4f}"
    ask = "--" if price.yes_ask is None else f"{price.yes_ask:.4f}"
    style = {PriceStatus.LIVE: "", PriceStatus.STALE: "yellow", PriceStatus.RESYNCING: "red",
             PriceStatus.CLOSED: "dim"}[price.status]
    suffix = "" if price.status is PriceStatus.LIVE else f" {price.status.value}"
    return Text(f"{bid} / {ask}{suffix}", style=style)


def render(model: LaunchModel, height: int, sort: str) -> Group:
    now = time.time_ns()
    games = list(model.games)
    if sort == "edge":
        games.sort(key=lambda g: (model.edge(g) is None, -(model.edge(g) or 0.0)))
    else:
        games.sort(key=lambda g: -model.last_update_ns(g))
    table = Table(title=f"arbees launch — {model.summary()}", expand=True, title_justify="left")
    table.add_column("game", ratio=3, no_wrap=True)
    table.add_column("Kalshi YES bid / ask", no_wrap=True)
    table.add_column("Polymarket YES bid / ask", no_wrap=True)
    table.add_column("worker", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    table.add_column("best edge", justify="right", no_wrap=True)
    room = max(1, height - SIGNAL_ROWS - 8)
    for game in games[:room]:
        edge = model.edge(game)
        last = model.last_update_ns(game)
        table.add_row(game.name or game.game_id, _quote(model.price(game, Platform.KALSHI)),
                      _quote(model.price(game, Platform.POLYMARKET)), model.owner(game),
                      "-" if not last else f"{(now - last) / 1e9:.1f}s",
                      Text("-" if edge is None else f"{edge:+.2f}c", style="bold green" if (edge or 0) > 0 else ""))
    if len(games) > room:
        table.caption = f"{len(games) - room} more games (sorted by {sort}); enlarge the terminal to see them"
    signals = Table(title="latest signals", expand=True, title_justify="left", show_header=False)
    signals.add_column("signal")
    for body in list(model.signals)[-SIGNAL_ROWS:]:
        signals.add_row(describe_signal(body))
    return Group(table, signals)


async def run_table(model: LaunchModel, out: IO[str], stop: asyncio.Event, refresh_hz: float, sort: str) -> None:
    console = Console(file=out)
    with Live(console=console, auto_refresh=False, screen=False, transient=False) as live:
        while not stop.is_set():
            live.update(render(model, console.size.height, sort), refresh=True)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1 / refresh_hz)
            except TimeoutError:
                pass


async def run_lines(model: LaunchModel, out: IO[str], stop: asyncio.Event, status_every: float) -> None:
    """Into a pipe: each signal as one line as it comes, and a status line every `status_every` seconds."""
    printed = 0
    next_status = time.monotonic() + min(status_every, 2.0)
    while not stop.is_set():
        new = model.signal_count - printed
        if new > 0:
            for body in list(model.signals)[-min(new, len(model.signals)):]:
                out.write(describe_signal(body) + "\n")
            printed = model.signal_count
        if time.monotonic() >= next_status:
            out.write(f"status: {model.summary()}\n")
            next_status = time.monotonic() + status_every
        out.flush()
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.2)
        except TimeoutError:
            pass
