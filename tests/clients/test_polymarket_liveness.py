"""Polymarket over time: quiet tokens proven over REST, keep-alive cadence, CDN refusals.

Against the simulator on loopback (rate 0: books move only when a test steps a
market) with a real `PolymarketClient` as the REST side, except where a test needs
a REST side that fails on purpose.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

from markets.models import PriceStatus
from markets.polymarket.client import HybridPolymarketClient, PolymarketClient
from markets.polymarket.quiet import QuietBookVerifier
from markets.polymarket.ws_client import PolymarketWebSocketClient
from markets.sim.faults import FaultPlan
from markets.sim.polymarket import PolymarketSimulator
from tests.clients import test_polymarket_ws as channel_tests
from tests.clients.conftest import wsk_eventually
from tests.clients.test_polymarket_ws import collect, converged

QUIET = 0.2  # stale_after: seconds of silence before a token is checked

# The simulator and client factory of the market-channel tests, shared as fixtures.
sim = channel_tests.sim
make_client = channel_tests.make_client


@pytest.fixture
async def rest(sim: PolymarketSimulator) -> AsyncIterator[PolymarketClient]:
    async with PolymarketClient(clob_url=sim.clob_url, gamma_url=sim.gamma_url, rate=1000) as client:
        yield client


def tokens(sim: PolymarketSimulator, n: int) -> list[str]:
    return [m.yes_token_id for m in sim.universe.markets[:n]]


class FlakySource:
    """A REST side that is unavailable for its first `failures` calls (raising, or
    answering without the asked tokens), then asks the real one."""

    def __init__(self, real: PolymarketClient, failures: int, *, raising: bool) -> None:
        self.real = real
        self.failures = failures
        self.raising = raising
        self.calls = 0

    async def get_books(self, token_ids: Iterable[str]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.failures:
            if self.raising:
                raise ConnectionError("REST is down")
            return []
        return await self.real.get_books(token_ids)


async def test_quiet_tokens_are_verified_over_rest_and_stay_live(
        sim: PolymarketSimulator, rest: PolymarketClient,
        make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    """Nothing moves for many `stale_after`s: every token stays LIVE, proven by REST,
    never resubscribed (the old watchdog made each one STALE and resynced it)."""
    client = make_client(book_source=rest, stale_after=QUIET)
    seen = collect(client)
    ids = tokens(sim, 3)
    await client.subscribe(ids)
    await converged(client, sim, ids)
    checks = client.stats.verifications
    await wsk_eventually(lambda: checks["confirmed"] >= 9, what="three REST confirmations per token",
                         state=client.stats.snapshot)
    assert {p.status for p in seen} == {PriceStatus.LIVE}
    assert client.stats.stale_trips == 0 and client.stats.resyncs == 0 and client.stats.reconnects == 0
    assert checks["mismatch"] == 0 and checks["unavailable"] == 0
    assert checks["tokens"] >= checks["confirmed"] and checks["requests"] <= checks["tokens"]
    await converged(client, sim, ids)


async def test_a_quiet_token_that_disagrees_with_rest_is_resynced(
        sim: PolymarketSimulator, rest: PolymarketClient,
        make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    """The socket stops carrying data after its initial dump (a frozen feed that still
    answers PING) while the market moves: REST shows a different top, the token is
    resynced (RESYNCING, no price from the wrong book) and ends up exact again."""
    sim.faults = FaultPlan(stall_after=1)
    client = make_client(book_source=rest, stale_after=QUIET, resync_timeout=0.3)
    seen = collect(client)
    market = sim.universe.markets[0]
    await client.subscribe([market.yes_token_id])
    await converged(client, sim, [market.yes_token_id])
    sim.faults = FaultPlan()  # the next connection is healthy
    book = client.book(market.yes_token_id)
    assert book is not None
    before = (book.best_bid, book.best_ask)
    for _ in range(100):  # move the market until its REST top differs from the frozen local book
        sim.step_market(market)
        truth = await rest.get_order_book(market.yes_token_id)
        if (truth.best_bid, truth.best_ask) != before:
            break
    else:
        raise AssertionError("the simulated market never moved its top")
    await wsk_eventually(lambda: client.stats.verifications["mismatch"] >= 1, what="the REST mismatch",
                         state=client.stats.snapshot)
    await converged(client, sim, [market.yes_token_id])
    statuses = [p.status for p in seen]
    assert statuses[0] is PriceStatus.LIVE and PriceStatus.RESYNCING in statuses
    assert statuses[-1] is PriceStatus.LIVE


@pytest.mark.parametrize("raising", [True, False], ids=["rest-error", "token-missing"])
async def test_an_unverifiable_quiet_token_is_stale_until_verified(
        sim: PolymarketSimulator, rest: PolymarketClient,
        make_client: Callable[..., PolymarketWebSocketClient], raising: bool) -> None:
    """No REST answer means nobody can vouch for the book: STALE ("unknown"), not
    resynced; the next successful check makes it LIVE again."""
    source = FlakySource(rest, failures=1, raising=raising)
    client = make_client(book_source=source, stale_after=QUIET)
    seen = collect(client)
    token = tokens(sim, 1)[0]
    await client.subscribe([token])
    await converged(client, sim, [token])
    await wsk_eventually(lambda: client.stats.verifications["confirmed"] >= 1, what="a later good check",
                         state=client.stats.snapshot)
    assert [p.status for p in seen] == [PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.LIVE]
    assert client.stats.verifications["unavailable"] == 1
    assert client.stats.verifications["request_failed"] == (1 if raising else 0)
    assert client.stats.resyncs == 0 and client.stats.stale_trips == 0
    await converged(client, sim, [token])


async def test_a_verdict_is_only_taken_on_a_token_still_quiet(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient]) -> None:
    """A token that received data after its check was asked for needs no verdict (the
    REST answer may predate that data, and the data already proves the token alive);
    on a token still quiet the same disagreeing answer resyncs it."""
    client = make_client(stale_after=30.0)
    token = tokens(sim, 1)[0]
    await client.subscribe([token])
    await converged(client, sim, [token])
    disagreeing = {"asset_id": token, "bids": [{"price": "0.01", "size": "1"}], "asks": []}
    last_data = client.stats.last_message_ns[token]
    client._verified(token, last_data - 1, disagreeing)
    assert client.stats.verifications == Counter({"superseded": 1}) and client.stats.resyncs == 0
    client._verified(token, last_data + 1, disagreeing)
    assert client.stats.verifications["mismatch"] == 1 and client.stats.resyncs == 1
    await converged(client, sim, [token])


async def test_rest_checks_are_batched_and_paced_by_the_token_bucket() -> None:
    loop = asyncio.get_running_loop()
    calls: list[tuple[float, list[str]]] = []
    results: list[str] = []

    class Recording:
        async def get_books(self, token_ids: Iterable[str]) -> list[dict[str, Any]]:
            ids = list(token_ids)
            calls.append((loop.time(), ids))
            return [{"asset_id": t, "bids": [], "asks": []} for t in ids]

    counts: Counter[str] = Counter()
    verifier = QuietBookVerifier(Recording(), lambda token, _at, book: results.append(token), counts,
                                 rate=5.0, batch=3)
    try:
        wanted = [str(n) for n in range(20)]
        verifier.request(wanted, 0)
        verifier.request(wanted[:5], 1)  # already waiting: no second check
        await wsk_eventually(lambda: len(results) == 20, what="every token checked")
    finally:
        await verifier.close()
    assert sorted(results, key=int) == wanted and len(calls) == 7
    assert all(len(ids) <= 3 for _, ids in calls) and counts["requests"] == 7 and counts["tokens"] == 20
    # A burst of 5 (the bucket holds one second), then one request per 0.2 s at most.
    start = calls[0][0]
    for k in range(5, 7):
        assert calls[k][0] - start >= (k - 4) * 0.2 - 0.01, [t - start for t, _ in calls]


def test_verifier_options_are_checked() -> None:
    with pytest.raises(ValueError, match="batch"):
        QuietBookVerifier(None, lambda *_: None, Counter(), batch=501)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        QuietBookVerifier(None, lambda *_: None, Counter(), rate=0)  # type: ignore[arg-type]


def test_text_ping_defaults_to_every_5_seconds() -> None:
    """Well inside the venue's ~10 s cutoff (a 10 s cadence was seen dropped under load)."""
    client = PolymarketWebSocketClient()
    assert client.keepalive_interval == 5.0 and client._keepalive() == ["PING"]
    assert client.receive_timeout == 15.0


