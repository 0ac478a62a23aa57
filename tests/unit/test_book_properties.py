"""Random update sequences through the books and a naive Decimal reference model.

The reference model is deliberately the dumbest correct thing: Decimal dicts, full
rescans for the top, the venue rules written out longhand. After every step the
book's levels and top of book must equal the model's.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from markets.book import BookError, BookNotReady, KalshiOrderBook, PolymarketOrderBook

ONE = Decimal(1)
TICK = Decimal("0.0001")
CENT = Decimal("0.01")

# A narrow price grid makes collisions (the interesting case) frequent; the
# spellings vary the way the venues' do.
grid = st.integers(1, 11).map(lambda i: Decimal(i) * Decimal("0.085"))
spelling = st.sampled_from(["{:.4f}", "{:.3f}", "{:.6f}", "{}"])
prices = st.tuples(grid, spelling).map(lambda p: (p[0], p[1].format(p[0]).lstrip("0") or "0"))
quantities = st.integers(0, 50_000).map(lambda n: Decimal(n) * CENT)
deltas = st.integers(-30_000, 30_000).map(lambda n: Decimal(n) * CENT)


def ticks(price: Decimal) -> int:
    return int(price / TICK)


def units(size: Decimal, places: int) -> int:
    return int(size.scaleb(places))


kalshi_levels = st.lists(st.tuples(prices, quantities.filter(bool)), max_size=6, unique_by=lambda l: l[0][0])
kalshi_ops = st.lists(
    st.one_of(
        st.tuples(st.just("snapshot"), st.one_of(st.none(), kalshi_levels), st.one_of(st.none(), kalshi_levels)),
        st.tuples(st.just("delta"), prices, deltas, st.sampled_from(["yes", "no"])),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(ops=kalshi_ops, use_yes_price=st.booleans())
def test_kalshi_book_matches_the_reference_model(ops: list, use_yes_price: bool) -> None:
    book = KalshiOrderBook("M", use_yes_price=use_yes_price)
    model: dict[str, dict[Decimal, Decimal]] = {"yes": {}, "no": {}}
    ready = False
    for op in ops:
        if op[0] == "snapshot":
            _, yes, no = op
            book.apply_snapshot([[s, str(q)] for (_, s), q in yes or []], [[s, str(q)] for (_, s), q in no or []])
            model = {"yes": {p: q for (p, _), q in yes or []}, "no": {p: q for (p, _), q in no or []}}
            ready = True
        else:
            _, (price, text), delta, side = op
            if not ready:
                try:
                    book.apply_delta(text, str(delta), side)
                except BookNotReady:
                    continue
                raise AssertionError("delta accepted before a snapshot")
            new = model[side].get(price, Decimal(0)) + delta
            if new < 0:
                try:
                    book.apply_delta(text, str(delta), side)
                except BookError:
                    ready = False
                    model = {"yes": {}, "no": {}}
                    continue
                raise AssertionError("negative level accepted")
            book.apply_delta(text, str(delta), side)
            if new == 0:
                model[side].pop(price, None)
            else:
                model[side][price] = new
        # NO levels in the model are on the scale the subscription asked for.
        no_scale = {(p if not use_yes_price else ONE - p): q for p, q in model["no"].items()}
        assert book.yes_bids == {ticks(p): units(q, 2) for p, q in model["yes"].items()}
        assert book.no_bids == {ticks(p): units(q, 2) for p, q in no_scale.items()}
        price_now = book.to_market_price()
        best_bid = max(model["yes"], default=None)
        best_no = max(no_scale, default=None)
        assert price_now.yes_bid == (None if best_bid is None else float(best_bid))
        assert price_now.yes_bid_size == (None if best_bid is None else float(model["yes"][best_bid]))
        assert price_now.yes_ask == (None if best_no is None else float(ONE - best_no))
        assert price_now.yes_ask_size == (None if best_no is None else float(no_scale[best_no]))


poly_sizes = st.integers(0, 10**9).map(lambda n: Decimal(n).scaleb(-6))
poly_levels = st.lists(st.tuples(prices, poly_sizes.filter(bool)), max_size=6, unique_by=lambda l: l[0][0])
poly_ops = st.lists(
    st.one_of(
        st.tuples(st.just("book"), poly_levels, poly_levels),
        st.tuples(st.just("change"), prices, poly_sizes, st.sampled_from(["BUY", "SELL"])),
        st.tuples(st.just("tick"), st.sampled_from(["0.01", "0.001"])),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(ops=poly_ops)
def test_polymarket_book_matches_the_reference_model(ops: list) -> None:
    book = PolymarketOrderBook("token")
    model: dict[str, dict[Decimal, Decimal]] = {"BUY": {}, "SELL": {}}
    ready, tick = False, None
    for op in ops:
        if op[0] == "book":
            _, bids, asks = op
            book.apply_book([{"price": s, "size": str(q)} for (_, s), q in reversed(bids)],
                            [{"price": s, "size": str(q)} for (_, s), q in asks])
            model = {"BUY": {p: q for (p, _), q in bids}, "SELL": {p: q for (p, _), q in asks}}
            ready = True
        elif op[0] == "change":
            _, (price, text), size, side = op
            book.apply_delta(text, str(size), side)
            if ready:
                if size == 0:
                    model[side].pop(price, None)
                else:
                    model[side][price] = size
        else:
            changed = book.apply_tick_size_change(op[1])
            assert changed == (op[1] != tick)
            if changed:
                tick, ready = op[1], False
                model = {"BUY": {}, "SELL": {}}
        assert book.bids == {ticks(p): units(q, 6) for p, q in model["BUY"].items()}
        assert book.asks == {ticks(p): units(q, 6) for p, q in model["SELL"].items()}
        best_bid = max(model["BUY"], default=None)
        best_ask = min(model["SELL"], default=None)
        assert book.best_bid == (None if best_bid is None else (ticks(best_bid), units(model["BUY"][best_bid], 6)))
        assert book.best_ask == (None if best_ask is None else (ticks(best_ask), units(model["SELL"][best_ask], 6)))
        assert book.is_crossed == (best_bid is not None and best_ask is not None and best_bid >= best_ask)
