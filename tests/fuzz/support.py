"""The fuzz suite's plumbing: the catalogue of every gRPC method the server offers, raw-byte
calls over a real channel, the record of what went wrong, and a fingerprint of the whole
observable state read back over gRPC."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

import atpd.v1

# Statuses a server must never answer: they mean an exception escaped a handler.
FORBIDDEN = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
# Issue 9 item 5: every error message is bounded (the value it echoes is truncated).
MAX_DETAILS_BYTES = 1024
UNARY_TIMEOUT_S = 10.0
# Server streams that never end by themselves (Watch) are cut by the client at this deadline.
SERVER_STREAM_TIMEOUT_S = 0.3
# At most this many messages are read from one server stream.
MAX_STREAM_MESSAGES = 50
REPR_CHARS = 300
DETAILS_CHARS = 300


@dataclass(frozen=True)
class Method:
    """One RPC: its path and descriptors."""

    path: str
    descriptor: MethodDescriptor

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def request_descriptor(self) -> Descriptor:
        return self.descriptor.input_type

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)


def all_methods() -> list[Method]:
    """Every method of every service in atpd.v1, plus the health check."""
    files = [health_pb2.DESCRIPTOR]
    for module_info in pkgutil.iter_modules(atpd.v1.__path__):
        if module_info.name.endswith("_pb2"):
            module = importlib.import_module(f"atpd.v1.{module_info.name}")
            files.append(module.DESCRIPTOR)
    methods: list[Method] = []
    for file_descriptor in files:
        for service in file_descriptor.services_by_name.values():
            for method in service.methods:
                methods.append(Method(f"/{service.full_name}/{method.name}", method))
    return sorted(methods, key=lambda method: method.path)


def message_class(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def short_repr(value: object, limit: int = REPR_CHARS) -> str:
    if isinstance(value, Message):
        text = f"{value.DESCRIPTOR.name}({text_format.MessageToString(value, as_one_line=True)})"
    elif isinstance(value, list):
        text = "[" + ", ".join(short_repr(item, limit) for item in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# -------------------------------------------------------------------------------- findings


@dataclass
class Finding:
    method: str
    problem: str  # e.g. "UNKNOWN", "details > 1 kB", "Traceback"
    details: str
    example: str  # the first input that produced it
    count: int = 1


@dataclass
class Findings:
    """Distinct failures (method, problem, details without digits), first example kept."""

    by_key: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    calls: int = 0

    def add(self, method: str, problem: str, details: str, example: object) -> None:
        details = details if len(details) <= DETAILS_CHARS else details[:DETAILS_CHARS] + "..."
        key = (method, problem, re.sub(r"\d+", "N", details)[:120])
        found = self.by_key.get(key)
        if found is None:
            self.by_key[key] = Finding(method, problem, details, short_repr(example))
        else:
            found.count += 1

    def report(self) -> str:
        """One entry per kind of failure, with the methods it hit and a first example."""
        groups: dict[tuple[str, str], list[Finding]] = {}
        for found in self.by_key.values():
            problem = re.sub(r"\d+", "N", found.problem)
            details = re.sub(r"type '[^']*'", "type '...'", found.details)
            details = re.sub(r"\d+", "N", re.sub(r"^\S+: '", "FIELD: '", details))[:100]
            groups.setdefault((problem, details), []).append(found)
        lines = [
            f"{len(self.by_key)} distinct failure(s) ({len(groups)} kinds) in {self.calls} calls:"
        ]
        for (problem, _), group in sorted(groups.items()):
            first = group[0]
            methods = sorted({found.method for found in group})
            lines.append(
                f"- {problem} x{sum(found.count for found in group)} in {', '.join(methods)}\n"
                f"    details: {first.details!r}\n"
                f"    first input ({first.method}): {first.example}"
            )
        return "\n".join(lines)


def check_error(
    findings: Findings, method: Method, error: grpc.RpcError, example: object, *, cut: bool
) -> None:
    """Record what is wrong with an error status. `cut`: the client set a short deadline."""
    code = error.code()
    details = error.details() or ""
    if code in FORBIDDEN:
        findings.add(method.name, code.name, details, example)
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED and not cut:
        findings.add(method.name, "DEADLINE_EXCEEDED (server stalled)", details, example)
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata" in details.lower():
        # The error did not fit in the trailers: not a genuine limit (issue 9 item 5).
        findings.add(method.name, "RESOURCE_EXHAUSTED (trailers)", details, example)
    if len(details.encode()) > MAX_DETAILS_BYTES:
        findings.add(
            method.name, f"details of {len(details.encode())} bytes > 1 kB", details, example
        )


# ----------------------------------------------------------------------------------- calls


def call_raw(
    channel: grpc.Channel,
    findings: Findings,
    method: Method,
    payload: bytes | Sequence[bytes],
    example: object,
) -> list[bytes]:
    """Send raw bytes (a sequence of messages for a client stream); return the raw replies.
    Errors are checked and recorded, never raised."""
    findings.calls += 1
    replies: list[bytes] = []
    cut = method.server_streaming
    try:
        if method.client_streaming:
            assert not isinstance(payload, bytes)
            messages = list(payload)
            if method.server_streaming:
                # Bidirectional (ReplicationService.Follow, CommandService.Submit): the
                # messages, then what comes back until the short deadline or MAX_STREAM_MESSAGES.
                stream_stream = channel.stream_stream(
                    method.path, request_serializer=None, response_deserializer=None
                )
                call = stream_stream(iter(messages), timeout=SERVER_STREAM_TIMEOUT_S)
                try:
                    for reply in call:
                        replies.append(reply)
                        if len(replies) >= MAX_STREAM_MESSAGES:
                            break
                finally:
                    call.cancel()  # type: ignore[no-untyped-call]
                return replies
            stream_unary = channel.stream_unary(
                method.path, request_serializer=None, response_deserializer=None
            )
            replies.append(stream_unary(iter(messages), timeout=UNARY_TIMEOUT_S))
        elif method.server_streaming:
            assert isinstance(payload, bytes)
            unary_stream = channel.unary_stream(
                method.path, request_serializer=None, response_deserializer=None
            )
            stream = unary_stream(payload, timeout=SERVER_STREAM_TIMEOUT_S)
            try:
                for reply in stream:
                    replies.append(reply)
                    if len(replies) >= MAX_STREAM_MESSAGES:
                        break
            finally:
                # grpc-stubs leaves the call iterator's cancel() unannotated.
                stream.cancel()  # type: ignore[no-untyped-call]
        else:
            assert isinstance(payload, bytes)
            unary_unary = channel.unary_unary(
                method.path, request_serializer=None, response_deserializer=None
            )
            replies.append(unary_unary(payload, timeout=UNARY_TIMEOUT_S))
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        if error.code() != grpc.StatusCode.CANCELLED:  # our own cancel above
            check_error(findings, method, error, example, cut=cut)
    return replies


def call(channel: grpc.Channel, path: str, request: Message, response_type: type[Message]) -> Any:
    """A typed unary call that must succeed (used to seed and read the state)."""
    unary_unary = channel.unary_unary(
        path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString,
    )
    return unary_unary(request, timeout=UNARY_TIMEOUT_S)


def traceback_summaries(log: str) -> list[tuple[str, str]]:
    """For each Python traceback in the log: the line naming the exception, plus the call
    the server was handling when it shows (grpc logs the method before the traceback)."""
    summaries: list[tuple[str, str]] = []
    lines = log.splitlines()
    for index, text in enumerate(lines):
        if not text.startswith("Traceback"):
            continue
        context = lines[index - 1].strip() if index else ""
        method = re.search(r"servicer method \[([^\]]+)\]", context)
        where = method.group(1) if method else re.sub(r"^[\d\-: ,]+", "", context)[:160]
        for following in lines[index + 1 :]:
            if following and not following.startswith((" ", "\t", "Traceback")):
                summaries.append((where, following.strip()))
                break
    return summaries


def iter_stream(
    channel: grpc.Channel, path: str, request: Message, response_type: type[Message]
) -> Iterator[Any]:
    unary_stream = channel.unary_stream(
        path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString,
    )
    yield from unary_stream(request, timeout=UNARY_TIMEOUT_S)
