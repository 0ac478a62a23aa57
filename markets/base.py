"""REST plumbing shared by the venue clients: pooling, rate limiting, retries, errors.

Every venue REST client needs the same four things, and each is easy to get
subtly wrong, so they live here once:

* **One pooled session per client.** A new ``aiohttp.ClientSession`` per call
  would pay a TCP + TLS handshake every time; the session is created lazily
  (it must be born inside the running loop) and closed by ``close()`` /
  ``async with``.  A session passed in by the caller is used but never closed.
* **A token bucket** (``TokenBucket``) that reserves a slot synchronously and
  sleeps *outside* any lock, so N concurrent callers wait their turn in parallel
  instead of queueing behind one sleeper.  A 429 empties the bucket for everyone
  (``hold_off``): the venue has told us the shared budget is spent.
* **Bounded retries** with exponential backoff and jitter on timeouts, dropped
  connections and 5xx; 429 honours ``Retry-After`` when present (capped) and
  otherwise uses the same backoff.  A loop with a fixed attempt budget, never
  recursion.  Non-idempotent requests (POST) are not retried after an ambiguous
  failure (timeout, 5xx), because the venue may have acted on them already.
  Signed requests do not follow redirects, so auth headers never reach another host.
* **Errors that say what happened**: ``VenueError`` names venue, method, path,
  status and the venue's own code/message, parsed from either the flat
  ``{"code","message"}`` or the nested ``{"error": {...}}`` shape.

``stream_prices`` here is plain REST polling.  It is kept on purpose: it is the
baseline the load script compares the WebSocket clients against, and it counts
its HTTP requests in ``request_count``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Self
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from markets.backoff import backoff_delay
from markets.models import MarketPrice

log = logging.getLogger(__name__)

JSONValue = Any
ParamValue = str | int | float | bool | None | Iterable[str | int | float]

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_MAX_BODY_IN_MESSAGE = 300


class VenueError(Exception):
    """A venue request failed; the message names venue, method, path and status.

    ``status`` is None when no HTTP response arrived (timeout, refused
    connection).  ``code`` / ``detail`` are the venue's own error code and
    message when its body carried them; ``body`` is the raw (decoded) body.
    """

    def __init__(
        self,
        venue: str,
        method: str,
        path: str,
        status: int | None,
        body: JSONValue = None,
        *,
        code: str | None = None,
        detail: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.venue = venue
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.code = code
        self.detail = detail
        self.reason = reason
        super().__init__(self._render())

    def _render(self) -> str:
        outcome = f"HTTP {self.status}" if self.status is not None else (self.reason or "no response")
        text = f"{self.venue} {self.method} {self.path} failed: {outcome}"
        if self.status is not None and self.reason:
            text += f" ({self.reason})"
        venue_says = ": ".join(part for part in (self.code, self.detail) if part)
        if venue_says:
            text += f" - {venue_says}"
        elif self.body not in (None, "", b""):
            shown = self.body if isinstance(self.body, str) else repr(self.body)
            text += f" - body: {shown[:_MAX_BODY_IN_MESSAGE]}"
        return text


class RateLimited(VenueError):
    """HTTP 429 persisted through every retry."""


class TokenBucket:
    """Token bucket with reservation: acquire() decides synchronously, then sleeps unlocked.

    Asyncio runs one callback at a time, so refilling and deducting in one
    synchronous step is atomic without a lock.  The bucket may go negative:
    each caller takes its tokens immediately (a reservation) and sleeps only
    for its own share of the debt, so concurrent callers are spaced out at the
    refill rate and are served first-come first-served, and nobody ever waits
    on a lock held by a sleeping task.  A cancelled waiter returns its tokens.
    """

    __slots__ = ("_tokens", "_updated", "capacity", "rate")

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"token bucket rate must be positive, got {rate!r}")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else rate)
        if self.capacity <= 0:
            raise ValueError(f"token bucket capacity must be positive, got {capacity!r}")
        self._tokens = self.capacity
        self._updated = time.monotonic()

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while callers hold reservations)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def reserve(self, cost: float = 1.0) -> float:
        """Take `cost` tokens now and return how long the caller must wait before using them."""
        if not 0 < cost <= self.capacity:
            raise ValueError(f"cost {cost!r} must be in (0, capacity={self.capacity}]")
        self._refill()
        self._tokens -= cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self, cost: float = 1.0) -> None:
        delay = self.reserve(cost)
        if delay <= 0:
            return
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._tokens += cost
            raise

    def hold_off(self, seconds: float) -> None:
        """Make every caller wait at least `seconds` (the venue said the budget is spent)."""
        self._refill()
        self._tokens = min(self._tokens, -seconds * self.rate)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def error_detail(body: JSONValue) -> tuple[str | None, str | None]:
    """The venue's (code, message) from an error body, whichever common shape it uses.

    Handles ``{"code","message",...}``, ``{"error": {"code","message"}}``,
    ``{"error": "text"}`` and ``{"message": "text"}``; anything else gives (None, None).
    """
    if not isinstance(body, Mapping):
        return None, None
    nested = body.get("error")
    if isinstance(nested, Mapping):
        return error_detail(nested)
    code = body.get("code")
    message = body.get("message") or body.get("error_message") or (nested if isinstance(nested, str) else None)
    return (str(code) if code not in (None, "") else None), (str(message) if message else None)


def path_segment(value: object, name: str) -> str:
    """A caller's id as one percent-quoted URL path segment, so that it can never alter the path.

    Quoting covers "/", "?" and "#"; "." and ".." must be refused outright,
    because URL normalization would resolve them: ``/orders/..`` is sent as
    another endpoint than the one named (and signed).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    text = value.strip()
    if text in (".", ".."):
        raise ValueError(f"{name} cannot be {text!r}")
    return quote(text, safe="")


