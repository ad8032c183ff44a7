"""Hostile rule texts over real gRPC: each is refused INVALID_ARGUMENT naming what is wrong, in
bounded work and off the event loop, while other callers keep being answered; the rules in
force stay as they were."""

from __future__ import annotations

import threading

import grpc
import pytest
from service.harness import RPC_TIMEOUT_S, ServerThread, rpc_error

from atpd.core.rules import (
    MAX_RULES_ARRAY_ITEMS,
    MAX_RULES_CHANNELS,
    MAX_RULES_DEPTH,
    MAX_RULES_KEYS,
    MAX_RULES_VALUES,
    RulesError,
    parse_rules,
)
from atpd.v1 import availability_pb2, rules_pb2

from .conftest import Api
from .support import rules_text

# Liveness bound for the concurrent reader, not a speed target.
CONCURRENT_ANSWER_TIMEOUT_S = 10.0


def _dotted_keys(size_bytes: int) -> str:
    """One dotted key of about `size_bytes` (tomllib is quadratic in its parts)."""
    return 'version = "x"\n' + "a" + ".a" * (size_bytes // 2) + " = 1\n"


# (text, fragments the INVALID_ARGUMENT message must contain)
HOSTILE: dict[str, tuple[str, tuple[str, ...]]] = {
    "40 kB of dotted keys": (_dotted_keys(40_000), ("dotted key", f"{MAX_RULES_DEPTH} levels")),
    "dotted keys in an inline table": (
        'version = "x"\nt = { ' + "a" + ".a" * 20_000 + " = 1 }\n",
        ("dotted key",),
    ),
    "deeply nested arrays": (
        'version = "x"\nx = ' + "[" * 5_000 + "]" * 5_000 + "\n",
        ("nested 5000 deep", f"{MAX_RULES_DEPTH} levels"),
    ),
    "deeply nested inline tables": (
        'version = "x"\nx = ' + "{ a = " * 3_000 + "1" + " }" * 3_000 + "\n",
        ("nested 3000 deep",),
    ),
    "nesting through dotted table headers": (
        'version = "x"\n[t.t.t.t.t.t.t.t.t]\nx.y.z = 1\n',
        ("t.t.t.t.t.t.t.t.t.x", "nested more than"),
    ),
    "horizon_hours = inf": (
        rules_text({"policy": "supply = { horizon_hours = inf }"}),
        ("policy.supply.horizon_hours", "inf", "finite"),
    ),
    "horizon_hours = nan": (
        rules_text({"policy": "supply = { horizon_hours = nan }"}),
        ("policy.supply.horizon_hours", "nan", "finite"),
    ),
    "-inf anywhere": (
        rules_text({"channels.web": "buffer = -inf"}),
        ("channels.web.buffer", "-inf", "finite"),
    ),
    "horizon_hours too large": (
        rules_text({"policy": "supply = { horizon_hours = 1e300 }"}),
        ("policy.supply.horizon_hours", "1e+300"),
    ),
    "huge array": (
        rules_text(
            {"policy": "nodes = { tags = [" + ", ".join(["'t'"] * (MAX_RULES_VALUES + 2)) + "] }"}
        ),
        ("list items",),
    ),
    "long array": (
        rules_text(
            {
                "policy": "nodes = { tags = ["
                + ",\n".join(["'t'"] * (MAX_RULES_ARRAY_ITEMS + 1))
                + "] }"
            }
        ),
        ("policy.nodes.tags", f"{MAX_RULES_ARRAY_ITEMS + 1} items"),
    ),
    "too many keys": (
        'version = "x"\n' + "".join(f"k{i} = 1\n" for i in range(MAX_RULES_KEYS + 1)),
        ("keys", f"{MAX_RULES_KEYS} allowed"),
    ),
    "too many channels": (
        rules_text({f"channels.c{i}": "" for i in range(MAX_RULES_CHANNELS + 1)}),
        ("channels", f"{MAX_RULES_CHANNELS} allowed"),
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_rules_text_is_invalid_argument_naming_the_problem(name: str, api: Api) -> None:
    """Each hostile text answers INVALID_ARGUMENT naming what is wrong; the old rules stay."""
    text, fragments = HOSTILE[name]
    before = api.rules.GetRules(rules_pb2.GetRulesRequest(), timeout=RPC_TIMEOUT_S)
    error = rpc_error(
        lambda: api.rules.SetRules(
            rules_pb2.SetRulesRequest(text=text, source="hostile.toml"), timeout=RPC_TIMEOUT_S
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    details = error.details() or ""
    assert "hostile.toml" in details
    for fragment in fragments:
        assert fragment in details, details
    after = api.rules.GetRules(rules_pb2.GetRulesRequest(), timeout=RPC_TIMEOUT_S)
    assert after == before


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_rules_text_is_refused_by_the_parser_too(name: str) -> None:
    """parse_rules (journal replay's path) refuses the same texts with a RulesError."""
    with pytest.raises(RulesError):
        parse_rules(HOSTILE[name][0], "hostile.toml")


def test_availability_keeps_answering_while_hostile_rules_are_refused(
    api: Api, server: ServerThread
) -> None:
    """GetAvailability calls made while hostile SetRules calls are in flight are answered."""
    hostile = [HOSTILE[name][0] for name in ("40 kB of dotted keys", "huge array", "long array")]
    done = threading.Event()
    refused: list[grpc.StatusCode] = []

    def send_hostile() -> None:
        try:
            for _ in range(3):
                for text in hostile:
                    try:
                        api.rules.SetRules(
                            rules_pb2.SetRulesRequest(text=text), timeout=RPC_TIMEOUT_S
                        )
                    except grpc.RpcError as error:
                        refused.append(error.code())
        finally:
            done.set()

    sender = threading.Thread(target=send_hostile)
    sender.start()
    reader = Api.on(server.channel())
    answered = 0
    try:
        while not done.is_set() or answered == 0:
            reader.core.availability.GetAvailability(
                availability_pb2.GetAvailabilityRequest(skus=["BAG-1"]),
                timeout=CONCURRENT_ANSWER_TIMEOUT_S,
            )
            answered += 1
    finally:
        sender.join(RPC_TIMEOUT_S)
    assert answered > 0
    assert refused == [grpc.StatusCode.INVALID_ARGUMENT] * (3 * len(hostile))


def test_a_large_legitimate_rule_set_is_accepted(api: Api) -> None:
    """Rule sets within the bounds (many protections, deep channel.segment overrides) pass."""
    protections = tuple(
        f'name = "p{i}"\nskus = ["SKU-{i}"]\nnodes = {{ kinds = ["WAREHOUSE"] }}\nunits = 1\n'
        'for = ["*/vip"]'
        for i in range(200)
    )
    text = rules_text(
        {"channels.web.segments.vip": "safety = { kinds = { STORE = 0 } }\nbuffer = 1"},
        protections,
        version="big",
    )
    response = api.rules.SetRules(rules_pb2.SetRulesRequest(text=text), timeout=RPC_TIMEOUT_S)
    assert response.version == "big"
