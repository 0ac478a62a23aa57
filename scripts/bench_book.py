"""Book update throughput: Kalshi deltas and Polymarket price changes, apply + top of book.

Each update is applied from its wire strings (price and size parsing included, as on
the real path), and whenever the book reports that its top may have changed a
`MarketPrice` is built, as a publisher would. The update streams are generated up
front from a seeded random walk that keeps every level non-negative, so the timed
loop does nothing but book work. Several runs; the median and spread are reported.

Books start `--depth` levels per side (100 by default, as real venue books hold;
a best level that empties makes the book rescan its side, so depth is real work)
on a `--tick` grid (ticks of $0.0001; 10 = $0.001). `--depth 10 --tick 100` is the
shallow cent book this benchmark used before.

    python scripts/bench_book.py [--updates 200000] [--runs 7] [--seed 1] [--depth 100] [--tick 10]
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


def kalshi_updates(count: int, rng: random.Random, depth: int, tick: int
                   ) -> tuple[list[list[str]], list[list[str]], list[Update]]:
    """A snapshot around 0.50, `depth` levels a side, and `count` additive deltas that
    never drive a level below zero."""
    levels = {"yes": {p: rng.randint(100, 50_000) for p in range(5000 - depth * tick, 5000, tick)},
              "no": {p: rng.randint(100, 50_000) for p in range(5100 - depth * tick, 5100, tick)}}
    snapshot = [[[format_price(p), format_fixed(q, 2)] for p, q in levels[s].items()] for s in ("yes", "no")]
    updates = []
    for _ in range(count):
        side = rng.choice(("yes", "no"))
        low = (5000 if side == "yes" else 5100) - (depth + 5) * tick
        price = rng.randrange(low, 5100 if side == "yes" else 5600, tick)
        have = levels[side].get(price, 0)
        delta = rng.randint(-have, 20_000) if have else rng.randint(1, 20_000)
        levels[side][price] = have + delta
        updates.append((format_price(price), format_fixed(delta, 2), side))
    return snapshot[0], snapshot[1], updates


def polymarket_updates(count: int, rng: random.Random, depth: int, tick: int
                       ) -> tuple[list[dict], list[dict], list[Update]]:
    """A book around 0.50, `depth` levels a side, and `count` absolute level sizes, a
    tenth of them removals."""
    bids = [{"price": format_price(p), "size": str(rng.randint(1, 5000))}
            for p in range(5000 - depth * tick, 5000, tick)]
    asks = [{"price": format_price(p), "size": str(rng.randint(1, 5000))}
            for p in range(5000 + depth * tick, 5000, -tick)]
    updates = []
    for _ in range(count):
        side = rng.choice(("BUY", "SELL"))
        if side == "BUY":
            price = rng.randrange(5000 - (depth + 5) * tick, 5000, tick)
        else:
            price = rng.randrange(5000 + tick, 5000 + (depth + 5) * tick, tick)
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
    parser.add_argument("--depth", type=int, default=100, help="levels per side in the starting book")
    parser.add_argument("--tick", type=int, default=10, help="price grid in ticks of $0.0001")
    args = parser.parse_args()
    if not 0 < (args.depth + 5) * args.tick < 5000:
        parser.error("--depth x --tick must keep every price inside (0, 1)")
    print_settings(args)
    rng = random.Random(args.seed)

    yes, no, k_updates = kalshi_updates(args.updates, rng, args.depth, args.tick)

    def kalshi_book() -> KalshiOrderBook:
        book = KalshiOrderBook("BENCH", use_yes_price=False)
        book.apply_snapshot(yes, no)
        return book

    bids, asks, p_updates = polymarket_updates(args.updates, rng, args.depth, args.tick)

    def polymarket_book() -> PolymarketOrderBook:
        book = PolymarketOrderBook("BENCH")
        book.apply_snapshot(bids, asks)
        return book

    measure("kalshi orderbook_delta", kalshi_book, k_updates, args.runs)
    measure("polymarket price_change", polymarket_book, p_updates, args.runs)


if __name__ == "__main__":
    main()
