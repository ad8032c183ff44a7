"""The sourcing search (issue 12): which origin ships each line of one order to one destination.

Pure: no I/O, no clock. Plain arrays in (`SourcingProblem`), plain dataclasses out
(`SourcingResult`); the search runs in numba over dense arrays (`sourcing_kernels`).

The problem, for L lines and N origins:

- An *origin* is a node shipping with one carrier service (the caller gives one origin per
  (node, service) pair it wants considered, so each objective picks the service too). Lines
  assigned to the same origin travel as one shipment.
- `quantity[i]` units of line i; `available[i, n]` units of its SKU the caller may have from
  origin n (its ATP under the rules, including incoming supply counted by the delivery day);
  `delivery_day[i, n]` the earliest day line i's full quantity reaches the destination when
  shipped from n, already folding in when the stock is there (time-phased supply), processing,
  cut-offs, calendars and transit; -1 when n cannot deliver it. Days are integers from any
  origin the caller likes (e.g. days since the epoch, or since today).
- A shipment from n costs `shipment_cost[n] + cost_per_item[n] x units` and emits
  `shipment_co2_grams[n] + co2_grams_per_item[n] x units` (cost in minor currency units).
- The sourcing rules: `allowed[n]` (False excludes the origin), `penalty[n]` (a per-shipment
  amount added to the weighted objective only: node priorities), `max_shipments`, the
  objective `weights` and an optional `cost_ceiling`.

A plan assigns every line to one origin with `available >= quantity` and a delivery day,
uses at most `max_shipments` origins and costs at most the ceiling. Its delivery day is the
latest of its shipments'. For each objective the search returns the best plan:

- best: least weighted score `speed x day + cost x cost + co2 x grams + shipments x count`
  plus the penalties of the origins used (weights are >= 0);
- fastest, cheapest, greenest, fewest shipments: least day, cost, CO2 or shipment count.

Ties: each objective then compares the other metrics (day, cost, CO2, shipments, penalty, in
that order after its own), then the assignment itself (lower origin index on the first line
that differs): a total order, so equal inputs always give the same plans. The options returned
are the distinct plans, each saying which objectives it won.

Lines are not split across origins (v1): a luxury order line (often one unit) ships whole from
one place, a split line would reach the customer as two parcels for one article, and a line
spread over origins has no single delivery day. A caller that wants a line split may pass it as
several lines, but lines must name distinct SKUs (each line is checked against its own
`available` row), so it must then also split `available` between them.

Bounded search: per line the k best origins (`candidates_per_line`) under each of five criteria
(weighted, day, cost, CO2, and coverage: origins able to serve most lines of the order, so a
consolidating node is always considered) are kept, then a branch and bound over the lines
enumerates the combinations. Guarantee: each plan is optimal among the plans whose lines all use
kept candidates; with `candidates_per_line >= N` every feasible origin is kept and the result is
exact. The search also stops after `step_limit` steps (it then returns the best plans met so
far with `exhaustive=False`), so no order can stall the writer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from atpd.core import sourcing_kernels as kernels

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Origins kept per line and criterion (five criteria: up to 5 x k candidates per line).
DEFAULT_CANDIDATES_PER_LINE = 8
# Search steps (one origin tried for one line) before the search settles for the best plans
# met so far; a step costs tens of nanoseconds, so this bounds a search to a few milliseconds.
DEFAULT_STEP_LIMIT = 200_000
# The search is exponential in lines; orders are bounded like reservations.
MAX_LINES = 100
MAX_SHIPMENTS = 16


class Objective(StrEnum):
    """Why an option was chosen."""

    BEST = "best"
    FASTEST = "fastest"
    CHEAPEST = "cheapest"
    GREENEST = "greenest"
    FEWEST_SHIPMENTS = "fewest_shipments"


# Kernel row of each objective, in the order options are listed.
OBJECTIVE_ROWS: tuple[tuple[Objective, int], ...] = (
    (Objective.BEST, kernels.OBJECTIVE_BEST),
    (Objective.FASTEST, kernels.OBJECTIVE_FASTEST),
    (Objective.CHEAPEST, kernels.OBJECTIVE_CHEAPEST),
    (Objective.GREENEST, kernels.OBJECTIVE_GREENEST),
    (Objective.FEWEST_SHIPMENTS, kernels.OBJECTIVE_FEWEST_SHIPMENTS),
)


class InfeasibleReason(StrEnum):
    NO_CANDIDATE = "no_candidate"
    TOO_MANY_SHIPMENTS = "too_many_shipments"
    OVER_COST_CEILING = "over_cost_ceiling"
    SEARCH_LIMIT = "search_limit"


@dataclass(frozen=True, slots=True)
class Weights:
    """Weights of the `best` objective, each >= 0 and in objective units per metric unit
    (e.g. minor currency units: then `cost` is 1 and the others price a day, a gram, a parcel)."""

    speed_per_day: float = 0.0
    cost: float = 1.0
    co2_per_gram: float = 0.0
    per_shipment: float = 0.0
    # The kernel's form, built once (a rule set's weights serve many searches).
    array: Float64Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("speed_per_day", "cost", "co2_per_gram", "per_shipment"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"weights.{name}: must be a finite number >= 0, got {value!r}")
        weights = np.empty(kernels.WEIGHT_COUNT, np.float64)
        weights[kernels.WEIGHT_SPEED] = self.speed_per_day
        weights[kernels.WEIGHT_COST] = self.cost
        weights[kernels.WEIGHT_CO2] = self.co2_per_gram
        weights[kernels.WEIGHT_SHIPMENTS] = self.per_shipment
        weights.flags.writeable = False
        object.__setattr__(self, "array", weights)


def as_int64(name: str, value: Any, shape: tuple[int, ...], minimum: int) -> Int64Array:
    """`value` as a contiguous int64 array of `shape` with every entry >= minimum."""
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
    if array.size and array.dtype.kind not in "iub":
        raise ValueError(f"{name}: expected integers, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if array.size and int(array.min()) < minimum:
        raise ValueError(f"{name}: every entry must be >= {minimum}, got {int(array.min())}")
    return array


@dataclass(frozen=True, slots=True, eq=False)
class SourcingProblem:
    """One order to one destination (see the module docstring for every field's meaning).
    Arrays are checked and converted on construction; errors name the field."""

    quantity: Int64Array
    available: Int64Array
    delivery_day: Int64Array
    shipment_cost: Int64Array
    cost_per_item: Int64Array
    shipment_co2_grams: Int64Array
    co2_grams_per_item: Int64Array
    allowed: BoolArray
    penalty: Float64Array
    max_shipments: int
    weights: Weights
    cost_ceiling: int | None = None

    def __post_init__(self) -> None:
        quantity = np.asarray(self.quantity)
        if quantity.ndim != 1 or not 1 <= quantity.shape[0] <= MAX_LINES:
            raise ValueError(
                f"quantity: expected 1 to {MAX_LINES} lines (max_lines), got shape {quantity.shape}"
            )
        available = np.asarray(self.available)
        if available.ndim != 2 or available.shape[1] < 1:
            raise ValueError(f"available: expected (lines, origins), got shape {available.shape}")
        lines, origins = quantity.shape[0], available.shape[1]
        checked: dict[str, Any] = {
            "quantity": as_int64("quantity", quantity, (lines,), 1),
            "available": as_int64("available", available, (lines, origins), 0),
            "delivery_day": as_int64("delivery_day", self.delivery_day, (lines, origins), -1),
        }
        for name in ("shipment_cost", "cost_per_item", "shipment_co2_grams", "co2_grams_per_item"):
            checked[name] = as_int64(name, getattr(self, name), (origins,), 0)
        allowed = np.asarray(self.allowed)
        if allowed.shape != (origins,) or allowed.dtype != np.bool_:
            raise ValueError(
                f"allowed: expected {origins} booleans, "
                f"got {allowed.dtype} of shape {allowed.shape}"
            )
        checked["allowed"] = np.ascontiguousarray(allowed)
        penalty = np.asarray(self.penalty)
        if penalty.shape != (origins,) or penalty.dtype.kind not in "iuf":
            raise ValueError(f"penalty: expected {origins} numbers, got shape {penalty.shape}")
        penalty = np.ascontiguousarray(penalty, dtype=np.float64)
        if not (np.all(np.isfinite(penalty)) and np.all(penalty >= 0)):
            raise ValueError("penalty: every entry must be a finite number >= 0")
        checked["penalty"] = penalty
        for name, array in checked.items():
            object.__setattr__(self, name, array)
        if (
            not isinstance(self.max_shipments, int | np.integer)
            or not 1 <= self.max_shipments <= MAX_SHIPMENTS
        ):
            raise ValueError(
                f"max_shipments: must be 1 to {MAX_SHIPMENTS}, got {self.max_shipments!r}"
            )
        if not isinstance(self.weights, Weights):
            raise ValueError(f"weights: expected Weights, got {type(self.weights).__name__}")
        if self.cost_ceiling is not None and (
            not isinstance(self.cost_ceiling, int | np.integer) or self.cost_ceiling < 0
        ):
            raise ValueError(f"cost_ceiling: must be an integer >= 0, got {self.cost_ceiling!r}")

    @property
    def line_count(self) -> int:
        return int(self.quantity.shape[0])

    @property
    def origin_count(self) -> int:
        return int(self.available.shape[1])


@dataclass(frozen=True, slots=True)
class Shipment:
    """The lines one origin ships; its delivery day is its latest line's."""

    origin: int
    lines: tuple[int, ...]
    delivery_day: int
    cost: int
    co2_grams: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Every line's origin (`assignment[i]`) and what the plan takes: its shipments (in order
    of their first line), latest delivery day, total cost and CO2, the penalties of the origins
    it uses and its weighted score."""

    assignment: tuple[int, ...]
    shipments: tuple[Shipment, ...]
    delivery_day: int
    cost: int
    co2_grams: int
    penalty: float
    score: float

    @property
    def shipment_count(self) -> int:
        return len(self.shipments)


@dataclass(frozen=True, slots=True)
class Option:
    """A distinct plan and the objectives it is best for (`best` first when it is one)."""

    plan: Plan
    reasons: tuple[Objective, ...]


@dataclass(frozen=True, slots=True)
class Infeasibility:
    """Why no plan exists: the reason, the lines without any candidate origin (for
    `no_candidate`) and a sentence for people."""

    reason: InfeasibleReason
    lines: tuple[int, ...]
    message: str


@dataclass(frozen=True, slots=True)
class SourcingResult:
    """The options (distinct plans: the weighted best first, then the fastest, cheapest,
    greenest and fewest-shipments plans not already listed) or why there are none.
    `exhaustive` is False when the step limit cut the search short."""

    options: tuple[Option, ...]
    infeasible: Infeasibility | None
    exhaustive: bool
    steps: int

    @property
    def feasible(self) -> bool:
        return self.infeasible is None

    @property
    def best(self) -> Plan | None:
        return self.options[0].plan if self.options else None

    def plan_for(self, objective: Objective) -> Plan | None:
        """The plan chosen for `objective` (None when infeasible)."""
        for option in self.options:
            if objective in option.reasons:
                return option.plan
        return None


def run_kernel(
    problem: SourcingProblem, cost_ceiling: int | None, candidates_per_line: int, step_limit: int
) -> tuple[Int64Array, Float64Array, Int64Array]:
    return kernels.search_plans(
        problem.quantity,
        problem.available,
        problem.delivery_day,
        problem.shipment_cost,
        problem.cost_per_item,
        problem.shipment_co2_grams,
        problem.co2_grams_per_item,
        problem.allowed,
        problem.penalty,
        problem.weights.array,
        problem.max_shipments,
        kernels.NO_COST_CEILING if cost_ceiling is None else cost_ceiling,
        candidates_per_line,
        step_limit,
    )


def search(
    problem: SourcingProblem,
    candidates_per_line: int = DEFAULT_CANDIDATES_PER_LINE,
    step_limit: int = DEFAULT_STEP_LIMIT,
) -> SourcingResult:
    """The best plan of every objective for `problem`, deduplicated into options."""
    if not isinstance(candidates_per_line, int) or candidates_per_line < 1:
        raise ValueError(f"candidates_per_line: must be >= 1, got {candidates_per_line!r}")
    if not isinstance(step_limit, int) or step_limit < 1:
        raise ValueError(f"step_limit: must be >= 1, got {step_limit!r}")
    assignments, metrics, info = run_kernel(
        problem, problem.cost_ceiling, candidates_per_line, step_limit
    )
    exhaustive = bool(info[kernels.INFO_EXHAUSTIVE])
    steps = int(info[kernels.INFO_STEPS])
    status = int(info[kernels.INFO_STATUS])
    if status != kernels.STATUS_FOUND:
        infeasible = explain(problem, status, exhaustive, candidates_per_line, step_limit)
        return SourcingResult((), infeasible, exhaustive, steps)
    return SourcingResult(options(problem, assignments, metrics), None, exhaustive, steps)


def options(
    problem: SourcingProblem, assignments: Int64Array, metrics: Float64Array
) -> tuple[Option, ...]:
    """One option per distinct plan, reasons in objective order. Built from Python scalars
    (`tolist`, `item`): a few plans of a few shipments, where numpy calls would cost more than
    the search itself."""
    rows = assignments.tolist()
    values = metrics.tolist()
    quantity = problem.quantity.tolist()
    plans: dict[tuple[int, ...], tuple[Plan, list[Objective]]] = {}
    for objective, row in OBJECTIVE_ROWS:
        key = tuple(rows[row])
        if key not in plans:
            plans[key] = (build_plan(problem, quantity, key, values[row]), [])
        plans[key][1].append(objective)
    return tuple(Option(plan, tuple(reasons)) for plan, reasons in plans.values())


def build_plan(
    problem: SourcingProblem,
    quantity: list[int],
    assignment: tuple[int, ...],
    metrics: list[float],
) -> Plan:
    """The plan's shipments, grouped per origin in order of their first line."""
    grouped: dict[int, list[int]] = {}
    for line, origin in enumerate(assignment):
        grouped.setdefault(origin, []).append(line)
    delivery_day = problem.delivery_day.item
    shipments = []
    for origin, lines in grouped.items():
        units = sum(quantity[line] for line in lines)
        shipments.append(
            Shipment(
                origin=origin,
                lines=tuple(lines),
                delivery_day=max(int(delivery_day(line, origin)) for line in lines),
                cost=int(
                    problem.shipment_cost.item(origin) + problem.cost_per_item.item(origin) * units
                ),
                co2_grams=int(
                    problem.shipment_co2_grams.item(origin)
                    + problem.co2_grams_per_item.item(origin) * units
                ),
            )
        )
    plan = Plan(
        assignment=assignment,
        shipments=tuple(shipments),
        delivery_day=int(metrics[kernels.METRIC_DAY]),
        cost=int(metrics[kernels.METRIC_COST]),
        co2_grams=int(metrics[kernels.METRIC_CO2]),
        penalty=metrics[kernels.METRIC_PENALTY],
        score=metrics[kernels.METRIC_SCORE],
    )
    assert plan.shipment_count == int(metrics[kernels.METRIC_SHIPMENTS]), (plan, metrics)
    assert plan.cost == sum(shipment.cost for shipment in shipments), plan
    return plan


