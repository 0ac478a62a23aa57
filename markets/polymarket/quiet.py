"""QuietBookVerifier: asks the CLOB REST API about quiet tokens, at a bounded rate.

The market channel has no sequence numbers, so a token that has been silent on a
healthy socket is either quiet (the usual case: most markets go minutes without a
change) or frozen (the venue is known to stop sending data on a socket that still
answers PING, protocols/polymarket.md §3 and its appendix). Resubscribing every
quiet token to find out would churn the socket for nothing; REST `POST /books`
tells the two apart for up to 500 tokens per request. This module only schedules
and fetches: the client asks (`request`), and gets each token's REST book summary
(or None when it could not be had) through the callback it passed in. What a
match or mismatch means for a book is the client's business.

Rate. Requests draw on a token bucket of `rate` requests/s (default 2/s, i.e. 20
per 10 s against the venue's published `/books` limit of 500 per 10 s, §9.1), and
each carries up to `batch` tokens, oldest request first. The client's watchdog
hands a token over at most once per `stale_after`, so the load is bounded by the
number of quiet tokens over `stale_after` whatever the bucket allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import aiohttp

from markets.base import TokenBucket, VenueError

log = logging.getLogger(__name__)

MAX_BATCH = 500  # tokens per POST /books, the venue's limit


class BookSource(Protocol):
    """Fetches REST book summaries (PolymarketClient does, with `POST /books`)."""

    async def get_books(self, token_ids: Iterable[str]) -> list[dict[str, Any]]: ...


VerifiedCallback = Callable[[str, int, Mapping[str, Any] | None], None]
"""(token id, when it was requested in ns, its REST book or None if unavailable)."""


class QuietBookVerifier:
    """One background task fetching REST books for the tokens the client asks about."""

    def __init__(self, source: BookSource, on_result: VerifiedCallback, counts: Counter[str], *,
                 rate: float = 2.0, batch: int = 100) -> None:
        if not rate > 0:
            raise ValueError(f"verify rate must be > 0 requests/s, got {rate!r}")
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"verify batch must be within 1..{MAX_BATCH} tokens, got {batch!r}")
        self.source = source
        self.batch = batch
        self._on_result = on_result
        self._counts = counts
        self._bucket = TokenBucket(rate, max(1.0, rate))
        self._pending: dict[str, int] = {}  # token -> requested at (ns), oldest first
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def request(self, tokens: Iterable[str], now: int) -> None:
        """Check these tokens soon; a token already waiting keeps its place."""
        for token in tokens:
            self._pending.setdefault(token, now)
        if self._pending:
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name="polymarket-quiet-verifier")
            self._wake.set()

    def discard(self, tokens: Iterable[str]) -> None:
        """Forget tokens no longer subscribed (a fetch in flight still reports them)."""
        for token in tokens:
            self._pending.pop(token, None)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        pending, counts = self._pending, self._counts
        while True:
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._bucket.acquire()
            tokens = list(pending)[: self.batch]
            if not tokens:  # all discarded while we waited for the bucket
                continue
            requested = [pending.pop(token) for token in tokens]
            counts["requests"] += 1
            counts["tokens"] += len(tokens)
            found: dict[object, Mapping[str, Any]] = {}
            try:
                books = await self.source.get_books(tokens)
            except (VenueError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                counts["request_failed"] += 1  # the tokens stay unknown; asked again when due
                log.warning("polymarket: REST check of %d quiet token(s) failed: %r", len(tokens), exc)
            except Exception:  # a bug, not an outage: said loudly, and the checks go on
                counts["request_failed"] += 1
                log.exception("polymarket: REST check of %d quiet token(s) failed", len(tokens))
            else:
                found = {book.get("asset_id"): book for book in books if isinstance(book, Mapping)}
            for token, at in zip(tokens, requested, strict=True):
                self._on_result(token, at, found.get(token))
