"""Availability rules: the same stock promised differently to each channel and segment.

A rule set is TOML text (see README "Availability rules" and src/atpd/demo/rules.toml):

    version = "2026-11-25.1"
    [defaults]            channel = "web", segment = "standard" (used when a request names none)
    [policy]              the base policy, for every caller
    [segments.NAME]       overrides for a segment on every channel
    [channels.NAME]       overrides for a channel
    [channels.NAME.segments.SEGMENT]   overrides for one segment of one channel
    [[protections]]       units held back for named callers

A policy has: `nodes` (visibility: kinds, geo prefixes, tags, include, exclude), `safety`
(overrides of the positions' own safety stock by node kind, node and SKU prefix; the strictest
applicable override wins), `buffer` (never offer a node's last N units), `max_per_line`, and
`supply` (which incoming supply kinds count, arriving within `horizon_hours`). Overrides merge
key by key: base, then channel, then segment, then channel.segment.

Parsing is pure (text -> RuleSet); `compile_rules` (core/rules_compile.py) builds from a rule
set and the nodes the arrays the kernels read. Errors name the file, the key path and the problem.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from atpd.core.commands import NodeKind
from atpd.core.nodes import Node
from atpd.core.restock_rules import (
    DEFAULT_RESTOCK,
    RestockRules,
    RestockRulesError,
    parse_restock,
)
from atpd.core.rules_catalogue import Catalogue, CatalogueError, parse_catalogue
from atpd.core.rules_sourcing import (
    DEFAULT_SOURCING,
    Sourcing,
    SourcingRulesError,
    merge_sourcing,
)
from atpd.core.supply import SupplyKind
from atpd.core.text import listed, shown

# Anchored with \A...\Z and used with fullmatch: `$` also matches before a final newline.
NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
HOUR_MS = 3_600_000
MAX_PROTECTIONS = 256
# Bounds on rule text, checked before and after the TOML parser so that no text a client may
# send costs more than bounded work: tomllib recurses per nesting level (RecursionError) and is
# quadratic in the parts of one dotted key. The deepest key the schema has is 7 levels
# (channels.NAME.segments.NAME.safety.kinds.KIND); the others are far above any real rule set.
MAX_RULES_DEPTH = 10
MAX_RULES_LINES = 50_000
MAX_RULES_KEYS = 20_000
MAX_RULES_VALUES = 50_000  # array items and inline-table entries over the whole text
MAX_RULES_TABLES = 10_000
MAX_RULES_ARRAY_ITEMS = 10_000
MAX_RULES_CHANNELS = 64
MAX_RULES_SEGMENTS = 64
MAX_RULES_POLICIES = 1024  # channels x segments, each compiled against every node
# 100 years: longer horizons mean "any future ETA" anyway and hours * HOUR_MS stays in int64.
MAX_HORIZON_HOURS = 100 * 366 * 24
POLICY_KEYS = ("nodes", "safety", "buffer", "max_per_line", "supply", "sourcing")
SELECTOR_KEYS = ("kinds", "geo", "tags", "include", "exclude")


class RulesError(ValueError):
    """A rule set was refused; the message names where and what."""


@dataclass(frozen=True, slots=True)
class NodeSelector:
    kinds: tuple[NodeKind, ...] = ()
    geo: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def matches(self, node: Node) -> bool:
        if node.node_id in self.exclude:
            return False
        if node.node_id in self.include:
            return True
        if self.include and not (self.kinds or self.geo or self.tags):
            return False  # an explicit list only
        if self.kinds and node.kind not in self.kinds:
            return False
        if self.geo and not any(node.under(tuple(g.split("/"))) for g in self.geo):
            return False
        return not (self.tags and not set(self.tags) & set(node.tags))


@dataclass(frozen=True, slots=True)
class Policy:
    nodes: NodeSelector = NodeSelector()
    safety_by_kind: tuple[tuple[NodeKind, int], ...] = ()
    safety_by_node: tuple[tuple[str, int], ...] = ()
    safety_by_sku_prefix: tuple[tuple[str, int], ...] = ()
    buffer: int = 0
    max_per_line: int = 0  # 0: no cap
    supply_kinds: frozenset[SupplyKind] = frozenset()
    supply_horizon_ms: int | None = None  # None: any future ETA
    sourcing: Sourcing = DEFAULT_SOURCING


@dataclass(frozen=True, slots=True)
class Protection:
    name: str
    sku_prefixes: tuple[str, ...]
    nodes: NodeSelector
    units: int
    percent: int
    beneficiaries: tuple[tuple[str, str], ...]  # (channel or "*", segment or "*")

    def protects(self, channel: str, segment: str) -> bool:
        return any(c in ("*", channel) and s in ("*", segment) for c, s in self.beneficiaries)

    def covers_sku(self, sku: str) -> bool:
        return not self.sku_prefixes or sku.startswith(self.sku_prefixes)


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    text: str
    default_channel: str
    default_segment: str
    channels: tuple[str, ...]
    segments: tuple[str, ...]
    policies: Mapping[tuple[str, str], Policy]
    protections: tuple[Protection, ...]
    catalogue: Catalogue = ()  # unit values by SKU prefix (core/rules_catalogue.py)
    restock: RestockRules = DEFAULT_RESTOCK  # cover targets, lane defaults (core/restock_rules.py)

    def resolve(self, channel: str, segment: str) -> tuple[str, str]:
        """The (channel, segment) a request means; raises KeyError naming what is unknown."""
        channel = channel or self.default_channel
        segment = segment or self.default_segment
        if channel not in self.channels:
            raise KeyError(
                f"channel: unknown channel {shown(channel)} (known: {listed(self.channels)})"
            )
        if segment not in self.segments:
            raise KeyError(
                f"segment: unknown segment {shown(segment)} (known: {listed(self.segments)})"
            )
        return channel, segment


def open_rules() -> RuleSet:
    """Without a rule file: one policy for everyone, every enabled node, positions' safety."""
    return RuleSet(
        version="",
        text="",
        default_channel="",
        default_segment="",
        channels=("",),
        segments=("",),
        policies={},
        protections=(),
    )


