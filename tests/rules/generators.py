"""Hypothesis strategies for random rule sets (as plain data, rendered to TOML), and a reference
ATP written from the README's rules, independent of the implementation's compiled arrays.

The reference reads only the state's raw facts (nodes, stock cells, open supply, reservations
and the protected units each one recorded) and the generated rule data; it recomputes
visibility, merges and protection consumption itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from atpd.core.commands import NodeKind
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY

from .support import NODES

CHANNELS = ("store", "web")
SEGMENTS = ("standard", "vip")
CALLERS = tuple((c, s) for c in CHANNELS for s in SEGMENTS)
SKUS = ("BAG-1", "BAG-2", "WCH-1")
SKU_PREFIXES = ("BAG-", "WCH-", "BAG-2")
KINDS = ("STORE", "WAREHOUSE", "OUTLET", "DARK_STORE")
GEO_PREFIXES = (
    "EU",
    "EU/FR",
    "EU/FR/Paris",
    "EU/FR/Lyon",
    "EU/DE",
    "EU/DE/Berlin",
    "NA",
    "NA/US",
    "NA/US/NYC",
)
TAGS = ("flagship", "east", "nowhere")
SUPPLY_KINDS = ("PURCHASE_ORDER", "TRANSFER", "RETURN_IN_TRANSIT")
PATTERNS = ("*/*", "web/*", "store/*", "*/vip", "*/standard", "web/vip", "store/standard")
NODE_IDS = tuple(NODES)
POLICY_KEYS = ("nodes", "safety", "buffer", "max_per_line", "supply")

Table = dict[str, Any]
NodeTable = dict[str, tuple[NodeKind, tuple[str, ...], tuple[str, ...]]]


# ----------------------------------------------------------------------------- TOML rendering


def _value(value: Any) -> str:
    if isinstance(value, bool):  # pragma: no cover - never generated
        raise TypeError(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{ " + ", ".join(f'"{k}" = {_value(v)}' for k, v in value.items()) + " }"


def _table(name: str, body: Table) -> str:
    lines = [f"[{name}]"]
    lines += [f"{key} = {_value(value)}" for key, value in body.items()]
    return "\n".join(lines)


@dataclass
class RuleData:
    """A rule set as data: base, per channel, per segment, per channel.segment, protections."""

    version: str
    base: Table
    channels: dict[str, Table]
    segments: dict[str, Table]
    specific: dict[tuple[str, str], Table]
    protections: list[Table] = field(default_factory=list)
    defaults: tuple[str, str] = ("web", "standard")

    def text(self) -> str:
        parts = [
            f'version = "{self.version}"',
            f'[defaults]\nchannel = "{self.defaults[0]}"\nsegment = "{self.defaults[1]}"',
            _table("policy", self.base),
        ]
        parts += [_table(f"channels.{c}", t) for c, t in self.channels.items()]
        parts += [_table(f"segments.{s}", t) for s, t in self.segments.items()]
        parts += [_table(f"channels.{c}.segments.{s}", t) for (c, s), t in self.specific.items()]
        for protection in self.protections:
            body = "\n".join(f"{k} = {_value(v)}" for k, v in protection.items())
            parts.append(f"[[protections]]\n{body}")
        return "\n".join(parts) + "\n"

    def policy(self, channel: str, segment: str) -> Table:
        """Merge key by key: base, channel, segment, channel.segment."""
        channel = channel or self.defaults[0]
        segment = segment or self.defaults[1]
        merged: Table = {}
        for layer in (
            self.base,
            self.channels.get(channel, {}),
            self.segments.get(segment, {}),
            self.specific.get((channel, segment), {}),
        ):
            merged.update(layer)
        return merged


def _subset(items: tuple[str, ...], max_size: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(items), max_size=max_size, unique=True)


def selectors() -> st.SearchStrategy[Table]:
    keys = {
        "kinds": _subset(KINDS),
        "geo": _subset(GEO_PREFIXES, 2),
        "tags": _subset(TAGS, 2),
        "include": _subset(NODE_IDS, 2),
        "exclude": _subset(NODE_IDS, 2),
    }
    return st.fixed_dictionaries({}, optional=keys)


def policies() -> st.SearchStrategy[Table]:
    counts = st.integers(0, 4)
    safety = st.fixed_dictionaries(
        {},
        optional={
            "kinds": st.dictionaries(st.sampled_from(KINDS), counts, max_size=2),
            "nodes": st.dictionaries(st.sampled_from(NODE_IDS), counts, max_size=2),
            "sku_prefixes": st.dictionaries(st.sampled_from(SKU_PREFIXES), counts, max_size=2),
        },
    )
    supply = st.fixed_dictionaries(
        {"kinds": _subset(SUPPLY_KINDS)},
        optional={"horizon_hours": st.integers(0, 120) | st.sampled_from([0.5, 1.5])},
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "nodes": selectors(),
            "safety": safety,
            "buffer": st.integers(0, 3),
            "max_per_line": st.integers(0, 5),
            "supply": supply,
        },
    )


@st.composite
def protections(draw: st.DrawFn, name: str) -> Table:
    table: Table = {"name": name}
    prefixes = draw(_subset(SKU_PREFIXES, 2))
    if prefixes:
        table["skus"] = prefixes
    table["nodes"] = draw(selectors())
    if draw(st.booleans()):
        table["units"] = draw(st.integers(1, 6))
    else:
        table["percent"] = draw(st.integers(1, 100))
    table["for"] = draw(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True))
    return table


@st.composite
def rule_data(draw: st.DrawFn, version: str = "gen") -> RuleData:
    channels = {c: draw(policies()) for c in CHANNELS}
    segments = {s: draw(policies()) for s in SEGMENTS}
    specific = draw(
        st.dictionaries(st.sampled_from(CALLERS), policies(), max_size=2),
    )
    count = draw(st.integers(0, 3))
    return RuleData(
        version,
        draw(policies()),
        channels,
        segments,
        specific,
        [draw(protections(f"p{i}")) for i in range(count)],
        draw(st.sampled_from(CALLERS)),
    )


# ----------------------------------------------------------------------------- reference ATP


def selects(selector: Table, node_id: str, nodes: NodeTable = NODES) -> bool:
    """The README's selector: exclude wins, include adds, kinds / geo / tags each narrow (any
    of the list), an include list alone selects only its nodes; no keys: every node."""
    kind, geo_path, tags = nodes[node_id]
    if node_id in selector.get("exclude", ()):
        return False
    if node_id in selector.get("include", ()):
        return True
    narrowing = [k for k in ("kinds", "geo", "tags") if selector.get(k)]
    if selector.get("include") and not narrowing:
        return False
    if selector.get("kinds") and kind.name not in selector["kinds"]:
        return False
    if selector.get("geo") and not any(
        geo_path[: len(g.split("/"))] == tuple(g.split("/")) for g in selector["geo"]
    ):
        return False
    return not (selector.get("tags") and not set(selector["tags"]) & set(tags))


def benefits(protection: Table, channel: str, segment: str) -> bool:
    for pattern in protection["for"]:
        c, s = pattern.split("/")
        if c in ("*", channel) and s in ("*", segment):
            return True
    return False


def recorded_consumption(state: AtpState, name: str, sku: str, node_id: str) -> int:
    """Protected units of `name` that open reservations recorded at one position."""
    total = 0
    for reservation in state.reservations.values():
        if not reservation.status.is_open or reservation.protected is None:
            continue
        for line, records in zip(reservation.lines, reservation.protected, strict=True):
            if (line.sku, line.node_id) == (sku, node_id):
                total += sum(units for n, units in records if n == name)
    return total


def reference_atp(
    state: AtpState,
    rules: RuleData | None,
    channel: str,
    segment: str,
    sku: str,
    node_id: str,
    now_ms: int | None = None,
    nodes: NodeTable = NODES,
) -> int:
    """ATP of one position for one caller at `now_ms` (default: the state's clock)."""
    now_ms = state.now_ms if now_ms is None else now_ms
    row, node = state.skus.get(sku), state.node_ids.get(node_id)
    if row < 0 or not state.nodes[node].enabled:
        return 0
    cells = state.stock.cells
    on_hand = int(cells[row, FIELD_ON_HAND, node])
    reserved = int(cells[row, FIELD_RESERVED, node])
    own_safety = int(cells[row, FIELD_SAFETY, node])
    if rules is None:
        return max(0, on_hand - reserved - own_safety)
    channel = channel or rules.defaults[0]
    segment = segment or rules.defaults[1]
    policy = rules.policy(channel, segment)
    if not selects(policy.get("nodes", {}), node_id, nodes):
        return 0
    safety_table = policy.get("safety", {})
    kind = nodes[node_id][0].name
    overrides = []
    if kind in safety_table.get("kinds", {}):
        overrides.append(safety_table["kinds"][kind])
    if node_id in safety_table.get("nodes", {}):
        overrides.append(safety_table["nodes"][node_id])
    overrides += [v for p, v in safety_table.get("sku_prefixes", {}).items() if sku.startswith(p)]
    safety = max(overrides) if overrides else own_safety
    supply_rules = policy.get("supply", {"kinds": []})
    horizon = supply_rules.get("horizon_hours")
    supply = 0
    for entry in state.supply.by_id.values():
        if (entry.sku, entry.node_id) != (sku, node_id):
            continue
        if entry.kind.name not in supply_rules["kinds"] or entry.eta_ms < now_ms:
            continue
        if horizon is not None and entry.eta_ms > now_ms + int(horizon * 3_600_000):
            continue
        supply += entry.quantity
    protected = 0
    for protection in rules.protections:
        if benefits(protection, channel, segment):
            continue
        prefixes = protection.get("skus", [])
        if prefixes and not sku.startswith(tuple(prefixes)):
            continue
        if not selects(protection["nodes"], node_id, nodes):
            continue
        units = protection.get("units") or on_hand * protection["percent"] // 100
        remaining = units - recorded_consumption(state, protection["name"], sku, node_id)
        protected += max(0, remaining)
    atp = on_hand - reserved - safety - policy.get("buffer", 0) + supply - protected
    result: int = max(0, atp)
    return result
