"""The benchmark registry: named benchmarks, their units and targets, and what they return.

A benchmark is a function `(Context) -> Figure` registered with `@benchmark(...)` in any module
of `bench.suites` (modules there are imported automatically, in name order), so adding one is
adding a file or a function; `bench/run.py` never needs to change. Names follow the figure
they report, unit last: `core_reserve_us_p50`, `durable_reserve_throughput_ratio`,
`recovery_seconds`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Comparison = Literal["<=", ">="]


@dataclass(frozen=True, slots=True)
class Target:
    """A figure meets its target when `value <comparison> bound`."""

    comparison: Comparison
    bound: float

    def met(self, value: float) -> bool:
        return value <= self.bound if self.comparison == "<=" else value >= self.bound

    def margin(self, value: float) -> str:
        """How far from the bound, in the direction that matters ("42% over", "12% short")."""
        if self.bound == 0:
            return ""
        relative = (value - self.bound) / abs(self.bound)
        if self.comparison == "<=":
            return f"{relative:.0%} over" if relative > 0 else f"{-relative:.0%} under"
        return f"{-relative:.0%} short" if relative < 0 else f"{relative:.0%} above"

    def __str__(self) -> str:
        return f"{self.comparison} {self.bound:g}"


class Skipped(Exception):
    """A benchmark that cannot run on this machine (a tool is missing): the message says what
    and how to get it. The run prints it and goes on; nothing is recorded for the figure."""


@dataclass(slots=True)
class Figure:
    """What a benchmark measured: the headline `value` plus supporting figures (p99, absolute
    rates, sizes) and a one-line note on how it was obtained."""

    value: float
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(slots=True)
class Context:
    """What a benchmark gets: the size switch, a scratch directory, a progress logger and a
    cache for expensive fixtures shared between benchmarks of one run (e.g. a loaded demo)."""

    quick: bool
    scratch: Path
    cache: dict[str, Any] = field(default_factory=dict)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def log(self, message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    def fixture(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    unit: str
    target: Target | None
    description: str
    function: Callable[[Context], Figure]


REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    name: str, unit: str, target: Target | None = None, description: str = ""
) -> Callable[[Callable[[Context], Figure]], Callable[[Context], Figure]]:
    """Register `function` under `name` (unique)."""

    def register(function: Callable[[Context], Figure]) -> Callable[[Context], Figure]:
        assert name not in REGISTRY, f"benchmark {name!r} registered twice"
        assert name.replace("_", "").isalnum() and name == name.lower(), name
        doc = description or (function.__doc__ or "").strip().split("\n\n")[0]
        REGISTRY[name] = Benchmark(name, unit, target, " ".join(doc.split()), function)
        return function

    return register


def discover() -> dict[str, Benchmark]:
    """Import every module of `bench.suites`, which registers their benchmarks."""
    import bench.suites

    for module in sorted(pkgutil.iter_modules(bench.suites.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"bench.suites.{module.name}")
    return REGISTRY


def new_context(quick: bool) -> Context:
    return Context(quick=quick, scratch=Path(tempfile.mkdtemp(prefix="atpd-bench-")))


def as_dict(figure: Figure) -> dict[str, Any]:
    return dataclasses.asdict(figure)