@pytest.mark.parametrize("status", [403, 429])
async def test_a_cdn_refusal_of_the_public_feed_is_a_backoff_not_an_auth_failure(
        sim: PolymarketSimulator, make_client: Callable[..., PolymarketWebSocketClient], status: int) -> None:
    sim.faults = FaultPlan(refuse_handshakes=4, refuse_status=status)
    client = make_client(max_auth_failures=2)
    async with asyncio.timeout(5):
        await client.connect()
    assert client.stats.handshake_failures[str(status)] == 4 and client.stats.connects == 1
    ids = tokens(sim, 1)
    await client.subscribe(ids)
    await converged(client, sim, ids)


async def test_the_hybrid_checks_quiet_tokens_with_its_own_rest(sim: PolymarketSimulator) -> None:
    async with HybridPolymarketClient(clob_url=sim.clob_url, gamma_url=sim.gamma_url, ws_url=sim.ws_url,
                                      ws_options={"stale_after": QUIET, "backoff_initial": 0.01}) as hybrid:
        ids = tokens(sim, 2)
        await hybrid.ws.subscribe(ids)
        await converged(hybrid.ws, sim, ids)
        await wsk_eventually(lambda: hybrid.ws.stats.verifications["confirmed"] >= 4,
                             what="REST confirmations by the hybrid", state=hybrid.ws.stats.snapshot)
        assert hybrid.ws.stats.stale_trips == 0 and hybrid.ws.stats.resyncs == 0
