"""The ATP formula, scalar form: what a position can still promise.

    ATP = max(0, on_hand - reserved - safety - buffer + counted supply - protected for others)

Every scalar path (Reserve, explain, Watch capture, positions) computes it here; the numba
kernels (core/kernels.py) use their one inline twin `kernels.node_atp`, and
`tests/rules/test_kernel_vs_scalar.py` keeps the two equal. The terms themselves (which safety
stock, which supply counts, what protections hold back) are chosen in core/caller_atp.py.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def atp(
    on_hand: int,
    reserved: int,
    safety: int,
    buffer: int = 0,
    supply: int = 0,
    protected: int = 0,
) -> int:
    """ATP of one position from its terms (never negative)."""
    free = on_hand - reserved - safety - buffer + supply - protected
    return free if free > 0 else 0


def own_atp_columns(
    on_hand: npt.NDArray[np.int64],
    reserved: npt.NDArray[np.int64],
    safety: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """ATP of many positions with no rules (no buffer, supply nor protections), elementwise."""
    result: npt.NDArray[np.int64] = np.maximum(on_hand - reserved - safety, 0)
    return result
