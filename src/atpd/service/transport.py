"""The transport edge: what happens to a call before and around its servicer.

- **Undecodable requests.** grpc.aio decodes a request before the handler runs; a payload that
  is not valid protobuf (random bytes, a truncated message, invalid UTF-8 in a string) would
  answer `UNKNOWN: Unexpected <class 'DecodeError'>` and log a traceback per call. Every
  handler is registered through `CheckedServer`, which wraps its request deserializer so a
  decode failure becomes an `Undecodable` value, and its behaviour so that value answers
  INVALID_ARGUMENT naming the message type (in a stream: ends the call at the bad message).
- **Server bugs** (an exception service/errors.py maps to no status, re-raised by the
  servicers) answer INTERNAL, never UNKNOWN, and log their traceback at most once per second
  per kind, with a count of the ones left out.
- **Reflection** is served as `grpc.reflection.v1` (what newer clients ask for first) and
  `grpc.reflection.v1alpha`: the two protos are the same apart from the package, so one servicer
  answers both.
- **File descriptors**: `raise_fd_limit` lifts the soft limit to the hard one at start.

The wrappers are built once, at registration; per call they add one type check and one frame.
"""

from __future__ import annotations

import inspect
import logging
import resource
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from atpd.service.validation import InvalidArgument

log = logging.getLogger(__name__)

# Longest decoder reason echoed back to a client (the decoder's messages are short; this only
# keeps a future verbose one from growing the trailers).
MAX_REASON_CHARS = 200
LOG_INTERVAL_S = 1.0
# Distinct kinds a RateLimitedLog keeps counters for: kinds come from our own code (exception
# types, message types), but a bound keeps a pathological server bug from growing the table.
MAX_LOG_KINDS = 256

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

REFLECTION_V1_SERVICE = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
_REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


class RateLimitedLog:
    """At most one log line per `interval_s` per kind; the next line says how many were left out.

    The clock is injectable so tests can move it by hand."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        assert interval_s > 0
        self.logger = logger
        self.interval_s = interval_s
        self.clock_s = clock_s
        # kind -> (time of the last line written, lines left out since)
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, kind: str, message: str, *, traceback: bool = False) -> bool:
        """Write `message` unless a line of this kind was written less than interval_s ago;
        answers whether it was written."""
        now = self.clock_s()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.interval_s:
            self._last[kind] = (last[0], last[1] + 1)
            return False
        if last is None and len(self._last) >= MAX_LOG_KINDS:
            self._last.clear()
        suppressed = last[1] if last is not None else 0
        if suppressed:
            message = f"{message} ({suppressed} more like it in the last {now - last[0]:.1f} s)"  # type: ignore[index]
        self._last[kind] = (now, 0)
        self.logger.log(level, "%s", message, exc_info=traceback)
        return True


class Undecodable:
    """What a wrapped deserializer returns for bytes that are not the expected message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class UndecodableRequest(InvalidArgument):
    """Raised from a request stream at an undecodable message. The handler ends the call as
    for any InvalidArgument (or, if it lets it through, the wrappers below do). Aborting from
    inside the iterator could run in a task that reads acks while the handler writes, and a
    status sent during a write is a gRPC usage error (TOO_MANY_OPERATIONS, then "Abort already
    called")."""

    def __init__(self, undecodable: Undecodable) -> None:
        ValueError.__init__(self, undecodable.message)  # the message names the type already
        self.field = "request"
        self.undecodable = undecodable


