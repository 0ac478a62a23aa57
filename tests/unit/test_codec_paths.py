"""The codec's typed fast path accepts exactly what its explicit reference checks accept."""

from __future__ import annotations

import math

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.codec import SCHEMA_VERSION, CodecError, _decode_checked, decode

anything = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.binary(max_size=4),
    st.sampled_from(["kalshi", "polymarket", "live", "stale", "resyncing", "closed", ""]),
    st.lists(st.integers(min_value=-(2**63), max_value=2**64 - 1), max_size=2))
plausible = st.one_of(st.floats(min_value=-0.5, max_value=1.5), st.integers(min_value=-2, max_value=2),
                      st.sampled_from([0.0, 1.0, math.inf, -0.0, 1e308]))


@st.composite
def records(draw: st.DrawFn) -> list[object]:
    """Mostly well-formed records with a few fields spoiled, some of the wrong length or version."""
    fields: list[object] = [
        draw(st.sampled_from([SCHEMA_VERSION, SCHEMA_VERSION, 1, 2.0, True])), draw(st.text(max_size=6)),
        draw(plausible | st.none()), draw(plausible | st.none()), draw(plausible | st.none()),
        draw(plausible | st.none()), draw(st.sampled_from(["kalshi", "polymarket", "nyse"])),
        draw(st.sampled_from(["live", "stale", "resyncing", "closed", "open"])), draw(plausible | st.none()),
        draw(st.none() | st.integers(min_value=-1, max_value=2**64 - 1)),
        *(draw(st.integers(min_value=-1, max_value=2**64 - 1)) for _ in range(4))]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        fields[draw(st.integers(min_value=0, max_value=len(fields) - 1))] = draw(anything)
    cut = draw(st.sampled_from([len(fields), len(fields), len(fields) - 1, len(fields) + 1]))
    return (fields + [0])[:cut]


@settings(max_examples=1000)
@given(records())
def test_fast_and_reference_decoders_accept_and_refuse_the_same_payloads(fields: list[object]) -> None:
    payload = msgpack.packb(fields, use_bin_type=True)
    try:
        expected = _decode_checked(payload)
    except CodecError:
        expected = None
    try:
        got = decode(payload)
    except CodecError:
        got = None
    assert got == expected
