"""Book update throughput: Kalshi deltas and Polymarket price changes, apply + top of book.

Each update is applied from its wire strings (price and size parsing included, as on
the real path), and whenever the book reports that its top may have changed a
`MarketPrice` is built, as a publisher would. The update streams are generated up
front from a seeded random walk that keeps every level non-negative, so the timed
loop does nothing but book work. Several runs; the median and spread are reported.

    python scripts/bench_book.py [--updates 200000] [--runs 7] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from benchstats import print_settings
from markets.book import KalshiOrderBook, LocalOrderBook, PolymarketOrderBook
from markets.models import format_fixed, format_price

Update = tuple[str, str, str]


def kalshi_updates(count: int, rng: random.Random) -> tuple[list[list[str]], list[list[str]], list[Update]]:
    """A snapshot around 0.50 and `count` additive deltas that never drive a level below zero."""
    levels = {"yes": {p: rng.randint(100, 50_000) for p in range(4000, 5000, 100)},
              "no": {p: rng.randint(100, 50_000) for p in range(4100, 5100, 100)}}
    snapshot = [[[format_price(p), format_fixed(q, 2)] for p, q in levels[s].items()] for s in ("yes", "no")]
    updates = []
    for _ in range(count):
        side = rng.choice(("yes", "no"))
        price = rng.randrange(3500, 5100 if side == "yes" else 5600, 100)
        have = levels[side].get(price, 0)
        delta = rng.randint(-have, 20_000) if have else rng.randint(1, 20_000)
        levels[side][price] = have + delta
        updates.append((format_price(price), format_fixed(delta, 2), side))
    return snapshot[0], snapshot[1], updates


def polymarket_updates(count: int, rng: random.Random) -> tuple[list[dict], list[dict], list[Update]]:
    """A book around 0.50 and `count` absolute level sizes, a tenth of them removals."""
    bids = [{"price": format_price(p), "size": str(rng.randint(1, 5000))} for p in range(4000, 5000, 100)]
    asks = [{"price": format_price(p), "size": str(rng.randint(1, 5000))} for p in range(5900, 5000, -100)]
    updates = []
    for _ in range(count):
        side = rng.choice(("BUY", "SELL"))
        price = rng.randrange(3500, 5000, 100) if side == "BUY" else rng.randrange(5100, 6500, 100)
        size = "0" if rng.random() < 0.1 else format_fixed(rng.randint(1, 500_000), 2)
        updates.append((format_price(price), size, side))
    return bids, asks, updates


def run(book: LocalOrderBook, updates: list[Update]) -> float:
    """Apply every update; publish a record whenever the top may have changed. Returns seconds."""
    apply = book.apply_delta  # type: ignore[attr-defined]
    to_price = book.to_market_price
    start = time.perf_counter()
    for price, size, side in updates:
        if apply(price, size, side):
            to_price()
    return time.perf_counter() - start


def measure(name: str, make: Callable[[], LocalOrderBook], updates: list[Update], runs: int) -> None:
    rates = sorted(len(updates) / run(make(), updates) for _ in range(runs))
    print(f"{name:<22} median {statistics.median(rates):>10,.0f} updates/s   "
          f"min {rates[0]:>10,.0f}   max {rates[-1]:>10,.0f}   ({runs} runs x {len(updates):,} updates)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print_settings(args)
    rng = random.Random(args.seed)

    yes, no, k_updates = kalshi_updates(args.updates, rng)

    def kalshi_book() -> KalshiOrderBook:
        book = KalshiOrderBook("BENCH", use_yes_price=False)
        book.apply_snapshot(yes, no)
        return book

    bids, asks, p_updates = polymarket_updates(args.updates, rng)

    def polymarket_book() -> PolymarketOrderBook:
        book = PolymarketOrderBook("BENCH")
        book.apply_snapshot(bids, asks)
        return book

    measure("kalshi orderbook_delta", kalshi_book, k_updates, args.runs)
    measure("polymarket price_change", polymarket_book, p_updates, args.runs)


if __name__ == "__main__":
    main()
