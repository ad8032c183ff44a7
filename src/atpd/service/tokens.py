"""Bearer tokens: the tokens file (TOML, hashes only), its entries, and the library functions
`atpd token create/list/revoke` are built on.

A secret is `atpd_` + 32 random bytes in base64url (256 bits of entropy). The file keeps only
`sha256(secret)` in hex. A slow KDF (scrypt, argon2) exists to protect low-entropy passwords from
offline guessing; against a 256-bit random secret it adds nothing an attacker could notice, and
it would cost milliseconds on every cache miss. The server looks a presented secret up by its
digest (a dict of the table) and confirms the match with `hmac.compare_digest`, so no comparison
time depends on how much of a stored hash a guess shares.

File format (one `[[token]]` table per entry; revoked entries stay, with `revoked_ms`, so the
name is never reused and an auditor can see when access ended):

    [[token]]
    name = "st-par-01-till-1"
    role = "pos"
    nodes = ["ST-PAR-01"]          # optional node scope: node ids ...
    geo_prefixes = ["EU/FR/Paris"]  # ... and/or geo prefixes (whole segments)
    channels = ["store"]           # optional: the only channels Reserve may name
    default_channel = "store"      # optional: the channel of a call that names none
    expires_ms = 1767225600000     # optional, epoch milliseconds
    created_ms = 1735689600000
    revoked_ms = 1736000000000     # set by revoke
    sha256 = "9f86d081..."
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atpd.core.ids import NAME_PATTERN as CHANNEL_PATTERN
from atpd.files import FileRefused, read_regular_text

# `replication`: a follower's credential towards its primary (ReplicationService only).
ROLES = ("reader", "checkout", "pos", "loader", "admin", "replication")
# Roles whose tokens must carry a node scope.
SCOPED_ROLES = frozenset({"pos"})
SECRET_PREFIX = "atpd_"
SECRET_BYTES = 32
# A tokens file holds one short table per terminal: 16 MiB is ~50,000 terminals.
MAX_TOKENS_FILE_BYTES = 16 << 20
MAX_TOKENS = 100_000
MAX_SCOPE_ENTRIES = 1_000
MAX_FIELD_CHARS = 128
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

ENTRY_KEYS = frozenset(
    {
        "name",
        "role",
        "nodes",
        "geo_prefixes",
        "channels",
        "default_channel",
        "expires_ms",
        "created_ms",
        "revoked_ms",
        "sha256",
    }
)


class TokenFileError(ValueError):
    """The tokens file or a token request is unusable; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: str
    sha256: str
    nodes: tuple[str, ...] = ()
    geo_prefixes: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    expires_ms: int | None = None
    # The channel used when a Reserve or a till call (StoreService) names none: a terminal's
    # own channel, so tills need not send it. Empty: the rules' default.
    default_channel: str = ""
    created_ms: int | None = None
    revoked_ms: int | None = None

    @property
    def scoped(self) -> bool:
        return bool(self.nodes or self.geo_prefixes)

    def to_toml(self) -> str:
        # JSON strings of checked text (no control characters, no surrogates) are TOML basic
        # strings, and JSON lists of them TOML arrays.
        lines = ["[[token]]", f"name = {json.dumps(self.name)}", f"role = {json.dumps(self.role)}"]
        for key in ("nodes", "geo_prefixes", "channels"):
            values: tuple[str, ...] = getattr(self, key)
            if values:
                lines.append(f"{key} = {json.dumps(list(values), ensure_ascii=False)}")
        if self.default_channel:
            lines.append(f"default_channel = {json.dumps(self.default_channel)}")
        for key in ("expires_ms", "created_ms", "revoked_ms"):
            value = getattr(self, key)
            if value is not None:
                lines.append(f"{key} = {value}")
        lines.append(f'sha256 = "{self.sha256}"')
        return "\n".join(lines) + "\n"


