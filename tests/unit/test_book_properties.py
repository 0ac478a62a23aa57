"""Random update sequences through the books and a naive Decimal reference model.

The reference model is deliberately the dumbest correct thing: Decimal dicts, full
rescans for the top, the venue rules written out longhand. After every step the
book's levels and top of book must equal the model's, and what `apply_delta` says
about the top (the flag that decides whether a price is published) must agree with
the model's top before and after. The generators empty levels exactly, put zero and
negative sizes in snapshots, and check `matches_best` on both sides.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from markets.book import BookError, BookNotReady, KalshiOrderBook, PolymarketOrderBook
from markets.models import PriceStatus

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




def now_and_then(common: st.SearchStrategy[Decimal], zero: Decimal,
                 negative: st.SearchStrategy[Decimal]) -> st.SearchStrategy[Decimal]:
    """Mostly `common`; one level in ten exactly zero (absent), one in twenty negative
    (the whole snapshot is refused), so most snapshots are still taken."""
    return st.integers(0, 19).flatmap(lambda n: negative if n == 0 else st.just(zero) if n < 3 else common)


# Snapshot levels include zero (absent) and, now and then, negative counts (refused).
snapshot_counts = now_and_then(quantities.filter(bool), Decimal(0),
                               st.integers(-500, -1).map(lambda n: Decimal(n) * CENT))
kalshi_levels = st.lists(st.tuples(prices, snapshot_counts), max_size=6, unique_by=lambda level: level[0][0])
kalshi_ops = st.lists(
    st.one_of(
        st.tuples(st.just("snapshot"), st.one_of(st.none(), kalshi_levels), st.one_of(st.none(), kalshi_levels)),
        st.tuples(st.just("delta"), prices, deltas, st.sampled_from(["yes", "no"])),
        # A delta of exactly minus the resting size: the level must disappear, not linger at 0.
        st.tuples(st.just("empty"), prices, st.sampled_from(["yes", "no"])),
    ),
    max_size=40,
)

Top = tuple[tuple[int, int] | None, tuple[int, int] | None]


def kalshi_top(model: dict[str, dict[Decimal, Decimal]], use_yes_price: bool) -> Top:
    """The model's (best bid, best ask) as (ticks, hundredths), YES scale."""
    bid = max(model["yes"], default=None)
    asks = {(p if use_yes_price else ONE - p): q for p, q in model["no"].items()}
    ask = min(asks, default=None)
    return (None if bid is None else (ticks(bid), units(model["yes"][bid], 2)),
            None if ask is None else (ticks(ask), units(asks[ask], 2)))


def assert_reported(changed: bool, before: Top, after: Top, touched: bool) -> None:
    """`apply_delta`'s "top may have changed": never False when the top did change (a
    price would go unpublished), and never True for an update behind the top."""
    if before != after:
        assert changed, f"top moved {before} -> {after} but the update said it did not"
    if changed:
        assert touched, "an update behind the top said the top may have changed"


@settings(max_examples=400, deadline=None)
@given(ops=kalshi_ops, use_yes_price=st.booleans())
def test_kalshi_book_matches_the_reference_model(ops: list, use_yes_price: bool) -> None:
    book = KalshiOrderBook("M", use_yes_price=use_yes_price)
    model: dict[str, dict[Decimal, Decimal]] = {"yes": {}, "no": {}}
    ready = False
    for op in ops:
        if op[0] == "snapshot":
            _, yes, no = op
            levels = [*(yes or []), *(no or [])]
            try:
                book.apply_snapshot([[s, str(q)] for (_, s), q in yes or []], [[s, str(q)] for (_, s), q in no or []])
            except BookError:
                assert any(q < 0 for _, q in levels), "a snapshot without a negative count was refused"
                assert book.status is PriceStatus.RESYNCING and book.is_empty
                model, ready = {"yes": {}, "no": {}}, False
                continue
            assert all(q >= 0 for _, q in levels), "a negative count was accepted"
            model = {"yes": {p: q for (p, _), q in yes or [] if q}, "no": {p: q for (p, _), q in no or [] if q}}
            ready = True
        else:
            if op[0] == "empty":
                _, (price, text), side = op
                delta = -model[side].get(price, Decimal(0)) or CENT
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
            before = kalshi_top(model, use_yes_price)
            changed = book.apply_delta(text, str(delta), side)
            if new == 0:
                model[side].pop(price, None)
            else:
                model[side][price] = new
            after = kalshi_top(model, use_yes_price)
            level = ticks(price if side == "yes" or use_yes_price else ONE - price)
            old_best = before[0 if side == "yes" else 1]
            touched = old_best is None or (level >= old_best[0] if side == "yes" else level <= old_best[0])
            assert_reported(changed, before, after, touched)
        # NO levels in the model are on the scale the subscription asked for.
        no_scale = {(p if not use_yes_price else ONE - p): q for p, q in model["no"].items()}
        assert book.yes_bids == {ticks(p): units(q, 2) for p, q in model["yes"].items()}
        assert book.no_bids == {ticks(p): units(q, 2) for p, q in no_scale.items()}
        assert (book.best_bid, book.best_ask) == kalshi_top(model, use_yes_price)
        price_now = book.to_market_price()
        best_bid = max(model["yes"], default=None)
        best_no = max(no_scale, default=None)
        assert price_now.yes_bid == (None if best_bid is None else float(best_bid))
        assert price_now.yes_bid_size == (None if best_bid is None else float(model["yes"][best_bid]))
        assert price_now.yes_ask == (None if best_no is None else float(ONE - best_no))
        assert price_now.yes_ask_size == (None if best_no is None else float(no_scale[best_no]))


