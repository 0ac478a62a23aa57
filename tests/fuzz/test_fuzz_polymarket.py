"""Polymarket client under tens of thousands of hostile frames interleaved with valid traffic.

The properties are `tests.fuzz.harness.run`'s. There are no sequence numbers on
this channel, so a LIVE market here must show the venue's top of book after each
`price_change` or `book` of its token (each `price_change` carries the top the
client checks itself against); a lost deep level is caught when it reaches the top.
"""

from __future__ import annotations

import random

from markets.polymarket.ws_client import PolymarketWebSocketClient
from markets.sim.universe import build_universe
from tests.fuzz.harness import fuzz
from tests.fuzz.mutate import SEED
from tests.fuzz.polymarket_venue import PolymarketFuzzVenue


async def test_polymarket_client_survives_hostile_frames() -> None:
    client = PolymarketWebSocketClient(url="wss://fuzz.invalid/ws/market", stale_after=1e6, ping_interval=None,
                                       receive_timeout=None)
    venue = PolymarketFuzzVenue(random.Random(SEED), build_universe(8, seed=SEED).markets)
    await fuzz(client, venue, "polymarket", ("1234567890123456789", "", "0x" + "ab" * 32))
