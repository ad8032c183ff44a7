"""Server lifecycle: build (`create_server`), start-up, serve, graceful shutdown.

`create_server` only wires things and binds the port (0 picks a free one, as tests do); the
phases of a real run live in `serve`: start NOT_SERVING -> load state and compile kernels ->
SERVING -> wait for SIGTERM/SIGINT -> NOT_SERVING, drain, stop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from atpd.config import Config, ConfigError
from atpd.core import bulk_kernels, kernels, restock_kernels
from atpd.core.commands import SetRules
from atpd.core.network import NetworkError
from atpd.core.promise import warm_up as warm_promise_kernels
from atpd.core.results import InvalidCommand
from atpd.core.rules import RulesError
from atpd.core.state import AtpState
from atpd.demo.dataset import load_demo
from atpd.files import MAX_RULES_FILE_BYTES, FileRefused, read_regular_text
from atpd.metrics import Metrics
from atpd.persistence.journal import FsyncPolicy
from atpd.persistence.recovery import recover
from atpd.service.auth import AccessControl
from atpd.service.batch_servicer import CommandServicer
from atpd.service.cluster_join import join_cluster
from atpd.service.cluster_member import ClusterMember
from atpd.service.durability import Durability, clean_staging, write_snapshot_now
from atpd.service.engine import CommandLog, Engine
from atpd.service.feeds import FeedServicer
from atpd.service.gc_pauses import FreezeSurvivors
from atpd.service.leadership import Leadership
from atpd.service.network_servicer import NetworkServicer
from atpd.service.network_start import apply_network_at_start
from atpd.service.option_tokens import load_option_tokens
from atpd.service.promise_servicer import PromiseServicer
from atpd.service.replication_role import ReplicationRole
from atpd.service.replication_servicer import ReplicationServicer
from atpd.service.restock_servicer import RestockServicer
from atpd.service.server_access import access_control, check_exposure
from atpd.service.servicers import (
    AdminServicer,
    AvailabilityServicer,
    InventoryServicer,
    ReservationServicer,
    RulesServicer,
    SupplyServicer,
)
from atpd.service.store_servicer import StoreServicer
from atpd.service.tls import CertificateReloader, TlsError
from atpd.service.transfers_servicer import TransferServicer
from atpd.service.transport import (
    CallGuard,
    CheckedServer,
    RateLimitedLog,
    enable_reflection,
    raise_fd_limit,
)
from atpd.service.watch import WatchHub
from atpd.service.watch_servicer import WatchServicer, add_watch_service
from atpd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    availability_pb2,
    batch_pb2,
    batch_pb2_grpc,
    feeds_pb2,
    feeds_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    promise_pb2,
    promise_pb2_grpc,
    replication_pb2,
    replication_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
    restock_pb2,
    restock_pb2_grpc,
    rules_pb2,
    rules_pb2_grpc,
    store_pb2,
    store_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
    transfers_pb2,
    transfers_pb2_grpc,
    watch_pb2,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    availability_pb2.DESCRIPTOR.services_by_name["AvailabilityService"].full_name,
    reservations_pb2.DESCRIPTOR.services_by_name["ReservationService"].full_name,
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    rules_pb2.DESCRIPTOR.services_by_name["RulesService"].full_name,
    supply_pb2.DESCRIPTOR.services_by_name["SupplyService"].full_name,
    watch_pb2.DESCRIPTOR.services_by_name["WatchService"].full_name,
    feeds_pb2.DESCRIPTOR.services_by_name["FeedService"].full_name,
    network_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name,
    promise_pb2.DESCRIPTOR.services_by_name["PromiseService"].full_name,
    store_pb2.DESCRIPTOR.services_by_name["StoreService"].full_name,
    replication_pb2.DESCRIPTOR.services_by_name["ReplicationService"].full_name,
    batch_pb2.DESCRIPTOR.services_by_name["CommandService"].full_name,
    transfers_pb2.DESCRIPTOR.services_by_name["TransferService"].full_name,
    restock_pb2.DESCRIPTOR.services_by_name["RestockService"].full_name,
)
# The methods grpc serves as registered methods (transport.CheckedServer says why not all):
# the unary calls made per cart, per order and per sale. Every other method is served as well,
# through grpc's generic path, at a slightly higher cost per call.
REGISTERED_METHODS = frozenset(
    f"/{descriptor.full_name}/{method}"
    for descriptor, methods in (
        (availability_pb2.DESCRIPTOR.services_by_name["AvailabilityService"], ("GetAvailability",)),
        (
            reservations_pb2.DESCRIPTOR.services_by_name["ReservationService"],
            ("Reserve", "Confirm", "Fulfil", "Release"),
        ),
        (promise_pb2.DESCRIPTOR.services_by_name["PromiseService"], ("Promise",)),
        (store_pb2.DESCRIPTOR.services_by_name["StoreService"], ("RecordSale",)),
        (batch_pb2.DESCRIPTOR.services_by_name["CommandService"], ("CommandBatch",)),
    )
    for method in methods
    if descriptor.methods_by_name[method]  # a renamed method fails here, at import
)
DRAIN_SECONDS = 5.0
# Pings a client may send with no call in flight before the server answers GOAWAY (a client
# pinging faster than keepalive_time_s is refused by gRPC's ping policy anyway).
MAX_PINGS_WITHOUT_DATA = 0


def connection_limit(config: Config, fd_limit: int) -> int:
    """max_connections, capped so that connections never take the fds kept in fd_reserve."""
    available = fd_limit - config.fd_reserve
    if available < 1:
        raise OSError(
            f"the open files limit ({fd_limit}) leaves no room for connections after "
            f"fd_reserve ({config.fd_reserve}): raise `ulimit -n` or lower fd_reserve"
        )
    return min(config.max_connections, available)


def server_options(config: Config, max_connections: int) -> list[tuple[str, int]]:
    """grpc channel arguments: message size limits, connection bounds, keepalive."""
    idle_ms = round(config.connection_idle_timeout_s * 1000)
    return [
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.max_connection_idle_ms", idle_ms),
        ("grpc.server_handshake_timeout_ms", idle_ms),
        ("grpc.keepalive_time_ms", round(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", MAX_PINGS_WITHOUT_DATA),
    ]


@dataclass
class App:
    server: grpc.aio.Server
    port: int
    engine: Engine
    health: health_aio.HealthServicer
    hub: WatchHub
    durability: Durability | None = None
    replication: ReplicationRole | None = None
    # In a cluster: the etcd side (service/leadership.py) and what it switches.
    leadership: Leadership | None = None
    member: ClusterMember | None = None
    access: AccessControl | None = None
    certificates: CertificateReloader | None = None
    # Mirrors the gRPC health status for the metrics listener's /healthz (read from its thread).
    serving: bool = False
    # Restock plans and the optional schedule: (interval_s (0: off), geo, horizon, units/day).
    restock: RestockServicer | None = None
    restock_schedule: tuple[float, str, int, int] = (0.0, "", 7, 1)

    def reload_credentials(self) -> None:
        """SIGHUP: re-read the tokens file now and the certificates at the next handshake."""
        if self.access is not None:
            self.access.settings.tokens.reload_now()
        if self.certificates is not None:
            self.certificates.request_reload()

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.serving = serving
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)


def create_server(
    config: Config,
    state: AtpState | None = None,
    journal: CommandLog | None = None,
    metrics: Metrics | None = None,
    clock_ms: Callable[[], int] | None = None,
    fd_limit: int | None = None,
) -> App:
    """Wire servicers, health and reflection onto a grpc.aio server bound to config.host:port.
    The server is not started; health is NOT_SERVING and writes are refused until ready.
    `fd_limit` (default: the open-files limit, raised to the hard limit) caps max_connections."""
    state = state or AtpState(config.limits)
    engine = (
        Engine(state, journal, metrics, clock_ms)
        if clock_ms is not None
        else Engine(state, journal, metrics)
    )
    engine.option_tokens = load_option_tokens(
        config.option_token_key_file, config.option_token_ttl_s
    )
    max_connections = connection_limit(config, fd_limit or raise_fd_limit())
    grpc_server = grpc.aio.server(
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        options=server_options(config, max_connections),
    )
    # Every handler goes through the guard: undecodable requests answer INVALID_ARGUMENT and
    # server bugs INTERNAL, each logged at most once a second per kind.
    access = access_control(config, engine)
    guard = CallGuard(
        RateLimitedLog(logging.getLogger("atpd.client_errors")),
        RateLimitedLog(log),
        lambda method, code: engine.metrics.rpc_calls.labels(method, code.name).inc(),
        access,
    )
    checked = CheckedServer(grpc_server, guard, REGISTERED_METHODS)
    # What the generated add_*_to_server functions see: they only call the two add methods.
    server = cast(grpc.aio.Server, checked)
    # Registered by hand: GetAvailability answers with bytes it encoded itself (service/wire.py),
    # so its response serializer is the identity.
    availability = AvailabilityServicer(engine)
    checked.add_service(
        SERVICE_NAMES[0],
        {
            "GetAvailability": grpc.unary_unary_rpc_method_handler(
                availability.wire_get,
                request_deserializer=availability_pb2.GetAvailabilityRequest.FromString,
                response_serializer=bytes,
            )
        },
    )
    reservations_pb2_grpc.add_ReservationServiceServicer_to_server(
        ReservationServicer(engine), server
    )
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryServicer(engine), server)
    rules_pb2_grpc.add_RulesServiceServicer_to_server(RulesServicer(engine), server)
    supply_pb2_grpc.add_SupplyServiceServicer_to_server(SupplyServicer(engine), server)
    network_pb2_grpc.add_NetworkServiceServicer_to_server(NetworkServicer(engine), server)
    promise_pb2_grpc.add_PromiseServiceServicer_to_server(PromiseServicer(engine), server)
    transfers_pb2_grpc.add_TransferServiceServicer_to_server(TransferServicer(engine), server)
    restock = RestockServicer(engine, config.max_restock_plans)
    restock_pb2_grpc.add_RestockServiceServicer_to_server(restock, server)
    hub = WatchHub(
        lambda: engine.state,
        config.watch_buffer_events,
        config.watch_max_queue_events,
        config.watch_max_subscribers,
        config.max_watch_subscribers_per_peer,
        config.stream_stall_timeout_s,
        config.watch_max_batch_events,
        config.watch_max_batch_delay_ms,
    )
    engine.on_changes = hub.publish
    engine.on_resync = hub.resync_all
    # Registered by hand (service/watch_servicer.py): Watch and WatchBatch write messages they
    # serialized themselves, so their response serializer is the identity.
    add_watch_service(checked, WatchServicer(engine, hub))
    store_pb2_grpc.add_StoreServiceServicer_to_server(StoreServicer(engine, hub), server)

    def set_durability(durability: Durability) -> None:
        app.durability = durability

    # `app` is bound below, before anything calls these.
    role = ReplicationRole(engine, config, lambda: app.durability, set_durability)
    replication_pb2_grpc.add_ReplicationServiceServicer_to_server(ReplicationServicer(role), server)
    batches = CommandServicer(
        engine,
        access,
        config.max_batch_commands,
        config.max_submit_inflight_batches,
        config.stream_stall_timeout_s,
    )
    batch_pb2_grpc.add_CommandServiceServicer_to_server(batches, server)
    feeds = FeedServicer(engine, config.load_idle_timeout_s, config.stream_stall_timeout_s)
    feeds_pb2_grpc.add_FeedServiceServicer_to_server(feeds, server)
    admin = AdminServicer(engine)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(
        checked, (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    )
    certificates: CertificateReloader | None = None
    address = f"{config.host}:{config.port}"
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        try:
            certificates = CertificateReloader(
                config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file
            )
        except TlsError as error:
            raise ConfigError(str(error)) from None
    try:  # older grpcio answers port 0, newer raises RuntimeError("Failed to bind ...")
        if certificates is not None:
            port = grpc_server.add_secure_port(address, certificates.credentials())
        else:
            port = grpc_server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot bind {config.host}:{config.port}: {error}") from None
    if port == 0:
        raise OSError(f"cannot bind {config.host}:{config.port}")
    # Read through the engine: the state object is replaced at recovery.
    engine.metrics.bind_state(
        lambda: engine.state.stock.position_count,
        lambda: engine.state.open_reservations,
        lambda: engine.state.expired_total,
        lambda: len(engine.state.skus),
        lambda: len(engine.state.nodes),
    )
    app = App(grpc_server, port, engine, health, hub, access=access, certificates=certificates)
    app.restock = restock
    app.restock_schedule = (
        config.restock_schedule_interval_s,
        config.restock_schedule_geo,
        config.restock_schedule_horizon_days,
        config.restock_schedule_max_units_per_day,
    )
    admin.durability_of = lambda: app.durability
    feeds.durability_of = lambda: app.durability
    app.replication = admin.replication = role
    guard.trailers = role.trailers
    if config.cluster:
        app.member, app.leadership = join_cluster(role, config, lambda: app.durability)
    return app


async def start(
    app: App,
    prepare: Callable[[], None] | None = None,
    before_serving: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Start serving NOT_SERVING, run `prepare` (recovery, demo load) and compile the kernels
    off the loop, then `before_serving` on the loop (journal attached, start-up rules applied),
    then accept writes and flip to SERVING: a client that waits for SERVING sees all of it."""
    await app.set_serving(False)
    await app.server.start()
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, kernels.warm_up)
    await loop.run_in_executor(None, bulk_kernels.warm_up)
    await loop.run_in_executor(None, warm_promise_kernels)
    await loop.run_in_executor(None, restock_kernels.warm_up)
    if prepare is not None:
        # Nothing else writes before `ready`, so preparing off the loop is safe; reads may see
        # a partly loaded state while health says NOT_SERVING.
        await loop.run_in_executor(None, prepare)
    # Everything loaded so far lives as long as the server: move it out of the cyclic GC's
    # reach so that full collections stay short however big the state grows.
    gc.collect()
    gc.freeze()
    if before_serving is not None:
        await before_serving()
    app.engine.ready = True
    app.engine.start()
    interval_s, geo, horizon_days, units_per_day = app.restock_schedule
    if app.restock is not None and interval_s > 0:
        app.restock.start_schedule(interval_s, geo, horizon_days, units_per_day)
    await app.set_serving(True)
    log.info("ready in %.2f s on port %d", time.perf_counter() - started, app.port)


