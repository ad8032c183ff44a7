"""Who may call what: bearer tokens and client certificates to principals, roles per method,
node scopes, per-principal limits, and the audit of admin and loader actions.

`AccessControl.wrap(method, handler)` is applied by `transport.CallGuard` to every handler at
registration, with the method's `MethodPolicy` computed once then; per call the cost is one
metadata scan, one SHA-256 of the presented secret, a dict lookup and a set membership test.

- **Authentication.** `authorization: Bearer <secret>` is looked up by the secret's SHA-256 in
  the table built from the tokens file (reloaded when the file changes, checked at most every
  `auth_reload_interval_s`, or at once on SIGHUP; a bad new file keeps the previous table and
  is logged). With mutual TLS and no token, the client certificate's subject may map to a role
  (`certificate_roles`). Missing, wrong, expired or revoked: UNAUTHENTICATED, the same message
  for all (the server log says which).
- **Roles.** `DEFAULT_METHOD_ROLES` below, overridable per method (`method_roles`). Health is
  open; reflection needs any principal unless `reflection_requires_auth = false`.
- **Scopes.** A principal with nodes or geo prefixes may only name nodes inside them in the
  methods that act on nodes (Reserve lines, SetStock, AdjustStock, supply, BulkLoad rows,
  Confirm/Fulfil/Release/GetReservation through the reservation's lines). Whole-network reads
  (GetAvailability, Watch, ListNodes, GetStock, GetRules, ListSupply, ExportPositions) are not
  narrowed: a sales associate may tell a customer which other store has the item. Methods that
  act on the whole network (rules, nodes, snapshot, status) are refused to scoped principals.
- **Channels.** A principal with channels may only Reserve for them (and act on reservations
  made for them).
- The caller's principal is in `CURRENT_PRINCIPAL` (a contextvar) while its servicer runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from atpd.core.text import bounded
from atpd.service.audit import AuditLog
from atpd.service.tokens import (
    ROLES,
    SCOPED_ROLES,
    TokenEntry,
    TokenFileError,
    check_geo_prefix,
    check_role,
    hash_secret,
    read_tokens,
)

log = logging.getLogger(__name__)

PACKAGE = "atpd.v1"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
UNAUTHENTICATED_MESSAGE = "missing, invalid or expired credentials"
NO_CREDENTIALS_MESSAGE = "credentials required: send `authorization: Bearer <token>`"
BEARER = "bearer "

_READS = (
    "AvailabilityService/GetAvailability",
    "InventoryService/GetStock",
    "InventoryService/ListNodes",
    "ReservationService/GetReservation",
    "WatchService/Watch",
    "RulesService/GetRules",
)
_RESERVATION_WRITES = (
    "ReservationService/Reserve",
    "ReservationService/Confirm",
    "ReservationService/Release",
    "ReservationService/Fulfil",
)
_LOADER_WRITES = (
    "InventoryService/SetStock",
    "InventoryService/AdjustStock",
    "FeedService/BulkLoad",
    "SupplyService/AddSupply",
    "SupplyService/ReceiveSupply",
    "SupplyService/CancelSupply",
)
_ADMIN_ONLY = (
    "RulesService/SetRules",
    "InventoryService/UpsertNode",
    "AdminService/Snapshot",
    "AdminService/GetStatus",
)
_BULK_READS = ("FeedService/ExportPositions", "SupplyService/ListSupply")


def _default_method_roles() -> dict[str, frozenset[str]]:
    """Method ("Service/Method") -> roles. admin may call everything; checkout and pos also
    read; pos may AdjustStock (a return or a count correction at its own store) within scope."""
    table: dict[str, set[str]] = {}

    def allow(methods: Iterable[str], *roles: str) -> None:
        for method in methods:
            table.setdefault(method, set()).update(roles)

    allow(_READS, "reader", "checkout", "pos", "loader", "admin")
    allow(_BULK_READS, "reader", "checkout", "loader", "admin")
    allow(_RESERVATION_WRITES, "checkout", "pos", "admin")
    allow(_LOADER_WRITES, "loader", "admin")
    allow(("InventoryService/AdjustStock",), "pos")
    allow(_ADMIN_ONLY, "admin")
    return {method: frozenset(roles) for method, roles in table.items()}


DEFAULT_METHOD_ROLES: Mapping[str, frozenset[str]] = _default_method_roles()
# Admin and loader actions: every call is audited, whatever its outcome.
AUDITED_METHODS = frozenset(_LOADER_WRITES + _ADMIN_ONLY[:3])
# Methods that act on the whole network: refused to a principal limited to some nodes.
GLOBAL_WRITES = frozenset(_ADMIN_ONLY)


class AuthConfigError(ValueError):
    """`method_roles` or `certificate_roles` cannot be used; the message names the entry."""


def method_roles_from_config(overrides: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    table = dict(DEFAULT_METHOD_ROLES)
    for method, roles in overrides.items():
        if method not in table:
            raise AuthConfigError(
                f"method_roles: unknown method {method!r} (e.g. 'InventoryService/AdjustStock'; "
                f"known: {', '.join(sorted(table))})"
            )
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthConfigError(f"method_roles.{method}: expected a list of role names")
        for role in roles:
            if role not in ROLES:
                raise AuthConfigError(
                    f"method_roles.{method}: {role!r} is not one of {', '.join(ROLES)}"
                )
        table[method] = frozenset(roles)
    return table


# ---------------------------------------------------------------------------- principals


@dataclass(frozen=True, slots=True)
class Scope:
    """Nodes a principal may act on: these node ids, and nodes under these geo prefixes."""

    node_ids: frozenset[str]
    geo_prefixes: tuple[tuple[str, ...], ...]

    def contains(self, node_id: str, geo_path: tuple[str, ...] | None) -> bool:
        if node_id in self.node_ids:
            return True
        if geo_path is None:
            return False
        return any(geo_path[: len(prefix)] == prefix for prefix in self.geo_prefixes)

    def describe(self) -> str:
        parts = sorted(self.node_ids) + ["/".join(p) + "/*" for p in self.geo_prefixes]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    source: str  # "token", "certificate" or "anonymous" (authentication off)
    scope: Scope | None = None
    channels: frozenset[str] | None = None  # None: any channel
    expires_at_ms: int | None = None


ANONYMOUS = Principal("anonymous", "admin", "anonymous")
CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "atpd_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the call being served (None outside a call or with access off)."""
    return CURRENT_PRINCIPAL.get()


