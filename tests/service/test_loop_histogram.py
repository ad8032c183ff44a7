"""The lock-free latency histograms (metrics.LoopHistogram) expose exactly what
prometheus_client's Histogram would for the same observations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from atpd.metrics import CORE_BUCKETS_S, LoopHistogram

AMOUNTS = st.one_of(
    st.sampled_from(CORE_BUCKETS_S),  # exactly on a bound: "le" is inclusive
    st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
)


def exposition(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    ]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Reserve", "Release"]), AMOUNTS), max_size=30))
def test_same_exposition_as_prometheus_client(observations: list[tuple[str, float]]) -> None:
    """Buckets, count and sum per label match prometheus_client's Histogram line for line."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopHistogram("atpd_test_seconds", "test", "command", CORE_BUCKETS_S, ours)
    reference = Histogram(
        "atpd_test_seconds", "test", ["command"], buckets=CORE_BUCKETS_S, registry=theirs
    )
    for label, amount in observations:
        fast.labels(label).observe(amount)
        reference.labels(label).observe(amount)
    assert exposition(ours) == exposition(theirs)
