"""Subscribing thousands of Kalshi markets from cold, against the venue's command limits.

Starts the Kalshi simulator (its default command limits: errors 27 and 26, see
`markets.sim.kalshi.CommandLimits`) with N markets and no market movement, then a
`KalshiWebSocketClient` that subscribes all of them at once, and reports how long
until every book is LIVE, how many commands the client wrote, and how many the venue
refused with 27. `--per-subscription 1` reproduces the old one-market-per-command
client for comparison. Simulator and client share one process and event loop.

    python scripts/bench_subscribe.py [--markets 2000] [--per-subscription 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from benchstats import print_settings
from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import KalshiWebSocketClient
from markets.models import PriceStatus
from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.universe import build_universe


async def one_run(key: tuple[str, Path, bytes], markets: int, per_subscription: int,
                  timeout: float) -> tuple[float | None, int, int, int]:
    """(seconds to every book LIVE or None on timeout, commands written, 27s, LIVE books)."""
    key_id, path, public_pem = key
    async with KalshiSimulator(build_universe(markets, seed=5), rate=0) as sim:
        sim.register_key(key_id, public_pem)
        tickers = [m.kalshi_ticker for m in sim.universe.markets]
        client = KalshiWebSocketClient(KalshiCredentials.from_files(key_id, path), url=sim.ws_url,
                                       markets_per_subscription=per_subscription, lifecycle=False)
        try:
            await client.connect()
            start = time.perf_counter()
            await client.subscribe(tickers)
            elapsed: float | None = None
            deadline = start + timeout
            while time.perf_counter() < deadline:
                if all(client.book(t).status is PriceStatus.LIVE for t in tickers):  # type: ignore[union-attr]
                    elapsed = time.perf_counter() - start
                    break
                await asyncio.sleep(0.01)
            live = sum(client.book(t).status is PriceStatus.LIVE for t in tickers)  # type: ignore[union-attr]
            return elapsed, client.commands_sent, sim.commands_refused, live
        finally:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", type=int, default=2000)
    parser.add_argument("--per-subscription", type=int, default=100, help="markets per subscribe command")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every book")
    args = parser.parse_args()
    print_settings(args)
    with tempfile.TemporaryDirectory() as tmp:
        key = generate_demo_keypair(Path(tmp))
        times = []
        for run in range(args.runs):
            elapsed, commands, refused, live = asyncio.run(
                one_run(key, args.markets, args.per_subscription, args.timeout))
            shown = "timed out" if elapsed is None else f"{elapsed:.2f} s"
            print(f"run {run + 1}: all {args.markets} books LIVE: {shown}   commands written {commands}   "
                  f"refused with 27: {refused}   LIVE books {live}", flush=True)
            if elapsed is not None:
                times.append(elapsed)
    if times:
        print(f"time to every book: median {statistics.median(times):.2f} s   min {min(times):.2f}   "
              f"max {max(times):.2f}   ({len(times)} of {args.runs} runs completed)")


if __name__ == "__main__":
    main()
