"""Watch limits per client: one host holds at most max_watch_subscribers_per_peer streams
(all its connections together), and a subscriber whose client stops reading is ended after
stream_stall_timeout_s even when its queue never overflows."""

from __future__ import annotations

import grpc
import pytest
from service.harness import ServerThread

from atpd.service.watch import peer_host

from .conftest import StartServer
from .support import Api, StalledWatch, Watcher, wait_until, watch_request
from .test_slow_subscribers import LINES, MAX_RESERVATIONS, reserve_all, stock

PER_PEER = 3


def _subscribers(server: ServerThread) -> int:
    return server.call(lambda: len(server.app.hub.subscribers))


def test_one_host_cannot_take_more_than_its_watch_slots(start_server: StartServer) -> None:
    """Past max_watch_subscribers_per_peer streams from one host, over separate connections,
    Watch answers RESOURCE_EXHAUSTED naming the limit; closing one frees a slot."""
    server = start_server(max_watch_subscribers_per_peer=PER_PEER, watch_max_subscribers=100)
    watchers = [Watcher(Api.on(server), watch_request()) for _ in range(PER_PEER)]
    for watcher in watchers:
        watcher.sync()
    refused = Watcher(Api.on(server), watch_request())
    error = refused.end()
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_watch_subscribers_per_peer" in (error.details() or "")
    assert "127.0.0.1" in (error.details() or "")
    watchers[0].cancel()
    wait_until(lambda: _subscribers(server) == PER_PEER - 1)
    again = Watcher(Api.on(server), watch_request())
    again.sync()
    for watcher in (*watchers[1:], again):
        watcher.cancel()
    wait_until(lambda: server.call(lambda: not server.app.hub.by_peer))


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.1.2.3:51234", "ipv4:10.1.2.3"),
        ("ipv6:[::1]:51234", "ipv6:[::1]"),
        ("ipv6:[fe80::1%eth0]:7", "ipv6:[fe80::1%eth0]"),
        ("unix:/run/atpd.sock", "unix:/run/atpd.sock"),
    ],
)
def test_peer_host_drops_only_the_port(peer: str, host: str) -> None:
    """Subscribers are counted per host: the peer's port is dropped, nothing else."""
    assert peer_host(peer) == host


def test_a_subscriber_nobody_reads_is_ended_after_the_stall_timeout(
    start_server: StartServer,
) -> None:
    """A Watch whose client stops reading, with a queue too large to overflow, is ended after
    stream_stall_timeout_s: it leaves the hub and frees its per-host slot."""
    server = start_server(
        stream_stall_timeout_s=1.0, watch_max_queue_events=1_000_000, watch_max_subscribers=4
    )
    api = Api.on(server)
    stock(server, api)
    stalled = StalledWatch(server, watch_request())
    try:
        for k in range(MAX_RESERVATIONS):
            reserve_all(api, f"cart-{k}")
        assert not stalled.subscriber.overflowed
        wait_until(lambda: _subscribers(server) == 0, polls=3_000)
        metrics = server.app.engine.metrics
        ended = server.call(
            lambda: metrics.rpc_calls.labels("Watch", "DEADLINE_EXCEEDED")._value.get()
        )
        assert ended == 1
        assert server.call(lambda: not server.app.hub.by_peer)
        assert len(stalled.subscriber.pending) < LINES * MAX_RESERVATIONS
    finally:
        stalled.close()