async def stop(app: App, grace_s: float = DRAIN_SECONDS) -> None:
    await app.set_serving(False)
    if app.leadership is not None:
        await app.leadership.stop()  # a successor is elected without waiting for the lease
    app.engine.ready = False
    if app.restock is not None:
        await app.restock.stop_schedule()
    app.engine.stop()
    if app.replication is not None:
        await app.replication.close()
    await app.server.stop(grace_s)
    if app.access is not None and app.access.settings.audit is not None:
        app.access.settings.audit.close()


@dataclass
class ServeOptions:
    demo: bool = False
    repair: bool = False
    # Run without journal or snapshots (benchmarks of the bare core over gRPC).
    in_memory: bool = False


def open_durable_state(
    config: Config, options: ServeOptions, now_ms: Callable[[], int]
) -> tuple[AtpState, Durability | None]:
    """Recovery (or an empty state), then the demo data set if asked and the state is empty.
    Runs before SERVING, off the event loop."""
    if options.in_memory:
        state = AtpState(config.limits)
        if options.demo:
            log.info("demo data set loaded: %s", load_demo(state, now_ms()))
        return state, None
    clean_staging(config.data_dir)
    recovered = recover(
        config.data_dir,
        limits=config.limits,
        fsync_policy=FsyncPolicy(config.fsync),
        segment_bytes=config.journal_segment_bytes,
        repair=options.repair,
    )
    state = recovered.state
    durability = Durability(
        recovered.journal,
        config.data_dir,
        config.limits,
        config.snapshot_every_records,
        config.snapshot_every_seconds,
    )
    if options.demo and not state.nodes:
        log.info("demo data set loaded: %s", load_demo(state, now_ms()))
        # Made durable compactly: one snapshot instead of ~100k journal records.
        write_snapshot_now(state, config.data_dir, recovered.journal)
    return state, durability


