"""Server configuration: a TOML file, then command-line flags on top.

Every key is optional; unknown keys are refused with the file and key named, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atpd.core.geo import parse_geo_path
from atpd.core.limits import Limits
from atpd.files import MAX_CONFIG_FILE_BYTES, FileRefused, read_regular_text

FSYNC_POLICIES = ("always", "everysec", "none")
REPLICATION_MODES = ("async", "sync")
SYNC_FALLBACKS = ("degrade", "refuse")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 50051
    # Prometheus metrics over HTTP; 0 picks a free port, -1 disables.
    metrics_port: int = 9464
    # Journal segments and snapshots live here.
    data_dir: Path = Path("snapshots")
    fsync: str = "always"
    journal_segment_bytes: int = 64 * 1024 * 1024
    snapshot_every_records: int = 1_000_000
    snapshot_every_seconds: float = 3600.0
    # How often the objects that survived young collections are frozen out of the cyclic GC's
    # full passes (which would otherwise walk the whole state: see service/gc_pauses.py).
    gc_freeze_interval_s: float = 10.0
    # Concurrent RPCs the server accepts before answering RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 10_000
    # Largest request accepted (grpc.max_receive_message_length); larger ones answer
    # RESOURCE_EXHAUSTED before anything is decoded. Sized to the largest legitimate request: a
    # BulkLoad chunk of limits.max_load_chunk_rows rows (checked below), a 1 MiB SetRules text.
    # Memory held by requests in flight is at most about this x the calls in flight.
    max_receive_message_bytes: int = 4 * 1024 * 1024
    # Largest response (an ExportPositions chunk of max_load_chunk_rows rows is the largest).
    max_send_message_bytes: int = 16 * 1024 * 1024
    # Client connections held at once (grpc.max_allowed_incoming_connections); further ones are
    # closed on accept until some close. Capped at start to the open-files limit minus
    # fd_reserve, which stays for the journal, snapshots, metrics and health checks.
    max_connections: int = 10_000
    fd_reserve: int = 256
    # A connection with no call in flight for this long is closed (GOAWAY); a connection that
    # does not complete the HTTP/2 handshake within it is dropped.
    connection_idle_timeout_s: float = 300.0
    # Server pings on connections silent for keepalive_time_s, and closes those that do not
    # answer within keepalive_timeout_s (dead peers, half-open TCP).
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # Change stream: events kept for reconnecting subscribers, per-subscriber queue bound.
    watch_buffer_events: int = 100_000
    watch_max_queue_events: int = 10_000
    watch_max_subscribers: int = 1_000
    # WatchBatch: the most events a client may ask per message, and the longest it may let the
    # server hold a message back to fill it.
    watch_max_batch_events: int = 1_000
    watch_max_batch_delay_ms: int = 1_000
    # Watch subscribers one peer host may hold (every connection from one address counts).
    max_watch_subscribers_per_peer: int = 16
    # A server stream (Watch, ExportPositions) whose client has not taken a message for this
    # long is ended (DEADLINE_EXCEEDED), freeing its slot and what it holds.
    stream_stall_timeout_s: float = 60.0
    # A BulkLoad stream that sends nothing for this long between messages is ended.
    load_idle_timeout_s: float = 30.0
    # Availability rules (TOML) applied at start when they differ from the recovered ones.
    rules_file: Path | None = None
    # Option tokens (a promise's signed plan): the HMAC key file (32+ random bytes; none: a key
    # drawn at each start, so tokens do not outlive a restart) and how long a token is valid.
    option_token_key_file: Path | None = None
    option_token_ttl_s: float = 600.0
    # The fulfilment network (TOML) applied at start when it differs from the recovered one.
    network_file: Path | None = None
    # TLS on the gRPC port (PEM files, re-read on SIGHUP or when they change). With
    # tls_client_ca_file, clients must present a certificate signed by one of its CAs.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Bearer tokens (TOML, hashes only; see `atpd token`). Setting it (or certificate_roles)
    # turns authentication on: every call but health then needs a credential.
    auth_tokens_file: Path | None = None
    # How often the tokens file is looked at for changes (SIGHUP re-reads it at once).
    auth_reload_interval_s: float = 2.0
    # Client certificate subject (or common name) -> role, or -> {role, nodes, geo_prefixes,
    # channels}: mutual TLS clients without a token get that principal.
    certificate_roles: dict[str, Any] = field(default_factory=dict)
    # "Service/Method" -> roles allowed, replacing the default for that method.
    method_roles: dict[str, Any] = field(default_factory=dict)
    # With authentication on, reflection needs a credential (any role) unless this is false.
    reflection_requires_auth: bool = True
    # Allow a non-loopback bind without TLS and authentication (logged at every start).
    insecure: bool = False
    # The metrics endpoint binds here, not where gRPC does; beyond loopback it needs a token.
    metrics_host: str = "127.0.0.1"
    # Hex SHA-256 of the secret a scraper must send as `Authorization: Bearer <secret>`.
    metrics_token_sha256: str = ""
    # Admin and loader actions (and calls refused for permission) as JSON lines, rotated.
    audit_log_file: Path | None = None
    audit_log_max_bytes: int = 64 * 1024 * 1024
    audit_log_backup_count: int = 10
    # Leadership through etcd (README "Running a cluster"). With `cluster` set, the members of
    # the cluster elect their leader in etcd (`etcd`: its endpoints, host:port), under the key
    # prefix /atpd/<cluster>/; `advertise` is the host:port the others and clients reach this
    # server at; `member_id` names it in etcd (default: `advertise`). The leader stops writing
    # lease_margin_ms before its lease of lease_ttl_s seconds may expire in etcd.
    cluster: str = ""
    etcd: tuple[str, ...] = ()
    advertise: str = ""
    member_id: str = ""
    lease_ttl_s: int = 2
    lease_margin_ms: int = 300
    # Candidates wait this long for the others to publish their sequence before an election.
    election_settle_ms: int = 200
    # Deadline of each etcd call.
    etcd_timeout_ms: int = 1000
    # Calls one principal may have in flight, and Watch streams it may hold (authentication on).
    max_inflight_per_principal: int = 256
    max_watch_subscribers_per_principal: int = 16
    # Replication (README "Running a cluster"). `follow = "host:port"` makes this server a
    # read-only follower of that primary.
    follow: str = ""
    # How this server names itself to its primary (default: hostname:port).
    replica_id: str = ""
    # A follower's credentials towards its primary: a file holding a bearer token of role
    # `replication`, and the CA to check the primary's TLS certificate (none: plaintext).
    follow_token_file: Path | None = None
    follow_tls_ca_file: Path | None = None
    # "sync": a write is acknowledged once a follower has it durable too, or after
    # sync_timeout_ms per sync_fallback ("degrade": go on as async, loudly, until a follower
    # catches up; "refuse": answer UNAVAILABLE).
    replication: str = "async"
    sync_timeout_ms: int = 1000
    sync_fallback: str = "degrade"
    # Recent journal records the primary keeps in memory for its followers (older ones are
    # read back from the journal files), and the most bytes of records in one stream message.
    replication_buffer_bytes: int = 64 * 1024 * 1024
    replication_batch_bytes: int = 1024 * 1024
    # The primary says it is alive this often when idle; a follower that hears nothing for
    # replication_timeout_ms reconnects, waiting between attempts up to
    # replication_reconnect_max_ms (doubling from 50 ms).
    replication_heartbeat_ms: int = 500
    replication_timeout_ms: int = 5000
    replication_reconnect_max_ms: int = 2000
    # Commands in one CommandBatch call or Submit message (each also within
    # max_receive_message_bytes: README, "Batches and the Submit stream").
    max_batch_commands: int = 8_192
    # Batches of one Submit stream applied and not yet answered (waiting for the disk) at once;
    # the stream is not read further until the oldest is answered.
    max_submit_inflight_batches: int = 16
    # Restock plans (PlanRestock) kept for ApplyRestock / GetRestockPlan; the oldest go first.
    max_restock_plans: int = 100
    # The restock schedule: every restock_schedule_interval_s (0: off) plan for the nodes under
    # restock_schedule_geo ("" : all) and apply the plan, unless that would move more than
    # restock_schedule_max_units_per_day units on the current UTC day (then it waits a day).
    restock_schedule_interval_s: float = 0.0
    restock_schedule_geo: str = ""
    restock_schedule_horizon_days: int = 7
    restock_schedule_max_units_per_day: int = 10_000
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync: {self.fsync!r} is not one of {', '.join(FSYNC_POLICIES)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: {self.port} is not in 0..65535")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: {self.metrics_port} is not in -1..65535")
        for name in (
            "journal_segment_bytes",
            "snapshot_every_records",
            "max_concurrent_rpcs",
            "watch_buffer_events",
            "watch_max_queue_events",
            "watch_max_subscribers",
            "watch_max_batch_events",
            "max_receive_message_bytes",
            "max_send_message_bytes",
            "max_connections",
            "fd_reserve",
            "max_watch_subscribers_per_peer",
            "audit_log_max_bytes",
            "max_inflight_per_principal",
            "max_watch_subscribers_per_principal",
            "max_batch_commands",
            "max_submit_inflight_batches",
            "max_restock_plans",
            "restock_schedule_horizon_days",
            "restock_schedule_max_units_per_day",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0")
        for name in (
            "snapshot_every_seconds",
            "gc_freeze_interval_s",
            "connection_idle_timeout_s",
            "keepalive_time_s",
            "keepalive_timeout_s",
            "stream_stall_timeout_s",
            "load_idle_timeout_s",
            "auth_reload_interval_s",
        ):
            value = getattr(self, name)
            # The chained comparison is false for NaN too; inf (never) is refused as well.
            if not 0 < value < float("inf"):
                raise ConfigError(f"{name}: must be a finite number > 0, got {value}")
        if self.watch_max_batch_delay_ms < 0:
            raise ConfigError("watch_max_batch_delay_ms: must be >= 0")
        interval = self.restock_schedule_interval_s
        if not 0 <= interval < float("inf"):
            raise ConfigError(
                "restock_schedule_interval_s: must be a finite number >= 0 (0: off), "
                f"got {interval}"
            )
        if self.restock_schedule_geo:
            try:
                parse_geo_path(self.restock_schedule_geo)
            except ValueError as error:
                raise ConfigError(f"restock_schedule_geo: {error}") from None
        self._check_security()
        self._check_cluster()
        self._check_replication()
        chunk_bytes = max_load_chunk_bytes(self.limits.max_load_chunk_rows)
        if chunk_bytes > self.max_receive_message_bytes:
            raise ConfigError(
                f"max_receive_message_bytes: {self.max_receive_message_bytes} is below the "
                f"largest BulkLoad chunk (max_load_chunk_rows = {self.limits.max_load_chunk_rows} "
                f"rows can take up to {chunk_bytes} bytes); raise it or lower max_load_chunk_rows"
            )
        if self.max_receive_message_bytes < MAX_RULES_MESSAGE_BYTES:
            raise ConfigError(
                f"max_receive_message_bytes: {self.max_receive_message_bytes} is below the "
                f"largest SetRules request ({MAX_RULES_MESSAGE_BYTES} bytes)"
            )

    def _check_security(self) -> None:
        if self.audit_log_backup_count < 0:
            raise ConfigError("audit_log_backup_count: must be >= 0")
        for name in ("insecure", "reflection_requires_auth"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        for name in ("certificate_roles", "method_roles"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name}: expected a table")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file: give both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("tls_client_ca_file: needs tls_cert_file and tls_key_file")
        if self.certificate_roles and self.tls_client_ca_file is None:
            raise ConfigError("certificate_roles: needs tls_client_ca_file (mutual TLS)")
        token = self.metrics_token_sha256
        if token and (len(token) != 64 or token.strip("0123456789abcdef")):
            raise ConfigError("metrics_token_sha256: expected 64 lowercase hex digits")

    def _check_cluster(self) -> None:
        if isinstance(self.etcd, list):
            object.__setattr__(self, "etcd", tuple(self.etcd))  # TOML gives a list
        if not isinstance(self.etcd, tuple) or not all(
            isinstance(endpoint, str) for endpoint in self.etcd
        ):
            raise ConfigError(f'etcd: expected a list of "host:port" strings, got {self.etcd!r}')
        if not self.cluster:
            if self.etcd or self.advertise:
                raise ConfigError("etcd, advertise: only with `cluster` (the cluster's name)")
            return
        if self.follow:
            raise ConfigError(
                "follow: not with `cluster` (the cluster's members elect whom to follow)"
            )
        if not self.cluster.replace("-", "").replace("_", "").isalnum() or len(self.cluster) > 64:
            raise ConfigError(
                f"cluster: {self.cluster!r} must be 1 to 64 letters, digits, '-' or '_'"
            )
        if not self.etcd:
            raise ConfigError("etcd: a cluster needs at least one etcd endpoint (host:port)")
        for endpoint in self.etcd:
            if not _is_host_port(endpoint):
                raise ConfigError(f"etcd: {endpoint!r} is not HOST:PORT")
        if not _is_host_port(self.advertise):
            raise ConfigError(
                f"advertise: {self.advertise!r} is not HOST:PORT (how the others reach this "
                "server; a cluster needs it)"
            )
        if not 1 <= self.lease_ttl_s <= 60:
            raise ConfigError(f"lease_ttl_s: {self.lease_ttl_s} is not in 1..60")
        if not 0 < self.lease_margin_ms * 2 <= self.lease_ttl_s * 1000:
            raise ConfigError(
                f"lease_margin_ms: {self.lease_margin_ms} must be > 0 and at most half the "
                f"lease ({self.lease_ttl_s * 500} ms)"
            )
        for name in ("election_settle_ms", "etcd_timeout_ms"):
            if not 0 < getattr(self, name) < self.lease_ttl_s * 1000:
                raise ConfigError(
                    f"{name}: {getattr(self, name)} must be > 0 and below the lease "
                    f"({self.lease_ttl_s * 1000} ms)"
                )

    def _check_replication(self) -> None:
        if self.replication not in REPLICATION_MODES:
            raise ConfigError(
                f"replication: {self.replication!r} is not one of {', '.join(REPLICATION_MODES)}"
            )
        if self.sync_fallback not in SYNC_FALLBACKS:
            raise ConfigError(
                f"sync_fallback: {self.sync_fallback!r} is not one of {', '.join(SYNC_FALLBACKS)}"
            )
        for name in (
            "sync_timeout_ms",
            "replication_buffer_bytes",
            "replication_batch_bytes",
            "replication_heartbeat_ms",
            "replication_timeout_ms",
            "replication_reconnect_max_ms",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0")
        if self.replication_timeout_ms <= self.replication_heartbeat_ms:
            raise ConfigError(
                f"replication_timeout_ms: {self.replication_timeout_ms} must exceed "
                f"replication_heartbeat_ms ({self.replication_heartbeat_ms})"
            )
        if self.follow:
            host, separator, port = self.follow.rpartition(":")
            if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"follow: {self.follow!r} is not HOST:PORT")

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def authentication(self) -> bool:
        return self.auth_tokens_file is not None or bool(self.certificate_roles)


# Encoded bytes a BulkLoad chunk can take per row, at worst: a new 64-character SKU and node id
# in the chunk's dictionaries (66 bytes each with tag and length), both indexes (3-byte varints),
# on_hand up to 1e9 (5 bytes) and a safety stock of -1 (10 bytes: negative varints take ten).
LOAD_ROW_MAX_BYTES = 66 + 66 + 3 + 3 + 5 + 10
# Tags and lengths of the message and its packed fields.
LOAD_CHUNK_OVERHEAD_BYTES = 64
# A SetRules request: the 1 MiB rule text plus its source name (256 characters) and framing.
MAX_RULES_MESSAGE_BYTES = (1 << 20) + 2048


def _is_host_port(text: str) -> bool:
    host, separator, port = text.rpartition(":")
    return bool(separator and host and port.isdigit() and 0 < int(port) < 65536)


def max_load_chunk_bytes(rows: int) -> int:
    """Largest encoded BulkLoadRequest carrying a chunk of `rows` rows."""
    return rows * LOAD_ROW_MAX_BYTES + LOAD_CHUNK_OVERHEAD_BYTES


def _coerce(name: str, value: Any, expected: Any) -> Any:
    if isinstance(expected, Path) or name.endswith("_file"):
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a path string, got {value!r}")
        return Path(value)
    if isinstance(expected, bool) or not isinstance(expected, int | float | str):
        return value
    if isinstance(expected, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(expected):
        raise ConfigError(f"{name}: expected {type(expected).__name__}, got {value!r}")
    return value


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    defaults = cls()
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(defaults, key)
        if isinstance(default, Limits):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a table")
            values[key] = _build(Limits, value, f"{where}{key}.")
        else:
            values[key] = _coerce(f"{where}{key}", value, default)
    try:
        return cls(**values)
    except (AssertionError, TypeError) as error:
        raise ConfigError(f"{where}: invalid values ({error})") from error


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (TOML) if given, then apply non-None `overrides` (from flags)."""
    table: dict[str, Any] = {}
    if path is not None:
        try:
            table = tomllib.loads(read_regular_text(path, MAX_CONFIG_FILE_BYTES, "config file"))
        except FileRefused as error:
            raise ConfigError(str(error)) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from error
        except RecursionError:
            raise ConfigError(f"{path}: arrays or tables are nested too deeply") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            table[key] = value
    where = f"{path}: " if path is not None else ""
    config: Config = _build(Config, table, where)
    return config
