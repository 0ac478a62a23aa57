"""Gamma and CLOB market decoding (markets/polymarket/catalog.py)."""

from __future__ import annotations

import json

import pytest

from markets.polymarket.catalog import (
    CatalogDecodeError,
    decode_clob_market,
    decode_gamma_event,
    decode_gamma_market,
    is_condition_id,
)

CONDITION = "0x" + "ab" * 32


def gamma(**overrides: object) -> dict:
    """A Gamma market as the venue sends it: the list fields are JSON *strings*."""
    market = {
        "id": "512345",
        "conditionId": CONDITION,
        "question": "Celtics vs. Lakers",
        "slug": "nba-bos-lal-2026-11-25",
        "outcomes": json.dumps(["Lakers", "Celtics"]),
        "outcomePrices": json.dumps(["0.415", "0.585"]),
        "clobTokenIds": json.dumps(["1042", "7118"]),
        "active": True,
        "closed": False,
        "enableOrderBook": True,
        "acceptingOrders": True,
        "orderPriceMinTickSize": 0.01,
        "orderMinSize": 5,
        "negRisk": False,
    }
    market.update(overrides)
    return market


def test_json_string_fields_are_decoded_and_paired_by_index() -> None:
    info = decode_gamma_market(gamma())
    assert info.condition_id == CONDITION and info.gamma_id == "512345"
    assert [(t.token_id, t.outcome, t.index, t.price) for t in info.tokens] == [
        ("1042", "Lakers", 0, 0.415), ("7118", "Celtics", 1, 0.585)]
    assert info.tick_size == 0.01 and info.min_order_size == 5.0 and info.enable_order_book is True


def test_team_market_yes_is_outcome_zero_not_an_assumption_about_labels() -> None:
    info = decode_gamma_market(gamma())
    assert info.yes_token.outcome == "Lakers" and info.yes_token.token_id == "1042"


def test_yes_no_market_pays_yes_wherever_it_is_listed() -> None:
    info = decode_gamma_market(gamma(outcomes='["No", "Yes"]'))
    assert info.yes_token.token_id == "7118" and info.token("7118").outcome == "Yes"


def test_protocol_v2_position_ids_are_a_real_array() -> None:
    info = decode_gamma_market(gamma(clobTokenIds=None, positionIds=["11", "22"], outcomePrices=None))
    assert info.token_ids == ("11", "22") and info.tokens[0].price is None


def test_market_without_order_book_has_no_tokens() -> None:
    info = decode_gamma_market(gamma(clobTokenIds="", outcomes="[]", outcomePrices="[]", enableOrderBook=False))
    assert info.tokens == ()
    with pytest.raises(CatalogDecodeError, match="no CLOB tokens"):
        _ = info.yes_token


@pytest.mark.parametrize(("overrides", "message"), [
    ({"clobTokenIds": "[\"1\""}, "clobTokenIds is not valid JSON"),
    ({"outcomes": '{"a": 1}'}, "outcomes must be a list"),
    ({"outcomes": '["A"]'}, "2 token ids but 1 outcomes"),
    ({"outcomePrices": '["0.5"]'}, "1 outcome prices for 2 outcomes"),
    ({"outcomePrices": '["0.5", "1.7"]'}, "price out of range"),
    ({"conditionId": None}, "conditionId must be a non-empty string"),
    ({"clobTokenIds": "[null, \"2\"]"}, "token id #0"),
])
def test_bad_fields_name_the_market_and_the_problem(overrides: dict, message: str) -> None:
    with pytest.raises(CatalogDecodeError, match=message):
        decode_gamma_market(gamma(**overrides))


def test_event_embeds_markets() -> None:
    event = decode_gamma_event({"id": "9001", "title": "NBA: BOS @ LAL", "slug": "bos-lal",
                                "markets": [gamma(), gamma(conditionId="0x" + "cd" * 32)]})
    assert event.event_id == "9001" and [m.condition_id for m in event.markets][1] == "0x" + "cd" * 32
    with pytest.raises(CatalogDecodeError, match="markets must be a list"):
        decode_gamma_event({"id": "1", "markets": "[]"})


def test_one_undecodable_market_does_not_hide_the_rest_of_its_event() -> None:
    event = decode_gamma_event({"id": "9001", "markets": [gamma(clobTokenIds="not json"),
                                                          gamma(conditionId="0x" + "cd" * 32)]})
    assert [m.condition_id for m in event.markets] == ["0x" + "cd" * 32]
    assert len(event.undecodable) == 1 and "event 9001" in event.undecodable[0]
    assert "clobTokenIds is not valid JSON" in event.undecodable[0]


def test_clob_market_tokens_are_objects() -> None:
    info = decode_clob_market({
        "condition_id": CONDITION, "question": "q", "market_slug": "s", "minimum_tick_size": 0.001,
        "minimum_order_size": 5, "neg_risk": False, "accepting_orders": True,
        "tokens": [{"token_id": "5", "outcome": "Yes", "price": 0.3, "winner": False},
                   {"token_id": "6", "outcome": "No", "price": 0.7, "winner": False}],
    })
    assert info.yes_token.token_id == "5" and info.tokens[1].price == 0.7 and info.tick_size == 0.001
    with pytest.raises(CatalogDecodeError, match="tokens must be a list of objects"):
        decode_clob_market({"condition_id": CONDITION, "tokens": ["5", "6"]})


def test_condition_ids_are_told_from_token_ids() -> None:
    assert is_condition_id(CONDITION)
    assert not is_condition_id("71321045679252212594626385532706912750332728571942532289631379312455583992563")
    assert not is_condition_id("0x" + "zz" * 32)
    # int(..., 16) would take a digit separator or a leading space
    assert not is_condition_id("0x" + "a_b" + "c" * 61)
    assert not is_condition_id("0x " + "c" * 63)
