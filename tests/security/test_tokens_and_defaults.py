"""The tokens file library (create, list, revoke; bad files refused with the field named), the
safe defaults (no exposed start without TLS and tokens), and the metrics host and token."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from atpd.config import Config, ConfigError
from atpd.metrics import Metrics
from atpd.service.server_access import check_exposure, exposure_problems
from atpd.service.tls import is_loopback
from atpd.service.tokens import (
    TokenFileError,
    create_token,
    hash_secret,
    list_tokens,
    parse_tokens,
    revoke_token,
)

NOW_MS = 1_700_000_000_000
SOURCE_ROOT = Path(__file__).parents[2] / "src"


def test_create_stores_only_the_hash(tmp_path: Path) -> None:
    """create_token answers a fresh secret once and the file holds only its SHA-256, mode 0600."""
    path = tmp_path / "tokens.toml"
    secret, entry = create_token(path, "till-1", "pos", NOW_MS, nodes=["ST-PAR-01"])
    text = path.read_text()
    assert secret.startswith("atpd_") and len(secret) >= 45
    assert secret not in text and hash_secret(secret) in text
    assert entry.sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert os.stat(path).st_mode & 0o777 == 0o600
    [listed] = list_tokens(path)
    assert listed == entry and listed.nodes == ("ST-PAR-01",)


def test_revoke_keeps_the_entry_and_names_are_unique(tmp_path: Path) -> None:
    """Revoking marks the entry with its time (idempotent); a name is never reused; an unknown
    name is refused."""
    path = tmp_path / "tokens.toml"
    create_token(path, "loader-1", "loader", NOW_MS)
    revoked = revoke_token(path, "loader-1", NOW_MS + 5)
    assert revoked.revoked_ms == NOW_MS + 5
    assert revoke_token(path, "loader-1", NOW_MS + 9).revoked_ms == NOW_MS + 5
    with pytest.raises(TokenFileError, match="exists already"):
        create_token(path, "loader-1", "loader", NOW_MS)
    with pytest.raises(TokenFileError, match="no token named"):
        revoke_token(path, "nobody", NOW_MS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name", "role": "reader"}, "not a token name"),
        ({"name": "x", "role": "root"}, "not one of"),
        ({"name": "x", "role": "pos"}, "needs a node scope"),
        ({"name": "x", "role": "reader", "geo_prefixes": ["/EU"]}, "not a geo prefix"),
        ({"name": "x", "role": "reader", "expires_ms": NOW_MS - 1}, "not in the future"),
        ({"name": "x", "role": "reader", "nodes": ["a\nb"]}, "control characters"),
    ],
)
def test_create_refuses_bad_requests(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    """Bad names, roles, scopes and expiries are refused, the field named; no file written."""
    path = tmp_path / "tokens.toml"
    with pytest.raises(TokenFileError, match=message):
        create_token(path, now_ms=NOW_MS, **kwargs)  # type: ignore[arg-type]
    assert not path.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[token]]\nname = 'a'\nrole = 'reader'\n", "sha256"),
        (
            "[[token]]\nname = 'a'\nrole = 'reader'\nsha256 = '" + "0" * 64 + "'\nextra = 1\n",
            "unknown key 'extra'",
        ),
        ("token = 3\n", "array of tables"),
        ("[[token]\n", "tokens"),
        (
            "[[token]]\nname = 'a'\nrole = 'reader'\nsha256 = '" + "0" * 64 + "'\n"
            "[[token]]\nname = 'a'\nrole = 'reader'\nsha256 = '" + "1" * 64 + "'\n",
            "appears twice",
        ),
    ],
)
def test_bad_tokens_files_are_refused(text: str, message: str) -> None:
    """A malformed tokens file is refused with the entry and field named."""
    with pytest.raises(TokenFileError, match=message):
        parse_tokens(text, "tokens")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.3.4.5", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("atpd.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only loopback addresses count as not exposed; wildcards and names do not."""
    assert is_loopback(host) is loopback


def test_exposed_bind_needs_tls_and_tokens(tmp_path: Path) -> None:
    """A non-loopback bind without TLS or authentication is refused, naming what is missing;
    with --insecure it is allowed (and logged); loopback needs nothing."""
    exposed = Config(host="0.0.0.0", metrics_port=-1)
    problems = exposure_problems(exposed)
    assert any("TLS is off" in p for p in problems)
    assert any("authentication is off" in p for p in problems)
    with pytest.raises(ConfigError, match="refusing to start"):
        check_exposure(exposed)
    check_exposure(Config(host="0.0.0.0", metrics_port=-1, insecure=True))
    assert exposure_problems(Config()) == []
    secured = Config(
        host="0.0.0.0",
        metrics_port=-1,
        tls_cert_file=tmp_path / "c",
        tls_key_file=tmp_path / "k",
        auth_tokens_file=tmp_path / "t",
    )
    assert exposure_problems(secured) == []


def test_exposed_metrics_need_a_token() -> None:
    """Metrics on a non-loopback host need metrics_token_sha256."""
    assert exposure_problems(Config(metrics_host="0.0.0.0"))
    assert not exposure_problems(Config(metrics_host="0.0.0.0", metrics_token_sha256="a" * 64))


def test_serve_refuses_exposed_start_without_tls() -> None:
    """`atpd serve --host 0.0.0.0` without TLS and tokens exits non-zero with one clear line,
    before it listens anywhere."""
    environment = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "atpd.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--in-memory",
            "--metrics-port",
            "-1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "--insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_token(tmp_path: Path) -> None:
    """With a metrics token the scrape endpoint answers 401 without it and the metrics with it."""
    secret = "atpd_scraper-secret"
    metrics = Metrics()
    port = metrics.serve_http("127.0.0.1", 0, hash_secret(secret))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=10)
        assert info.value.code == 401
        info.value.close()
        wrong = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(wrong, timeout=10)
        info.value.close()
        right = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
        with urllib.request.urlopen(right, timeout=10) as response:
            assert b"atpd_rpc_calls" in response.read()
    finally:
        metrics.http_server.shutdown()
        metrics.http_server.server_close()


def test_security_config_errors() -> None:
    """Half a TLS pair, certificate roles without mutual TLS and a bad metrics hash are refused."""
    with pytest.raises(ConfigError, match="give both"):
        Config(tls_cert_file=Path("c"))
    with pytest.raises(ConfigError, match="mutual TLS"):
        Config(certificate_roles={"CN=x": "reader"})
    with pytest.raises(ConfigError, match="metrics_token_sha256"):
        Config(metrics_token_sha256="xyz")