def explain(
    problem: SourcingProblem,
    status: int,
    exhaustive: bool,
    candidates_per_line: int,
    step_limit: int,
) -> Infeasibility:
    """Why the search found no plan (off the hot path: may search again without the ceiling)."""
    if status == kernels.STATUS_NO_CANDIDATE:
        feasible = (
            problem.allowed[np.newaxis, :]
            & (problem.available >= problem.quantity[:, np.newaxis])
            & (problem.delivery_day >= 0)
        )
        lines = tuple(int(line) for line in np.flatnonzero(~feasible.any(axis=1)))
        named = ", ".join(str(line) for line in lines)
        return Infeasibility(
            InfeasibleReason.NO_CANDIDATE,
            lines,
            f"line(s) {named}: no allowed origin has the quantity and can deliver it",
        )
    if not exhaustive:
        return Infeasibility(
            InfeasibleReason.SEARCH_LIMIT,
            (),
            f"no plan found within the search's step limit ({step_limit} steps)",
        )
    if problem.cost_ceiling is not None:
        _, metrics, info = run_kernel(problem, None, candidates_per_line, step_limit)
        if int(info[kernels.INFO_STATUS]) == kernels.STATUS_FOUND:
            cheapest = int(metrics[kernels.OBJECTIVE_CHEAPEST, kernels.METRIC_COST])
            return Infeasibility(
                InfeasibleReason.OVER_COST_CEILING,
                (),
                f"the cheapest plan costs {cheapest}, over the cost ceiling {problem.cost_ceiling}",
            )
    return Infeasibility(
        InfeasibleReason.TOO_MANY_SHIPMENTS,
        (),
        f"every line has an origin, but no plan ships the order in at most "
        f"{problem.max_shipments} shipment(s) (max_shipments)",
    )
