"""Fault injection on the Polymarket simulator, per connection and on REST.

Each test moves the market by hand (rate 0, no trades), so frame N of a
connection is known: frame 1 is the initial dump, then one `price_change` per step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest

from markets.sim.polymarket import PolymarketFaultPlan, PolymarketSimulator
from tests.conftest import StartPoly
from tests.sim.conftest import ConnectPoly
from tests.sim.test_polymarket_sim_support import ClientBooks, PolyClient


async def faulty(start_poly: StartPoly, connect: ConnectPoly, **faults: int | float
                 ) -> tuple[PolymarketSimulator, PolyClient, list[str]]:
    """A one-market simulator with `faults` and a client subscribed to both tokens.

    Returns the raw frames that arrived before a PING round-trip proved the
    subscription was in place (normally just the initial dump).
    """
    sim = await start_poly(n_markets=1, seed=3, trade_share=0.0,
                           faults=PolymarketFaultPlan(**faults))  # type: ignore[arg-type]
    market = sim.universe.markets[0]
    client = await connect(sim)
    await client.initial([market.yes_token_id, market.no_token_id])
    return sim, client, await client.raw_barrier()


def step(sim: PolymarketSimulator, times: int) -> None:
    for _ in range(times):
        sim.step_market(sim.universe.markets[0])


def not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def has_list_valued_field(text: str) -> bool:
    event = json.loads(text)
    entries = event["price_changes"] if isinstance(event, dict) else []
    return any(isinstance(value, list) for entry in entries for value in entry.values())


def has_negative_size(text: str) -> bool:
    def sizes(node: object) -> list[str]:
        if isinstance(node, list):
            return [size for item in node for size in sizes(item)]
        if isinstance(node, dict):
            own = [node["size"]] if isinstance(node.get("size"), str) else []
            return own + [size for value in node.values() for size in sizes(value)]
        return []

    return any(size.startswith("-") for size in sizes(json.loads(text)))


@pytest.mark.parametrize(("fault", "broken"), [
    ("malformed_every", not_json),
    ("truncated_every", not_json),
    ("wrong_type_every", has_list_valued_field),
    ("negative_size_every", has_negative_size),
])
async def test_every_nth_frame_is_replaced_by_a_corrupt_one(
        start_poly: StartPoly, poly_ws: ConnectPoly, fault: str, broken: Callable[[str], bool]) -> None:
    sim, client, frames = await faulty(start_poly, poly_ws, **{fault: 2})
    step(sim, 3)
    frames += await client.raw_barrier()
    assert len(frames) == 4  # dump + 3 price changes, frames 2 and 4 corrupted
    assert [broken(text) for text in frames] == [False, True, False, True]


async def test_unknown_event_types_come_in_addition(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim, client, dump = await faulty(start_poly, poly_ws, unknown_type_every=2)
    step(sim, 1)
    events = await client.barrier()
    assert len(dump) == 1
    assert [e["event_type"] for e in events] == ["market_stats", "price_change"]


async def test_duplicates_repeat_the_frame(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim, client, frames = await faulty(start_poly, poly_ws, duplicate_every=2)
    step(sim, 2)
    frames += await client.raw_barrier()
    assert len(frames) == 4 and frames[1] == frames[2] and frames[2] != frames[3]


async def test_drop_after_n_frames_aborts_the_connection(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim, client, dump = await faulty(start_poly, poly_ws, drop_after=3)
    step(sim, 5)
    received = [await client.recv() for _ in range(2)]
    assert len(dump) == 1 and all(e["event_type"] == "price_change" for e in received)
    closing = await asyncio.wait_for(client.ws.receive(), 2.0)
    assert closing.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)


async def test_stall_stops_data_but_still_answers_ping(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim, client, dump = await faulty(start_poly, poly_ws, stall_after=2)
    step(sim, 10)
    events = await client.barrier()
    assert len(dump) == 1 and len(events) == 1
    step(sim, 5)
    assert await client.barrier() == []  # PING -> PONG still works, nothing else comes


async def test_faults_applied_to_a_live_connection(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim, client, _ = await faulty(start_poly, poly_ws)
    step(sim, 2)
    assert len(await client.barrier()) == 2
    sim.apply_faults_now(PolymarketFaultPlan(stall_after=1))  # counting restarts at zero
    step(sim, 3)
    assert len(await client.barrier()) == 1


async def test_snapshot_delay_lets_updates_overtake_the_dump(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    sim, client, before = await faulty(start_poly, poly_ws, snapshot_delay=0.3)
    assert before == []  # subscribed, but the dump is late
    step(sim, 3)
    early = await client.barrier()
    assert [e["event_type"] for e in early] == ["price_change"] * 3
    books = ClientBooks()
    for event in early:
        books.apply(event)
    assert books.skipped > 0 and books.books == {}  # nothing to apply the changes to yet
    dump = await client.recv(timeout=2.0)
    assert isinstance(dump, list) and loop.time() - sent >= 0.3
    books.apply(dump)
    step(sim, 3)
    for event in await client.barrier():
        books.apply(event)
    for token, book in books.books.items():
        assert book == sim.true_book(token)


async def test_inconsistent_best_bid_is_caught_by_the_cross_check(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim, client, dump = await faulty(start_poly, poly_ws, inconsistent_top_every=3)
    books = ClientBooks()
    books.apply(json.loads(dump[0]))
    step(sim, 9)
    changes = await client.barrier()
    for event in changes:
        books.apply(event)
    bad = {id(e) for e in books.mismatches}
    hit = [any(id(entry) in bad for entry in event["price_changes"]) for event in changes]
    assert hit == [False, False, True] * 3
    for token, book in books.books.items():
        assert book == sim.true_book(token)  # the book itself was right; only the claim lied


async def test_refused_handshakes_get_503(start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=1, faults=PolymarketFaultPlan(refuse_handshakes=2))
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(sim.ws_url)
        assert refused.value.status == 503
    ws = await http.ws_connect(sim.ws_url)
    await ws.send_str("PING")
    assert (await asyncio.wait_for(ws.receive(), 2.0)).data == "PONG"
    await ws.close()


async def test_rest_faults_answer_429_and_5xx(start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=1, faults=PolymarketFaultPlan(rest_429_every=2, rest_5xx_every=3))
    token = sim.universe.markets[0].yes_token_id
    statuses = []
    for _ in range(6):
        async with http.get(f"{sim.clob_url}/book", params={"token_id": token}) as response:
            statuses.append(response.status)
            if response.status != 200:
                assert "error" in await response.json()
    assert statuses[:2] == [200, 429] and statuses[2] in (500, 503)
    assert statuses[3:] == [429, 200, 429]  # 429 wins where both rules hit (request 6)
    async with http.get(f"{sim.gamma_url}/markets") as response:  # request 7
        assert response.status == 200
    async with http.get(f"{sim.gamma_url}/events") as response:  # request 8
        assert response.status == 429
