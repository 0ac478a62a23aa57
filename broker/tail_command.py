"""`arbees tail [PATTERN]`: print prices (and signals) live from a running system, snapshots first.

It is a subscriber like any shard: it asks the broker for the directory, subscribes
the exact topics of the markets whose `venue/market_id` (or game id / name) matches
PATTERN (a shell-style glob; default all), takes each market's current record from
its worker's snapshot service, then prints every change. Signals come from the
shards' signal sockets (`--signals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import sys
from pathlib import Path
from typing import IO, Any

import click
import msgpack
import zmq
import zmq.asyncio

from broker import security
from broker.broker_client import BrokerUnreachable
from broker.endpoints import EndpointError, find_broker
from broker.launch_view import describe_signal
from broker.protocol import MAX_CONTROL_BYTES, MarketKey, key_text
from broker.roles import curve_dir_option, load_curve, run_foreground, run_role
from broker.tasks import run_until_stopped
from broker.universe import Game
from markets.models import MarketPrice
from shard.subscriber import Directory, PriceSubscriber


def price_line(price: MarketPrice) -> str:
    bid = "--" if price.yes_bid is None else f"{price.yes_bid:.4f}"
    ask = "--" if price.yes_ask is None else f"{price.yes_ask:.4f}"
    return (f"{price.platform.value}/{price.market_id} {price.status.value} yes {bid} / {ask} "
            f"size {price.yes_bid_size} / {price.yes_ask_size} seq {price.seq}")


def price_json(price: MarketPrice) -> dict[str, Any]:
    return {"type": "price", **{k: (v.value if hasattr(v, "value") else v) for k, v in price._asdict().items()}}


class Tail:
    def __init__(self, broker: str, pattern: str, *, signals: bool, as_json: bool, count: int | None,
                 out: IO[str], curve: security.CurveKeys | None = None) -> None:
        self.pattern = pattern
        self.as_json = as_json
        self.remaining = count
        self.out = out
        self.done = asyncio.Event()
        self.directory_seen = asyncio.Event()
        self._games_of: dict[MarketKey, Game] = {}
        self._signal_endpoints: set[str] = set()
        self._signals_sock: zmq.asyncio.Socket | None = None
        self.with_signals = signals
        self.curve = curve
        self.subscriber = PriceSubscriber(broker, wants=self._wants, on_change=self._print_price,
                                          on_directory=self._on_directory, curve=curve)

    def _wants(self, key: MarketKey) -> bool:
        game = self._games_of.get(key)
        names = [key_text(key)] + ([game.game_id, game.name] if game else [])
        return any(fnmatch.fnmatchcase(n, self.pattern) for n in names)

    def _on_directory(self, directory: Directory) -> None:
        self._games_of = {m.key: g for g in directory.games for m in g.markets}
        self.directory_seen.set()
        if self._signals_sock is not None:
            for endpoint in set(directory.shards.values()) - self._signal_endpoints:
                self._signals_sock.connect(endpoint)
                self._signal_endpoints.add(endpoint)

    def _emit(self, text: str) -> None:
        if self.done.is_set():
            return
        self.out.write(text + "\n")
        self.out.flush()
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()

    def _print_price(self, key: MarketKey, price: MarketPrice) -> None:
        self._emit(json.dumps(price_json(price)) if self.as_json else price_line(price))

    def _print_signal(self, body: dict[str, Any]) -> None:
        game = self._games_of_any(body.get("game_id"))
        if game is None or not any(self._wants(m.key) for m in game.markets):
            return
        self._emit(json.dumps({"type": "signal", **body}) if self.as_json else describe_signal(body))

    def _games_of_any(self, game_id: object) -> Game | None:
        return next((g for g in self._games_of.values() if g.game_id == game_id), None)

    async def run(self, stop: asyncio.Event, duration: float | None, timeout: float) -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
        security.client(sock, self.curve)
        if self.with_signals:
            sock.setsockopt(zmq.SUBSCRIBE, b"signal/")
            self._signals_sock = sock
        tasks = [asyncio.create_task(self.subscriber.run(stop))]
        if self.with_signals:
            tasks.append(asyncio.create_task(self._signals(sock, stop)))
        try:
            try:
                await asyncio.wait_for(self.directory_seen.wait(), timeout)
            except TimeoutError:
                raise BrokerUnreachable(f"no answer from the broker at {self.subscriber.broker} within "
                                        f"{timeout:g} s: is `arbees launch` (or `arbees broker`) running?") from None
            await run_until_stopped(tasks, stop, also=(self.done,), timeout=duration)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sock.close(linger=0)
            ctx.term()

    async def _signals(self, sock: zmq.asyncio.Socket, stop: asyncio.Event) -> None:
        while not stop.is_set():
            parts = await sock.recv_multipart()
            with contextlib.suppress(Exception):  # a malformed signal is skipped, not fatal
                body = msgpack.unpackb(parts[-1], raw=False)
                if isinstance(body, dict):
                    self._print_signal(body)


@click.command("tail")
@click.argument("pattern", default="*")
@click.option("--broker", "broker_endpoint", default=None,
              help="Broker control endpoint (default: $ARBEES_BROKER, else the running `arbees launch`).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--signals/--no-signals", default=True, show_default=True, help="Also print signals.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many lines.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds to wait for the broker's first answer.")
@curve_dir_option
def tail(pattern: str, broker_endpoint: str | None, as_json: bool, signals: bool, count: int | None,
         duration: float | None, timeout: float, curve_dir: Path | None) -> None:
    """Print live prices (and signals) of the markets matching PATTERN (glob on venue/market, game id or name)."""
    try:
        endpoint = find_broker(broker_endpoint)
    except EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    tailer = Tail(endpoint, pattern, signals=signals, as_json=as_json, count=count, out=sys.stdout,
                  curve=load_curve(curve_dir))

    async def role(stop: asyncio.Event) -> None:
        await tailer.run(stop, duration, timeout)

    run_foreground(lambda: run_role(role), sys.stdout)
