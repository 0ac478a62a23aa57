"""Per-record timestamps for the load run, written by the worker and the shard when asked to.

Off by default (`arbees worker --frame-log FILE`, `arbees shard --latency-log FILE`).
On the hot path each log only appends a tuple to a list; `flush_every` runs beside
the role and turns the buffer into tab-separated lines once per interval, so a
measured process never makes a syscall per message.

* The worker's *frame log* says when each venue frame was read: one line per
  send-log key the frame carries (`venue, market_id, key, recv_ns`, the same layout
  as the simulators' send log, so `read_send_log` reads both). Keys are the ones the
  simulators stamp: Kalshi `sid:seq` of a sequenced book frame, Polymarket the
  `hash` of each book / price_change entry.
* The shard's *latency log* has one line per record applied from the bus:
  `venue, market_id, epoch, seq, recv_ns, publish_ns, decode_ns`. `recv_ns` is the
  worker's read stamp of the frame that produced the record (`MarketPrice.recv_ts_ns`),
  which is what joins it to the frame log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from markets.models import MarketPrice

FLUSH_INTERVAL = 0.5
FLUSH_SLICE = 200
"""Rows written per slice: the loop gets control back between slices, so a flush never holds
it for more than about a millisecond (one 0.5 s flush of a 2,000-market worker held it ~20 ms)."""


class BufferedLog:
    """Rows buffered in memory and written as tab-separated lines by `flush()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._rows: list[tuple[Any, ...]] = []

    def _lines(self, rows: list[tuple[Any, ...]]) -> Iterator[str]:
        for row in rows:
            yield "\t".join(map(str, row)) + "\n"

    def flush(self, limit: int | None = None) -> int:
        """Write the oldest `limit` rows (all by default); returns how many are still buffered."""
        # Emptied in place: hot-path closures may hold a reference to the list itself.
        rows = self._rows[:limit]
        del self._rows[:len(rows)]
        if rows and not self._file.closed:
            self._file.writelines(self._lines(rows))
            self._file.flush()
        return len(self._rows)

    def close(self) -> None:
        self.flush()
        self._file.close()


@contextlib.asynccontextmanager
async def flush_every(log: BufferedLog | None, interval: float = FLUSH_INTERVAL) -> AsyncIterator[None]:
    """Flush `log` every `interval` seconds, in slices, while the body runs; then all of it, and close it."""
    if log is None:
        yield
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            while log.flush(FLUSH_SLICE):
                await asyncio.sleep(0)

    task = asyncio.create_task(loop(), name="latency-log-flush")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.close()


# -- the worker's frame log ----------------------------------------------------------------


def frame_keys(venue: str, data: str) -> list[tuple[str, str]]:
    """The (market_id, send-log key) pairs a venue frame carries; [] for frames the simulators do not stamp."""
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    if venue == "kalshi":
        if not isinstance(frame, dict) or "seq" not in frame or "sid" not in frame:
            return []
        msg = frame.get("msg")
        ticker = msg.get("market_ticker") if isinstance(msg, dict) else None
        return [(ticker, f"{frame['sid']}:{frame['seq']}")] if isinstance(ticker, str) else []
    events = frame if isinstance(frame, list) else [frame]
    keys = []
    for event in events:
        if not isinstance(event, dict):
            continue
        entries = event.get("price_changes")
        for entry in entries if isinstance(entries, list) else [event]:
            if isinstance(entry, dict) and isinstance(entry.get("hash"), str) \
                    and isinstance(entry.get("asset_id"), str):
                keys.append((entry["asset_id"], entry["hash"]))
    return keys


class FrameLog(BufferedLog):
    """When each venue frame reached the worker, keyed as the simulators' send log keys it."""

    def attach(self, venue: str, ws_client: Any) -> None:
        """Record every frame `ws_client` handles (wraps its `_handle_message` on the instance).

        The connection reads `client._handle_message` when a session starts, so this must
        run before the client connects; the venue client itself is left unchanged.
        """
        handle = ws_client._handle_message
        rows = self._rows

        def recording(data: str, recv_ns: int) -> None:
            rows.append((venue, recv_ns, data))
            handle(data, recv_ns)

        ws_client._handle_message = recording

    def _lines(self, rows: list[tuple[Any, ...]]) -> Iterator[str]:
        for venue, recv_ns, data in rows:
            for market_id, key in frame_keys(venue, data):
                yield f"{venue}\t{market_id}\t{key}\t{recv_ns}\n"


# -- the shard's latency log ----------------------------------------------------------------


class ShardRecord(NamedTuple):
    venue: str
    market_id: str
    epoch: int
    seq: int
    recv_ns: int
    publish_ns: int
    decode_ns: int


class LatencyLog(BufferedLog):
    """One row per record a shard applied from the bus (snapshots are not updates and are not logged)."""

    def add(self, record: MarketPrice, decode_ns: int) -> None:
        self._rows.append((record.platform.value, record.market_id, record.epoch, record.seq, record.recv_ts_ns,
                           record.publish_ts_ns, decode_ns))


def read_latency_log(path: Path) -> Iterator[ShardRecord]:
    """Parse a shard latency log, skipping a torn last line."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 7 and all(p.isdigit() for p in parts[2:]):
                yield ShardRecord(parts[0], parts[1], *map(int, parts[2:]))  # type: ignore[arg-type]