def _scope(nodes: Iterable[str], geo_prefixes: Iterable[str]) -> Scope | None:
    node_ids = frozenset(nodes)
    prefixes = tuple(tuple(p.split("/")) for p in geo_prefixes)
    if not node_ids and not prefixes:
        return None
    return Scope(node_ids, prefixes)


def principal_of_entry(entry: TokenEntry) -> Principal:
    return Principal(
        entry.name,
        entry.role,
        "token",
        _scope(entry.nodes, entry.geo_prefixes),
        frozenset(entry.channels) if entry.channels else None,
        entry.expires_ms,
    )


def certificate_principals(table: Mapping[str, Any]) -> dict[str, Principal]:
    """`certificate_roles`: subject -> role, or subject -> {role, nodes, geo_prefixes,
    channels}. The subject is matched against the client certificate's subject as gRPC
    reports it (e.g. "CN=till-1,O=Maison") and, failing that, its common name."""
    principals: dict[str, Principal] = {}
    for subject, value in table.items():
        where = f"certificate_roles.{subject!r}"
        spec: Mapping[str, Any] = {"role": value} if isinstance(value, str) else value
        if not isinstance(spec, Mapping):
            raise AuthConfigError(f"{where}: expected a role name or a table")
        unknown = set(spec) - {"role", "nodes", "geo_prefixes", "channels"}
        if unknown:
            raise AuthConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        try:
            role = check_role(spec.get("role"), f"{where}.role")
            lists = {}
            for key in ("nodes", "geo_prefixes", "channels"):
                items = spec.get(key, [])
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise AuthConfigError(f"{where}.{key}: expected a list of strings")
                lists[key] = items
            for prefix in lists["geo_prefixes"]:
                check_geo_prefix(prefix, f"{where}.geo_prefixes")
        except TokenFileError as error:
            raise AuthConfigError(str(error)) from None
        if role in SCOPED_ROLES and not (lists["nodes"] or lists["geo_prefixes"]):
            raise AuthConfigError(f"{where}: role {role!r} needs nodes or geo_prefixes")
        principals[subject] = Principal(
            f"cert:{subject}",
            role,
            "certificate",
            _scope(lists["nodes"], lists["geo_prefixes"]),
            frozenset(lists["channels"]) or None,
        )
    return principals