def _query_pairs(params: Mapping[str, ParamValue] | None) -> list[tuple[str, str]]:
    """Flatten params for the query string: drop None, lowercase booleans, repeat list keys."""
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple, set, frozenset)) else (value,)
        for item in values:
            pairs.append((key, ("true" if item else "false") if isinstance(item, bool) else str(item)))
    return pairs


class BaseMarketClient(abc.ABC):
    """Pooled, rate-limited, retrying REST access to one venue.

    Subclasses set ``venue``, implement ``get_market_price`` and may override
    ``_auth_headers`` (signed requests) and ``_bucket_for`` (separate read and
    write budgets).
    """

    venue: ClassVar[str] = "venue"

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        rate: float = 10.0,
        burst: float | None = None,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_initial: float = 0.25,
        backoff_max: float = 5.0,
        retry_after_max: float = 30.0,
        connection_limit: int = 20,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{self.venue}: base URL must be an http(s) URL, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"{self.venue}: timeout must be positive, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"{self.venue}: max_retries must be >= 0, got {max_retries!r}")
        self.base_url = base_url.rstrip("/")
        self._base_path = parts.path.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._connection_limit = connection_limit
        self.rate_limiter = TokenBucket(rate, burst)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.request_count = 0
        """HTTP requests actually sent, retries included (the polling-cost figure)."""
        self.retry_count = 0

    # -- lifecycle -----------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use inside the running loop.

        Timeouts are set per request, so a caller-supplied session with other
        defaults still never waits forever.
        """
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connection_limit),
            )
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        """Close the session if this client created it; idempotent."""
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- hooks ---------------------------------------------------------------------

    def _auth_headers(self, method: str, url_path: str) -> dict[str, str]:
        """Headers that authenticate one signed request; venues with auth override this."""
        raise VenueError(self.venue, method, url_path, None,
                         reason="this client has no credentials for signed requests")

    def _bucket_for(self, method: str, path: str) -> TokenBucket:
        """The rate budget a request draws on (one shared bucket unless overridden)."""
        return self.rate_limiter

    # -- requests ------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_initial, self.backoff_max)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: JSONValue = None,
        signed: bool = False,
        idempotent: bool | None = None,
        cost: float = 1.0,
    ) -> JSONValue:
        """Send one logical request (with bounded retries) and return the decoded JSON body.

        `path` is relative to the base URL ("/markets").  `idempotent` defaults
        from the method; a non-idempotent request is retried only when the
        venue certainly did not act on it (429, connection refused).
        """
        method = method.upper()
        url = self.base_url + path
        url_path = self._base_path + path
        retry_ambiguous = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        query = _query_pairs(params)
        body = None if json is None else orjson.dumps(json)
        bucket = self._bucket_for(method, path)
        attempt = 0
        while True:
            await bucket.acquire(cost)
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            if signed:
                headers.update(self._auth_headers(method, url_path))
            self.request_count += 1
            try:
                # A signed request is never followed to another URL: the redirect would carry
                # the venue's auth headers (and a POST body) to whatever host it names.
                async with self.session.request(method, url, params=query, data=body, headers=headers,
                                                timeout=self.timeout, allow_redirects=not signed) as resp:
                    status = resp.status
                    raw = await resp.read()
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    reason = resp.reason
                    location = resp.headers.get("Location")
            except (TimeoutError, aiohttp.ClientError) as exc:
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                failure = VenueError(self.venue, method, url_path, None,
                                     reason=_describe_transport_error(exc, self.timeout.total))
                if attempt >= self.max_retries or not (retry_ambiguous or refused):
                    raise failure from exc
                delay = self._backoff(attempt)
            else:
                if status < 300:
                    return self._decode_success(method, url_path, status, raw)
                if status < 400:
                    unfollowed = "; signed requests are not followed to another URL" if signed else ""
                    raise VenueError(self.venue, method, url_path, status,
                                     reason=f"redirected to {location!r}{unfollowed}")
                decoded = _decode_error_body(raw)
                code, detail = error_detail(decoded)
                error_type = RateLimited if status == 429 else VenueError
                failure = error_type(self.venue, method, url_path, status, decoded,
                                     code=code, detail=detail, reason=reason)
                retryable = status == 429 or (status >= 500 and retry_ambiguous)
                if not retryable or attempt >= self.max_retries:
                    raise failure
                if status == 429:
                    delay = (min(retry_after, self.retry_after_max) if retry_after is not None
                             else self._backoff(attempt))
                    bucket.hold_off(delay)
                else:
                    delay = self._backoff(attempt)
            attempt += 1
            self.retry_count += 1
            log.warning("%s; retry %d/%d in %.2fs", failure, attempt, self.max_retries, delay)
            await asyncio.sleep(delay)

    def _unexpected(self, method: str, path: str, body: JSONValue, problem: str) -> VenueError:
        """An error for a successful answer whose content cannot be used (missing field, wrong type)."""
        return VenueError(self.venue, method, self._base_path + path, None, body,
                          reason=f"unexpected response: {problem}")

    def _field(self, body: JSONValue, key: str, method: str, path: str) -> Any:
        """`body[key]`, or a VenueError saying the response lacked it."""
        if not isinstance(body, Mapping) or key not in body:
            raise self._unexpected(method, path, body, f"no {key!r} field")
        return body[key]

    def _object(self, body: JSONValue, method: str, path: str) -> dict[str, Any]:
        """`body` if it is a JSON object: a wrong shape fails here, naming the path, not deep in a caller."""
        if not isinstance(body, dict):
            raise self._unexpected(method, path, body, f"expected an object, got {type(body).__name__}")
        return body

    def _list(self, body: JSONValue, method: str, path: str) -> list[Any]:
        """`body` if it is a JSON array (see `_object`)."""
        if not isinstance(body, list):
            raise self._unexpected(method, path, body, f"expected a list, got {type(body).__name__}")
        return body

    def _decode_success(self, method: str, url_path: str, status: int, raw: bytes) -> JSONValue:
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise VenueError(self.venue, method, url_path, status,
                             raw[:_MAX_BODY_IN_MESSAGE].decode(errors="replace"),
                             reason="response is not valid JSON") from None

    # -- prices --------------------------------------------------------------------

    @abc.abstractmethod
    async def get_market_price(self, market_id: str) -> MarketPrice:
        """The current top of book of one market, fetched over REST."""

    async def poll_prices(self, market_ids: Iterable[str], interval: float = 1.0) -> AsyncIterator[MarketPrice]:
        """Poll every market each `interval` seconds and yield each fetched price.

        One market failing does not end the stream: the error is logged and the
        market is polled again next round.  Polls of one round run concurrently
        (bounded by the token bucket), and the next round starts `interval`
        after the previous one started.
        """
        if interval <= 0:
            raise ValueError(f"poll interval must be positive, got {interval!r}")
        ids = list(dict.fromkeys(market_ids))
        if not ids:
            raise ValueError("poll_prices needs at least one market id")
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            results = await asyncio.gather(*(self.get_market_price(m) for m in ids), return_exceptions=True)
            for market_id, result in zip(ids, results, strict=True):
                if isinstance(result, MarketPrice):
                    yield result
                elif isinstance(result, Exception):
                    log.warning("%s: polling %s failed: %s", self.venue, market_id, result)
                else:
                    raise result  # a BaseException such as CancelledError
            await asyncio.sleep(max(0.0, started + interval - loop.time()))

    def stream_prices(self, market_ids: Iterable[str], interval: float = 1.0) -> AsyncIterator[MarketPrice]:
        """REST polling stream (the baseline); hybrid clients override it with WebSocket data."""
        return self.poll_prices(market_ids, interval)


def _decode_error_body(raw: bytes) -> JSONValue:
    """Error bodies are usually JSON; keep the text when they are not."""
    try:
        return orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        return raw[:_MAX_BODY_IN_MESSAGE].decode(errors="replace")


def _describe_transport_error(exc: BaseException, timeout: float | None) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out after {timeout}s"
    return f"{type(exc).__name__}: {exc}"
