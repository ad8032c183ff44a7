"""Cluster configuration: every bad value is refused naming the key and what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from atpd.config import ConfigError, load_config

GOOD: dict[str, Any] = {
    "cluster": "shop",
    "etcd": ["127.0.0.1:2379"],
    "advertise": "127.0.0.1:50051",
}


@pytest.mark.core
def test_a_cluster_config_is_accepted_with_its_defaults() -> None:
    """etcd from TOML (a list) becomes a tuple; the lease defaults to 2 s with a 300 ms margin."""
    config = load_config(None, GOOD)
    assert config.etcd == ("127.0.0.1:2379",)
    assert (config.lease_ttl_s, config.lease_margin_ms) == (2, 300)


@pytest.mark.core
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"etcd": []}, "etcd: a cluster needs at least one etcd endpoint"),
        ({"etcd": ["localhost"]}, "etcd: 'localhost' is not HOST:PORT"),
        ({"etcd": "127.0.0.1:2379"}, "etcd: expected a list"),
        ({"advertise": ""}, "advertise: '' is not HOST:PORT"),
        ({"cluster": "a/b"}, "cluster: 'a/b' must be 1 to 64 letters"),
        ({"lease_ttl_s": 0}, "lease_ttl_s: 0 is not in 1..60"),
        ({"lease_margin_ms": 1500}, "lease_margin_ms: 1500 must be > 0 and at most half"),
        ({"etcd_timeout_ms": 5000}, "etcd_timeout_ms: 5000 must be > 0 and below the lease"),
        ({"election_settle_ms": 0}, "election_settle_ms: 0 must be > 0"),
        ({"follow": "127.0.0.1:1"}, "follow: not with `cluster`"),
    ],
)
def test_bad_cluster_settings_are_refused_naming_the_key(
    change: dict[str, Any], message: str
) -> None:
    """Each bad value is a ConfigError whose message starts with the key."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, {**GOOD, **change})


@pytest.mark.core
def test_etcd_or_advertise_without_a_cluster_is_refused() -> None:
    """Endpoints without a cluster name are a mistake, not silently ignored."""
    with pytest.raises(ConfigError, match="only with `cluster`"):
        load_config(None, {"etcd": ["127.0.0.1:2379"]})
