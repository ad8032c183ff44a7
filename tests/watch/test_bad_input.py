"""Watch requests that cannot be served fail at once with a status naming the field: malformed
ones INVALID_ARGUMENT, unknown ids NOT_FOUND, unknown channel or segment (under rules)
INVALID_ARGUMENT, one subscriber too many RESOURCE_EXHAUSTED."""

from __future__ import annotations

import grpc
import pytest
from service.harness import ServerThread

from atpd.v1 import watch_pb2

from .conftest import StartServer
from .support import Api, Watcher, set_rules, wait_until, watch_request
from .test_filters import RULES

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

CASES = [
    (watch_request(from_sequence=-1), INVALID, "from_sequence"),
    (watch_request(low_stock_threshold=-1), INVALID, "low_stock_threshold"),
    (watch_request(skus=["BAG-1", "has space"]), INVALID, "skus[1]"),
    (watch_request(skus=[""]), INVALID, "skus[0]"),
    (watch_request(node_ids=["paris", "bad node!"]), INVALID, "node_ids[1]"),
    (watch_request(node_ids=["paris", "nowhere"]), NOT_FOUND, "node_ids[1]"),
    (watch_request(geo_prefix="EU//FR"), INVALID, "geo_prefix"),
    (watch_request(geo_prefix="AS/JP"), NOT_FOUND, "geo_prefix"),
    (watch_request(channel="Web!"), INVALID, "channel"),
    (watch_request(segment="VIP CLIENTS"), INVALID, "segment"),
]


def first_error(api: Api, request: watch_pb2.WatchRequest) -> grpc.RpcError:
    watcher = Watcher(api, request)
    error = watcher.end()
    assert watcher.drained == [], watcher.drained  # not even SYNC
    assert error is not None
    return error


@pytest.mark.parametrize(("request_", "code", "field"), CASES, ids=[c[2] for c in CASES])
def test_bad_requests_fail_naming_the_field(
    server: ServerThread, api: Api, request_: watch_pb2.WatchRequest, code: object, field: str
) -> None:
    """Each bad field fails the call before any event, with the status and the field's name."""
    error = first_error(api, request_)
    assert error.code() == code, error
    assert field in (error.details() or ""), error.details()
    assert server.call(lambda: len(server.app.hub.subscribers)) == 0


def test_unknown_channel_or_segment_under_rules(api: Api) -> None:
    """With a rule set loaded, a channel or segment it does not define is INVALID_ARGUMENT
    naming `channel` / `segment`."""
    set_rules(api, RULES)
    for request, field in (
        (watch_request(channel="kiosk"), "channel"),
        (watch_request(segment="gold"), "segment"),
    ):
        error = first_error(api, request)
        assert error.code() == INVALID, error
        assert field in (error.details() or ""), error.details()


def test_one_subscriber_too_many_is_resource_exhausted(start_server: StartServer) -> None:
    """With watch_max_subscribers = 3, a fourth concurrent Watch is RESOURCE_EXHAUSTED naming
    the limit by its config name; once one ends, a new one is accepted."""
    server = start_server(watch_max_subscribers=3)
    api = Api.on(server)
    watchers = [Watcher(api, watch_request()) for _ in range(3)]
    for watcher in watchers:
        watcher.sync()
    error = first_error(api, watch_request())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    # The limit as config names it (DESIGN: "each limit is named in config").
    assert "watch_max_subscribers" in (error.details() or ""), error.details()
    watchers[0].cancel()
    hub = server.app.hub
    # The server notices the cancel on its own time.
    wait_until(lambda: server.call(lambda: len(hub.subscribers)) < 3)
    again = Watcher(api, watch_request())
    again.sync()
    for watcher in [*watchers[1:], again]:
        watcher.cancel()
