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

from atpd.core.limits import Limits
from atpd.files import MAX_CONFIG_FILE_BYTES, FileRefused, read_regular_text

FSYNC_POLICIES = ("always", "everysec", "none")


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
    # Concurrent RPCs the server accepts before answering RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 10_000
    max_message_bytes: int = 16 * 1024 * 1024
    # Change stream: events kept for reconnecting subscribers, per-subscriber queue bound.
    watch_buffer_events: int = 100_000
    watch_max_queue_events: int = 10_000
    watch_max_subscribers: int = 1_000
    # Watch subscribers one peer host may hold (every connection from one address counts).
    max_watch_subscribers_per_peer: int = 16
    # A server stream (Watch, ExportPositions) whose client has not taken a message for this
    # long is ended (DEADLINE_EXCEEDED), freeing its slot and what it holds.
    stream_stall_timeout_s: float = 60.0
    # A BulkLoad stream that sends nothing for this long between messages is ended.
    load_idle_timeout_s: float = 30.0
    # Availability rules (TOML) applied at start when they differ from the recovered ones.
    rules_file: Path | None = None
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
            "max_watch_subscribers_per_peer",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0")
        if self.snapshot_every_seconds <= 0:
            raise ConfigError("snapshot_every_seconds: must be > 0")
        for name in ("stream_stall_timeout_s", "load_idle_timeout_s"):
            value = getattr(self, name)
            # The chained comparison is false for NaN too; inf (never) is refused as well.
            if not 0 < value < float("inf"):
                raise ConfigError(f"{name}: must be a finite number > 0, got {value}")


def _coerce(name: str, value: Any, expected: Any) -> Any:
    if isinstance(expected, Path) or name.endswith("rules_file"):
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
