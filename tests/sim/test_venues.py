"""`SimulatedVenues`: both simulators on one universe, with a working demo key."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from markets.sim.venues import SimulatedVenues

KALSHI_WS_PATH = "/trade-api/ws/v2"


def kalshi_headers(key_id: str, key_path: Path, method: str, path: str) -> dict[str, str]:
    """Kalshi's RSA-PSS request signature, done here with `cryptography` directly."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    stamp = str(time.time_ns() // 1_000_000)
    signature = key.sign(f"{stamp}{method}{path}".encode(),
                         padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                     salt_length=padding.PSS.DIGEST_LENGTH),
                         hashes.SHA256())
    return {"KALSHI-ACCESS-KEY": key_id, "KALSHI-ACCESS-TIMESTAMP": stamp,
            "KALSHI-ACCESS-SIGNATURE": base64.b64encode(signature).decode()}


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> object:
    message = await asyncio.wait_for(ws.receive(), 3.0)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def test_both_venues_share_one_universe_and_the_key_signs_kalshi(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with SimulatedVenues(n_markets=3, seed=5, rate=0.0, key_dir=tmp_path) as venues:
        assert venues.kalshi.universe is venues.universe is venues.polymarket.universe
        assert venues.private_key_path.parent == tmp_path
        assert stat.S_IMODE(venues.private_key_path.stat().st_mode) == 0o600
        market = venues.universe.markets[0]
        assert venues.kalshi.ladders[market.kalshi_ticker] is not venues.polymarket.ladders[
            market.condition_id]

        with pytest.raises(aiohttp.WSServerHandshakeError) as unsigned:
            await http.ws_connect(venues.kalshi.ws_url)
        assert unsigned.value.status == 401
        headers = kalshi_headers(venues.key_id, venues.private_key_path, "GET", KALSHI_WS_PATH)
        async with http.ws_connect(venues.kalshi.ws_url, headers=headers) as kalshi:
            await kalshi.send_str(json.dumps({"id": 1, "cmd": "subscribe", "params": {
                "channels": ["orderbook_delta"], "market_tickers": [market.kalshi_ticker]}}))
            frames = [await next_json(kalshi), await next_json(kalshi)]
            kinds = {frame["type"] for frame in frames if isinstance(frame, dict)}
            assert kinds == {"subscribed", "orderbook_snapshot"}

        async with http.ws_connect(venues.polymarket.ws_url) as poly:
            await poly.send_str(json.dumps({"assets_ids": [market.yes_token_id], "type": "market"}))
            dump = await next_json(poly)
            assert isinstance(dump, list) and dump[0]["market"] == market.condition_id
        assert {record.venue for record in venues.send_log.records()} == {"kalshi", "polymarket"}
        assert venues.send_log.lookup(dump[0]["hash"], venue="polymarket") is not None
    assert venues.kalshi.connection_count == venues.polymarket.connection_count == 0


async def test_a_temporary_key_directory_is_removed_on_exit() -> None:
    async with SimulatedVenues(n_markets=1, rate=0.0) as venues:
        key_path = venues.private_key_path
        assert key_path.exists()
    assert not key_path.exists() and not key_path.parent.exists()


async def test_each_simulator_walks_the_fair_values_at_its_own_round_rate() -> None:
    """Two venues on one universe must not move the hidden probabilities twice as fast:
    each walk steps once per round of its own simulator, never for the other's rounds.
    (Counted in rounds, not against the clock, so a loaded machine cannot fail it.)"""
    async with SimulatedVenues(n_markets=2, rate=0.0) as venues:
        for _ in range(7):
            venues.kalshi.step_round()
        for _ in range(3):
            venues.polymarket.step_round()
        assert (venues.kalshi.fairs.rounds, venues.polymarket.fairs.rounds) == (7, 3)


def _books(venues: SimulatedVenues) -> list[object]:
    kalshi = [venues.kalshi.book_levels(m.kalshi_ticker) for m in venues.universe.markets]
    poly = [venues.polymarket.true_book(m.yes_token_id) for m in venues.universe.markets]
    return [kalshi, poly]


async def test_a_seed_reproduces_both_venues_whatever_the_interleaving() -> None:
    """The venues' drivers run on their own clocks; a seed must still give the same markets."""
    one, two = SimulatedVenues(n_markets=4, seed=7, rate=0.0), SimulatedVenues(n_markets=4, seed=7, rate=0.0)
    for _ in range(40):
        one.kalshi.step_round()
    for _ in range(40):
        one.polymarket.step_round()
    for _ in range(40):
        two.polymarket.step_round()
        two.kalshi.step_round()
    assert _books(one) == _books(two)
    game = one.universe.markets[0].game.game_id
    assert one.kalshi.fairs.fair(game) == two.polymarket.fairs.fair(game) != one.universe.fair(game)
    other = SimulatedVenues(n_markets=4, seed=8, rate=0.0)
    for _ in range(40):
        other.kalshi.step_round()
    assert _books(other)[0] != _books(one)[0]


async def test_cross_venue_arbitrage_appears_occasionally() -> None:
    """At default settings a YES ask on one venue sometimes sits below the YES bid on
    the other (before fees), but the venues are not permanently crossed."""
    venues = SimulatedVenues(n_markets=20, seed=0, rate=0.0)
    crossed = observed = 0
    for _ in range(100):
        for market in venues.universe.markets:
            venues.kalshi.step_next()
            venues.polymarket.step_next()
            kalshi = venues.kalshi.ladders[market.kalshi_ticker]
            poly = venues.polymarket.ladders[market.condition_id]
            tops = (kalshi.best_bid(), kalshi.best_ask(), poly.best_bid(), poly.best_ask())
            if None in tops:
                continue
            k_bid, k_ask, p_bid, p_ask = tops  # type: ignore[misc]
            observed += 1
            crossed += k_ask < p_bid or p_ask < k_bid
    assert observed > 1000
    assert 0 < crossed < observed // 3, (crossed, observed)
