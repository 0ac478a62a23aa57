"""A Kalshi update lost to an unparseable frame when nothing follows it on its sid.

The client learns that a frame was lost from the seq of the next frame of the same sid.
An unparseable frame (malformed or truncated JSON) names no sid, so when it is the
sid's last frame for a while (a quiet market, or the simulators paused at the end of a
fault test), the book it should have changed stays wrong, and the client keeps it LIVE:
`_on_quiet` trusts the sid's seq, which has not shown the gap yet. Found by
tests/runtime/test_faults.py; the client now resyncs every LIVE book of the socket on a
frame it cannot read.
"""

from __future__ import annotations

from markets.models import TICKS_PER_DOLLAR, PriceStatus
from markets.sim.faults import FaultPlan
from tests.clients.conftest import WskMakeClient, WskStartSim, wsk_eventually


async def test_an_unparseable_last_frame_does_not_leave_a_wrong_book_live(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=2, seed=3, rate=0.0)
    client = wsk_make_client(sim.ws_url)
    tickers = [m.kalshi_ticker for m in sim.universe.markets]
    await client.subscribe(tickers)
    await wsk_eventually(lambda: all((p := client.latest_price(t)) is not None and p.status is PriceStatus.LIVE
                                     for t in tickers), what="every book LIVE")
    market = sim.universe.markets[0]
    ladder = sim.ladders[market.kalshi_ticker]
    top = (ladder.best_bid(), ladder.best_ask())
    sim.apply_faults_now(FaultPlan(malformed_every=1))  # every data frame from now on is unparseable
    for _ in range(100):
        sim.step_market(market)
        if (ladder.best_bid(), ladder.best_ask()) != top:
            break
    assert (ladder.best_bid(), ladder.best_ask()) != top, "the market never moved its top"
    await wsk_eventually(lambda: client.stats.rejected["malformed_json"] >= 1, what="the corrupt frame to arrive")

    def right_or_not_live() -> bool:
        price = client.latest_price(market.kalshi_ticker)
        assert price is not None
        quoted = tuple(None if p is None else round(p * TICKS_PER_DOLLAR) for p in (price.yes_bid, price.yes_ask))
        return price.status is not PriceStatus.LIVE or quoted == (ladder.best_bid(), ladder.best_ask())

    await wsk_eventually(right_or_not_live, timeout=5.0, what="the lost update to be noticed (resync, or not LIVE)")
