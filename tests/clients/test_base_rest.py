"""BaseMarketClient and TokenBucket against a tiny real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from markets.base import BaseMarketClient, RateLimited, TokenBucket, VenueError, parse_retry_after
from markets.models import MarketPrice, Platform
from tests.clients.conftest import serve_app

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """What the server observed, for assertions about what the client really sent."""

    paths: list[str] = field(default_factory=list)
    queries: list[list[tuple[str, str]]] = field(default_factory=list)
    peers: list[tuple[str, int] | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


@asynccontextmanager
async def serve(routes: dict[str, Handler]) -> AsyncIterator[tuple[str, Seen]]:
    """Serve `routes` (path -> handler, any method) on 127.0.0.1:0; yield (base URL, observations)."""
    seen = Seen()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.paths.append(f"{request.method} {request.path}")
        seen.queries.append(list(request.query.items()))
        seen.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        seen.times.append(time.monotonic())
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    async with serve_app(app) as root:
        yield f"{root}/api", seen


Reply = Callable[[], web.Response]


def reply(status: int = 200, json: object = None, text: str | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    """A factory of fresh responses (an aiohttp Response object can be sent only once)."""
    if json is not None:
        return lambda: web.json_response(json, status=status, headers=headers)
    return lambda: web.Response(status=status, text=text, headers=headers)


def ok(payload: object = None) -> Reply:
    return reply(json={"ok": True} if payload is None else payload)


def sequence(*replies: Reply) -> Handler:
    """A handler answering with the given replies in turn, then repeating the last."""
    pending = list(replies)

    async def handler(request: web.Request) -> web.Response:
        return (pending.pop(0) if len(pending) > 1 else pending[0])()

    return handler


class DemoClient(BaseMarketClient):
    venue = "demo"

    async def get_market_price(self, market_id: str) -> MarketPrice:
        body = await self._request("GET", f"/price/{market_id}")
        return MarketPrice(market_id, body["bid"], body["ask"], 1.0, 1.0, Platform.KALSHI)


def client(base_url: str, **options: object) -> DemoClient:
    defaults: dict[str, object] = {"rate": 1000.0, "backoff_initial": 0.001, "backoff_max": 0.01, "timeout": 2.0}
    return DemoClient(base_url, **{**defaults, **options})  # type: ignore[arg-type]


async def test_session_is_pooled_and_closed() -> None:
    async with serve({"/api/x": sequence(ok())}) as (url, seen):
        async with client(url) as c:
            session = c.session
            for _ in range(5):
                assert await c._request("GET", "/x") == {"ok": True}
            assert c.session is session
            assert len(set(seen.peers)) == 1, "every request reused one keep-alive connection"
        assert session.closed


async def test_session_passed_in_is_not_closed() -> None:
    import aiohttp

    async with serve({"/api/x": sequence(ok())}) as (url, _), aiohttp.ClientSession() as shared:
        async with client(url, session=shared) as c:
            await c._request("GET", "/x")
        assert not shared.closed


async def test_query_params_are_normalised() -> None:
    async with serve({"/api/x": sequence(ok())}) as (url, seen), client(url) as c:
        await c._request("GET", "/x", params={"a": True, "b": None, "c": ["1", "2"], "d": 5})
    assert seen.queries[0] == [("a", "true"), ("c", "1"), ("c", "2"), ("d", "5")]


async def test_retries_5xx_then_succeeds() -> None:
    handler = sequence(reply(500), reply(503), ok({"v": 1}))
    async with serve({"/api/x": handler}) as (url, seen), client(url, max_retries=3) as c:
        assert await c._request("GET", "/x") == {"v": 1}
        assert len(seen.paths) == 3
        assert (c.request_count, c.retry_count) == (3, 2)


async def test_bounded_retries_then_clear_error() -> None:
    body = reply(502, {"code": "internal", "message": "boom"})
    async with serve({"/api/x": sequence(body)}) as (url, seen), client(url, max_retries=2) as c:
        with pytest.raises(VenueError) as info:
            await c._request("GET", "/x")
    assert len(seen.paths) == 3
    err = info.value
    assert (err.venue, err.method, err.path, err.status, err.code) == ("demo", "GET", "/api/x", 502, "internal")
    assert all(part in str(err) for part in ("demo", "GET", "/api/x", "502", "boom"))


async def test_post_is_not_retried_after_5xx() -> None:
    async with serve({"/api/x": sequence(reply(500))}) as (url, seen), client(url) as c:
        with pytest.raises(VenueError):
            await c._request("POST", "/x", json={"a": 1})
    assert seen.paths == ["POST /api/x"]


@pytest.mark.parametrize(("body", "code", "detail"), [
    ({"code": "order_already_exists", "message": "dup", "details": "x"}, "order_already_exists", "dup"),
    ({"error": {"code": "order_already_exists", "message": "dup"}}, "order_already_exists", "dup"),
    ({"error": "too many cooks"}, None, "too many cooks"),
])
async def test_error_bodies_in_both_shapes(body: dict, code: str | None, detail: str) -> None:
    async with serve({"/api/x": sequence(reply(409, body))}) as (url, seen), client(url) as c:
        with pytest.raises(VenueError) as info:
            await c._request("GET", "/x")
    assert len(seen.paths) == 1, "4xx other than 429 is not retried"
    assert (info.value.status, info.value.code, info.value.detail) == (409, code, detail)
    assert detail in str(info.value)


async def test_non_json_error_and_success_bodies() -> None:
    routes = {"/api/err": sequence(reply(404, text="no such thing")),
              "/api/bad": sequence(reply(200, text="<html>"))}
    async with serve(routes) as (url, _), client(url) as c:
        with pytest.raises(VenueError, match=r"HTTP 404.*no such thing"):
            await c._request("GET", "/err")
        with pytest.raises(VenueError, match="not valid JSON"):
            await c._request("GET", "/bad")


async def test_429_with_retry_after_is_honoured() -> None:
    handler = sequence(reply(429, headers={"Retry-After": "1"}), ok())
    async with serve({"/api/x": handler}) as (url, seen), client(url) as c:
        assert await c._request("GET", "/x") == {"ok": True}
    assert len(seen.times) == 2
    assert seen.times[1] - seen.times[0] >= 0.9, "the client waited the venue's Retry-After"


async def test_429_retry_after_is_capped() -> None:
    handler = sequence(reply(429, headers={"Retry-After": "3600"}), ok())
    async with serve({"/api/x": handler}) as (url, seen), client(url, retry_after_max=0.05) as c:
        async with asyncio.timeout(5):
            assert await c._request("GET", "/x") == {"ok": True}
    assert len(seen.paths) == 2


async def test_429_without_retry_after_uses_own_backoff_then_gives_up() -> None:
    handler = sequence(reply(429, {"error": "too many requests"}))
    async with serve({"/api/x": handler}) as (url, seen), client(url, max_retries=3) as c:
        with pytest.raises(RateLimited) as info:
            await c._request("POST", "/x", json={})
    assert len(seen.paths) == 4, "429 is retried even for POST: the venue did not act on it"
    assert info.value.status == 429 and "too many requests" in str(info.value)


async def test_429_makes_other_callers_wait_too() -> None:
    """A 429 means the shared budget is spent: a request started meanwhile waits as well."""
    handler = sequence(reply(429, headers={"Retry-After": "1"}), ok())
    async with serve({"/api/x": handler}) as (url, seen), client(url, rate=100.0, retry_after_max=0.3) as c:
        first = asyncio.create_task(c._request("GET", "/x"))
        async with asyncio.timeout(5):
            while c.retry_count == 0:  # the 429 has been received and the hold-off applied
                await asyncio.sleep(0.005)
            await asyncio.gather(first, c._request("GET", "/x"))
    assert len(seen.times) == 3
    assert min(seen.times[1:]) - seen.times[0] >= 0.25, "both requests waited out the hold-off"


async def test_timeout_is_retried_then_reported() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=5)
        return ok()()

    async with serve({"/api/slow": slow}) as (url, seen):
        try:
            async with client(url, timeout=0.1, max_retries=1) as c:
                with pytest.raises(VenueError, match="timed out") as info:
                    await c._request("GET", "/slow")
        finally:
            release.set()
    assert info.value.status is None and len(seen.paths) == 2


async def test_refused_connection_is_a_venue_error() -> None:
    async with serve({}) as (url, _):
        pass  # server gone: the port now refuses connections
    async with client(url, max_retries=1) as c:
        with pytest.raises(VenueError, match="demo GET /api/x failed"):
            await c._request("GET", "/x")
        assert c.request_count == 2


async def test_signed_request_without_credentials_is_refused_locally() -> None:
    async with serve({"/api/x": sequence(ok())}) as (url, seen), client(url) as c:
        with pytest.raises(VenueError, match="no credentials"):
            await c._request("GET", "/x", signed=True)
    assert seen.paths == []


class SignedDemoClient(DemoClient):
    def _auth_headers(self, method: str, url_path: str) -> dict[str, str]:
        return {"X-Demo-Signature": "secret-signature"}


async def test_signed_request_does_not_follow_a_redirect() -> None:
    """A redirect would carry the auth headers (and a POST body) to whatever URL it names."""
    leaked: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        leaked.append(request.headers.get("X-Demo-Signature"))
        return web.json_response({"ok": True})

    routes = {"/api/x": sequence(reply(307, headers={"Location": "/api/elsewhere"})), "/api/elsewhere": elsewhere}
    async with serve(routes) as (url, _), SignedDemoClient(url, rate=1000.0, max_retries=0) as c:
        with pytest.raises(VenueError, match=r"demo POST /api/x failed: HTTP 307 \(redirected to '/api/elsewhere'"):
            await c._request("POST", "/x", json={"order": 1}, signed=True)
        assert leaked == []
        assert await c._request("GET", "/x") == {"ok": True}, "unsigned requests still follow redirects"
        assert leaked == [None]


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        DemoClient("ftp://example.com")
    with pytest.raises(ValueError, match="timeout"):
        DemoClient("http://127.0.0.1:1", timeout=0)


async def test_stream_prices_polls_and_counts_requests() -> None:
    async def price(request: web.Request) -> web.Response:
        if request.match_info["mid"] == "BAD":
            return reply(404, {"message": "unknown market"})()
        return reply(json={"bid": 0.4, "ask": 0.6})()

    async with serve({"/api/price/{mid}": price}) as (url, seen), client(url) as c:
        got: list[str] = []
        async with asyncio.timeout(5):
            async for p in c.stream_prices(["A", "BAD", "B"], interval=0.02):
                got.append(p.market_id)
                if len(got) == 6:
                    break
    assert sorted(got) == ["A", "A", "A", "B", "B", "B"], "a failing market does not end the stream"
    assert c.request_count == len(seen.paths) >= 8  # three full rounds of three markets (the last may be partial)


# -- TokenBucket ------------------------------------------------------------------


async def test_token_bucket_concurrent_acquirers_reserve_without_waiting_on_each_other() -> None:
    bucket = TokenBucket(rate=20.0, capacity=1.0)
    finished: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        finished.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(4)]
    await asyncio.sleep(0)  # every task runs up to its first real await
    # All four reserved at once: three are sleeping concurrently for their own
    # slots, none of them is queued behind a lock held by a sleeper.
    assert bucket.tokens == pytest.approx(-3.0, abs=0.2)
    assert finished == [0]
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert finished == [0, 1, 2, 3], "first come, first served"


async def test_token_bucket_paces_at_the_refill_rate() -> None:
    bucket = TokenBucket(rate=50.0, capacity=1.0)
    start = time.monotonic()
    async with asyncio.timeout(5):
        await asyncio.gather(*(bucket.acquire() for _ in range(6)))
    assert time.monotonic() - start >= 5 / 50.0 * 0.9


async def test_token_bucket_cancelled_waiter_returns_its_tokens() -> None:
    bucket = TokenBucket(rate=1.0, capacity=1.0)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    assert bucket.tokens < -0.5
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bucket.tokens > -0.5


def test_token_bucket_rejects_bad_costs() -> None:
    bucket = TokenBucket(rate=5.0, capacity=2.0)
    with pytest.raises(ValueError, match="capacity"):
        bucket.reserve(3.0)
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0)


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
