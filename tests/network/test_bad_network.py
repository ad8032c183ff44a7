"""Bad network files are refused whole, naming the file, the key path and the problem; the
network in force stays."""

from __future__ import annotations

import pytest

from atpd.core.commands import SetNetwork
from atpd.core.results import InvalidCommand

from .support import NETWORK, NOW_MS, SOURCE, networked_world

# (what to replace in the good text, by what, words the error must contain)
CASES = [
    ('version = "n1"', 'version = ""', "version: 1 to 128 characters"),
    ('version = "n1"', 'version = "n1"\nfoo = 1', "top level: unknown key 'foo'"),
    ("[nodes.ST-PAR]", "[nodes.ST-NOPE]", "nodes.ST-NOPE: unknown node 'ST-NOPE'"),
    (
        "latitude = 48.8566\nlongitude = 2.3522\n\n[nodes.ST-LON]",
        "latitude = 98.8566\nlongitude = 2.3522\n\n[nodes.ST-LON]",
        "nodes.ST-PAR.latitude: 98.8566 is not a number in -90..90",
    ),
    (
        'time_zone = "Europe/London"',
        'time_zone = "Europe/Londres"',
        "nodes.ST-LON.time_zone: 'Europe/Londres' is not an IANA time zone",
    ),
    ('cutoff = "15:30"', 'cutoff = "25:30"', "nodes.WH-1.cutoff: '25:30' is not a local time"),
    ('cutoff = "17:00"', "cutoff = 17", "node_defaults.cutoff: expected str, got 17"),
    (
        'closed_dates = ["2026-12-25"]',
        'closed_dates = ["2026-02-30"]',
        "node_defaults.closed_dates[0]: '2026-02-30' is not a valid date",
    ),
    (
        'open_days = ["mon", "tue", "wed", "thu", "fri"]',
        'open_days = ["mon", "funday"]',
        "nodes.WH-1.open_days[1]: 'funday' is not a weekday",
    ),
    (
        "pick_capacity_orders = 2000",
        "pick_capacity_orders = -1",
        "nodes.WH-1.pick_capacity_orders: -1 is not in 0..1000000",
    ),
    (
        "processing_hours = 4.5",
        "processing_hours = nan",
        "nodes.WH-1.processing_hours: nan is not a finite number",
    ),
    ('country = "GB"', 'country = "gb"', "zones.gb-london.country: 'gb' is not a code"),
    (
        'country = "FR"\nlatitude = 46.6',
        'country = "FR"\npostal_prefixes = ["7 5"]\nlatitude = 46.6',
        "zones.fr-paris: FR postal prefix '75' is already zone 'fr'",
    ),
    (
        'postal_prefixes = ["SW", "EC", "N1"]',
        'postal_prefixes = ["S/W"]',
        "zones.gb-london.postal_prefixes[0]: 'S/W' is not 1-10 letters or digits",
    ),
    ("[zones.us]", "[zones.US]", "zones.US: 'US' is not a name"),
    ("us = 2 }", "mars = 2 }", "services.express.transit_days.mars: unknown zone 'mars'"),
    ('mode = "air"', 'mode = "boat"', "services.express.mode: 'boat' is not one of"),
    (
        'include = ["ST-NYC"]',
        'include = ["ST-NONE"]',
        "services.express.origin.include[0]: unknown node 'ST-NONE'",
    ),
    (
        'origin = { geo = ["EU/FR/Paris", "EU/GB/London"] }',
        'origin = { geo = ["EU/XX"] }',
        "services.courier.origin.geo[0]: no node under geo prefix 'EU/XX'",
    ),
    (
        'origin = { geo = ["EU/FR/Paris", "EU/GB/London"] }',
        "origin = {}",
        "services.courier.origin: select nodes by kinds, geo, tags or include",
    ),
    ("per_km = 0.9", "per_km = -0.9", "services.courier.cost.per_km: -0.9 is not a number"),
    ("per_km = 0.9", "per_mile = 0.9", "services.courier.cost: unknown key 'per_mile'"),
    (
        "default_daily_slots = 10",
        "default_daily_slots = true",
        "services.express.default_daily_slots: expected int, got True",
    ),
    ('from = "WH-1"', 'from = "WH-9"', "lanes[0].from: unknown node 'WH-9'"),
    ("lead_days = 2", "lead_days = 999", "lanes[0].lead_days: 999 is not in 0..365"),
    (
        "courier = [90.0, 140.0]",
        "courier = [90.0]",
        "co2.courier: 1 factors, expected one per weight class (2)",
    ),
    (
        "weight_classes_kg = [2.0, 10.0]",
        "weight_classes_kg = [10.0, 2.0]",
        "co2.weight_classes_kg: upper bounds must increase",
    ),
    ("air = [600.0, 1100.0]\n", "", "co2.air: missing (a service uses mode air)"),
    ("[nodes.WH-1]", "[nodes.WH-1\n", "net.toml: "),
    ("[[lanes]]", "[[lanes]]\n" + "[" * 20, "nested"),
]


@pytest.mark.parametrize(("old", "new", "message"), CASES, ids=[c[2][:40] for c in CASES])
def test_bad_network_refused(old: str, new: str, message: str) -> None:
    """Each bad file is refused naming the file and the key; the network in force stays."""
    assert old in NETWORK, old
    state = networked_world()
    before = state.digest()
    with pytest.raises(InvalidCommand) as refused:
        state.apply(SetNetwork(NETWORK.replace(old, new, 1), SOURCE), NOW_MS + 1)
    text = str(refused.value)
    assert text.startswith(f"network: {SOURCE}: "), text
    assert message in text, text
    assert state.network.version == "n1"
    assert state.digest() == before


def test_no_services_needs_no_co2() -> None:
    """A network of nodes and zones only (no service) needs no co2 table."""
    text = 'version = "bare"\n[nodes.WH-1]\nlatitude = 1\nlongitude = 2\ntime_zone = "UTC"\n'
    state = networked_world(text)
    assert state.network.version == "bare" and not state.network.services


def test_missing_co2_with_services() -> None:
    """Services without a co2 table are refused naming co2."""
    state = networked_world()
    text = NETWORK[: NETWORK.index("[co2]")]
    with pytest.raises(InvalidCommand, match=r"net\.toml: co2: missing"):
        state.apply(SetNetwork(text, SOURCE), NOW_MS)
