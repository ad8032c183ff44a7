"""Human-readable output for the client commands: plain tables and enum names."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table with right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int) for row in rows) and rows for i in range(len(headers))]
    out = []
    for r, row in enumerate(cells):
        parts = [
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        out.append("  ".join(parts).rstrip())
        if r == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def outcome_name(value: int) -> str:
    from atpd.v1 import common_pb2

    return common_pb2.Outcome.Name(value).removeprefix("OUTCOME_")


def shortage_reason_name(value: int) -> str:
    from atpd.v1 import reservations_pb2

    return reservations_pb2.ShortageReason.Name(value).removeprefix("SHORTAGE_REASON_")