# ----------------------------------------------------------------------------- parsing


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RulesError(f"{where}: expected {names}, got {value!r}")
    return value


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise RulesError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _count(value: Any, where: str) -> int:
    value = _expect(value, int, where)
    if not 0 <= value <= 1_000_000_000:
        raise RulesError(f"{where}: {value} is not in 0..1000000000")
    return int(value)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = _expect(value, list, where)
    for i, item in enumerate(items):
        _expect(item, str, f"{where}[{i}]")
    return tuple(items)


def _kind(name: Any, where: str) -> NodeKind:
    _expect(name, str, where)
    try:
        return NodeKind[name.upper()]
    except KeyError:
        known = ", ".join(k.name for k in NodeKind)
        raise RulesError(f"{where}: unknown node kind {name!r} (known: {known})") from None


@dataclass(frozen=True, slots=True)
class Known:
    """What references in a rule set are checked against (None: not checked, e.g. when a
    snapshot's rules are loaded back)."""

    node_ids: frozenset[str] | None = None
    geo: frozenset[str] | None = None

    def node(self, node_id: str, where: str) -> None:
        if self.node_ids is not None and node_id not in self.node_ids:
            raise RulesError(f"{where}: unknown node {node_id!r}")

    def prefix(self, prefix: str, where: str) -> None:
        if self.geo is not None and prefix not in self.geo:
            raise RulesError(f"{where}: no node under geo prefix {prefix!r}")


def _selector(table: Any, where: str, known: Known) -> NodeSelector:
    _expect(table, dict, where)
    _check_keys(table, SELECTOR_KEYS, where)
    kinds = tuple(_kind(k, f"{where}.kinds[{i}]") for i, k in enumerate(table.get("kinds", [])))
    selector = NodeSelector(
        kinds,
        _strings(table.get("geo", []), f"{where}.geo"),
        _strings(table.get("tags", []), f"{where}.tags"),
        _strings(table.get("include", []), f"{where}.include"),
        _strings(table.get("exclude", []), f"{where}.exclude"),
    )
    for i, prefix in enumerate(selector.geo):
        known.prefix(prefix, f"{where}.geo[{i}]")
    for field_name in ("include", "exclude"):
        for i, node_id in enumerate(getattr(selector, field_name)):
            known.node(node_id, f"{where}.{field_name}[{i}]")
    return selector


