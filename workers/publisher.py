"""The worker's side of the bus: stamp each price with seq, epoch and publish time, and PUB it.

Called inline from the venue clients' listener (the hot path), so it does one dict
lookup, one `_replace`, one encode and one non-blocking send per price. A PUB
socket never blocks: a subscriber whose queue is full loses messages (ZeroMQ drops
at the high-water mark), which is why every record carries a per-market `seq`
the subscriber can check, and why the latest record of every market is kept here
for the snapshot service.

Ownership is per (market, epoch): a market given to this worker again with a new
epoch starts its seq at 1 again; a price for a market this worker does not own
(late, after an unassignment) is not published.
"""

from __future__ import annotations

import time
from collections import Counter

import zmq

from broker.protocol import MarketKey
from markets import codec
from markets.models import MarketPrice, PriceStatus

PUBLISHED_BY_STATUS = {status: f"published_{status.value}" for status in PriceStatus}
"""Counter names per status of the records sent: what a shard's `status_<status>` counts must add up to."""


class Owned:
    """One market this worker publishes."""

    __slots__ = ("topic", "epoch", "seq", "payload", "published_ns", "status")

    def __init__(self, topic: bytes, epoch: int) -> None:
        self.topic = topic
        self.epoch = epoch
        self.seq = 0
        self.payload: bytes | None = None
        """The last record published (what a snapshot request gets), or None before the first."""
        self.published_ns = 0
        self.status = ""


class Publisher:
    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        self.owned: dict[MarketKey, Owned] = {}
        self.counters: Counter[str] = Counter()

    def own(self, key: MarketKey, epoch: int) -> bool:
        """Publish `key` under `epoch` from now on; True if this is a new ownership (seq restarts)."""
        current = self.owned.get(key)
        if current is not None and current.epoch == epoch:
            return False
        self.owned[key] = Owned(codec.topic(*key), epoch)
        return True

    def disown(self, key: MarketKey) -> None:
        self.owned.pop(key, None)

    def publish(self, price: MarketPrice) -> None:
        owned = self.owned.get((price.platform, price.market_id))
        if owned is None:
            self.counters["unowned_prices"] += 1
            return
        owned.seq += 1
        now = time.time_ns()
        payload = codec.encode(price._replace(seq=owned.seq, epoch=owned.epoch, publish_ts_ns=now))
        owned.payload = payload
        owned.published_ns = now
        owned.status = price.status.value
        try:
            self._sock.send_multipart((owned.topic, payload), zmq.NOBLOCK)
            self.counters["published"] += 1
            self.counters[PUBLISHED_BY_STATUS[price.status]] += 1
        except zmq.Again:
            self.counters["pub_dropped"] += 1