class TokenTable:
    """The tokens file as digest -> principal, reloaded when the file changes."""

    def __init__(
        self,
        path: Path | None,
        reload_interval_s: float,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.reload_interval_s = reload_interval_s
        self.clock_s = clock_s
        self.by_digest: dict[str, tuple[str, Principal]] = {}
        self.reloads = 0
        self._stamp: tuple[int, int, int] | None = None
        self._checked_s = clock_s()
        if path is not None:
            self._load(path)  # a bad file at start refuses the start (TokenFileError)

    def _file_stamp(self, path: Path) -> tuple[int, int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _load(self, path: Path) -> None:
        stamp = self._file_stamp(path)
        entries = read_tokens(path)
        self.by_digest = {
            entry.sha256: (entry.sha256, principal_of_entry(entry))
            for entry in entries
            if entry.revoked_ms is None
        }
        self._stamp = stamp
        self.reloads += 1

    def reload_now(self) -> bool:
        """Re-read the file (SIGHUP); a bad file keeps the previous table. Answers success."""
        if self.path is None:
            return True
        self._checked_s = self.clock_s()
        try:
            self._load(self.path)
        except TokenFileError as error:
            # The stamp is remembered so a broken file is reported once, not at every check.
            self._stamp = self._file_stamp(self.path)
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", error)
            return False
        log.info("tokens reloaded from %s: %d active", self.path, len(self.by_digest))
        return True

    def maybe_reload(self) -> None:
        """Called per call: looks at the file at most once per reload_interval_s."""
        now_s = self.clock_s()
        if self.path is None or now_s - self._checked_s < self.reload_interval_s:
            return
        self._checked_s = now_s
        if self._file_stamp(self.path) != self._stamp:
            self.reload_now()

    def lookup(self, secret: str) -> Principal | None:
        digest = hash_secret(secret)
        found = self.by_digest.get(digest)
        if found is None:
            return None
        # The dict found it by this digest already; compare_digest keeps a future change to
        # the lookup (a prefix index, say) from turning into a timing oracle.
        stored, principal = found
        return principal if hmac.compare_digest(stored, digest) else None


# ---------------------------------------------------------------------------- node lookups


class StateLookup(Protocol):
    """What scope checks need to know about the state (read on the writer's loop)."""

    def node_geo_path(self, node_id: str) -> tuple[str, ...] | None: ...

    def reservation_nodes(self, reservation_id: str) -> tuple[tuple[str, ...], str] | None:
        """The reservation's node ids and channel, None when unknown."""

    def supply_node(self, supply_id: str) -> str | None: ...


class EngineLookup:
    """StateLookup over the engine's current state (the state object is replaced at
    recovery, so it is read through the engine each time)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def node_geo_path(self, node_id: str) -> tuple[str, ...] | None:
        state = self.engine.state
        index = state.node_ids.get(node_id)
        if index < 0:
            return None
        path: tuple[str, ...] = state.nodes[index].geo_path
        return path

    def reservation_nodes(self, reservation_id: str) -> tuple[tuple[str, ...], str] | None:
        reservation = self.engine.state.reservations.get(reservation_id)
        if reservation is None:
            return None
        return tuple(line.node_id for line in reservation.lines), reservation.channel

    def supply_node(self, supply_id: str) -> str | None:
        book = self.engine.state.supply
        supply = book.by_id.get(supply_id) or book.closed.get(supply_id)
        return None if supply is None else str(supply.node_id)


# What a request names, per method: node ids (and, for reservation ids, the reservation's
# channel). Each answers () for requests that name none, which the servicer then refuses.
NodesOf = Callable[[Any, StateLookup], tuple[tuple[str, ...], str | None]]


def _by_reservation(request: Any, lookup: StateLookup) -> tuple[tuple[str, ...], str | None]:
    found = lookup.reservation_nodes(request.reservation_id)
    return ((), None) if found is None else found


def _by_supply(request: Any, lookup: StateLookup) -> tuple[tuple[str, ...], str | None]:
    node_id = lookup.supply_node(request.supply_id)
    return ((node_id,) if node_id is not None else ()), None


NODES_OF: dict[str, NodesOf] = {
    "ReservationService/Reserve": lambda r, _: (
        tuple(line.node_id for line in r.lines),
        r.channel,
    ),
    "ReservationService/Confirm": _by_reservation,
    "ReservationService/Release": _by_reservation,
    "ReservationService/Fulfil": _by_reservation,
    "ReservationService/GetReservation": _by_reservation,
    "InventoryService/SetStock": lambda r, _: ((r.node_id,), None),
    "InventoryService/AdjustStock": lambda r, _: ((r.node_id,), None),
    "SupplyService/AddSupply": lambda r, _: ((r.node_id,), None),
    "SupplyService/ReceiveSupply": _by_supply,
    "SupplyService/CancelSupply": _by_supply,
}


def bulk_load_nodes(message: Any) -> tuple[str, ...]:
    """Node ids a BulkLoad message names (the FULL header's scope, a chunk's node column)."""
    part = message.WhichOneof("part")
    if part == "header":
        return tuple(message.header.node_ids)
    if part == "chunk":
        return tuple(message.chunk.node_ids)
    return ()


# ---------------------------------------------------------------------------- audit summaries


def _summary(method: str, request: Any, response: Any) -> dict[str, Any]:
    """What an audited call asked and, if it succeeded, what came of it."""
    summary: dict[str, Any] = {}
    if request is None:
        pass
    elif method == "RulesService/SetRules":
        summary = {"source": request.source, "text_chars": len(request.text)}
        if response is not None:
            summary["version"] = response.version
    elif method == "InventoryService/UpsertNode":
        node = request.node
        summary = {"node_id": node.node_id, "geo_path": node.geo_path, "enabled": node.enabled}
        summary["kind"] = int(node.kind)
    elif method == "InventoryService/SetStock":
        summary = {"sku": request.sku, "node_id": request.node_id, "on_hand": request.on_hand}
        summary["source_sequence"] = request.source_sequence
    elif method == "InventoryService/AdjustStock":
        summary = {"sku": request.sku, "node_id": request.node_id, "delta": request.delta}
    elif method == "SupplyService/AddSupply":
        summary = {"supply_id": request.supply_id, "sku": request.sku, "node_id": request.node_id}
        summary["quantity"] = request.quantity
    elif method in ("SupplyService/ReceiveSupply", "SupplyService/CancelSupply"):
        summary = {"supply_id": request.supply_id}
        if method.endswith("ReceiveSupply") and request.HasField("quantity"):
            summary["quantity"] = request.quantity
    if method == "FeedService/BulkLoad" and response is not None:
        summary = {"load_id": response.load_id, "mode": int(response.mode), "rows": response.rows}
        summary["chunks"] = response.chunks
    elif method == "AdminService/Snapshot" and response is not None:
        summary = {
            field.name: value
            for field, value in response.ListFields()
            if isinstance(value, int | str | float)
        }
    if response is not None and hasattr(response, "outcome"):
        summary["result"] = int(response.outcome)
    return summary


# ---------------------------------------------------------------------------- the gate


@dataclass(frozen=True, slots=True)
class MethodPolicy:
    method: str  # "Service/Method"
    roles: frozenset[str]
    open: bool  # health: no credentials needed
    any_principal: bool  # reflection: any authenticated principal
    nodes_of: NodesOf | None
    global_write: bool
    audited: bool
    watch: bool


@dataclass
class AccessSettings:
    authenticate: bool
    tokens: TokenTable
    certificates: dict[str, Principal] = field(default_factory=dict)
    method_roles: Mapping[str, frozenset[str]] = field(default_factory=lambda: DEFAULT_METHOD_ROLES)
    reflection_requires_auth: bool = True
    max_inflight_per_principal: int = 256
    max_watch_subscribers_per_principal: int = 16
    audit: AuditLog | None = None


class Refused(Exception):
    """A call refused before its servicer runs: the status and message to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _peer_subject(context: Any) -> list[str]:
    """The client certificate's subject and common name, as gRPC's auth context has them."""
    auth = context.auth_context()
    names: list[str] = []
    for key in ("x509_subject", "x509_common_name"):
        for value in auth.get(key, ()):
            names.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return names


class AccessControl:
    """Builds the gated form of each handler; holds per-principal counters."""

    def __init__(
        self,
        settings: AccessSettings,
        lookup: StateLookup,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.settings = settings
        self.lookup = lookup
        self.clock_ms = clock_ms
        self.inflight: dict[str, int] = {}
        self.watching: dict[str, int] = {}
        self.denied_log = _rate_limited(log)

    # -- per method, at registration

    def policy(self, full_method: str) -> MethodPolicy:
        service, _, name = full_method.lstrip("/").partition("/")
        short_service = service.removeprefix(PACKAGE + ".")
        method = f"{short_service}/{name}"
        open_call = service == HEALTH_SERVICE or not self.settings.authenticate
        reflection = service in REFLECTION_SERVICES
        if reflection and not self.settings.reflection_requires_auth:
            open_call = True
        return MethodPolicy(
            method=method,
            roles=self.settings.method_roles.get(method, frozenset()),
            open=open_call,
            any_principal=reflection,
            nodes_of=NODES_OF.get(method),
            global_write=method in GLOBAL_WRITES,
            audited=self.settings.audit is not None and method in AUDITED_METHODS,
            watch=method == "WatchService/Watch",
        )

    # -- per call

    def authenticate(self, context: Any) -> Principal:
        settings = self.settings
        settings.tokens.maybe_reload()
        secret: str | None = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                if isinstance(value, str) and value[:7].lower() == BEARER:
                    secret = value[7:].strip()
                else:
                    raise Refused(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
                break
        if secret is not None:
            principal = settings.tokens.lookup(secret)
            if principal is None:
                self.denied_log.log(
                    logging.WARNING, "unknown token", f"unknown token from {context.peer()}"
                )
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            expires = principal.expires_at_ms
            if expires is not None and self.clock_ms() >= expires:
                self.denied_log.log(
                    logging.WARNING,
                    f"expired {principal.name}",
                    f"expired token {principal.name!r} used from {context.peer()}",
                )
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            return principal
        if settings.certificates:
            for subject in _peer_subject(context):
                principal = settings.certificates.get(subject)
                if principal is not None:
                    return principal
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, NO_CREDENTIALS_MESSAGE)

    def authorize(self, policy: MethodPolicy, principal: Principal, request: Any) -> None:
        if policy.any_principal:
            return
        if principal.role not in policy.roles:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{policy.method}: role {principal.role!r} (principal {principal.name!r}) may "
                f"not call it; allowed roles: {', '.join(sorted(policy.roles)) or 'none'}",
            )
        scope = principal.scope
        if scope is not None and policy.global_write:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{policy.method}: role {principal.role!r} (principal {principal.name!r}) is "
                "limited to some nodes and this method acts on the whole network",
            )
        if policy.nodes_of is None or (scope is None and principal.channels is None):
            return
        if request is None or not hasattr(request, "DESCRIPTOR"):
            return  # undecodable: the transport answers INVALID_ARGUMENT
        node_ids, channel = policy.nodes_of(request, self.lookup)
        if scope is not None:
            self.check_nodes(policy, principal, node_ids)
        if (
            principal.channels is not None
            and channel is not None
            and channel not in principal.channels
        ):
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{policy.method}: role {principal.role!r} (principal {principal.name!r}) "
                f"may not act for channel {channel!r}; its channels: "
                f"{', '.join(sorted(principal.channels))}",
            )

    def check_nodes(
        self, policy: MethodPolicy, principal: Principal, node_ids: Iterable[str]
    ) -> None:
        scope = principal.scope
        assert scope is not None
        node_geo_path = self.lookup.node_geo_path
        for node_id in node_ids:
            if node_id in scope.node_ids:
                continue
            if not scope.contains(node_id, node_geo_path(node_id)):
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{policy.method}: role {principal.role!r} (principal {principal.name!r}) "
                    f"may not act on node {node_id!r}; its scope: {scope.describe()}",
                )

    def acquire(self, policy: MethodPolicy, principal: Principal) -> None:
        if principal.source == "anonymous":
            return
        settings = self.settings
        if policy.watch:
            held = self.watching.get(principal.name, 0)
            if held >= settings.max_watch_subscribers_per_principal:
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"max_watch_subscribers_per_principal: principal {principal.name!r} holds "
                    f"{held} Watch streams already; close one or share it",
                )
            self.watching[principal.name] = held + 1
            return
        held = self.inflight.get(principal.name, 0)
        if held >= settings.max_inflight_per_principal:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"max_inflight_per_principal: principal {principal.name!r} has {held} calls in "
                "flight already; wait for some to finish",
            )
        self.inflight[principal.name] = held + 1

    def release(self, policy: MethodPolicy, principal: Principal) -> None:
        if principal.source == "anonymous":
            return
        counters = self.watching if policy.watch else self.inflight
        left = counters[principal.name] - 1
        assert left >= 0
        if left:
            counters[principal.name] = left
        else:
            del counters[principal.name]

    def audit(
        self,
        policy: MethodPolicy,
        principal: Principal | None,
        context: Any,
        outcome: str,
        request: Any,
        response: Any,
        detail: str = "",
    ) -> None:
        audit = self.settings.audit
        if audit is None:
            return
        try:
            # Streams have no single request (None): their summary comes from the response.
            undecodable = request is not None and not hasattr(request, "DESCRIPTOR")
            summary = {} if undecodable else _summary(policy.method, request, response)
        except Exception:  # a summary must never turn a served call into an error
            log.exception("audit summary of %s failed", policy.method)
            summary = {}
        audit.record(
            principal=principal.name if principal is not None else "",
            role=principal.role if principal is not None else "",
            peer=str(context.peer()),
            method=policy.method,
            outcome=outcome,
            summary=summary,
            detail=detail,
        )

    # -- wrapping

    def wrap(self, full_method: str, handler: Any) -> Any:
        """The handler with the access checks of its method in front of its behaviour."""
        policy = self.policy(full_method)
        if policy.open and not policy.audited:
            return handler
        replaced: dict[str, Any] = {}
        if handler.unary_unary is not None:
            replaced["unary_unary"] = self._unary(policy, handler.unary_unary)
        elif handler.unary_stream is not None:
            replaced["unary_stream"] = self._unary_stream(policy, handler.unary_stream)
        elif handler.stream_unary is not None:
            replaced["stream_unary"] = self._stream_unary(policy, handler.stream_unary)
        elif handler.stream_stream is not None:
            replaced["stream_stream"] = self._stream_stream(policy, handler.stream_stream)
        return handler._replace(**replaced)

    async def _admit(self, policy: MethodPolicy, context: Any, request: Any) -> Principal:
        """Authenticate, authorize and count the call in; aborts the call when refused."""
        principal: Principal | None = None
        try:
            principal = ANONYMOUS if policy.open else self.authenticate(context)
            self.authorize(policy, principal, request)
            self.acquire(policy, principal)
        except Refused as refusal:
            if refusal.code is grpc.StatusCode.PERMISSION_DENIED:
                # Every refusal for permission is audited, whatever the method.
                self.denied_log.log(logging.WARNING, policy.method, refusal.message)
                self.audit(
                    policy, principal, context, refusal.code.name, request, None, refusal.message
                )
            elif policy.audited and principal is not None:
                self.audit(
                    policy, principal, context, refusal.code.name, request, None, refusal.message
                )
            await context.abort(refusal.code, bounded(refusal.message))
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            # A bug in the checks must answer INTERNAL, never UNKNOWN, and never let a call in.
            log.exception("access check of %s failed", policy.method)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error checking access to {policy.method} ({type(error).__name__})",
            )
        assert principal is not None
        return principal

    def _finish(
        self,
        policy: MethodPolicy,
        principal: Principal,
        context: Any,
        request: Any,
        response: Any,
        error: BaseException | None,
    ) -> None:
        self.release(policy, principal)
        if not policy.audited:
            return
        if error is None:
            self.audit(policy, principal, context, "OK", request, response)
        else:
            code = _code_of(context, error)
            detail = _details_of(context)
            self.audit(policy, principal, context, code, request, None, detail)

    def _unary(self, policy: MethodPolicy, behaviour: Any) -> Any:
        behaviour = _as_async(behaviour)

        async def gated(request: Any, context: Any) -> Any:
            principal = await self._admit(policy, context, request)
            token = CURRENT_PRINCIPAL.set(principal)
            try:
                response = await behaviour(request, context)
            except BaseException as error:
                self._finish(policy, principal, context, request, None, error)
                raise
            finally:
                CURRENT_PRINCIPAL.reset(token)
            self._finish(policy, principal, context, request, response, None)
            return response

        return gated

    def _unary_stream(self, policy: MethodPolicy, behaviour: Any) -> Any:
        if inspect.isasyncgenfunction(behaviour):

            async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
                principal = await self._admit(policy, context, request)
                token = CURRENT_PRINCIPAL.set(principal)
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as error:
                    self._finish(policy, principal, context, request, None, error)
                    raise
                finally:
                    CURRENT_PRINCIPAL.reset(token)
                self._finish(policy, principal, context, request, None, None)

            return generate
        return self._unary(policy, behaviour)

    def _checked_stream(
        self,
        policy: MethodPolicy,
        principal: Principal,
        requests: AsyncIterator[Any],
        context: Any,
    ) -> AsyncIterator[Any]:
        """The request stream, each message's nodes checked against a scoped principal. A
        message outside the scope ends the call there (abort inside the iterator, as the
        transport does for an undecodable message), before the servicer sees it."""
        if principal.scope is None or policy.method != "FeedService/BulkLoad":
            return requests

        async def checked() -> AsyncIterator[Any]:
            async for message in requests:
                if hasattr(message, "DESCRIPTOR"):
                    try:
                        self.check_nodes(policy, principal, bulk_load_nodes(message))
                    except Refused as refusal:
                        self.denied_log.log(logging.WARNING, policy.method, refusal.message)
                        self.audit(
                            policy,
                            principal,
                            context,
                            refusal.code.name,
                            None,
                            None,
                            refusal.message,
                        )
                        await context.abort(refusal.code, bounded(refusal.message))
                yield message

        return checked()

    def _stream_unary(self, policy: MethodPolicy, behaviour: Any) -> Any:
        behaviour = _as_async(behaviour)

        async def gated(requests: AsyncIterator[Any], context: Any) -> Any:
            principal = await self._admit(policy, context, None)
            token = CURRENT_PRINCIPAL.set(principal)
            try:
                response = await behaviour(
                    self._checked_stream(policy, principal, requests, context), context
                )
            except BaseException as error:
                self._finish(policy, principal, context, None, None, error)
                raise
            finally:
                CURRENT_PRINCIPAL.reset(token)
            self._finish(policy, principal, context, None, response, None)
            return response

        return gated

    def _stream_stream(self, policy: MethodPolicy, behaviour: Any) -> Any:
        # No stream-stream method of ours carries node names; only the gate in front.
        return self._stream_unary(policy, behaviour)


def _code_of(context: Any, error: BaseException) -> str:
    """The status a call that raised `error` ended with, as a name."""
    if isinstance(error, Refused):
        return error.code.name
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            return code.name
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
        return "ABORTED"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


def _details_of(context: Any) -> str:
    details = context.details() if hasattr(context, "details") else None
    return details if isinstance(details, str) else ""


def _as_async(behaviour: Any) -> Any:
    if inspect.iscoroutinefunction(behaviour):
        return behaviour

    async def call(request: Any, context: Any) -> Any:
        return behaviour(request, context)

    return call


def _rate_limited(logger: logging.Logger) -> Any:
    from atpd.service.transport import RateLimitedLog

    return RateLimitedLog(logger)
