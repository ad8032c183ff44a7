"""Keep it closed (issue 9): fuzz every gRPC method of a real `atpd serve` subprocess, then
restart it from its data directory and check that nothing changed.

Each method gets Hypothesis-generated requests derived from its descriptors and raw byte
payloads (random bytes, truncated messages, invalid UTF-8 in a string field), sent over a
real channel. The server must never answer UNKNOWN or INTERNAL, never stall a unary call,
never send an error message over 1 kB, log no traceback, and stay SERVING. It is then stopped
(SIGTERM, or SIGKILL in the second test) and restarted: the state read back over gRPC and the
recovered `AtpState.digest()` must equal those from before the stop.

Failures are collected, not raised one by one: the assertion lists every distinct one
(method, problem, error details, the first input that caused it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from persistence.server_support import Daemon, daemon, recovered_state

from atpd.config import Config
from atpd.v1 import (
    admin_pb2,
    common_pb2,
    feeds_pb2,
    inventory_pb2,
    reservations_pb2,
    rules_pb2,
    supply_pb2,
)

from .strategies import (
    LONG_TTL_MS,
    NODES,
    SEEDED_RESERVATIONS,
    SEEDED_SUPPLY,
    SKUS,
    STORE,
    WAREHOUSE,
    message_strategy,
    mutant_strategy,
    raw_payload,
    strategy_for,
)
from .support import (
    Findings,
    Method,
    all_methods,
    call,
    call_raw,
    iter_stream,
    message_class,
    short_repr,
    traceback_summaries,
)

pytestmark = pytest.mark.fuzz

# Wall-clock budgets (seconds of fuzzing per test) and example counts per method: together
# with four server starts they keep the module near a minute on two shared cores.
GRACEFUL_FUZZ_S = 22.0
KILL_FUZZ_S = 10.0
TYPED_EXAMPLES = 150
RAW_EXAMPLES = 30
# Share of a method's time spent on typed messages (the rest on raw bytes).
TYPED_SHARE = 0.75
# Server streams cost their deadline per call: they get this multiple of a method's budget.
STREAM_BUDGET_FACTOR = 3
MAX_TRACKED_RESERVATIONS = 2_000

INVENTORY = "/atpd.v1.InventoryService"
RESERVATIONS = "/atpd.v1.ReservationService"
SUPPLY = "/atpd.v1.SupplyService"
ADMIN = "/atpd.v1.AdminService"
FEEDS = "/atpd.v1.FeedService"
RULES = "/atpd.v1.RulesService"


def seed_world(channel: grpc.Channel) -> None:
    """Two nodes, three SKUs (one at the on_hand bound), a purchase order, two holds."""
    for node_id, kind in (
        (WAREHOUSE, common_pb2.NODE_KIND_WAREHOUSE),
        (STORE, common_pb2.NODE_KIND_STORE),
    ):
        node = inventory_pb2.Node(
            node_id=node_id, kind=kind, geo_path="EU/FR/PAR", ships=True, pickup=True, enabled=True
        )
        call(
            channel,
            f"{INVENTORY}/UpsertNode",
            inventory_pb2.UpsertNodeRequest(node=node),
            inventory_pb2.UpsertNodeResponse,
        )
    for sku in SKUS:
        for node_id in NODES:
            request = inventory_pb2.SetStockRequest(
                sku=sku,
                node_id=node_id,
                on_hand=10**9 if sku == "FZ-BIG" else 100,
                source_sequence=1,
            )
            response = call(
                channel, f"{INVENTORY}/SetStock", request, inventory_pb2.SetStockResponse
            )
            assert response.outcome == common_pb2.OUTCOME_OK, response
    supply = supply_pb2.AddSupplyRequest(
        supply_id=SEEDED_SUPPLY[0],
        sku="FZ-BIG",
        node_id=WAREHOUSE,
        quantity=10**9,
        eta_ms=int(time.time() * 1000) + 86_400_000,
        kind=supply_pb2.SUPPLY_KIND_PURCHASE_ORDER,
    )
    response = call(channel, f"{SUPPLY}/AddSupply", supply, supply_pb2.SupplyResponse)
    assert response.outcome == common_pb2.OUTCOME_OK, response
    for reservation_id, sku, node_id in zip(SEEDED_RESERVATIONS, SKUS, NODES, strict=False):
        reserve = reservations_pb2.ReserveRequest(
            reservation_id=reservation_id,
            lines=[reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=2)],
            ttl_ms=LONG_TTL_MS,
            kind=common_pb2.RESERVATION_KIND_CART,
        )
        response = call(
            channel, f"{RESERVATIONS}/Reserve", reserve, reservations_pb2.ReserveResponse
        )
        assert response.outcome == common_pb2.OUTCOME_OK, response


# ------------------------------------------------------------------------------ strategies


def bulk_load_streams() -> st.SearchStrategy[list[Message]]:
    """A header, chunks whose columns agree (or not), and a commit that counts them (or not)."""
    header = st.one_of(
        strategy_for(feeds_pb2.BulkLoadHeader, mutant=True), strategy_for(feeds_pb2.BulkLoadHeader)
    )
    chunk = strategy_for(feeds_pb2.PositionChunk)
    commit = strategy_for(feeds_pb2.BulkLoadCommit)

    @st.composite
    def coherent_chunk(draw: st.DrawFn) -> feeds_pb2.PositionChunk:
        rows = draw(st.integers(0, 4))
        row_chunk = draw(chunk)
        assert isinstance(row_chunk, feeds_pb2.PositionChunk)
        if draw(st.booleans()):
            # Bring every per-row column to the same length, keeping the fuzzed values.
            for column in (row_chunk.skus, row_chunk.node_ids, row_chunk.on_hand):
                while len(column) > rows:
                    column.pop()
            while len(row_chunk.skus) < rows:
                row_chunk.skus.append(draw(st.sampled_from(SKUS)))
            while len(row_chunk.node_ids) < rows:
                row_chunk.node_ids.append(draw(st.sampled_from(NODES)))
            while len(row_chunk.on_hand) < rows:
                row_chunk.on_hand.append(draw(st.sampled_from((0, 5, 10**9, 10**9 + 1, -1))))
            del row_chunk.sku_index[:]
            del row_chunk.node_index[:]
        return row_chunk

    @st.composite
    def stream(draw: st.DrawFn) -> list[Message]:
        chunks = draw(st.lists(coherent_chunk(), max_size=3))
        rows = sum(len(item.on_hand) for item in chunks)
        messages: list[Message] = [feeds_pb2.BulkLoadRequest(header=draw(header))]  # type: ignore[arg-type]
        messages.extend(feeds_pb2.BulkLoadRequest(chunk=item) for item in chunks)
        if draw(st.booleans()):
            messages.append(
                feeds_pb2.BulkLoadRequest(
                    commit=feeds_pb2.BulkLoadCommit(rows=rows, chunks=len(chunks))
                )
            )
        else:
            messages.append(feeds_pb2.BulkLoadRequest(commit=draw(commit)))  # type: ignore[arg-type]
        return messages

    any_messages = st.lists(strategy_for(feeds_pb2.BulkLoadRequest), max_size=4)
    return st.one_of(stream(), stream(), any_messages)


def typed_requests(method: Method) -> st.SearchStrategy[Any]:
    """Messages (a list of them for a client stream) built from the request descriptor."""
    if method.client_streaming:
        if method.name == "BulkLoad":
            return bulk_load_streams()
        return st.lists(message_strategy(method.request_descriptor), max_size=4)
    # Half plausible requests with one hostile field (they reach the commands), half
    # anything the descriptors allow.
    return st.one_of(
        mutant_strategy(method.request_descriptor), message_strategy(method.request_descriptor)
    )


def raw_requests(method: Method) -> st.SearchStrategy[Any]:
    """Raw bytes (a list of them for a client stream), mostly not a valid message."""
    payload = raw_payload(method.request_descriptor)
    if method.client_streaming:
        return st.lists(payload, min_size=1, max_size=3)
    return payload


# ------------------------------------------------------------------------------- fuzzing

# Fields that hold identifiers (free text such as `reason`, `source` or rule `text` may hold
# anything).
ID_FIELDS = frozenset(
    {"sku", "skus", "node_id", "node_ids", "reservation_id", "supply_id", "load_id"}
    | {"channel", "segment", "geo_path", "geo_prefix", "tags"}
)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def ids_with_control_characters(message: Message) -> set[str]:
    """Every id value in the message (nested ones included) holding a control character."""
    found: set[str] = set()
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                found |= ids_with_control_characters(item)
        elif field.name in ID_FIELDS and field.type == field.TYPE_STRING:
            for item in value if field.is_repeated else [value]:
                if CONTROL_CHARACTERS.search(item):
                    found.add(item)
    return found


class Fuzzer:
    """Sends fuzzed requests for every method and keeps the findings."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.findings = Findings()
        self.reservation_ids: set[str] = set(SEEDED_RESERVATIONS)

    def track(self, method: Method, message: Message | bytes, reply: bytes) -> None:
        """Remember the ids of reservations the server acknowledged (for the fingerprint:
        other ids may answer differently from one call to the next, e.g. a huge id's echo
        crossing grpc's probabilistic metadata limit)."""
        if method.name != "Reserve" or len(self.reservation_ids) >= MAX_TRACKED_RESERVATIONS:
            return
        try:
            response = reservations_pb2.ReserveResponse.FromString(reply)
            if isinstance(message, bytes):
                message = reservations_pb2.ReserveRequest.FromString(message)
        except DecodeError:
            return
        assert isinstance(message, reservations_pb2.ReserveRequest)
        if response.outcome == common_pb2.OUTCOME_OK:
            self.reservation_ids.add(message.reservation_id)

    def check_accepted_ids(self, method: Method, request: Message, reply: bytes) -> None:
        """A write answered OK must not have taken an id with a control character (an id
        ending in a newline once blocked every restart)."""
        response_class = message_class(method.descriptor.output_type)
        try:
            response = response_class.FromString(reply)
        except DecodeError:
            self.findings.add(method.name, "reply does not decode", short_repr(reply), request)
            return
        values = {field.name: value for field, value in response.ListFields()}
        if values.get("outcome") != common_pb2.OUTCOME_OK:
            return
        bad = sorted(ids_with_control_characters(request))
        if bad:
            self.findings.add(
                method.name, "accepted an id with a control character", repr(bad[:3]), request
            )

    def send(self, method: Method, request: Any) -> None:
        if method.client_streaming:
            items = list(request)
            payload: bytes | list[bytes] = [
                item if isinstance(item, bytes) else item.SerializeToString() for item in items
            ]
        else:
            items = [request]
            payload = request if isinstance(request, bytes) else request.SerializeToString()
        replies = call_raw(self.channel, self.findings, method, payload, request)
        if replies and not method.client_streaming:
            self.track(method, items[0], replies[0])
        if replies and isinstance(request, Message) and not method.server_streaming:
            self.check_accepted_ids(method, request, replies[0])

    def run(self, budget_s: float) -> None:
        methods = all_methods()
        # Discovery works: the catalogue holds every service, streaming methods included.
        services = {method.path.split("/")[1] for method in methods}
        assert len(services) >= 9 and any(m.client_streaming for m in methods), services
        shares = sum(STREAM_BUDGET_FACTOR if m.server_streaming else 1 for m in methods)
        for method in methods:
            factor = STREAM_BUDGET_FACTOR if method.server_streaming else 1
            method_budget_s = budget_s * factor / shares
            typed_s = method_budget_s * TYPED_SHARE
            self.fuzz(method, typed_requests(method), TYPED_EXAMPLES, typed_s)
            self.fuzz(method, raw_requests(method), RAW_EXAMPLES, method_budget_s - typed_s)

    def fuzz(
        self, method: Method, strategy: st.SearchStrategy[Any], examples: int, budget_s: float
    ) -> None:
        stop_at = time.monotonic() + budget_s

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(request=strategy)
        def run(request: Any) -> None:
            if time.monotonic() < stop_at:
                self.send(method, request)

        run()