def _message_type_name(deserializer: Callable[[bytes], Any] | None, method: str) -> str:
    """`atpd.v1.ReserveRequest` for a `ReserveRequest.FromString`; the method name otherwise."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    return full_name if isinstance(full_name, str) else f"request of {method}"


def _short_reason(error: BaseException) -> str:
    reason = str(error) or type(error).__name__
    if len(reason) > MAX_REASON_CHARS:
        reason = f"{reason[:MAX_REASON_CHARS]}... ({len(reason)} characters)"
    return reason


class HandlerGate(Protocol):
    """Access control in front of a handler (service/auth.py): `wrap` runs once per method."""

    def wrap(self, method: str, handler: Handler) -> Handler: ...


class CallGuard:
    """Builds the checked form of each method handler (see the module docstring)."""

    def __init__(
        self,
        client_errors: RateLimitedLog,
        server_errors: RateLimitedLog,
        count: Callable[[str, grpc.StatusCode], None] | None = None,
        gate: HandlerGate | None = None,
    ) -> None:
        self.client_errors = client_errors
        self.server_errors = server_errors
        # Called with (method, status) for calls answered here, so metrics count them too.
        self.count = count or (lambda method, code: None)
        # Outermost: credentials and permissions are checked before anything else answers.
        self.gate = gate
        # Trailing metadata for every answer, or None (a follower's leader and lag: set by
        # create_server from service/replication_role.py).
        self.trailers: Callable[[], Sequence[tuple[str, str]] | None] | None = None

    def _set_trailers(self, context: Any) -> None:
        if self.trailers is not None:
            trailers = self.trailers()
            if trailers is not None:
                context.set_trailing_metadata(trailers)

    def wrap(self, method: str, handler: Handler) -> Handler:
        """`method` is the full path (`/atpd.v1.ReservationService/Reserve`)."""
        short_method = method.rsplit("/", 1)[-1]
        original = handler.request_deserializer
        type_name = _message_type_name(original, short_method)
        client_errors = self.client_errors

        def deserialize(data: bytes) -> Any:
            try:
                return original(data) if original is not None else data
            except Exception as error:  # whatever the bytes make the decoder raise
                message = f"request is not a valid {type_name}: {_short_reason(error)}"
                client_errors.log(logging.WARNING, f"undecodable {type_name}", message)
                return Undecodable(message)

        replaced: dict[str, Any] = {"request_deserializer": deserialize}
        if handler.unary_unary is not None:
            replaced["unary_unary"] = self._unary_unary(short_method, handler.unary_unary)
        elif handler.unary_stream is not None:
            replaced["unary_stream"] = self._unary_stream(short_method, handler.unary_stream)
        elif handler.stream_unary is not None:
            replaced["stream_unary"] = self._stream_unary(short_method, handler.stream_unary)
        elif handler.stream_stream is not None:
            replaced["stream_stream"] = self._stream_stream(short_method, handler.stream_stream)
        wrapped: Handler = handler._replace(**replaced)  # type: ignore[attr-defined]
        if self.gate is not None:
            wrapped = self.gate.wrap(method, wrapped)
        return wrapped

    async def _reject(self, method: str, context: Any, undecodable: Undecodable) -> None:
        self.count(method, grpc.StatusCode.INVALID_ARGUMENT)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, undecodable.message)

    async def _internal(self, method: str, context: Any, error: Exception) -> None:
        """A server bug: INTERNAL with the exception type, its traceback in the log (bounded)."""
        if isinstance(error, NotImplementedError):
            # Generated base servicers raise it for methods nobody overrode (health's List).
            self.count(method, grpc.StatusCode.UNIMPLEMENTED)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
        kind = f"{method}: {type(error).__name__}"
        self.server_errors.log(
            logging.ERROR, kind, f"unexpected error in {method}: {error!r}", traceback=True
        )
        self.count(method, grpc.StatusCode.INTERNAL)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error in {method} ({type(error).__name__}); the server log has details",
        )

    def _checked_requests(
        self, method: str, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                if request.__class__ is Undecodable:
                    raise UndecodableRequest(request)
                yield request

        return checked()

    def _unary_unary(self, method: str, behaviour: Any) -> Any:
        behaviour = _as_async(behaviour)

        async def checked(request: Any, context: Any) -> Any:
            if request.__class__ is Undecodable:
                await self._reject(method, context, request)
            trailers = self.trailers  # `_set_trailers` inlined: every unary call passes here
            if trailers is not None:
                answer = trailers()
                if answer is not None:
                    context.set_trailing_metadata(answer)
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await self._internal(method, context, error)

        return checked

    def _stream_unary(self, method: str, behaviour: Any) -> Any:
        behaviour = _as_async(behaviour)

        async def checked(requests: AsyncIterator[Any], context: Any) -> Any:
            self._set_trailers(context)
            try:
                return await behaviour(self._checked_requests(method, requests, context), context)
            except grpc.aio.AbortError:
                raise
            except UndecodableRequest as error:
                await self._reject(method, context, error.undecodable)
            except Exception as error:
                await self._internal(method, context, error)

        return checked

    def _streaming(self, method: str, behaviour: Any, first: Callable[..., Any]) -> Any:
        """A response-streaming handler: an async generator (answers yielded) or a coroutine
        writing with context.write; the wrapper keeps the same form. `first` checks or wraps
        the request (or request iterator) before the handler sees it."""
        if inspect.isasyncgenfunction(behaviour):

            async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
                self._set_trailers(context)
                try:
                    async for response in behaviour(await first(request, context), context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except UndecodableRequest as error:
                    await self._reject(method, context, error.undecodable)
                except Exception as error:
                    await self._internal(method, context, error)

            return generate
        behaviour = _as_async(behaviour)

        async def write(request: Any, context: Any) -> None:
            self._set_trailers(context)
            try:
                await behaviour(await first(request, context), context)
            except grpc.aio.AbortError:
                raise
            except UndecodableRequest as error:
                await self._reject(method, context, error.undecodable)
            except Exception as error:
                await self._internal(method, context, error)

        return write

    def _unary_stream(self, method: str, behaviour: Any) -> Any:
        async def first(request: Any, context: Any) -> Any:
            if request.__class__ is Undecodable:
                await self._reject(method, context, request)
            return request

        return self._streaming(method, behaviour, first)

    def _stream_stream(self, method: str, behaviour: Any) -> Any:
        async def first(requests: AsyncIterator[Any], context: Any) -> Any:
            return self._checked_requests(method, requests, context)

        return self._streaming(method, behaviour, first)


def _as_async(behaviour: Any) -> Any:
    """The handler as a coroutine function. A plain function (only the generated
    not-implemented stubs: every servicer of ours is async) runs inline on the loop."""
    if inspect.iscoroutinefunction(behaviour):
        return behaviour

    async def call(request: Any, context: Any) -> Any:
        return behaviour(request, context)

    return call


class _CheckedGenericHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose answers are wrapped once per method, then cached."""

    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any], guard: CallGuard) -> None:
        self.inner = inner
        self.guard = guard
        # Only methods the inner handler knows are cached, so random method names cannot grow it.
        self._wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self.inner.service(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[method] = self.guard.wrap(method, handler)
        return wrapped


class _MethodTable(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method of every service added through CheckedServer, in its checked form: the
    first generic handler grpc asks, so a method served through the generic path costs one
    dict lookup to find (not a walk through one generic handler per service)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        return self.handlers.get(handler_call_details.method)


class CheckedServer:
    """Stands in for the grpc.aio server when servicers are added (`add_XServicer_to_server`):
    every handler reaches the real server in its checked form.

    Only the methods in `registered` (full paths) become grpc registered methods; every other
    one is served through the generic path, from one table. The split is for speed: grpc.aio's
    accept loop keeps one pending request per registered method and waits on all of them
    (`asyncio.wait`) for every call it accepts, so each registered method adds to the cost of
    every call, about 0.4 us (measured: 24 us per call with atpd's 56 methods registered,
    against 2). A registered method's own calls are cheaper than generic ones, so the methods
    called per cart or per sale are registered, and the rest (admin, set-up, reports, streams
    whose call is accepted once) are not. `registered=None` registers every method."""

    def __init__(
        self,
        server: grpc.aio.Server,
        guard: CallGuard,
        registered: Collection[str] | None = None,
    ) -> None:
        self.server = server
        self.guard = guard
        self.registered = registered
        self.table = _MethodTable()
        server.add_generic_rpc_handlers((self.table,))

    def add_generic_rpc_handlers(
        self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Kept behind the table: only asked for a method no `add_registered_method_handlers`
        named (a generic handler added on its own)."""
        self.server.add_generic_rpc_handlers(
            tuple(_CheckedGenericHandler(handler, self.guard) for handler in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        hot: dict[str, Handler] = {}
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            wrapped = self.table.handlers[method] = self.guard.wrap(method, handler)
            if self.registered is None or method in self.registered:
                hot[name] = wrapped
        if hot:
            self.server.add_registered_method_handlers(service, hot)  # type: ignore[attr-defined]

    def add_service(self, service: str, handlers: Mapping[str, Handler]) -> None:
        """Register a hand-built service, the way generated code does."""
        self.add_registered_method_handlers(service, handlers)


def _add_reflection_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Describe `grpc.reflection.v1` in the pool (a renamed copy of the v1alpha file), so that
    reflection can describe itself under both names."""
    try:
        pool.FindFileByName(_REFLECTION_V1_FILE)
        return
    except KeyError:
        pass
    renamed = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(renamed)
    # Type references are fully qualified (".grpc.reflection.v1alpha.X"): rename them all.
    renamed.name = _REFLECTION_V1_FILE
    renamed.package = "grpc.reflection.v1"
    renamed.options.Clear()
    for message in renamed.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # scalars have none: setting "" would add one
                field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
    for service in renamed.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    pool.AddSerializedFile(renamed.SerializeToString())


def enable_reflection(server: CheckedServer, service_names: Iterable[str]) -> None:
    """Serve reflection as v1 and v1alpha over `service_names` (plus both reflection names)."""
    pool = descriptor_pool.Default()
    _add_reflection_v1_descriptor(pool)
    names = (*service_names, REFLECTION_V1_SERVICE, REFLECTION_V1ALPHA_SERVICE)
    servicer = ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    # The v1 messages are byte-for-byte the v1alpha ones, so the same codec serves both.
    server.add_service(
        REFLECTION_V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit when allowed; answer the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, error)
    return soft
