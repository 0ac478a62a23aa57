"""A socket-less Kalshi venue for the fuzz run: true books, sids, seqs, command replies.

It answers the client's own commands (subscribe, get_snapshot, delete_markets,
unsubscribe) the way the venue does and moves its true books with the simulator's
`SimLadder`, serializing every frame with the simulator's wire builders
(`markets.sim.kalshi.wire`). Each frame comes with the markets it concerns, so the
fuzz run can tell a market that a frame touched from one it must leave alone.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from markets.base_ws import BaseWebSocketClient
from markets.sim.kalshi import wire
from markets.sim.ladder import SimLadder
from markets.sim.universe import SimMarket
from tests.fuzz.harness import Sent

BOOK, TICKER, TRADE = "orderbook_delta", "ticker", "trade"
CROSSING_BID = 9_900
"""Where an injected crossing bid goes: the true books stay near their fair values in
[0.3, 0.6] with cent ticks and a depth of eight, so no true ask ever reaches it."""


@dataclass
class VenueSub:
    channel: str
    tickers: list[str]
    seq: int = 0


class KalshiFuzzVenue:
    def __init__(self, rng: random.Random, markets: list[SimMarket]) -> None:
        self.rng = rng
        self.markets = {m.kalshi_ticker: m for m in markets}
        self.fair = {t: rng.uniform(0.3, 0.6) for t in self.markets}
        self.truth = {t: SimLadder(100, rng, self.fair[t], depth=8) for t in self.markets}
        self.subs: dict[int, VenueSub] = {}
        self.commands: dict[int, set[str]] = {}
        self._next_sid = 1

    # -- the venue's view ----------------------------------------------------------------

    def sids_of(self, ticker: str, channel: str = BOOK) -> list[int]:
        return [sid for sid, sub in self.subs.items() if sub.channel == channel and ticker in sub.tickers]

    def streams_of(self, ticker: str) -> Iterable[Hashable]:
        return self.sids_of(ticker)

    def exact(self, client: BaseWebSocketClient, ticker: str) -> bool:
        """Every level is the venue's: the sid's `seq` reveals any lost update."""
        book = client.book(ticker)
        return book is not None and (book.bids, book.asks) == self.truth[ticker].snapshot()

    def concerned(self, text: str, payload: Any) -> set[str]:
        """Markets a frame (as sent, possibly mutated) names, or reaches through its sid or command id."""
        markets = {t for t in self.markets if t in text}
        if isinstance(payload, dict):
            for key in ("sid", "id"):
                value = payload.get(key)
                if type(value) is int:
                    sub = self.subs.get(value)
                    markets.update(sub.tickers if sub is not None else ())
                    markets.update(self.commands.get(value, ()))
            msg = payload.get("msg")
            if isinstance(msg, dict) and type(msg.get("sid")) is int:
                sub = self.subs.get(msg["sid"])
                markets.update(sub.tickers if sub is not None else ())
        return markets

    def reset(self) -> None:
        """A new session: sids start again."""
        self.subs.clear()
        self.commands.clear()
        self._next_sid = 1

    # -- answering the client -------------------------------------------------------------

    def answer(self, text: str) -> list[Sent]:
        command = orjson.loads(text)
        cmd, params, cid = command["cmd"], command["params"], command["id"]
        if cmd == "subscribe":
            return self._subscribe(cid, params)
        if cmd == "unsubscribe":
            out = []
            for sid in params["sids"]:
                sub = self.subs.pop(sid, None)
                if sub is not None:
                    out.append(Sent({"id": cid, "sid": sid, "seq": sub.seq, "type": "unsubscribed"},
                                    set(sub.tickers)))
            return out
        if cmd == "update_subscription":
            sub = self.subs.get(params.get("sid"))
            tickers = params["market_tickers"]
            if sub is None:
                return [Sent(orjson.loads(wire.error_reply(cid, 6, "Unknown subscription")), set(tickers))]
            if params["action"] == "delete_markets":
                sub.tickers = [t for t in sub.tickers if t not in tickers]
                return [Sent({"id": cid, "type": "ok", "msg": {"market_tickers": sub.tickers}}, set(tickers))]
            out = [self._snapshot(params["sid"], t) for t in tickers if t in sub.tickers]
            return [*out, Sent({"id": cid, "type": "ok"}, set(tickers))]
        raise AssertionError(f"unexpected command {command}")

    def _subscribe(self, cid: int, params: dict[str, Any]) -> list[Sent]:
        tickers = list(params.get("market_tickers", ()))  # market_lifecycle_v2 takes none
        self.commands[cid] = set(tickers)
        out = []
        for channel in params["channels"]:
            sid, self._next_sid = self._next_sid, self._next_sid + 1
            self.subs[sid] = VenueSub(channel, tickers)
            out.append(Sent(orjson.loads(wire.reply("subscribed", cid, msg={"channel": channel, "sid": sid})),
                            set(tickers)))
            if channel == BOOK:
                out.extend(self._snapshot(sid, t) for t in tickers)
        return out

    def _snapshot(self, sid: int, ticker: str) -> Sent:
        sub = self.subs[sid]
        sub.seq += 1
        bids, asks = self.truth[ticker].snapshot()
        numeric = self.rng.random() < 0.2
        msg = wire.snapshot_msg(self.markets[ticker], bids, asks, self.rng.random() < 0.3, None,
                                lambda prices: self.rng.sample(sorted(prices), len(prices)), numeric)
        return Sent({"type": "orderbook_snapshot", "sid": sid, "seq": sub.seq, "msg": msg}, {ticker}, {sid})

    # -- the market moving ------------------------------------------------------------------

    def step(self) -> list[Sent]:
        """Mostly a market move; now and then a ticker or trade print, or a crossing delta."""
        roll = self.rng.random()
        if roll < 0.02:
            return self.crossing()
        if roll < 0.12:
            return self.trade()
        return self.move()

    def move(self) -> list[Sent]:
        """One market move: a delta per changed level on every book sid carrying the market."""
        ticker = self.rng.choice(list(self.markets))
        out = []
        for change in self.truth[ticker].step(self.fair[ticker]):
            side = "yes" if change.side == "bid" else "no"
            out.extend(self._delta(ticker, side, change.price, change.new_size - change.old_size))
        return out

    def crossing(self) -> list[Sent]:
        """A well-formed delta that crosses the book: a YES bid far above every true ask."""
        ticker = self.rng.choice(list(self.markets))
        if self.truth[ticker].best_ask() is None:  # nothing to cross: that would be a valid book
            return []
        return self._delta(ticker, "yes", CROSSING_BID, 100)

    def _delta(self, ticker: str, side: str, price: int, delta: int) -> list[Sent]:
        msg = wire.delta_msg(self.markets[ticker], side, price, delta, self.rng.random() < 0.3,
                             1_700_000_000_000, self.rng.random() < 0.2)
        out = []
        for sid in self.sids_of(ticker):
            sub = self.subs[sid]
            sub.seq += 1
            out.append(Sent({"type": "orderbook_delta", "sid": sid, "seq": sub.seq, "msg": msg}, {ticker}, {sid}))
        return out

    def trade(self) -> list[Sent]:
        """A ticker or trade print at the market's true best bid."""
        ticker = self.rng.choice(list(self.markets))
        price = self.truth[ticker].best_bid() or 100
        channel = self.rng.choice((TICKER, TRADE))
        key = "price_dollars" if channel == TICKER else "yes_price_dollars"
        msg = {"market_ticker": ticker, key: wire.price_str(price), "ts": 1_700_000_000}
        return [Sent(orjson.loads(wire.data_frame(channel, sid, None, orjson.dumps(msg).decode())), {ticker})
                for sid in self.sids_of(ticker, channel)]
