"""Quiet markets over time: do healthy-but-silent books stay LIVE, and what does proving them cost?

Both simulators run in this process with the realistic activity mix
(`markets.sim.activity.ActivityMix`: by default 5 % of markets change every ~0.3 s,
the rest every ~3 min), and the venue clients stream every market with their
default timeouts. Reported per venue, each minute and at the end:

* quiet flaps -- a LIVE market made STALE because it was quiet: by the watchdog's
  default (`stale_trips`) or by a REST check that could not be made (Polymarket
  `unavailable`). The old watchdog did this to every quiet market every
  `stale_after`; must be 0. Every STALE/RESYNCING published after a first LIVE is
  counted too, with the other causes beside it: the Polymarket feed briefly
  disagreeing with itself after a sweep (`disagreements`, published STALE until it
  agrees again) and tick-size changes (RESYNCING until the venue's next `book`);
* reconnects and resyncs;
* Polymarket REST checks of quiet tokens: `POST /books` requests per minute, set
  against the venue's published budget for that endpoint (500 per 10 s,
  protocols/polymarket.md 9.1), and their verdicts; and the simulator's tick-size
  changes, whose RESYNCING (book emptied until the venue's next `book`) is not a flap
  of a quiet market.

Every fall of a market that was LIVE counts as a flap; reconnects are reported beside
them (a connection that drops makes its books STALE, rightly), and a healthy run has none.

Usage: python3 scripts/bench_quiet_markets.py [--markets 1000] [--duration 600]
           [--venue both|kalshi|polymarket] [--busy-share 0.05] [--busy-interval 0.3]
           [--quiet-interval 180] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from markets.base_ws import BaseWebSocketClient
from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import KalshiWebSocketClient
from markets.models import MarketPrice, PriceStatus
from markets.polymarket.client import PolymarketClient
from markets.polymarket.ws_client import PolymarketWebSocketClient
from markets.sim.activity import ActivityMix
from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import build_universe

BOOKS_BUDGET_PER_MINUTE = 500 * 6  # POST /books: 500 requests per 10 s (polymarket.md 9.1)
_DOWN = frozenset({PriceStatus.STALE, PriceStatus.RESYNCING})


@dataclass
class Watch:
    """What one venue client published: first LIVE per market, and every later fall."""

    client: BaseWebSocketClient
    live_once: set[str] = field(default_factory=set)
    flaps: Counter[str] = field(default_factory=Counter)

    def on_price(self, price: MarketPrice) -> None:
        """Every fall of a market that was LIVE counts (a dropped connection's too:
        the report shows reconnects beside it, and a healthy run has none)."""
        if price.status is PriceStatus.LIVE:
            self.live_once.add(price.market_id)
        elif price.status in _DOWN and price.market_id in self.live_once:
            self.flaps[price.status.value] += 1


def count_tick_changes(sim: PolymarketSimulator) -> list[int]:
    """Count the simulator's tick-size changes (a RESYNCING that is not a quiet flap)."""
    count = [0]
    change = sim.change_tick_size

    def counted(condition_id: str, new_tick: int) -> None:
        count[0] += 1
        change(condition_id, new_tick)

    sim.change_tick_size = counted  # type: ignore[method-assign]
    return count


async def run(args: argparse.Namespace) -> None:
    mix = ActivityMix(args.busy_share, args.busy_interval, args.quiet_interval)
    universe = build_universe(args.markets, seed=args.seed)
    print(f"{args.markets} markets per venue, activity {mix}, {args.duration:g} s, seed {args.seed}", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        watches: dict[str, Watch] = {}
        rest: PolymarketClient | None = None
        if args.venue in ("both", "kalshi"):
            keys = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            key_id, key_path, public_pem = generate_demo_keypair(keys)
            ksim = await stack.enter_async_context(KalshiSimulator(universe, seed=args.seed, activity=mix))
            ksim.register_key(key_id, public_pem)
            kalshi = KalshiWebSocketClient(KalshiCredentials.from_files(key_id, key_path), url=ksim.ws_url)
            stack.push_async_callback(kalshi.close)
            watches["kalshi"] = Watch(kalshi)
            kalshi.add_listener(watches["kalshi"].on_price)
            await kalshi.subscribe([m.kalshi_ticker for m in universe.markets])
        if args.venue in ("both", "polymarket"):
            psim = await stack.enter_async_context(PolymarketSimulator(universe, seed=args.seed, activity=mix))
            tick_changes = count_tick_changes(psim)
            rest = PolymarketClient(clob_url=psim.clob_url, gamma_url=psim.gamma_url)
            stack.push_async_callback(rest.close)
            poly = PolymarketWebSocketClient(url=psim.ws_url, book_source=rest)
            stack.push_async_callback(poly.close)
            watches["polymarket"] = Watch(poly)
            poly.add_listener(watches["polymarket"].on_price)
            await poly.subscribe([m.yes_token_id for m in universe.markets])
        start = time.monotonic()
        per_minute: list[int] = []
        last_requests = 0
        while (elapsed := time.monotonic() - start) < args.duration:
            await asyncio.sleep(min(60.0, args.duration - elapsed))
            minute = round((time.monotonic() - start) / 60)
            for venue, watch in watches.items():
                s = watch.client.stats
                live = sum(1 for m in watch.client.subscribed
                           if (b := watch.client.book(m)) is not None and b.status is PriceStatus.LIVE)
                line = (f"[{minute:>2} min] {venue:<10} live {live}/{args.markets}  flaps {dict(watch.flaps)}  "
                        f"disagreements {s.disagreements}  reconnects {s.reconnects}  resyncs {s.resyncs}  "
                        f"stale_trips {s.stale_trips}  "
                        f"pings_received {s.pings_received}")
                if venue == "polymarket":
                    requests = s.verifications["requests"]
                    per_minute.append(requests - last_requests)
                    last_requests = requests
                    line += (f"  REST /books this minute {per_minute[-1]}  verdicts {dict(s.verifications)}"
                             f"  tick-size changes {tick_changes[0]}")
                print(line, flush=True)
        print("summary", flush=True)
        for venue, watch in watches.items():
            s = watch.client.stats
            quiet_flaps = s.stale_trips + s.verifications["unavailable"]
            print(f"  {venue}: quiet flaps {quiet_flaps} (stale_trips {s.stale_trips}, unverifiable "
                  f"{s.verifications['unavailable']}); all STALE/RESYNCING published after LIVE "
                  f"{dict(watch.flaps)}, feed disagreements {s.disagreements}; reconnects {s.reconnects}; "
                  f"resyncs {s.resyncs}; markets ever LIVE {len(watch.live_once)}/{args.markets}", flush=True)
        if per_minute:
            print(f"  polymarket tick-size changes (each empties both tokens' books, RESYNCING until the "
                  f"venue's next book): {tick_changes[0]}", flush=True)
            print(f"  polymarket REST POST /books per minute: mean {sum(per_minute) / len(per_minute):.1f}, "
                  f"max {max(per_minute)} (venue budget {BOOKS_BUDGET_PER_MINUTE}/min)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds")
    parser.add_argument("--venue", choices=("both", "kalshi", "polymarket"), default="both")
    defaults = ActivityMix()
    parser.add_argument("--busy-share", type=float, default=defaults.busy_share)
    parser.add_argument("--busy-interval", type=float, default=defaults.busy_interval, help="seconds")
    parser.add_argument("--quiet-interval", type=float, default=defaults.quiet_interval, help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
