"""KalshiWebSocketClient against the venue's command limits and its number spellings.

The venue refuses commands past a rate with error 27 and markets past a
per-connection limit with error 26, and publishes neither number (protocols/kalshi.md
7.2 and appendix). The client batches markets into few `subscribe` commands, paces
its commands, and backs off on 27 instead of retrying at once; these tests hold it to
that against the simulator (which enforces configurable limits) and a scripted venue.
"""

from __future__ import annotations

import pytest

from markets.models import PriceStatus
from markets.sim.kalshi import CommandLimits, KalshiSimulator
from tests.clients.conftest import (
    WskMakeClient,
    WskScriptedVenue,
    WskStartSim,
    wsk_eventually,
)
from tests.clients.test_kalshi_ws import all_match, book_matches, step_all, tickers_of

pytestmark = pytest.mark.timeout(60)


def statuses(client, sim: KalshiSimulator) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"stats": client.stats.snapshot(), "sent": client.commands_sent, "refused": sim.commands_refused}


async def test_many_markets_go_out_in_few_paced_commands_without_a_refusal(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=120, command_limits=CommandLimits(commands_per_second=10, command_burst=4))
    client = wsk_make_client(sim.ws_url, markets_per_subscription=10, command_rate=5, command_burst=4,
                             lifecycle=False)
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all_match(client, sim), timeout=20, what="every book from cold",
                         state=lambda: statuses(client, sim))
    assert sim.commands_refused == 0 and client.stats.venue_errors == {}
    assert client.commands_sent == 12  # 120 markets, 10 per subscribe, nothing resent
    step_all(sim, 3)
    await wsk_eventually(lambda: all_match(client, sim), what="books follow the market")


async def test_a_client_that_overruns_the_rate_backs_off_and_still_gets_every_book(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    """One command per market and a budget twice the venue's: the venue refuses part of
    the burst with 27, and the client must resend those after backing off, not at once."""
    sim = await wsk_start_sim(n_markets=40, command_limits=CommandLimits(commands_per_second=20, command_burst=10))
    client = wsk_make_client(sim.ws_url, markets_per_subscription=1, command_rate=40, command_burst=20,
                             backoff_initial=0.2, resync_timeout=5.0)
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: client.stats.venue_errors["27"] > 0, what="the venue refusing the burst")
    await wsk_eventually(lambda: all_match(client, sim), timeout=30, what="every book despite the refusals",
                         state=lambda: statuses(client, sim))
    refused = sim.commands_refused
    assert client.stats.venue_errors["27"] == refused
    # Immediate retries would be refused again and again (a storm); backing off and
    # halving its rate keeps the refusals to about the first burst's excess.
    assert refused <= 20
    assert client.stats.reconnects == 0


async def test_a_refused_command_is_resent_after_a_hold_not_at_once(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client = wsk_make_client(wsk_venue.url, backoff_initial=1.0, resync_timeout=6.0, lifecycle=False)
    await client.subscribe(["KXA-1", "KXB-2"])
    conn = await wsk_venue.accept()
    first = await conn.recv_json()
    assert first["cmd"] == "subscribe" and first["params"]["market_tickers"] == ["KXA-1", "KXB-2"]
    await conn.send({"id": first["id"], "type": "error", "msg": {"code": 27, "msg": "Too many requests"}})
    await wsk_eventually(lambda: client.stats.venue_errors["27"] == 1, what="the 27 handled")
    assert conn.received.empty()  # held: the backoff is at least half of backoff_initial
    again = await conn.recv_json(timeout=5)
    assert again["cmd"] == "subscribe" and again["params"] == first["params"] and again["id"] != first["id"]
    await conn.send({"id": again["id"], "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}})
    for seq, ticker in enumerate(["KXA-1", "KXB-2"], start=1):
        await conn.send({"type": "orderbook_snapshot", "sid": 1, "seq": seq,
                         "msg": {"market_ticker": ticker, "yes_dollars_fp": [["0.40", "10.00"]]}})
    await wsk_eventually(lambda: all(client.book(t).status is PriceStatus.LIVE  # type: ignore[union-attr]
                                     for t in ("KXA-1", "KXB-2")), what="both books after the resend")


async def test_markets_past_the_connection_limit_are_reported_not_retried_in_a_loop(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=5, command_limits=CommandLimits(max_markets=3))
    tickers = tickers_of(sim)
    client = wsk_make_client(sim.ws_url, markets_per_subscription=1, resync_timeout=30.0)
    await client.subscribe(tickers)
    await wsk_eventually(lambda: len(client.refused_markets) == 2, what="two markets reported refused")
    streamed = set(tickers) - client.refused_markets
    await wsk_eventually(lambda: all(book_matches(client, sim, t) for t in streamed), what="the other three")
    assert client.stats.venue_errors["26"] == 2  # not resent at once
    for ticker in client.refused_markets:
        book = client.book(ticker)
        assert book is not None and book.status is not PriceStatus.LIVE


async def test_prices_and_counts_sent_as_json_numbers_build_exact_books(
        wsk_start_sim: WskStartSim, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(n_markets=4, numeric_share=1.0)
    client = wsk_make_client(sim.ws_url)
    await client.subscribe(tickers_of(sim))
    await wsk_eventually(lambda: all_match(client, sim), what="snapshots with JSON numbers")
    step_all(sim, 30)
    await wsk_eventually(lambda: all_match(client, sim), what="deltas with JSON numbers")
    assert client.stats.rejected == {} and client.stats.resyncs == 0


async def test_a_27_after_a_partial_ack_resends_only_the_unacknowledged_channels(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    """Not the venue's way, but a hostile one: subscribing the book channel twice would
    apply every delta twice, so only the channel not yet acknowledged goes again."""
    client = wsk_make_client(wsk_venue.url, channels=("orderbook_delta", "ticker"), backoff_initial=0.02,
                             lifecycle=False)
    await client.subscribe(["KXA-1"])
    conn = await wsk_venue.accept()
    first = await conn.recv_json()
    await conn.send({"id": first["id"], "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}})
    await conn.send({"id": first["id"], "type": "error", "msg": {"code": 27, "msg": "Too many requests"}})
    again = await conn.recv_json(timeout=5)
    assert again["cmd"] == "subscribe" and again["params"]["channels"] == ["ticker"]
