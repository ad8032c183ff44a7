"""Prometheus metrics: calls and latency per RPC, time inside the core per command kind, and
gauges read from the state at scrape time (so the hot path never updates them)."""

from __future__ import annotations

import gc
import hashlib
import hmac
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Microsecond-scale buckets: the core answers in microseconds, RPCs in tens to hundreds.
CORE_BUCKETS_S = (2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0)
RPC_BUCKETS_S = (2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpc_calls = Counter(
            "atpd_rpc_calls",
            "RPCs handled, by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        # Observed on every call: lock-free histograms (see LoopHistogram).
        self.rpc_latency = LoopHistogram(
            "atpd_rpc_latency_seconds",
            "Time from request decoded to response ready, per method",
            "method",
            RPC_BUCKETS_S,
            self.registry,
        )
        self.core_latency = LoopHistogram(
            "atpd_core_apply_seconds",
            "Time inside the core per command kind",
            "command",
            CORE_BUCKETS_S,
            self.registry,
        )
        self.batch_commands = Histogram(
            "atpd_batch_commands",
            "Commands per batch applied (CommandBatch calls and Submit messages)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.outcomes = Counter(
            "atpd_command_outcomes",
            "Command outcomes (OK, INSUFFICIENT_STOCK, STALE, ...)",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.stock_positions = Gauge(
            "atpd_stock_positions",
            "Stock positions (sku x node) ever written",
            registry=self.registry,
        )
        self.open_reservations = Gauge(
            "atpd_open_reservations", "Reservations HELD or CONFIRMED", registry=self.registry
        )
        self.expired = Gauge(
            "atpd_reservations_expired",
            "Reservations expired since start (monotonic)",
            registry=self.registry,
        )
        self.skus = Gauge("atpd_skus", "SKUs known", registry=self.registry)
        self.nodes = Gauge("atpd_nodes", "Nodes known", registry=self.registry)
        self.gc_frozen = Gauge(
            "atpd_gc_frozen_objects",
            "Objects moved out of the cyclic GC's reach (see service/gc_pauses.py)",
            registry=self.registry,
        )
        self.gc_frozen.set_function(gc.get_freeze_count)
        # Replication (README "Running a cluster"); bound by the replication modules.
        self.replication_degraded = Gauge(
            "atpd_replication_degraded",
            "1 while sync replication runs as async (no follower acknowledged in time)",
            registry=self.registry,
        )
        self.replication_followers = Gauge(
            "atpd_replication_followers",
            "Followers streaming from this primary",
            registry=self.registry,
        )
        self.replication_lag_sequences = Gauge(
            "atpd_replication_lag_sequences",
            "On a follower: journal records the primary has durable and this server does not",
            registry=self.registry,
        )
        self.replication_lag_ms = Gauge(
            "atpd_replication_lag_ms",
            "On a follower: milliseconds since it last held every record of its primary",
            registry=self.registry,
        )
        # Leadership through etcd (service/leadership.py); bound by service/cluster_join.py.
        self.cluster_leader = Gauge(
            "atpd_cluster_leader",
            "1 while this server leads its cluster and its etcd lease holds (takes writes)",
            registry=self.registry,
        )
        self.cluster_epoch = Gauge(
            "atpd_cluster_epoch",
            "The newest leader epoch this server knows (grows by one at each election)",
            registry=self.registry,
        )
        self.cluster_elections = Counter(
            "atpd_cluster_elections",
            "Times this server was elected leader",
            registry=self.registry,
        )

    def bind_state(
        self,
        positions: Callable[[], int],
        open_reservations: Callable[[], int],
        expired: Callable[[], int],
        skus: Callable[[], int],
        nodes: Callable[[], int],
    ) -> None:
        self.stock_positions.set_function(positions)
        self.open_reservations.set_function(open_reservations)
        self.expired.set_function(expired)
        self.skus.set_function(skus)
        self.nodes.set_function(nodes)

    def bind_journal(
        self, records: Callable[[], int], fsyncs: Callable[[], int], batches: Callable[[], int]
    ) -> None:
        """Journal counters, read at scrape time: records written, data fsyncs, write batches.
        records / fsyncs is how many commands the group commit merges into one fsync."""
        self.registry.register(_JournalCollector(records, fsyncs, batches))

    def serve_http(
        self,
        host: str,
        port: int,
        token_sha256: str = "",
        serving: Callable[[], bool] | None = None,
    ) -> int:
        """Start the scrape endpoint on a daemon thread; returns the bound port. With
        `token_sha256`, a scrape must send `Authorization: Bearer <secret>` whose SHA-256 it
        is; anything else answers 401 and nothing about the server. With `serving`, `/healthz`
        answers 200 SERVING or 503 NOT_SERVING, open like gRPC health: this listener is apart
        from the gRPC port and its connection limit, so a probe still gets an answer while
        the gRPC port is flooded with connections."""
        app = make_wsgi_app(self.registry)
        if token_sha256:
            app = _bearer_protected(app, token_sha256)
        if serving is not None:
            app = _with_health(app, serving)
        server = make_server(host, port, app, MetricsHTTPServer, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="atpd-metrics", daemon=True)
        thread.start()
        self.http_server = server
        return int(server.server_port)


# prometheus_client's own bucket-bound format ("1.0", "2.5e-05", "1e+06"), typed for mypy.
go_float = cast(Callable[[float], str], floatToGoString)


class LoopHistogramChild:
    """One label value's buckets: a bisect and two additions per observation, no lock."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bucket whose upper bound is >= amount ("le" is inclusive).
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount


class LoopHistogram(Collector):
    """A histogram with one label, observed only on the event loop (the single writer), so it
    needs none of prometheus_client's per-observation locks (~4 us per observe with two of
    them, on every call; this is ~0.3 us). A scrape, on the metrics thread, reads plain ints:
    at worst it misses an observation made meanwhile, and the count is derived from the
    buckets, so every exposition is self-consistent. Same names, labels and buckets as
    prometheus_client's Histogram."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        assert list(buckets) == sorted(buckets) and buckets[-1] != float("inf")
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = tuple(float(bound) for bound in buckets)
        self.children: dict[str, LoopHistogramChild] = {}
        registry.register(self)

    def labels(self, value: str) -> LoopHistogramChild:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = LoopHistogramChild(self.bounds)
        return child

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        upper = [*(go_float(bound) for bound in self.bounds), "+Inf"]
        for value, child in list(self.children.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(upper, list(child.counts), strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([value], buckets, child.total)
        yield family


class _JournalCollector(Collector):
    """Counters owned by the journal (plain ints it bumps per batch), exposed at scrape time so
    the write path never touches a metric object."""

    def __init__(
        self, records: Callable[[], int], fsyncs: Callable[[], int], batches: Callable[[], int]
    ) -> None:
        self.sources = (
            ("atpd_journal_records", "Journal records written", records),
            (
                "atpd_journal_fsyncs",
                "Journal data fsyncs (group commits under fsync always)",
                fsyncs,
            ),
            ("atpd_journal_batches", "Journal write batches handed to the disk thread", batches),
        )

    def collect(self) -> Iterable[Metric]:
        for name, documentation, source in self.sources:
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], source())
            yield family


# The listener is reachable without a token until a request arrives: bound what an idle or slow
# client can hold (a thread and a file descriptor each) so it cannot exhaust the process.
MAX_METRICS_CONNECTIONS = 32
METRICS_READ_TIMEOUT_S = 5.0


class MetricsHTTPServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most MAX_METRICS_CONNECTIONS at once: a connection beyond
    that is closed at once (a scraper or probe retries)."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_METRICS_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr; a client that sends nothing for
    METRICS_READ_TIMEOUT_S is disconnected."""

    timeout = METRICS_READ_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _with_health(app: Any, serving: Callable[[], bool]) -> Any:
    def health_or_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            result: Iterable[bytes] = app(environ, start_response)
            return result
        if serving():
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"SERVING\n"]
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"NOT_SERVING\n"]

    return health_or_app


def _bearer_protected(app: Any, token_sha256: str) -> Any:
    expected = token_sha256.encode()

    def protected(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, secret = header.partition(" ")
        presented = hashlib.sha256(secret.strip().encode("utf-8", "replace")).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="atpd"')],
            )
            return [b"unauthorized\n"]
        result: Iterable[bytes] = app(environ, start_response)
        return result

    return protected