def new_secret() -> str:
    """A fresh secret: the prefix (so secret scanners can spot a leaked one) + 256 random bits."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return SECRET_PREFIX + raw


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a secret, as stored in the tokens file."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise TokenFileError(f"{where}: expected a non-empty string, got {value!r}")
    if len(value) > MAX_FIELD_CHARS:
        raise TokenFileError(f"{where}: longer than {MAX_FIELD_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) < 0xE000 for c in value):
        raise TokenFileError(f"{where}: contains control characters")
    return value


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise TokenFileError(f"{where}: expected a list of strings, got {value!r}")
    if len(value) > MAX_SCOPE_ENTRIES:
        raise TokenFileError(f"{where}: more than {MAX_SCOPE_ENTRIES} entries")
    return tuple(_text(item, f"{where}[{i}]") for i, item in enumerate(value))


def _epoch_ms(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TokenFileError(f"{where}: expected epoch milliseconds > 0, got {value!r}")
    return value


def check_name(name: Any, where: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise TokenFileError(
            f"{where}: {name!r} is not a token name (1-128 letters, digits, '.', '_', '@', '-', "
            "starting with a letter or digit)"
        )
    return name


def check_role(role: Any, where: str = "role") -> str:
    if role not in ROLES:
        raise TokenFileError(f"{where}: {role!r} is not one of {', '.join(ROLES)}")
    assert isinstance(role, str)
    return role


def check_geo_prefix(prefix: str, where: str) -> str:
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        raise TokenFileError(f"{where}: {prefix!r} is not a geo prefix like 'EU/FR/Paris'")
    return prefix


def entry_from_table(table: Any, where: str) -> TokenEntry:
    if not isinstance(table, dict):
        raise TokenFileError(f"{where}: expected a table")
    unknown = set(table) - ENTRY_KEYS
    if unknown:
        raise TokenFileError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(ENTRY_KEYS))})"
        )
    digest = table.get("sha256")
    if not isinstance(digest, str) or not HEX_DIGEST.fullmatch(digest):
        raise TokenFileError(f"{where}.sha256: expected 64 lowercase hex digits")
    geo_prefixes = _texts(table.get("geo_prefixes"), f"{where}.geo_prefixes")
    for i, prefix in enumerate(geo_prefixes):
        check_geo_prefix(prefix, f"{where}.geo_prefixes[{i}]")
    return check_scope(
        TokenEntry(
            name=check_name(table.get("name"), f"{where}.name"),
            role=check_role(table.get("role"), f"{where}.role"),
            sha256=digest,
            nodes=_texts(table.get("nodes"), f"{where}.nodes"),
            geo_prefixes=geo_prefixes,
            channels=_texts(table.get("channels"), f"{where}.channels"),
            expires_ms=_epoch_ms(table.get("expires_ms"), f"{where}.expires_ms"),
            created_ms=_epoch_ms(table.get("created_ms"), f"{where}.created_ms"),
            revoked_ms=_epoch_ms(table.get("revoked_ms"), f"{where}.revoked_ms"),
            default_channel=check_default_channel(
                table.get("default_channel"), f"{where}.default_channel"
            ),
        ),
        where,
    )


def check_default_channel(value: Any, where: str) -> str:
    """A channel name (1-32 lowercase letters, digits, _ -), or nothing."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not CHANNEL_PATTERN.fullmatch(value):
        raise TokenFileError(f"{where}: {value!r} is not 1-32 lowercase letters, digits, _ -")
    return value


def check_scope(entry: TokenEntry, where: str = "token") -> TokenEntry:
    """A pos token is a store terminal's: it must name its nodes or geo prefixes. Its default
    channel must be one it may use."""
    if entry.role in SCOPED_ROLES and not entry.scoped:
        raise TokenFileError(
            f"{where}: role {entry.role!r} needs a node scope (nodes or geo_prefixes)"
        )
    if entry.default_channel and entry.channels and entry.default_channel not in entry.channels:
        raise TokenFileError(
            f"{where}: default_channel {entry.default_channel!r} is not one of its channels "
            f"({', '.join(entry.channels)})"
        )
    return entry


