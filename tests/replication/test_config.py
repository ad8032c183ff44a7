"""Replication config keys: bad values are refused naming the key and the problem."""

from __future__ import annotations

import pytest

from atpd.config import Config, ConfigError, load_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"replication": "semi"}, "replication: 'semi' is not one of async, sync"),
        ({"sync_fallback": "ignore"}, "sync_fallback: 'ignore' is not one of degrade, refuse"),
        ({"sync_timeout_ms": 0}, "sync_timeout_ms: must be > 0"),
        ({"replication_buffer_bytes": -1}, "replication_buffer_bytes: must be > 0"),
        (
            {"replication_heartbeat_ms": 500, "replication_timeout_ms": 400},
            "replication_timeout_ms: 400 must exceed replication_heartbeat_ms (500)",
        ),
        ({"follow": "primary"}, "follow: 'primary' is not HOST:PORT"),
        ({"follow": "primary:0"}, "follow: 'primary:0' is not HOST:PORT"),
        ({"follow": ":50051"}, "follow: ':50051' is not HOST:PORT"),
    ],
)
def test_bad_replication_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    """Each bad replication value is refused with the key named and why."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_replication_defaults_are_async_and_primary() -> None:
    """By default a server is a primary with async replication, degrading when sync."""
    config = Config()
    assert (config.follow, config.replication, config.sync_fallback) == ("", "async", "degrade")
    assert load_config(None, {"follow": "10.0.0.1:50051"}).follow == "10.0.0.1:50051"