def _merge_policy(base: Policy, table: Any, where: str, known: Known) -> Policy:
    _expect(table, dict, where)
    _check_keys(table, (*POLICY_KEYS, "segments"), where)
    values: dict[str, Any] = {}
    if "nodes" in table:
        values["nodes"] = _selector(table["nodes"], f"{where}.nodes", known)
    if "safety" in table:
        safety = _expect(table["safety"], dict, f"{where}.safety")
        _check_keys(safety, ("kinds", "nodes", "sku_prefixes"), f"{where}.safety")
        kinds = _expect(safety.get("kinds", {}), dict, f"{where}.safety.kinds")
        nodes = _expect(safety.get("nodes", {}), dict, f"{where}.safety.nodes")
        prefixes = _expect(safety.get("sku_prefixes", {}), dict, f"{where}.safety.sku_prefixes")
        values["safety_by_kind"] = tuple(
            (_kind(k, f"{where}.safety.kinds"), _count(v, f"{where}.safety.kinds.{k}"))
            for k, v in kinds.items()
        )
        for node_id in nodes:
            known.node(node_id, f"{where}.safety.nodes")
        values["safety_by_node"] = tuple(
            (k, _count(v, f"{where}.safety.nodes.{k}")) for k, v in nodes.items()
        )
        values["safety_by_sku_prefix"] = tuple(
            (k, _count(v, f"{where}.safety.sku_prefixes.{k}")) for k, v in prefixes.items()
        )
    if "buffer" in table:
        values["buffer"] = _count(table["buffer"], f"{where}.buffer")
    if "max_per_line" in table:
        values["max_per_line"] = _count(table["max_per_line"], f"{where}.max_per_line")
    if "supply" in table:
        supply = _expect(table["supply"], dict, f"{where}.supply")
        _check_keys(supply, ("kinds", "horizon_hours"), f"{where}.supply")
        kinds_found: list[SupplyKind] = []
        for i, name in enumerate(_strings(supply.get("kinds", []), f"{where}.supply.kinds")):
            try:
                kinds_found.append(SupplyKind[name.upper()])
            except KeyError:
                kinds_known = ", ".join(k.name for k in SupplyKind)
                raise RulesError(
                    f"{where}.supply.kinds[{i}]: unknown supply kind {name!r} "
                    f"(known: {kinds_known})"
                ) from None
        values["supply_kinds"] = frozenset(kinds_found)
        if "horizon_hours" in supply:
            hours = _expect(supply["horizon_hours"], (int, float), f"{where}.supply.horizon_hours")
            if not (math.isfinite(hours) and 0 <= hours <= MAX_HORIZON_HOURS):
                raise RulesError(
                    f"{where}.supply.horizon_hours: {hours} is not a number in "
                    f"0..{MAX_HORIZON_HOURS}"
                )
            values["supply_horizon_ms"] = int(hours * HOUR_MS)
        else:
            values["supply_horizon_ms"] = None
    if "sourcing" in table:
        try:
            values["sourcing"] = merge_sourcing(
                base.sourcing, table["sourcing"], f"{where}.sourcing", known.node
            )
        except SourcingRulesError as error:
            raise RulesError(str(error)) from None
    return Policy(**{**{f: getattr(base, f) for f in Policy.__slots__}, **values})


def _protection(
    table: Any,
    index: int,
    names: set[str],
    known: Known,
    channels: set[str],
    segments: set[str],
) -> Protection:
    where = f"protections[{index}]"
    _expect(table, dict, where)
    _check_keys(table, ("name", "skus", "nodes", "units", "percent", "for"), where)
    name = _expect(table.get("name"), str, f"{where}.name")
    if not NAME.fullmatch(name) or name in names:
        raise RulesError(f"{where}.name: {shown(name)} is not a new lowercase name")
    names.add(name)
    units = _count(table.get("units", 0), f"{where}.units")
    percent = _count(table.get("percent", 0), f"{where}.percent")
    if (units > 0) == (percent > 0):
        raise RulesError(f"{where}: give exactly one of units or percent (> 0)")
    if percent > 100:
        raise RulesError(f"{where}.percent: {percent} is over 100")
    beneficiaries = []
    for i, pattern in enumerate(_strings(table.get("for", []), f"{where}.for")):
        channel, _, segment = pattern.partition("/")
        if not segment or not all(p == "*" or NAME.fullmatch(p) for p in (channel, segment)):
            raise RulesError(
                f"{where}.for[{i}]: {shown(pattern)} is not CHANNEL/SEGMENT ('*' allowed)"
            )
        if channel != "*" and channel not in channels:
            raise RulesError(f"{where}.for[{i}]: unknown channel {channel!r}")
        if segment != "*" and segment not in segments:
            raise RulesError(f"{where}.for[{i}]: unknown segment {segment!r}")
        beneficiaries.append((channel, segment))
    if not beneficiaries:
        raise RulesError(f"{where}.for: name who may consume the protected units")
    if "nodes" not in table:
        raise RulesError(f"{where}.nodes: name the nodes (a selector) the protection holds at")
    return Protection(
        name,
        _strings(table.get("skus", []), f"{where}.skus"),
        _selector(table["nodes"], f"{where}.nodes", known),
        units,
        percent,
        tuple(beneficiaries),
    )


