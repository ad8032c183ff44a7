"""The embedded demo data set that `atpd serve --demo` loads (see `dataset`)."""

from atpd.demo.dataset import (
    DEFAULT_SEED,
    DemoPositions,
    DemoSummary,
    demo_nodes,
    demo_positions,
    demo_reservation_lines,
    demo_skus,
    demo_stock,
    load_demo,
)

__all__ = [
    "DEFAULT_SEED",
    "DemoPositions",
    "DemoSummary",
    "demo_nodes",
    "demo_positions",
    "demo_reservation_lines",
    "demo_skus",
    "demo_stock",
    "load_demo",
]
