"""KalshiWebSocketClient frame by frame, against a hand-scripted venue.

The scripted server is a real WebSocket server on loopback; the test reads each
command the client sends and writes each frame the venue would answer with, so
sequence numbers, sids and error codes are exactly what the test says.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from markets.codec import decode, encode
from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import KalshiWebSocketClient
from markets.models import MarketPrice, PriceStatus
from tests.clients.conftest import WskMakeClient, WskScriptedConnection, WskScriptedVenue, wsk_eventually

A, B, C = "KXNBAGAME-26NOV25BOSLAL-BOS", "KXNBAGAME-26NOV25BOSLAL-LAL", "KXNFLGAME-26NOV23KCBUF-KC"


class Venue:
    """Kalshi-shaped frames over one scripted connection."""

    def __init__(self, conn: WskScriptedConnection) -> None:
        self.conn = conn

    async def command(self, cmd: str | None = None) -> dict[str, Any]:
        frame = await self.conn.recv_json()
        if cmd is not None:
            assert frame["cmd"] == cmd, frame
        return frame

    async def ack(self, command_id: int, sid: int, channel: str = "orderbook_delta") -> None:
        await self.conn.send({"id": command_id, "type": "subscribed", "msg": {"channel": channel, "sid": sid}})

    async def accept_subscribe(self, sid: int) -> dict[str, Any]:
        """Read one subscribe command and acknowledge it with `sid` (single channel)."""
        command = await self.command("subscribe")
        await self.ack(command["id"], sid)
        return command

    async def snapshot(self, sid: int, seq: int, ticker: str, yes: list[list[str]] | None = None,
                       no: list[list[str]] | None = None) -> None:
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1"}
        if yes:
            msg["yes_dollars_fp"] = yes
        if no:
            msg["no_dollars_fp"] = no
        await self.conn.send({"type": "orderbook_snapshot", "sid": sid, "seq": seq, "msg": msg})

    async def delta(self, sid: int, seq: int, ticker: str, price: Any, delta: Any, side: str = "yes") -> None:
        await self.conn.send({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": {
            "market_ticker": ticker, "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
            "price_dollars": price, "delta_fp": delta, "side": side, "ts_ms": 1700000000000}})


async def start(venue: WskScriptedVenue, make: WskMakeClient, tickers: list[str],
                **options: Any) -> tuple[KalshiWebSocketClient, Venue, list[MarketPrice]]:
    """Client subscribed to `tickers`, each acked with sid i+1 and given a snapshot at seq 1
    (one market per subscribe unless `options` say otherwise)."""
    client = make(venue.url, **({"markets_per_subscription": 1} | options))
    prices: list[MarketPrice] = []
    client.add_listener(prices.append)
    await client.subscribe(tickers)
    server = Venue(await venue.accept())
    for sid, ticker in enumerate(tickers, start=1):
        await server.accept_subscribe(sid)
        await server.snapshot(sid, 1, ticker, yes=[["0.40", "10.00"], ["0.42", "5.00"]], no=[["0.55", "7.00"]])
    await wsk_eventually(lambda: all(client.book(t).status is PriceStatus.LIVE  # type: ignore[union-attr]
                                     for t in tickers))
    return client, server, prices


def statuses(prices: list[MarketPrice], ticker: str) -> list[PriceStatus]:
    return [p.status for p in prices if p.market_id == ticker]


async def test_upgrade_is_signed_freshly_on_every_attempt(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient,
        wsk_credentials: KalshiCredentials) -> None:
    wsk_venue.refuse = [503, 502]
    client = wsk_make_client(wsk_venue.url)
    await asyncio.wait_for(client.connect(), 5)
    conn = await wsk_venue.accept()
    headers = conn.headers
    assert headers["KALSHI-ACCESS-KEY"] == wsk_credentials.key_id
    stamp = headers["KALSHI-ACCESS-TIMESTAMP"]
    signature = base64.b64decode(headers["KALSHI-ACCESS-SIGNATURE"])
    # Signed over timestamp + GET + the URL's path, RSA-PSS/SHA-256, salt = digest length.
    wsk_credentials.private_key.public_key().verify(
        signature, f"{stamp}GET/ws".encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    assert wsk_venue.handshakes == 3
    assert client.stats.handshake_failures == {"503": 1, "502": 1}


async def test_subscribe_sends_use_yes_price_explicitly_one_market_per_command(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client = wsk_make_client(wsk_venue.url, use_yes_price=False, markets_per_subscription=1)
    await client.subscribe([A, B])
    server = Venue(await wsk_venue.accept())
    first, second = await server.command("subscribe"), await server.command("subscribe")
    assert first["params"] == {"channels": ["orderbook_delta"], "market_tickers": [A], "use_yes_price": False}
    assert second["params"]["market_tickers"] == [B]
    assert first["id"] != second["id"]


async def test_gap_resyncs_only_that_subscription_and_duplicates_are_dropped(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, prices = await start(wsk_venue, wsk_make_client, [A, B])
    await server.delta(1, 2, A, "0.43", "3.00")
    await server.delta(1, 2, A, "0.43", "3.00")  # duplicate: same sid and seq again
    await wsk_eventually(lambda: client.stats.dropped["duplicate"] == 1)
    assert client.book(A).bids == {4000: 1000, 4200: 500, 4300: 300}  # type: ignore[union-attr]
    await server.delta(1, 4, A, "0.44", "1.00")  # seq 3 never came
    request = await server.command("update_subscription")
    assert request["params"] == {"sid": 1, "action": "get_snapshot", "market_tickers": [A]}
    assert client.book(A).status is PriceStatus.RESYNCING and client.stats.gaps == 1  # type: ignore[union-attr]
    await server.delta(2, 2, B, "0.41", "2.00")  # the other market's sid carries on
    await wsk_eventually(lambda: client.book(B).bids.get(4100) == 200)  # type: ignore[union-attr]
    await server.delta(1, 5, A, "0.45", "1.00")  # before the snapshot: dropped, not applied
    await server.snapshot(1, 6, A, yes=[["0.30", "1.00"]])
    await wsk_eventually(lambda: client.book(A).status is PriceStatus.LIVE)  # type: ignore[union-attr]
    assert client.book(A).bids == {3000: 100} and client.book(A).asks == {}  # type: ignore[union-attr]
    assert client.stats.dropped["awaiting_snapshot"] == 1
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.LIVE, PriceStatus.RESYNCING, PriceStatus.LIVE]
    assert PriceStatus.RESYNCING not in statuses(prices, B)
    resyncing = [p for p in prices if p.status is PriceStatus.RESYNCING]
    assert [(p.yes_bid, p.yes_ask) for p in resyncing] == [(None, None)]


async def test_failed_get_snapshot_falls_back_to_resubscribe(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, _ = await start(wsk_venue, wsk_make_client, [A])
    await server.delta(1, 3, A, "0.43", "1.00")
    request = await server.command("update_subscription")
    await server.conn.send({"id": request["id"], "type": "error", "msg": {"code": 17, "msg": "Internal error"}})
    unsubscribe = await server.command("unsubscribe")
    assert unsubscribe["params"] == {"sids": [1]}
    resubscribe = await server.accept_subscribe(7)
    assert resubscribe["params"]["market_tickers"] == [A]
    await server.snapshot(7, 1, A, yes=[["0.20", "2.00"]])
    await wsk_eventually(lambda: client.book(A).status is PriceStatus.LIVE)  # type: ignore[union-attr]
    assert client.book(A).bids == {2000: 200} and client.stats.venue_errors["17"] == 1  # type: ignore[union-attr]


async def test_unanswered_get_snapshot_times_out_into_resubscribe(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    _, server, _ = await start(wsk_venue, wsk_make_client, [A], resync_timeout=0.2)
    await server.delta(1, 3, A, "0.43", "1.00")
    await server.command("update_subscription")  # never answered
    assert (await server.command("unsubscribe"))["params"] == {"sids": [1]}
    assert (await server.command("subscribe"))["params"]["market_tickers"] == [A]


async def test_terminal_error_on_a_sid_resubscribes_its_market(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, prices = await start(wsk_venue, wsk_make_client, [A, B])
    await server.conn.send({"type": "error", "sid": 2, "msg": {"code": 25, "msg": "Subscription buffer overflow"}})
    resubscribe = await server.accept_subscribe(3)
    assert resubscribe["params"]["market_tickers"] == [B]
    assert client.book(B).status is PriceStatus.RESYNCING  # type: ignore[union-attr]
    await server.snapshot(3, 1, B, no=[["0.61", "4.00"]])
    await wsk_eventually(lambda: client.book(B).status is PriceStatus.LIVE)  # type: ignore[union-attr]
    assert client.book(B).asks == {6100: 400}  # type: ignore[union-attr]  # use_yes_price: 0.61 is the YES ask
    assert client.stats.venue_errors["25"] == 1 and client.stats.reconnects == 0


# The error's market_ticker is optional; with one market per command the command says which.
@pytest.mark.parametrize("error_market", [{"market_ticker": "NOSUCH-MARKET"}, {}], ids=["named", "unnamed"])
async def test_market_not_found_is_reported_closed(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, error_market: dict[str, str]) -> None:
    client = wsk_make_client(wsk_venue.url)
    prices: list[MarketPrice] = []
    client.add_listener(prices.append)
    await client.subscribe(["NOSUCH-MARKET"])
    server = Venue(await wsk_venue.accept())
    command = await server.command("subscribe")
    await server.conn.send({"id": command["id"], "type": "error",
                            "msg": {"code": 16, "msg": "Market not found", **error_market}})
    await wsk_eventually(lambda: bool(prices))
    assert prices[-1].status is PriceStatus.CLOSED
    await asyncio.sleep(0.3)  # a retry would be sent at once: no retry storm for a market that does not exist
    assert server.conn.received.empty() and client.stats.reconnects == 0


async def test_bad_frames_are_counted_and_taint_only_their_own_market(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, prices = await start(wsk_venue, wsk_make_client, [A, B, C])
    # Frames that cannot be attributed to anything: counted, nothing else changes.
    await server.conn.send('{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker"')
    await server.conn.send('{"type": "orderbook_delta", "sid": 1,}')
    await server.conn.send("[1, 2, 3]")
    await server.conn.send({"type": "orderbook_imbalance", "sid": 1, "msg": {}})
    await server.delta(2, 2, B, "0.41", "2.00")
    await wsk_eventually(lambda: client.book(B).bids.get(4100) == 200)  # type: ignore[union-attr]
    assert client.stats.rejected == {"truncated_json": 1, "malformed_json": 1, "not_an_object": 1,
                                     "unknown_type": 1}
    # Readable frames with a bad field consumed a seq: their update is lost, their book resyncs.
    await server.delta(1, 2, A, "0.43", {"value": "1.00"})
    await server.command("update_subscription")
    assert client.book(A).status is PriceStatus.RESYNCING  # type: ignore[union-attr]
    assert client.book(B).status is client.book(C).status is PriceStatus.LIVE  # type: ignore[union-attr]
    await server.delta(2, 3, B, "1.70", "1.00")  # price out of [0, 1]
    await server.command("update_subscription")
    await server.delta(3, 2, C, "0.42", "-6.00")  # 5.00 - 6.00: a level below zero
    await server.command("update_subscription")
    assert client.stats.rejected["bad_field"] == 2 and client.stats.rejected["negative_level"] == 1
    assert all(client.book(t).status is PriceStatus.RESYNCING for t in (A, B, C))  # type: ignore[union-attr]
    assert client.stats.connects == 1 and not client.stats.disconnects and client.stats.gaps == 0
    # One RESYNCING record each, from its own bad frame; never a price from a wrong book.
    for ticker in (A, B, C):
        assert statuses(prices, ticker) == [PriceStatus.LIVE, PriceStatus.RESYNCING]


async def test_reconnect_clears_sids_and_resubscribes_everything(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, prices = await start(wsk_venue, wsk_make_client, [A, B])
    await server.delta(1, 2, A, "0.43", "1.00")
    await server.conn.close()
    again = Venue(await wsk_venue.accept())
    await wsk_eventually(lambda: client.book(A).status is PriceStatus.STALE)  # type: ignore[union-attr]
    # The new session numbers sids from 1 again, now in the opposite order.
    first = await again.command("subscribe")
    second = await again.command("subscribe")
    by_ticker = {first["params"]["market_tickers"][0]: first, second["params"]["market_tickers"][0]: second}
    await again.ack(by_ticker[B]["id"], 1)
    await again.ack(by_ticker[A]["id"], 2)
    await again.delta(2, 1, A, "0.43", "1.00")  # a delta before this session's snapshot is not applied
    await again.snapshot(1, 1, B, yes=[["0.10", "1.00"]])
    await again.snapshot(2, 2, A, yes=[["0.20", "1.00"]])
    await wsk_eventually(lambda: all(client.book(t).status is PriceStatus.LIVE  # type: ignore[union-attr]
                                     for t in (A, B)))
    assert client.book(A).bids == {2000: 100} and client.book(B).bids == {1000: 100}  # type: ignore[union-attr]
    assert client.stats.reconnects == 1 and client.stats.gaps == 0
    assert statuses(prices, A)[-2:] == [PriceStatus.STALE, PriceStatus.LIVE]


async def test_unsubscribe_sends_the_wire_command_and_forgets(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, _ = await start(wsk_venue, wsk_make_client, [A, B])
    await client.unsubscribe([A])
    assert (await server.command("unsubscribe"))["params"] == {"sids": [1]}
    assert client.subscribed == {B} and client.book(A) is None
    await server.delta(1, 2, A, "0.43", "1.00")  # in flight before the venue saw the unsubscribe
    await wsk_eventually(lambda: client.stats.dropped["unknown_sid"] == 1)
    assert not client.stats.rejected


async def test_unsubscribe_before_the_ack_trims_the_new_sid(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, _ = await start(wsk_venue, wsk_make_client, [A])
    await client.subscribe([B])  # a dynamic add on the live connection: a new subscribe
    command = await server.command("subscribe")
    assert command["params"]["market_tickers"] == [B]
    await client.unsubscribe([B])
    await server.ack(command["id"], 2)
    assert (await server.command("unsubscribe"))["params"] == {"sids": [2]}


async def test_ticker_and_trade_channels_set_last_trade(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client = wsk_make_client(wsk_venue.url, channels=("orderbook_delta", "ticker", "trade"))
    await client.subscribe([A])
    server = Venue(await wsk_venue.accept())
    command = await server.command("subscribe")
    assert command["params"]["channels"] == ["orderbook_delta", "ticker", "trade"]
    for sid, channel in enumerate(("orderbook_delta", "ticker", "trade"), start=1):
        await server.ack(command["id"], sid, channel)
    await server.snapshot(1, 1, A, yes=[["0.40", "1.00"]])
    await server.conn.send({"type": "ticker", "sid": 2, "msg": {"market_ticker": A, "price_dollars": "0.4100"}})
    await wsk_eventually(lambda: getattr(client.latest_price(A), "last_trade", None) == 0.41)
    await server.conn.send({"type": "trade", "sid": 3, "seq": 1, "msg": {
        "market_ticker": A, "yes_price_dollars": "0.395", "no_price_dollars": "0.605", "count_fp": "3.00"}})
    await wsk_eventually(lambda: getattr(client.latest_price(A), "last_trade", None) == 0.395)


@pytest.mark.parametrize("channels", [(), ("ticker",), ("orderbook_delta", "fills")])
def test_channel_choice_is_validated(wsk_credentials: KalshiCredentials, channels: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="channel"):
        KalshiWebSocketClient(wsk_credentials, channels=channels)


@pytest.mark.parametrize("ts_ms", ["soon", -5, 1.7e12, "2022-11-22T20:44:01Z"])
async def test_a_bad_venue_timestamp_is_counted_and_never_published(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, ts_ms: Any) -> None:
    client, server, prices = await start(wsk_venue, wsk_make_client, [A])
    await server.conn.send({"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {
        "market_ticker": A, "price_dollars": "0.43", "delta_fp": "3.00", "side": "yes", "ts_ms": ts_ms}})
    await wsk_eventually(lambda: client.book(A).bids.get(4300) == 300)  # type: ignore[union-attr]
    assert client.stats.rejected == {"bad_timestamp": 1}
    # The update applies; the stamp is dropped, so every record still crosses the bus.
    assert prices[-1].yes_bid == 0.43 and prices[-1].venue_ts_ms is None
    for price in prices:
        assert decode(encode(price)) == price


async def test_venue_error_codes_are_counted_in_a_bounded_table(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, _ = await start(wsk_venue, wsk_make_client, [A])
    for i in range(100):
        await server.conn.send({"type": "error", "msg": {"code": f"code-{i}", "msg": "garbage"}})
    await server.conn.send({"type": "error", "msg": {"code": 18, "msg": "Command timeout"}})
    await wsk_eventually(lambda: client.stats.venue_errors["18"] == 1)
    assert client.stats.venue_errors == {"18": 1, "not_an_integer": 100}


async def test_a_flood_of_bad_frames_is_counted_in_full_and_logged_sparingly(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client, server, _ = await start(wsk_venue, wsk_make_client, [A])
    with caplog.at_level(logging.WARNING):
        for i in range(200):
            await server.conn.send({"type": "orderbook_imbalance", "sid": 1, "msg": {"n": i}})
        await server.delta(1, 2, A, "0.43", "1.00")
        await wsk_eventually(lambda: client.book(A).bids.get(4300) == 100)  # type: ignore[union-attr]
    assert client.stats.rejected == {"unknown_type": 200}
    assert len([r for r in caplog.records if "unknown_type" in r.getMessage()]) == 1


async def test_a_gap_on_a_shared_sid_taints_every_market_of_it(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client = wsk_make_client(wsk_venue.url, markets_per_subscription=2)
    prices: list[MarketPrice] = []
    client.add_listener(prices.append)
    await client.subscribe([A, B])
    server = Venue(await wsk_venue.accept())
    command = await server.accept_subscribe(1)
    assert command["params"]["market_tickers"] == [A, B]
    await server.snapshot(1, 1, A, yes=[["0.40", "1.00"]])
    await server.snapshot(1, 2, B, yes=[["0.30", "1.00"]])
    await wsk_eventually(lambda: all(client.book(t).status is PriceStatus.LIVE  # type: ignore[union-attr]
                                     for t in (A, B)))
    await server.delta(1, 5, A, "0.41", "1.00")  # seqs 3 and 4 lost: which market they were for is unknown
    request = await server.command("update_subscription")
    assert request["params"] == {"sid": 1, "action": "get_snapshot", "market_tickers": [A, B]}
    assert all(client.book(t).status is PriceStatus.RESYNCING for t in (A, B))  # type: ignore[union-attr]
    await server.snapshot(1, 6, A, yes=[["0.42", "2.00"]])
    await server.delta(1, 7, B, "0.31", "1.00")  # B's snapshot is still on its way: not applied
    await server.snapshot(1, 8, B, yes=[["0.32", "3.00"]])
    await wsk_eventually(lambda: client.book(B).status is PriceStatus.LIVE)  # type: ignore[union-attr]
    assert client.book(A).bids == {4200: 200} and client.book(B).bids == {3200: 300}  # type: ignore[union-attr]
    assert client.stats.dropped["awaiting_snapshot"] == 1 and client.stats.gaps == 1
    # A snapshot that itself arrives after a gap is complete for its own market: it
    # applies, and only the sid's other markets are resynced.
    await server.snapshot(1, 10, A, yes=[["0.43", "1.00"]])
    request = await server.command("update_subscription")
    assert request["params"]["market_tickers"] == [B]
    assert client.book(A).status is PriceStatus.LIVE  # type: ignore[union-attr]
    assert client.book(A).bids == {4300: 100}  # type: ignore[union-attr]
    assert client.book(B).status is PriceStatus.RESYNCING  # type: ignore[union-attr]
    assert all(p.yes_bid is None for p in prices if p.status is PriceStatus.RESYNCING)