# Strings and comments, removed before the bracket and dot counts (a "[" inside a string is
# not nesting). Multi-line strings first so that their quotes are not read as short strings.
_STRINGS_AND_COMMENTS = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*'
)
_TABLE_HEADER = re.compile(r"^[ \t]*\[", re.MULTILINE)
_KEY_SEPARATORS = re.compile(r"[=\[\]{},\n]")
_OPENERS = np.zeros(256, np.int8)
_OPENERS[[ord("["), ord("{")]] = 1
_OPENERS[[ord("]"), ord("}")]] = -1


def _prescan(text: str) -> None:
    """Refuse text whose shape alone exceeds the bounds, in time linear in its size and before
    the TOML parser sees it. A conservative count: the parser stays the judge of the syntax."""
    lines = text.count("\n") + 1
    if lines > MAX_RULES_LINES:
        raise RulesError(f"text: {lines} lines, more than the {MAX_RULES_LINES} allowed")
    bare = _STRINGS_AND_COMMENTS.sub('""', text)
    keys = bare.count("=")
    if keys > MAX_RULES_KEYS:
        raise RulesError(f"text: {keys} keys, more than the {MAX_RULES_KEYS} allowed")
    values = bare.count(",")
    if values > MAX_RULES_VALUES:
        raise RulesError(f"text: {values} list items, more than the {MAX_RULES_VALUES} allowed")
    tables = len(_TABLE_HEADER.findall(bare))
    if tables > MAX_RULES_TABLES:
        raise RulesError(f"text: {tables} tables, more than the {MAX_RULES_TABLES} allowed")
    # A dotted key lies between two of = [ ] { } , or a line end; floats have one dot.
    dots = max(piece.count(".") for piece in _KEY_SEPARATORS.split(bare))
    if dots >= MAX_RULES_DEPTH:
        raise RulesError(
            f"text: a dotted key of {dots + 1} parts, more than the {MAX_RULES_DEPTH} levels "
            "allowed"
        )
    steps = _OPENERS[np.frombuffer(bare.encode(), np.uint8)]
    depth = int(np.cumsum(steps, dtype=np.int64).max(initial=0))
    if depth > MAX_RULES_DEPTH:
        raise RulesError(
            f"text: arrays or tables nested {depth} deep, more than the {MAX_RULES_DEPTH} "
            "levels allowed"
        )


