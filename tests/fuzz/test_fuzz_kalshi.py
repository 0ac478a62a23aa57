"""Kalshi client under tens of thousands of hostile frames interleaved with valid traffic.

The properties are `tests.fuzz.harness.run`'s; a LIVE market here must hold every
level of the venue's book, since each sid's `seq` reveals a lost update at the
sid's next frame. Markets share sids two by two, and the ticker and trade channels
are on, so a frame for one market can reach another only through a real bug.
"""

from __future__ import annotations

import random
from pathlib import Path

from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import BOOK, TICKER, TRADE, KalshiWebSocketClient
from markets.sim.keys import generate_demo_keypair
from markets.sim.universe import build_universe
from tests.fuzz.harness import fuzz
from tests.fuzz.kalshi_venue import KalshiFuzzVenue
from tests.fuzz.mutate import SEED


async def test_kalshi_client_survives_hostile_frames(tmp_path: Path) -> None:
    key_id, key_path, _ = generate_demo_keypair(tmp_path)
    client = KalshiWebSocketClient(KalshiCredentials.from_files(key_id, key_path), url="wss://fuzz.invalid/ws",
                                   channels=(BOOK, TICKER, TRADE), markets_per_subscription=2,
                                   command_rate=1e9, command_burst=10**9,  # no pacing: time stands still here
                                   stale_after=1e6, receive_timeout=None, ping_interval=None)
    venue = KalshiFuzzVenue(random.Random(SEED), build_universe(8, seed=SEED).markets)
    await fuzz(client, venue, "kalshi", ("KXFOREIGN-26JAN01AAABBB-AAA", "", "kxnflgame"))
