"""Wiring a server into an etcd-led cluster (README "Running a cluster")."""

from __future__ import annotations

from collections.abc import Callable

from atpd.config import Config
from atpd.service.cluster_member import ClusterMember
from atpd.service.durability import Durability
from atpd.service.leadership import ClusterSettings, Leadership
from atpd.service.lease_fence import LeaseFence
from atpd.service.replication_role import ReplicationRole


def join_cluster(
    role: ReplicationRole, config: Config, durability_of: Callable[[], Durability | None]
) -> tuple[ClusterMember, Leadership]:
    """Writes stay refused (no leader known, the fence closed) until etcd elects this server;
    start the returned Leadership once the server serves."""
    engine = role.engine
    engine.leader_address = ""
    engine.lease_fence = LeaseFence()
    member = ClusterMember(role, engine, config, durability_of)
    settings = ClusterSettings(
        cluster=config.cluster,
        etcd=config.etcd,
        advertise=config.advertise,
        member_id=config.member_id or config.advertise,
        lease_ttl_s=config.lease_ttl_s,
        lease_margin_ms=config.lease_margin_ms,
        election_settle_ms=config.election_settle_ms,
        etcd_timeout_ms=config.etcd_timeout_ms,
    )
    fence = engine.lease_fence
    leadership = Leadership(settings, member, fence)
    member.epoch_history = leadership.epoch_history
    metrics = engine.metrics
    metrics.cluster_leader.set_function(lambda: int(leadership.is_leader and fence.open))
    metrics.cluster_epoch.set_function(lambda: leadership.epoch)
    leadership.on_elected = metrics.cluster_elections.inc
    return member, leadership