poly_sizes = st.integers(0, 10**9).map(lambda n: Decimal(n).scaleb(-6))
poly_snapshot_sizes = now_and_then(poly_sizes.filter(bool), Decimal(0),
                                   st.integers(-10**6, -1).map(lambda n: Decimal(n).scaleb(-6)))
poly_levels = st.lists(st.tuples(prices, poly_snapshot_sizes), max_size=6, unique_by=lambda level: level[0][0])
# The venue writes an empty side as "0" (bids) / "1" (asks) in best_bid/best_ask.
best_texts = st.one_of(st.none(), st.just("0"), st.just("1"), prices.map(lambda p: p[1]))
poly_ops = st.lists(
    st.one_of(
        st.tuples(st.just("book"), poly_levels, poly_levels),
        st.tuples(st.just("change"), prices, poly_sizes, st.sampled_from(["BUY", "SELL"])),
        st.tuples(st.just("change"), prices, st.just(Decimal(0)), st.sampled_from(["BUY", "SELL"])),
        st.tuples(st.just("tick"), st.sampled_from(["0.01", "0.001"])),
        st.tuples(st.just("check"), best_texts, best_texts),
    ),
    max_size=40,
)


def poly_top(model: dict[str, dict[Decimal, Decimal]]) -> Top:
    bid, ask = max(model["BUY"], default=None), min(model["SELL"], default=None)
    return (None if bid is None else (ticks(bid), units(model["BUY"][bid], 6)),
            None if ask is None else (ticks(ask), units(model["SELL"][ask], 6)))


def best_matches(text: str | None, best: Decimal | None, empty: str) -> bool:
    """The reference reading of one `best_bid`/`best_ask` field: absent always matches."""
    if text is None:
        return True
    value = Decimal(text)
    return (best is None) if value == Decimal(empty) else (best is not None and value == best)


@settings(max_examples=400, deadline=None)
@given(ops=poly_ops)
def test_polymarket_book_matches_the_reference_model(ops: list) -> None:
    book = PolymarketOrderBook("token")
    model: dict[str, dict[Decimal, Decimal]] = {"BUY": {}, "SELL": {}}
    ready, tick = False, None
    for op in ops:
        if op[0] == "book":
            _, bids, asks = op
            try:
                book.apply_book([{"price": s, "size": str(q)} for (_, s), q in reversed(bids)],
                                [{"price": s, "size": str(q)} for (_, s), q in asks])
            except BookError:
                assert any(q < 0 for _, q in [*bids, *asks]), "a book without a negative size was refused"
                assert book.status is PriceStatus.RESYNCING and book.is_empty
                model, ready = {"BUY": {}, "SELL": {}}, False
                continue
            assert all(q >= 0 for _, q in [*bids, *asks]), "a negative size was accepted"
            model = {"BUY": {p: q for (p, _), q in bids if q}, "SELL": {p: q for (p, _), q in asks if q}}
            ready = True
        elif op[0] == "change":
            _, (price, text), size, side = op
            before = poly_top(model)
            changed = book.apply_delta(text, str(size), side)
            if ready:
                if size == 0:
                    model[side].pop(price, None)
                else:
                    model[side][price] = size
                old_best = before[0 if side == "BUY" else 1]
                level = ticks(price)
                touched = old_best is None or (level >= old_best[0] if side == "BUY" else level <= old_best[0])
                assert_reported(changed, before, poly_top(model), touched)
            else:
                assert changed is False, "an update to a book waiting for a snapshot was reported"
        elif op[0] == "check":
            _, bid_text, ask_text = op
            if ready:
                expected = (best_matches(bid_text, max(model["BUY"], default=None), "0")
                            and best_matches(ask_text, min(model["SELL"], default=None), "1"))
                assert book.matches_best(bid_text, ask_text) is expected
        else:
            changed = book.apply_tick_size_change(op[1])
            assert changed == (op[1] != tick)
            if changed:
                tick, ready = op[1], False
                model = {"BUY": {}, "SELL": {}}
        assert book.bids == {ticks(p): units(q, 6) for p, q in model["BUY"].items()}
        assert book.asks == {ticks(p): units(q, 6) for p, q in model["SELL"].items()}
        assert (book.best_bid, book.best_ask) == poly_top(model)
        best_bid = max(model["BUY"], default=None)
        best_ask = min(model["SELL"], default=None)
        assert book.is_crossed == (best_bid is not None and best_ask is not None and best_bid >= best_ask)
