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

Principals and the token table are in `principals.py`; what each method acts on (its nodes, its
audit summary) in `access_lookup.py`; this module is the gate itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from atpd.core.text import bounded
from atpd.service.access_lookup import (
    NODES_OF,
    NodesOf,
    StateLookup,
    audit_summary,
    bulk_load_nodes,
)
from atpd.service.audit import AuditLog
from atpd.service.principals import (
    ANONYMOUS,
    CURRENT_PRINCIPAL,
    AuthConfigError,
    Principal,
    TokenTable,
)
from atpd.service.tokens import (
    ROLES,
)
from atpd.service.transfer_access import RESTOCK_METHODS, TRANSFER_AUDITED, allow_transfer_methods

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
    "NetworkService/GetNetwork",
    "NetworkService/GetCarrierCapacity",
    "PromiseService/Promise",
    "PromiseService/PromiseBatch",
    "PromiseService/AssociateView",
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
    # A TMS feed sets carrier slots as a WMS feed sets counts.
    "NetworkService/SetCarrierCapacity",
)
_ADMIN_ONLY = (
    "RulesService/SetRules",
    "InventoryService/UpsertNode",
    "AdminService/Snapshot",
    "AdminService/GetStatus",
    "NetworkService/SetNetwork",
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
    allow_transfer_methods(allow)
    return {method: frozenset(roles) for method, roles in table.items()}


DEFAULT_METHOD_ROLES: Mapping[str, frozenset[str]] = _default_method_roles()
# Admin and loader actions: every call is audited, whatever its outcome.
AUDITED_METHODS = frozenset(_LOADER_WRITES + _ADMIN_ONLY[:3] + ("NetworkService/SetNetwork",))
AUDITED_METHODS |= TRANSFER_AUDITED
# Methods that act on the whole network: refused to a principal limited to some nodes.
GLOBAL_WRITES = frozenset(_ADMIN_ONLY + RESTOCK_METHODS)


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
            summary = {} if undecodable else audit_summary(policy.method, request, response)
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
        if error is None:
            if policy.audited:
                self.audit(policy, principal, context, "OK", request, response)
            return
        code = _code_of(context, error)
        if code == "PERMISSION_DENIED":
            # Refused by the servicer (a reservation another principal made): audited and
            # logged like the gate's own refusals.
            detail = _details_of(context)
            self.denied_log.log(logging.WARNING, policy.method, detail)
            self.audit(policy, principal, context, code, request, None, detail)
        elif policy.audited:
            self.audit(policy, principal, context, code, request, None, _details_of(context))

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
