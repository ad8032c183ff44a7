"""Option tokens carry a plan signed by the server: readable, not forgeable, short-lived."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core.plan import Plan, PlannedLine, Shipment
from atpd.files import FileRefused
from atpd.service.option_tokens import InvalidToken, OptionTokens, load_option_tokens, new_key

NOW_MS = 1_764_000_000_000
TTL_MS = 600_000

ids = st.text("ABCDEFGHIJ-0123456789", min_size=1, max_size=12)
shipments = st.builds(
    Shipment,
    ids,
    st.sampled_from(["", "express-air", "road-standard"]),
    st.integers(19_000, 21_000),
    st.lists(st.builds(PlannedLine, ids, st.integers(1, 10**9)), min_size=1, max_size=5).map(tuple),
)
plans = st.builds(
    Plan,
    st.lists(shipments, min_size=1, max_size=4).map(tuple),
    st.sampled_from(["FR-PARIS", "pickup:ST-PAR-01"]),
    st.sampled_from(["", "web"]),
    st.sampled_from(["", "vip"]),
)


@settings(max_examples=100, deadline=None)
@given(plan=plans)
def test_a_token_gives_back_the_plan_it_was_issued_for(plan: Plan) -> None:
    """verify(issue(plan)) is the same plan, until the token expires."""
    tokens = OptionTokens(new_key(), TTL_MS)
    token = tokens.issue(plan, NOW_MS, sequence=42)
    assert tokens.verify(token, NOW_MS) == plan
    assert tokens.verify(token, NOW_MS + TTL_MS - 1) == plan
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token, NOW_MS + TTL_MS)


def example() -> Plan:
    return Plan(
        (Shipment("WH-EU-01", "express-air", 20_400, (PlannedLine("BAG-1", 2),)),),
        "FR-PARIS",
        "web",
        "vip",
    )


def test_an_altered_plan_is_refused() -> None:
    """Changing the payload (more units, another node) breaks the signature."""
    tokens = OptionTokens(new_key(), TTL_MS)
    payload_text, _, signature = tokens.issue(example(), NOW_MS, 1).partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4)))
    body["plan"][3][0][3][0][1] = 200
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="not signed"):
        tokens.verify(f"{forged}.{signature}", NOW_MS)


def test_a_token_of_another_key_is_refused() -> None:
    """A token signed by another server (or before a key change) is refused."""
    token = OptionTokens(new_key(), TTL_MS).issue(example(), NOW_MS, 1)
    with pytest.raises(InvalidToken, match="not signed"):
        OptionTokens(new_key(), TTL_MS).verify(token, NOW_MS)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "x" * 20_000])
def test_malformed_tokens_are_refused_with_a_reason(token: str) -> None:
    """Garbage is InvalidToken naming option_token, never another exception."""
    with pytest.raises(InvalidToken, match="option_token"):
        OptionTokens(new_key(), TTL_MS).verify(token, NOW_MS)


def test_a_key_file_makes_tokens_outlive_a_restart(tmp_path: Path) -> None:
    """Two servers loading the same key file accept each other's tokens; without a key file
    each start draws its own key; a short key file is refused naming it."""
    key_file = tmp_path / "option.key"
    key_file.write_bytes(new_key())
    token = load_option_tokens(key_file, 600).issue(example(), NOW_MS, 1)
    assert load_option_tokens(key_file, 600).verify(token, NOW_MS) == example()
    with pytest.raises(InvalidToken):
        load_option_tokens(None, 600).verify(token, NOW_MS)
    key_file.write_bytes(b"short")
    with pytest.raises(FileRefused, match="option_token_key_file"):
        load_option_tokens(key_file, 600)