# -------------------------------------------------------------------------- fingerprint


def fingerprint(channel: grpc.Channel, reservation_ids: set[str]) -> dict[str, Any]:
    """Everything a client can read back, minus what the clock changes (now, `counted`)."""
    status = call(
        channel, f"{ADMIN}/GetStatus", admin_pb2.GetStatusRequest(), admin_pb2.GetStatusResponse
    )
    nodes = call(
        channel,
        f"{INVENTORY}/ListNodes",
        inventory_pb2.ListNodesRequest(),
        inventory_pb2.ListNodesResponse,
    )
    rules = call(
        channel, f"{RULES}/GetRules", rules_pb2.GetRulesRequest(), rules_pb2.GetRulesResponse
    )
    supplies = call(
        channel,
        f"{SUPPLY}/ListSupply",
        supply_pb2.ListSupplyRequest(),
        supply_pb2.ListSupplyResponse,
    )
    positions = []
    for chunk in iter_stream(
        channel,
        f"{FEEDS}/ExportPositions",
        feeds_pb2.ExportPositionsRequest(),
        feeds_pb2.PositionChunk,
    ):
        positions.append(chunk.SerializeToString(deterministic=True))
    reservations: dict[str, bytes | str] = {}
    for reservation_id in sorted(reservation_ids):
        request = reservations_pb2.GetReservationRequest(reservation_id=reservation_id)
        try:
            response = call(
                channel,
                f"{RESERVATIONS}/GetReservation",
                request,
                reservations_pb2.ReservationResponse,
            )
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            reservations[reservation_id] = error.code().name
        else:
            reservations[reservation_id] = response.reservation.SerializeToString(
                deterministic=True
            )
    supply_rows = []
    for supply in supplies.supplies:
        supply.ClearField("counted")
        supply_rows.append(supply.SerializeToString(deterministic=True))
    return {
        "counts": (status.nodes, status.skus, status.positions, status.open_reservations),
        "nodes": sorted(node.SerializeToString(deterministic=True) for node in nodes.nodes),
        "rules": (rules.version, rules.text),
        "supply": sorted(supply_rows),
        "positions": positions,
        "reservations": reservations,
    }


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Which parts of two fingerprints differ, readable."""
    found = []
    for key in before:
        if before[key] == after[key]:
            continue
        if key == "reservations":
            changed = [rid for rid in before[key] if before[key][rid] != after[key].get(rid)]
            found.append(f"reservations {len(changed)} differ, e.g. {changed[:5]!r}")
        elif isinstance(before[key], list):
            found.append(f"{key}: {len(before[key])} entries before, {len(after[key])} after")
        else:
            found.append(f"{key}: {before[key]!r:.200} before, {after[key]!r:.200} after")
    return found


# ------------------------------------------------------------------------------- checks


def check_serving(server: Daemon, fuzzer: Fuzzer) -> None:
    """Health is still SERVING and the log holds no traceback."""
    try:
        response = call(
            server.stubs().channel,
            "/grpc.health.v1.Health/Check",
            health_pb2.HealthCheckRequest(),
            health_pb2.HealthCheckResponse,
        )
        health = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        health = f"health check failed: {error.code().name}"
    if health != "SERVING":
        fuzzer.findings.add("Health/Check", "not SERVING after the fuzz", health, "")
    for where, exception in traceback_summaries(server.log_text()):
        fuzzer.findings.add(where, "Traceback in the server log", exception, "")


def recovered_digest(data_dir: Path, fuzzer: Fuzzer, when: str) -> str | None:
    """`AtpState.digest()` of the data dir recovered the way `serve` does it (None when that
    fails: recorded as a finding)."""
    try:
        return recovered_state(Config(data_dir=data_dir, fsync="always")).digest()
    except Exception as error:
        fuzzer.findings.add("recovery", f"recovery {when} failed", repr(error), "")
        return None


def restart(server: Daemon, fuzzer: Fuzzer, how: str) -> bool:
    """Start the server again on its data dir; False (and a finding) when it cannot."""
    try:
        server.start()
    except AssertionError as error:
        # The exception that stopped the start: the first traceback of this start's log
        # (later ones are teardown noise), else the end of the message.
        failures = traceback_summaries(server.log_text())
        reason = failures[0][1] if failures else str(error)[-300:]
        fuzzer.findings.add("restart", f"no restart after {how}", reason, "")
        server.close()
        return False
    return True


def fuzz_then_restart(
    tmp_path: Path, budget_s: float, stop: Callable[[Daemon], object], how: str
) -> None:
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        channel = server.start().channel
        seed_world(channel)
        fuzzer = Fuzzer(channel)
        fuzzer.run(budget_s)
        check_serving(server, fuzzer)
        before = fingerprint(channel, fuzzer.reservation_ids)
        stop(server)
        digest_at_stop = recovered_digest(data_dir, fuzzer, f"after {how}")
        if restart(server, fuzzer, how):
            after = fingerprint(server.stubs().channel, fuzzer.reservation_ids)
            for difference in differences(before, after):
                fuzzer.findings.add("restart", f"state changed across {how}", difference, "")
            server.terminate()
            digest_after_restart = recovered_digest(data_dir, fuzzer, "after the restart")
            recovered = digest_at_stop is not None and digest_after_restart is not None
            if recovered and digest_at_stop != digest_after_restart:
                fuzzer.findings.add(
                    "restart",
                    "digest changed",
                    f"{digest_at_stop} at the {how}, {digest_after_restart} after the restart",
                    "",
                )
    assert not fuzzer.findings.by_key, fuzzer.findings.report()


def test_fuzzed_requests_then_graceful_restart_keep_the_digest(tmp_path: Path) -> None:
    """Fuzzed requests to every method: no UNKNOWN/INTERNAL, no traceback, SERVING, and a
    SIGTERM + restart gives back the same state and digest."""
    fuzz_then_restart(tmp_path, GRACEFUL_FUZZ_S, Daemon.terminate, "SIGTERM")


def test_fuzzed_requests_then_sigkill_restart_keep_what_was_acknowledged(tmp_path: Path) -> None:
    """Fuzzed requests to every method, then SIGKILL: the restart gives back exactly what
    was acknowledged (fsync=always), the same state and digest."""
    fuzz_then_restart(tmp_path, KILL_FUZZ_S, Daemon.kill, "SIGKILL")
