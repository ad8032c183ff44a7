"""What a server start checks about its exposure (a non-loopback bind needs TLS and tokens),
and the access gate it puts in front of every handler."""

from __future__ import annotations

import logging

from atpd.config import Config, ConfigError
from atpd.service.access_lookup import EngineLookup
from atpd.service.audit import AuditLog
from atpd.service.auth import AccessControl, AccessSettings
from atpd.service.engine import Engine
from atpd.service.method_roles import method_roles_from_config
from atpd.service.principals import AuthConfigError, TokenTable, certificate_principals
from atpd.service.tls import is_loopback
from atpd.service.tokens import TokenFileError

log = logging.getLogger(__name__)


def exposure_problems(config: Config) -> list[str]:
    """Why this configuration is unsafe to run as given (empty: safe). Anything but a loopback
    bind needs TLS and authentication; metrics beyond loopback need a token."""
    problems: list[str] = []
    if not is_loopback(config.host):
        if not config.tls:
            problems.append(
                f"host {config.host!r} is not loopback and TLS is off (tls_cert_file, tls_key_file)"
            )
        if not config.authentication:
            problems.append(
                f"host {config.host!r} is not loopback and authentication is off "
                "(auth_tokens_file or certificate_roles)"
            )
    if (
        config.metrics_port >= 0
        and not is_loopback(config.metrics_host)
        and not config.metrics_token_sha256
    ):
        problems.append(
            f"metrics_host {config.metrics_host!r} is not loopback and metrics_token_sha256 "
            "is not set"
        )
    return problems


def check_exposure(config: Config) -> None:
    """Refuse (ConfigError) an exposed server without TLS and tokens unless `insecure`; with
    `insecure`, say so in the log at every start."""
    problems = exposure_problems(config)
    if not problems:
        return
    if not config.insecure:
        raise ConfigError(
            "refusing to start: "
            + "; ".join(problems)
            + ". Configure TLS and tokens (README: Deploying to stores), bind 127.0.0.1, or "
            "pass --insecure to accept the exposure"
        )
    log.warning("--insecure: serving with %s", "; ".join(problems))


def access_control(config: Config, engine: Engine) -> AccessControl | None:
    """The gate in front of every handler, when authentication or the audit log is on."""
    if not config.authentication and config.audit_log_file is None:
        return None
    try:
        tokens = TokenTable(config.auth_tokens_file, config.auth_reload_interval_s)
        settings = AccessSettings(
            authenticate=config.authentication,
            tokens=tokens,
            certificates=certificate_principals(config.certificate_roles),
            method_roles=method_roles_from_config(config.method_roles),
            reflection_requires_auth=config.reflection_requires_auth,
            max_inflight_per_principal=config.max_inflight_per_principal,
            max_watch_subscribers_per_principal=config.max_watch_subscribers_per_principal,
        )
    except (TokenFileError, AuthConfigError) as error:
        raise ConfigError(str(error)) from None
    if config.audit_log_file is not None:
        try:
            settings.audit = AuditLog(
                config.audit_log_file, config.audit_log_max_bytes, config.audit_log_backup_count
            )
        except OSError as error:
            raise ConfigError(f"{config.audit_log_file}: audit_log_file: {error}") from None
    return AccessControl(settings, EngineLookup(engine))