DEMO_RULES = Path(__file__).resolve().parent.parent / "demo" / "rules.toml"


async def apply_rules_at_start(engine: Engine, config: Config, options: ServeOptions) -> None:
    """The configured rule file (or, for a new demo, the demo rules) replaces the recovered
    rules when its text differs; the change is journaled like any other."""
    path = config.rules_file
    if path is None and options.demo and not engine.state.rules.text:
        path = DEMO_RULES
    if path is None:
        return
    try:
        text = read_regular_text(path, MAX_RULES_FILE_BYTES, "rules file")
    except FileRefused as error:
        raise RulesError(str(error)) from None
    if text == engine.state.rules.text:
        return
    try:
        result = await engine.execute(SetRules(text, str(path)))
    except InvalidCommand as error:
        raise RulesError(str(error)) from error
    log.info("rules %s applied from %s", result.version, path)


async def serve(config: Config, options: ServeOptions | None = None) -> None:
    """Run until SIGTERM or SIGINT: NOT_SERVING -> recovery -> SERVING -> drain -> stop."""
    options = options or ServeOptions()
    check_exposure(config)
    if config.follow and options.in_memory:
        raise ConfigError("follow: a follower keeps a journal of its own; drop --in-memory")
    fd_limit = raise_fd_limit()
    app = create_server(config, fd_limit=fd_limit)
    log.info(
        "open files limit %d: up to %d connections (max_connections %d, fd_reserve %d)",
        fd_limit,
        connection_limit(config, fd_limit),
        config.max_connections,
        config.fd_reserve,
    )
    if config.metrics_port >= 0:
        metrics_port = app.engine.metrics.serve_http(
            config.metrics_host,
            config.metrics_port,
            config.metrics_token_sha256,
            serving=lambda: app.serving,
        )
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, metrics_port)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_event.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload_credentials)
    log.info(
        "security: TLS %s, authentication %s, audit log %s",
        ("mutual" if config.tls_client_ca_file else "on") if config.tls else "off",
        "on" if config.authentication else "off (every caller may do everything)",
        config.audit_log_file or "off",
    )
    log.info("atpd listening on %s:%d (NOT_SERVING until ready)", config.host, app.port)
    engine = app.engine
    durability: Durability | None = None

    def prepare() -> None:
        nonlocal durability
        engine.state, durability = open_durable_state(config, options, engine.now_ms)

    async def before_serving() -> None:
        if durability is not None:
            durability.attach(engine)
            app.durability = durability
        assert app.replication is not None
        if app.member is not None:
            app.member.recovered()
        await app.replication.start()
        if engine.leader_address is not None:
            if config.rules_file is not None or config.network_file is not None:
                log.warning(
                    "follower: rules_file and network_file are ignored (the leader's apply)"
                )
            return
        # Before SERVING, so nobody reads or writes under rules about to be replaced.
        await apply_rules_at_start(engine, config, options)
        await apply_network_at_start(engine, config, options)

    try:
        await start(app, prepare, before_serving)
    except (RulesError, NetworkError):
        await stop(app, grace_s=0)
        if app.durability is not None:
            await app.durability.close(final_snapshot=False)
        raise
    except BaseException:
        # Recovery refused the data dir: stop the listener so the refusal is the only output
        # (a server left running is torn down by its finalizer after the loop closed).
        await app.server.stop(0)
        raise
    if app.leadership is not None:
        app.leadership.start()
    freezer = FreezeSurvivors(config.gc_freeze_interval_s)
    freezer.start()
    await stop_event.wait()
    log.info("shutting down: draining for up to %.0f s", DRAIN_SECONDS)
    freezer.stop()
    await stop(app)
    # The follower may have replaced the journal (a snapshot from its primary): close the last.
    if app.durability is not None:
        await app.durability.close(final_snapshot=True)
    log.info("stopped")
