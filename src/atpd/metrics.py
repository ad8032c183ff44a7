"""Prometheus metrics: calls and latency per RPC, time inside the core per command kind, and
gauges read from the state at scrape time (so the hot path never updates them)."""

from __future__ import annotations

import gc
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Microsecond-scale buckets: the core answers in microseconds, RPCs in tens to hundreds.
CORE_BUCKETS_S = (2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0)
RPC_BUCKETS_S = (2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpc_calls = Counter(
            "atpd_rpc_calls",
            "RPCs handled, by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_latency = Histogram(
            "atpd_rpc_latency_seconds",
            "Time from request decoded to response ready, per method",
            ["method"],
            buckets=RPC_BUCKETS_S,
            registry=self.registry,
        )
        self.core_latency = Histogram(
            "atpd_core_apply_seconds",
            "Time inside the core per command kind",
            ["command"],
            buckets=CORE_BUCKETS_S,
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

    def serve_http(self, host: str, port: int) -> int:
        """Start the scrape endpoint on a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