def parse_tokens(text: str, where: str) -> list[TokenEntry]:
    """Entries of a tokens file's text; TokenFileError naming the entry and field if invalid."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TokenFileError(f"{where}: {error}") from None
    except RecursionError:
        raise TokenFileError(f"{where}: arrays or tables are nested too deeply") from None
    unknown = set(document) - {"token"}
    if unknown:
        raise TokenFileError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected [[token]])")
    tables = document.get("token", [])
    if not isinstance(tables, list):
        raise TokenFileError(f"{where}: 'token' must be an array of tables ([[token]])")
    if len(tables) > MAX_TOKENS:
        raise TokenFileError(f"{where}: more than {MAX_TOKENS} tokens")
    entries = [entry_from_table(t, f"{where}: token[{i}]") for i, t in enumerate(tables)]
    names: set[str] = set()
    digests: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.name in names:
            raise TokenFileError(f"{where}: token[{i}].name: {entry.name!r} appears twice")
        if entry.sha256 in digests:
            raise TokenFileError(f"{where}: token[{i}].sha256: the same hash appears twice")
        names.add(entry.name)
        digests.add(entry.sha256)
    return entries


def read_tokens(path: Path) -> list[TokenEntry]:
    """The entries of the tokens file at `path` (regular file, bounded)."""
    try:
        text = read_regular_text(path, MAX_TOKENS_FILE_BYTES, "tokens file")
    except FileRefused as error:
        raise TokenFileError(str(error)) from None
    return parse_tokens(text, str(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the tokens file, so two `atpd token` commands never lose one
    another's change."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_tokens(path: Path, entries: Sequence[TokenEntry]) -> None:
    """Replace the file atomically (temp file, fsync, rename), readable by its owner only:
    a server polling it sees the old content or the new, never a half-written file."""
    header = "# atpd tokens: SHA-256 hashes of the secrets only (see `atpd token`).\n"
    text = header + "".join("\n" + entry.to_toml() for entry in entries)
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def create_token(
    path: Path,
    name: str,
    role: str,
    now_ms: int,
    *,
    nodes: Sequence[str] = (),
    geo_prefixes: Sequence[str] = (),
    channels: Sequence[str] = (),
    expires_ms: int | None = None,
    default_channel: str = "",
) -> tuple[str, TokenEntry]:
    """Add a token to the file (created if missing) and answer its secret, which is stored
    nowhere: the caller shows it once. A name already in the file (even revoked) is refused."""
    entry = TokenEntry(
        name=check_name(name),
        role=check_role(role),
        sha256="0" * 64,
        nodes=_texts(list(nodes), "nodes"),
        geo_prefixes=tuple(
            check_geo_prefix(p, f"geo_prefixes[{i}]")
            for i, p in enumerate(_texts(list(geo_prefixes), "geo_prefixes"))
        ),
        channels=_texts(list(channels), "channels"),
        expires_ms=_epoch_ms(expires_ms, "expires_ms"),
        created_ms=_epoch_ms(now_ms, "created_ms"),
        default_channel=check_default_channel(default_channel, "default_channel"),
    )
    check_scope(entry, name)
    if expires_ms is not None and expires_ms <= now_ms:
        raise TokenFileError(f"expires_ms: {expires_ms} is not in the future")
    secret = new_secret()
    entry = _replace(entry, sha256=hash_secret(secret))
    with _locked(path):
        entries = read_tokens(path) if path.exists() else []
        if any(existing.name == name for existing in entries):
            raise TokenFileError(f"{path}: a token named {name!r} exists already")
        if len(entries) >= MAX_TOKENS:
            raise TokenFileError(f"{path}: holds {MAX_TOKENS} tokens already")
        _write_tokens(path, [*entries, entry])
    return secret, entry


def list_tokens(path: Path) -> list[TokenEntry]:
    return read_tokens(path)


def revoke_token(path: Path, name: str, now_ms: int) -> TokenEntry:
    """Mark a token revoked (kept in the file with its time); a running server stops accepting
    it at its next reload. Revoking a revoked token changes nothing."""
    with _locked(path):
        entries = read_tokens(path)
        for i, entry in enumerate(entries):
            if entry.name == name:
                if entry.revoked_ms is not None:
                    return entry
                revoked = _replace(entry, revoked_ms=now_ms)
                entries[i] = revoked
                _write_tokens(path, entries)
                return revoked
    raise TokenFileError(f"{path}: no token named {name!r}")


def _replace(entry: TokenEntry, **changes: Any) -> TokenEntry:
    import dataclasses

    replaced: TokenEntry = dataclasses.replace(entry, **changes)
    return replaced
