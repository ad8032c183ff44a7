"""Store opening hours: `opening = "10:00-19:00"` (local) on a node or in node_defaults feeds
its calendar, so work starts and pickups are ready only while it is open; bad hours and a
cut-off outside them are refused naming the key."""

from __future__ import annotations

import pytest

from atpd.core.calendar import to_local
from atpd.core.commands import SetStock
from atpd.core.network import NetworkError
from atpd.core.network_parse import parse_network
from atpd.core.promise import promise
from network.support import NETWORK, NOW_MS, SOURCE, networked_world

from .test_parse import KNOWN

PARIS = "[nodes.ST-PAR]\n"


def with_opening(opening: str, extra: str = "") -> str:
    return NETWORK.replace(PARIS, f'{PARIS}opening = "{opening}"\n{extra}')


def test_opening_parsed_and_cutoff_defaults_to_closing() -> None:
    """Opening hours give open and close minutes; without a cut-off of its own or in the
    defaults, orders are taken until closing time; no opening: the whole day."""
    network = parse_network(with_opening("10:00-19:00"), SOURCE, KNOWN)
    paris = network.node("ST-PAR")
    assert paris is not None
    assert (paris.open_minutes, paris.close_minutes, paris.cutoff_minutes) == (600, 1140, 1020)
    no_cutoff = NETWORK.replace('cutoff = "17:00"\n', "", 1)
    late = parse_network(
        no_cutoff.replace(PARIS, f'{PARIS}opening = "08:00-24:00"\n'), SOURCE, KNOWN
    ).node("ST-PAR")
    assert late is not None and (late.open_minutes, late.close_minutes) == (480, 1440)
    assert late.cutoff_minutes == 23 * 60 + 59
    shop = parse_network(
        no_cutoff.replace(PARIS, f'{PARIS}opening = "09:00-18:30"\n'), SOURCE, KNOWN
    ).node("ST-PAR")
    assert shop is not None and shop.cutoff_minutes == 18 * 60 + 30
    warehouse = network.node("WH-1")
    assert warehouse is not None and (warehouse.open_minutes, warehouse.close_minutes) == (0, 1440)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (with_opening("19:00-10:00"), "nodes.ST-PAR.opening: .* closes before it opens"),
        (with_opening("10-19"), "nodes.ST-PAR.opening: .* not opening hours like"),
        (with_opening("10:00"), "nodes.ST-PAR.opening"),
        (with_opening("10:00-25:00"), "nodes.ST-PAR.opening"),
        (with_opening("18:00-20:00"), r"node_defaults.cutoff: 17:00 is outside the opening"),
        (with_opening("08:00-12:00", 'cutoff = "13:00"\n'), "nodes.ST-PAR.cutoff: 13:00"),
    ],
)
def test_bad_opening_refused(text: str, message: str) -> None:
    """Malformed or inverted hours, and a cut-off outside them, are refused naming the key."""
    with pytest.raises(NetworkError, match=message):
        parse_network(text, SOURCE, KNOWN)


def test_pickup_ready_within_opening_hours() -> None:
    """Ordered at 11:00 Paris time with 2 h processing: ready 13:00 when open all day, but
    16:00 when the store opens at 14:00; closing at 12:00, the second hour is Tuesday 08-09."""

    def ready_local(text: str) -> str:
        state = networked_world(text)
        state.apply(SetStock("A", "ST-PAR", 5, 1), NOW_MS)
        answer = promise(state, [("A", 1)], NOW_MS, pickup_node_id="ST-PAR")
        own = [o for o in answer.pickup_options if o.transfer_lead_days == 0]
        assert own, answer.no_option_reason
        return to_local("Europe/Paris", own[0].ready_by_ms).strftime("%a %H:%M")

    assert ready_local(NETWORK) == "Mon 13:00"
    assert ready_local(with_opening("14:00-19:00")) == "Mon 16:00"
    assert ready_local(with_opening("08:00-12:00", 'cutoff = "11:30"\n')) == "Tue 09:00"
