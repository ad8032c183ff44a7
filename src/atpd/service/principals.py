"""Principals: who a call is from (a token's or a client certificate's name, role, node scope and
channels), the table of tokens loaded from the tokens file, and the principal of the call being
served (a contextvar the access gate sets)."""

from __future__ import annotations

import contextvars
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atpd.core.commands import Maker
from atpd.service.tokens import (
    SCOPED_ROLES,
    TokenEntry,
    TokenFileError,
    check_geo_prefix,
    check_role,
    hash_secret,
    read_tokens,
)

log = logging.getLogger("atpd.service.auth")


class AuthConfigError(ValueError):
    """`method_roles` or `certificate_roles` cannot be used; the message names the entry."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Nodes a principal may act on: these node ids, and nodes under these geo prefixes."""

    node_ids: frozenset[str]
    geo_prefixes: tuple[tuple[str, ...], ...]

    def contains(self, node_id: str, geo_path: tuple[str, ...] | None) -> bool:
        if node_id in self.node_ids:
            return True
        if geo_path is None:
            return False
        return any(geo_path[: len(prefix)] == prefix for prefix in self.geo_prefixes)

    def describe(self) -> str:
        parts = sorted(self.node_ids) + ["/".join(p) + "/*" for p in self.geo_prefixes]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    source: str  # "token", "certificate" or "anonymous" (authentication off)
    scope: Scope | None = None
    channels: frozenset[str] | None = None  # None: any channel
    expires_at_ms: int | None = None
    # The channel of a Reserve or till call that names none (tokens file `default_channel`).
    default_channel: str = ""
    # What a reservation made by this principal records (None for the anonymous principal of
    # authentication off). Built once here, so Reserve only passes a reference along.
    maker: Maker | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.source == "anonymous":
            return
        scope = self.scope
        maker = Maker(
            self.name,
            self.role,
            tuple(sorted(scope.node_ids)) if scope is not None else (),
            tuple("/".join(p) for p in scope.geo_prefixes) if scope is not None else (),
            tuple(sorted(self.channels)) if self.channels is not None else (),
        )
        object.__setattr__(self, "maker", maker)


ANONYMOUS = Principal("anonymous", "admin", "anonymous")
CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "atpd_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the call being served (None outside a call or with access off)."""
    return CURRENT_PRINCIPAL.get()


def scope_of(nodes: Iterable[str], geo_prefixes: Iterable[str]) -> Scope | None:
    node_ids = frozenset(nodes)
    prefixes = tuple(tuple(p.split("/")) for p in geo_prefixes)
    if not node_ids and not prefixes:
        return None
    return Scope(node_ids, prefixes)


def principal_of_entry(entry: TokenEntry) -> Principal:
    return Principal(
        entry.name,
        entry.role,
        "token",
        scope_of(entry.nodes, entry.geo_prefixes),
        frozenset(entry.channels) if entry.channels else None,
        entry.expires_ms,
        entry.default_channel,
    )


def certificate_principals(table: Mapping[str, Any]) -> dict[str, Principal]:
    """`certificate_roles`: subject -> role, or subject -> {role, nodes, geo_prefixes,
    channels}. The subject is matched against the client certificate's subject as gRPC
    reports it (e.g. "CN=till-1,O=Maison") and, failing that, its common name."""
    principals: dict[str, Principal] = {}
    for subject, value in table.items():
        where = f"certificate_roles.{subject!r}"
        spec: Mapping[str, Any] = {"role": value} if isinstance(value, str) else value
        if not isinstance(spec, Mapping):
            raise AuthConfigError(f"{where}: expected a role name or a table")
        unknown = set(spec) - {"role", "nodes", "geo_prefixes", "channels"}
        if unknown:
            raise AuthConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        try:
            role = check_role(spec.get("role"), f"{where}.role")
            lists = {}
            for key in ("nodes", "geo_prefixes", "channels"):
                items = spec.get(key, [])
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise AuthConfigError(f"{where}.{key}: expected a list of strings")
                lists[key] = items
            for prefix in lists["geo_prefixes"]:
                check_geo_prefix(prefix, f"{where}.geo_prefixes")
        except TokenFileError as error:
            raise AuthConfigError(str(error)) from None
        if role in SCOPED_ROLES and not (lists["nodes"] or lists["geo_prefixes"]):
            raise AuthConfigError(f"{where}: role {role!r} needs nodes or geo_prefixes")
        principals[subject] = Principal(
            f"cert:{subject}",
            role,
            "certificate",
            scope_of(lists["nodes"], lists["geo_prefixes"]),
            frozenset(lists["channels"]) or None,
        )
    return principals


class TokenTable:
    """The tokens file as digest -> principal, reloaded when the file changes."""

    def __init__(
        self,
        path: Path | None,
        reload_interval_s: float,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.reload_interval_s = reload_interval_s
        self.clock_s = clock_s
        self.by_digest: dict[str, tuple[str, Principal]] = {}
        self.reloads = 0
        self._stamp: tuple[int, int, int] | None = None
        self._checked_s = clock_s()
        if path is not None:
            self._load(path)  # a bad file at start refuses the start (TokenFileError)

    def _file_stamp(self, path: Path) -> tuple[int, int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _load(self, path: Path) -> None:
        stamp = self._file_stamp(path)
        entries = read_tokens(path)
        self.by_digest = {
            entry.sha256: (entry.sha256, principal_of_entry(entry))
            for entry in entries
            if entry.revoked_ms is None
        }
        self._stamp = stamp
        self.reloads += 1

    def reload_now(self) -> bool:
        """Re-read the file (SIGHUP); a bad file keeps the previous table. Answers success."""
        if self.path is None:
            return True
        self._checked_s = self.clock_s()
        try:
            self._load(self.path)
        except TokenFileError as error:
            # The stamp is remembered so a broken file is reported once, not at every check.
            self._stamp = self._file_stamp(self.path)
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", error)
            return False
        log.info("tokens reloaded from %s: %d active", self.path, len(self.by_digest))
        return True

    def maybe_reload(self) -> None:
        """Called per call: looks at the file at most once per reload_interval_s."""
        now_s = self.clock_s()
        if self.path is None or now_s - self._checked_s < self.reload_interval_s:
            return
        self._checked_s = now_s
        if self._file_stamp(self.path) != self._stamp:
            self.reload_now()

    def lookup(self, secret: str) -> Principal | None:
        digest = hash_secret(secret)
        found = self.by_digest.get(digest)
        if found is None:
            return None
        # The dict found it by this digest already; compare_digest keeps a future change to
        # the lookup (a prefix index, say) from turning into a timing oracle.
        stored, principal = found
        return principal if hmac.compare_digest(stored, digest) else None
