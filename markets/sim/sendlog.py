"""When each simulated frame left the server, for end-to-end latency measurement.

A consumer that knows a frame's key (Kalshi: "sid:seq"; Polymarket: the
price_change/book `hash`) can look up the send time and subtract it from its own
`time.time_ns()` at any point of the pipeline.  The ring is bounded so that a
long load run cannot exhaust memory; the optional file lets another process
(a worker, a shard) join on the key after the run.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple


class SendRecord(NamedTuple):
    venue: str
    market_id: str
    key: str
    send_ns: int


class SendLog:
    """Bounded in-memory ring of `SendRecord`s, optionally mirrored to a file.

    File lines are tab-separated `venue, market_id, key, send_ns`; they are
    buffered and written out on `flush()` (the simulators' driver flushes once
    per wake-up, after its batch of updates) so that logging never costs a
    syscall per frame.
    """

    def __init__(self, maxlen: int = 1_000_000, path: Path | None = None) -> None:
        self._ring: collections.deque[SendRecord] = collections.deque(maxlen=maxlen)
        self.path = path
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path is not None else None

    def stamp(self, venue: str, market_id: str, key: str) -> int:
        """Record that a frame is about to be written now; returns the stamp."""
        now = time.time_ns()
        self._ring.append(SendRecord(venue, market_id, key, now))
        if self._file is not None:
            self._file.write(f"{venue}\t{market_id}\t{key}\t{now}\n")
        return now

    def records(self) -> list[SendRecord]:
        return list(self._ring)

    def lookup(self, key: str, venue: str | None = None) -> SendRecord | None:
        """The most recent record with `key` (and `venue`, if given)."""
        for record in reversed(self._ring):
            if record.key == key and (venue is None or record.venue == venue):
                return record
        return None

    def __len__(self) -> int:
        return len(self._ring)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_send_log(path: Path) -> Iterator[SendRecord]:
    """Parse a file written by `SendLog`, skipping a torn last line."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4 and parts[3].isdigit():
                yield SendRecord(parts[0], parts[1], parts[2], int(parts[3]))
