"""Simulator faults for connection liveness: a dead peer (`mute_after`) and CDN-style
handshake refusals (`refuse_status`), seen from plain aiohttp clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest

from markets.sim.faults import FaultPlan
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import build_universe

if TYPE_CHECKING:
    from tests.conftest import StartKalshi
    from tests.sim.conftest import ConnectKalshi, DemoKey

WS_PATH = "/trade-api/ws/v2"


async def test_a_muted_kalshi_connection_answers_nothing_after_its_data_runs_out(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(n_markets=2, faults=FaultPlan(mute_after=2))
    wire = await kalshi_ws(sim, autoping=False)
    await wire.ws.ping(b"before")
    pong = await wire.recv_raw()
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"before")  # alive until muted
    tickers = [m.kalshi_ticker for m in sim.universe.markets]
    await wire.command("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    kinds = [(await wire.recv()).get("type") for _ in range(3)]
    assert sorted(kinds) == ["orderbook_snapshot", "orderbook_snapshot", "subscribed"]  # data frames 1 and 2
    await wire.ws.ping(b"after")
    await wire.command("list_subscriptions")
    sim.step_round()
    with pytest.raises(TimeoutError):  # no PONG, no reply, no data: a peer that died silently
        await wire.recv_raw(timeout=0.5)


@pytest.mark.parametrize("status", [403, 429])
async def test_handshakes_are_refused_with_the_planned_status(
        start_kalshi: StartKalshi, http: aiohttp.ClientSession, demo_key: DemoKey, status: int) -> None:
    plan = FaultPlan(refuse_handshakes=1, refuse_status=status)
    kalshi = await start_kalshi(faults=plan)
    async with PolymarketSimulator(build_universe(2, seed=1), rate=0, faults=plan) as poly:
        for url, headers in ((kalshi.ws_url, demo_key.headers("GET", WS_PATH)), (poly.ws_url, {})):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, headers=headers)
            assert refused.value.status == status
            ws = await http.ws_connect(url, headers=headers)  # the next one is accepted
            await ws.close()


@pytest.mark.parametrize("bad", [200, 302, 600, True, "403"])
def test_a_refusal_status_must_be_an_http_error(bad: object) -> None:
    with pytest.raises(ValueError, match="refuse_status"):
        FaultPlan(refuse_status=bad)  # type: ignore[arg-type]


def test_the_liveness_faults_parse_from_the_command_line_spec() -> None:
    plan = FaultPlan.parse("mute_after=5,refuse_handshakes=2,refuse_status=429")
    assert (plan.mute_after, plan.refuse_handshakes, plan.refuse_status) == (5, 2, 429)
    assert plan.frame_faults_enabled
