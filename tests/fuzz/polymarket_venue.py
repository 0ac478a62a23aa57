"""A socket-less Polymarket market channel for the fuzz run: true books and the client's subscriptions.

It answers the client's subscribe/unsubscribe messages (an initial-dump array of
`book` events) and moves its true books with the simulator's `SimLadder`, writing
every event with the simulator's wire builders (`markets.sim.polymarket.wire`):
`price_change` entries carrying the post-change best bid and ask,
`last_trade_price`, `tick_size_change` (sometimes with no `book` after it) and the
venue's `book` resends. (The NO token's mirrored entries are left out: the client
counts them as data not its own, which would hide whether a mutation was counted.)
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from typing import Any

import orjson

from markets.base_ws import BaseWebSocketClient
from markets.sim.ladder import SimLadder
from markets.sim.polymarket import wire
from markets.sim.universe import SimMarket
from tests.fuzz.harness import Sent

CROSSING_BID = 9_900


class PolymarketFuzzVenue:
    def __init__(self, rng: random.Random, markets: list[SimMarket]) -> None:
        self.rng = rng
        self.markets = {m.yes_token_id: m for m in markets}
        self.fair = {t: rng.uniform(0.3, 0.6) for t in self.markets}
        self.truth = {t: SimLadder(100, rng, self.fair[t], depth=8) for t in self.markets}
        self.tick = dict.fromkeys(self.markets, wire.TICK_CENT)
        self.subscribed: set[str] = set()
        self._hashes = wire.HashMint("fuzz")

    def exact(self, client: BaseWebSocketClient, token: str) -> bool:
        """The published top is the venue's. Without sequence numbers only the top is
        checkable (each `price_change` carries it); a lost deep level shows when it
        reaches the top."""
        price = client.latest_price(token)
        ladder = self.truth[token]
        bid, ask = ladder.best_bid(), ladder.best_ask()
        return price is not None and (price.yes_bid, price.yes_ask) == (
            None if bid is None else bid / 10_000, None if ask is None else ask / 10_000)

    def streams_of(self, token: str) -> Iterable[Hashable]:
        return (token,)

    def concerned(self, text: str, payload: Any) -> set[str]:
        return {t for t in self.markets if t in text}

    def reset(self) -> None:
        self.subscribed.clear()

    # -- answering the client -------------------------------------------------------------

    def answer(self, text: str) -> list[Sent]:
        if text == "PING":
            return []
        message = orjson.loads(text)
        tokens = [t for t in message["assets_ids"] if t in self.markets]
        if message.get("operation") == "unsubscribe":
            self.subscribed.difference_update(tokens)
            return []
        self.subscribed.update(tokens)
        if not message.get("initial_dump", True) or not tokens:
            return []
        return [Sent([self._book(t) for t in tokens], set(tokens), set(tokens))]

    def _book(self, token: str) -> dict[str, Any]:
        bids, asks = self.truth[token].snapshot()
        return wire.book_event(market=self.markets[token].condition_id, asset_id=token, bids=bids, asks=asks,
                               timestamp=wire.now_ms_text(), hash_=self._hashes.next(), last_trade_price=None,
                               bare=self.rng.random() < 0.3)

    # -- the market moving ------------------------------------------------------------------

    def _token(self) -> str | None:
        live = sorted(self.subscribed)
        return self.rng.choice(live) if live else None

    def step(self) -> list[Sent]:
        """Mostly a market move; now and then a trade, a tick change, a resend, a crossing."""
        roll = self.rng.random()
        if roll < 0.02:
            return self.crossing()
        if roll < 0.04:
            return self.tick_change()
        if roll < 0.08:
            return self.resend()
        if roll < 0.15:
            return self.trade()
        return self.move()

    def move(self) -> list[Sent]:
        """One market move as one `price_change`."""
        token = self._token()
        if token is None:
            return []
        ladder, market = self.truth[token], self.markets[token]
        bids, asks = ladder.snapshot()
        entries = []
        for change in ladder.step(self.fair[token]):
            levels = bids if change.side == "bid" else asks
            if change.new_size:
                levels[change.price] = change.new_size
            else:
                levels.pop(change.price, None)
            best_bid, best_ask = max(bids, default=None), min(asks, default=None)
            buy = change.side == "bid"
            entries.append(wire.price_change_entry(asset_id=token, price=change.price, size=change.new_size,
                                                   buy=buy, hash_=self._hashes.next(), best_bid=best_bid,
                                                   best_ask=best_ask))
        event = wire.price_change_event(market.condition_id, entries, wire.now_ms_text())
        return [Sent(event, {token}, {token})]

    def crossing(self) -> list[Sent]:
        """A well-formed `price_change` whose bid crosses every ask, its best prices agreeing with it."""
        token = self._token()
        if token is None or self.truth[token].best_ask() is None:  # nothing to cross: a valid book
            return []
        entry = wire.price_change_entry(asset_id=token, price=CROSSING_BID, size=100, buy=True,
                                        hash_=self._hashes.next(), best_bid=CROSSING_BID,
                                        best_ask=self.truth[token].best_ask())
        event = wire.price_change_event(self.markets[token].condition_id, [entry], wire.now_ms_text())
        return [Sent(event, {token})]

    def trade(self) -> list[Sent]:
        token = self._token()
        if token is None:
            return []
        price = self.truth[token].best_bid() or 100
        return [Sent(wire.last_trade_event(market=self.markets[token].condition_id, asset_id=token, price=price,
                                           size=100, buy=False, timestamp=wire.now_ms_text()), {token})]

    def tick_change(self) -> list[Sent]:
        """A tick-size change; half the time the venue sends no `book` after it."""
        token = self._token()
        if token is None:
            return []
        old = self.tick[token]
        new = wire.TICK_DECI_CENT if old == wire.TICK_CENT else wire.TICK_CENT
        self.tick[token] = new
        frames = [Sent(wire.tick_size_change_event(market=self.markets[token].condition_id, asset_id=token,
                                                   old_tick=old, new_tick=new, timestamp=wire.now_ms_text()),
                       {token})]
        if self.rng.random() < 0.5:
            frames.append(Sent(self._book(token), {token}, {token}))
        return frames

    def resend(self) -> list[Sent]:
        """The venue's `book` resend (it sends one after trades)."""
        token = self._token()
        return [] if token is None else [Sent(self._book(token), {token}, {token})]