def _check_values(value: Any, where: str, depth: int) -> None:
    """Bounds the prescan cannot see: array lengths, nesting through dotted keys in tables,
    and numbers that are not finite (inf, nan), each named by its key path."""
    if depth > MAX_RULES_DEPTH:
        raise RulesError(f"{where}: nested more than the {MAX_RULES_DEPTH} levels allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_values(item, f"{where}.{key}" if where else str(key), depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_RULES_ARRAY_ITEMS:
            raise RulesError(
                f"{where}: {len(value)} items, more than the {MAX_RULES_ARRAY_ITEMS} allowed"
            )
        for index, item in enumerate(value):
            _check_values(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise RulesError(f"{where}: {value} is not a finite number")


def read_rules_document(text: str, source: str = "<rules>") -> dict[str, Any]:
    """The TOML document of a rule text, within the bounds above: the costly, state-free half
    of `parse_rules`, which the service runs in a worker thread (a pure function of the text,
    so journal replay, which calls `parse_rules`, gets the same answer)."""
    try:
        _prescan(text)
        try:
            document = tomllib.loads(text)
        except RecursionError:
            raise RulesError(
                f"text: nested more than the {MAX_RULES_DEPTH} levels allowed"
            ) from None
        _check_values(document, "", 0)
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{source}: {error}") from None
    except RulesError as error:
        raise RulesError(f"{source}: {error}") from None
    return document


def parse_rules(
    text: str,
    source: str = "<rules>",
    known: Known | None = None,
    document: dict[str, Any] | None = None,
) -> RuleSet:
    """A rule set from its text; `document` is `read_rules_document(text)` when the caller
    has it already (computed off the event loop)."""
    if document is None:
        document = read_rules_document(text, source)
    try:
        return _parse(document, text, known or Known())
    except RulesError as error:
        raise RulesError(f"{source}: {error}") from None


def _parse(document: dict[str, Any], text: str, known: Known) -> RuleSet:
    _check_keys(
        document,
        (
            "version",
            "defaults",
            "policy",
            "channels",
            "segments",
            "protections",
            "catalogue",
            "restock",
        ),
        "top level",
    )
    version = _expect(document.get("version"), str, "version")
    if not version:
        raise RulesError("version: must not be empty")
    defaults = _expect(document.get("defaults", {}), dict, "defaults")
    _check_keys(defaults, ("channel", "segment"), "defaults")
    channels_table = _expect(document.get("channels", {}), dict, "channels")
    segments_table = _expect(document.get("segments", {}), dict, "segments")
    channels = set(channels_table)
    segments = set(segments_table)
    for channel, table in channels_table.items():
        _expect(table, dict, f"channels.{channel}")
        segments.update(_expect(table.get("segments", {}), dict, f"channels.{channel}.segments"))
    default_channel = _expect(defaults.get("channel", ""), str, "defaults.channel")
    default_segment = _expect(defaults.get("segment", ""), str, "defaults.segment")
    if default_channel:
        channels.add(default_channel)
    if default_segment:
        segments.add(default_segment)
    if not channels:
        raise RulesError("channels: define at least one channel (or defaults.channel)")
    if not segments:
        raise RulesError("segments: define at least one segment (or defaults.segment)")
    # Every channel x segment pair gets a compiled policy: both counts are bounded.
    if len(channels) > MAX_RULES_CHANNELS:
        raise RulesError(f"channels: {len(channels)}, more than the {MAX_RULES_CHANNELS} allowed")
    if len(segments) > MAX_RULES_SEGMENTS:
        raise RulesError(f"segments: {len(segments)}, more than the {MAX_RULES_SEGMENTS} allowed")
    if len(channels) * len(segments) > MAX_RULES_POLICIES:
        raise RulesError(
            f"channels x segments: {len(channels) * len(segments)} policies, more than the "
            f"{MAX_RULES_POLICIES} allowed"
        )
    for name in (*channels, *segments):
        if not NAME.fullmatch(name):
            raise RulesError(f"{shown(name)}: channel and segment names are 1-32 of a-z 0-9 _ -")
    base = _merge_policy(Policy(), document.get("policy", {}), "policy", known)
    policies: dict[tuple[str, str], Policy] = {}
    for channel in sorted(channels):
        channel_table = channels_table.get(channel, {})
        by_channel = _merge_policy(
            base,
            {k: v for k, v in channel_table.items() if k != "segments"},
            f"channels.{channel}",
            known,
        )
        for segment in sorted(segments):
            policy = by_channel
            if segment in segments_table:
                policy = _merge_policy(
                    policy, segments_table[segment], f"segments.{segment}", known
                )
            specific = channel_table.get("segments", {}).get(segment)
            if specific is not None:
                where = f"channels.{channel}.segments.{segment}"
                policy = _merge_policy(policy, specific, where, known)
            policies[(channel, segment)] = policy
    raw_protections = _expect(document.get("protections", []), list, "protections")
    if len(raw_protections) > MAX_PROTECTIONS:
        raise RulesError(f"protections: at most {MAX_PROTECTIONS}")
    names: set[str] = set()
    protections = tuple(
        _protection(t, i, names, known, channels, segments) for i, t in enumerate(raw_protections)
    )
    try:
        catalogue = parse_catalogue(document.get("catalogue", {}))
    except CatalogueError as error:
        raise RulesError(str(error)) from None
    try:
        restock = parse_restock(document.get("restock", {}))
    except RestockRulesError as error:
        raise RulesError(str(error)) from None
    return RuleSet(
        version,
        text,
        default_channel or sorted(channels)[0],
        default_segment or sorted(segments)[0],
        tuple(sorted(channels)),
        tuple(sorted(segments)),
        policies,
        protections,
        catalogue,
        restock,
    )
