"""The audit log: one JSON line per admin or loader action (and per call refused for
permission), with principal, time, peer, method, outcome and a summary of what was asked, to a
size-rotated file (`audit_log_file`, `audit_log_max_bytes`, `audit_log_backup_count`).

Lines are written synchronously on the event loop: admin and loader calls are rare next to
reads, a line is a few hundred bytes, and a line written before the answer leaves is a line
that survives a crash right after it.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Longest text value kept in a summary (rule text, ids): the log is for who did what, not a
# copy of the payload.
MAX_SUMMARY_TEXT_CHARS = 200
# Node ids listed in a summary at most (a FULL load may name thousands); the count is kept.
MAX_SUMMARY_LIST_ITEMS = 20


def clip(value: Any) -> Any:
    """A summary value bounded in size (long strings cut, long lists cut and counted)."""
    if isinstance(value, str) and len(value) > MAX_SUMMARY_TEXT_CHARS:
        return f"{value[:MAX_SUMMARY_TEXT_CHARS]}... ({len(value)} characters)"
    if isinstance(value, list | tuple):
        items = [clip(item) for item in value[:MAX_SUMMARY_LIST_ITEMS]]
        if len(value) > MAX_SUMMARY_LIST_ITEMS:
            items.append(f"... ({len(value)} in all)")
        return items
    return value


class AuditLog:
    """Appends JSON lines to a rotated file through a private, non-propagating logger."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backup_count: int,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        assert max_bytes > 0 and backup_count >= 0
        self.path = path
        self.clock_s = clock_s
        self.handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        # One logger per file: two servers in one process (tests) never share handlers.
        self.logger = logging.getLogger(f"atpd.audit.{path}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)

    def record(
        self,
        *,
        principal: str,
        role: str,
        peer: str,
        method: str,
        outcome: str,
        summary: dict[str, Any],
        detail: str = "",
    ) -> None:
        now_s = self.clock_s()
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_s))
            + f".{int(now_s * 1000) % 1000:03d}Z",
            "principal": principal,
            "role": role,
            "peer": peer,
            "method": method,
            "outcome": outcome,
            "summary": {key: clip(value) for key, value in summary.items()},
        }
        if detail:
            entry["detail"] = clip(detail)
        self.logger.info("%s", json.dumps(entry, ensure_ascii=False, separators=(",", ":")))

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
