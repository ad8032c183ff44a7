"""The sourcing search against a brute-force reference on small random orders (issue 12 §6):
every objective's plan is the optimum, under the documented total order, of all feasible
assignments within max_shipments and the cost ceiling; no plan uses an excluded origin or more
than is available; the search finds nothing exactly when brute force finds nothing."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atpd.core import sourcing_kernels
from atpd.core.sourcing import (
    InfeasibleReason,
    Objective,
    Plan,
    SourcingProblem,
    Weights,
    search,
)

sourcing_kernels.warm_up()

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# The metric order of each objective (sourcing_kernels.OBJECTIVE_KEYS), by metric name.
KEY_ORDER = {
    Objective.BEST: ("score", "day", "cost", "co2", "shipments", "penalty"),
    Objective.FASTEST: ("day", "cost", "co2", "shipments", "penalty", "score"),
    Objective.CHEAPEST: ("cost", "day", "co2", "shipments", "penalty", "score"),
    Objective.GREENEST: ("co2", "day", "cost", "shipments", "penalty", "score"),
    Objective.FEWEST_SHIPMENTS: ("shipments", "day", "cost", "co2", "penalty", "score"),
}


@dataclass(frozen=True)
class ReferencePlan:
    assignment: tuple[int, ...]
    day: int
    cost: int
    co2: int
    shipments: int
    penalty: float
    score: float

    def key(self, objective: Objective) -> tuple[float | int | tuple[int, ...], ...]:
        return (*(getattr(self, name) for name in KEY_ORDER[objective]), self.assignment)


def brute_force(problem: SourcingProblem) -> list[ReferencePlan]:
    """Every feasible assignment of lines to origins, with its metrics, the obvious way."""
    weights = problem.weights
    plans = []
    for assignment in itertools.product(range(problem.origin_count), repeat=problem.line_count):
        if any(
            not problem.allowed[origin]
            or problem.available[line, origin] < problem.quantity[line]
            or problem.delivery_day[line, origin] < 0
            for line, origin in enumerate(assignment)
        ):
            continue
        used = sorted(set(assignment))
        if len(used) > problem.max_shipments:
            continue
        cost = co2 = 0
        for origin in used:
            units = sum(
                int(problem.quantity[line])
                for line, chosen in enumerate(assignment)
                if chosen == origin
            )
            cost += int(problem.shipment_cost[origin] + problem.cost_per_item[origin] * units)
            co2 += int(
                problem.shipment_co2_grams[origin] + problem.co2_grams_per_item[origin] * units
            )
        if problem.cost_ceiling is not None and cost > problem.cost_ceiling:
            continue
        day = max(int(problem.delivery_day[line, origin]) for line, origin in enumerate(assignment))
        penalty = float(sum(problem.penalty[origin] for origin in used))
        score = (
            weights.speed_per_day * day
            + weights.cost * cost
            + weights.co2_per_gram * co2
            + weights.per_shipment * len(used)
            + penalty
        )
        plans.append(ReferencePlan(assignment, day, cost, co2, len(used), penalty, score))
    return plans


@st.composite
def problems(draw: st.DrawFn, integral: bool = True) -> SourcingProblem:
    """A small random order: up to 4 lines over up to 6 origins, max_shipments 1 to 3; with
    `integral`, weights and penalties are whole numbers so that every score is exact."""
    lines = draw(st.integers(1, 4))
    origins = draw(st.integers(1, 6))

    def grid(low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
        values = draw(
            st.lists(
                st.integers(low, high), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            )
        )
        return np.array(values, dtype=np.int64).reshape(shape)

    number = st.integers(0, 5).map(float) if integral else st.floats(0, 5, allow_nan=False)
    # Some origins are copies of an earlier one (a twin warehouse): exact ties between plans.
    twin = [draw(st.sampled_from([n, n, n, *range(n)])) for n in range(origins)]
    allowed = draw(
        st.lists(st.sampled_from([True, True, True, False]), min_size=origins, max_size=origins)
    )
    return SourcingProblem(
        quantity=grid(1, 3, (lines,)),
        available=grid(0, 4, (lines, origins))[:, twin],
        delivery_day=grid(-1, 6, (lines, origins))[:, twin],
        shipment_cost=grid(0, 20, (origins,))[twin],
        cost_per_item=grid(0, 5, (origins,))[twin],
        shipment_co2_grams=grid(0, 50, (origins,))[twin],
        co2_grams_per_item=grid(0, 10, (origins,))[twin],
        allowed=np.array(allowed, dtype=np.bool_)[twin],
        penalty=np.array([draw(number) for _ in range(origins)], dtype=np.float64)[twin],
        max_shipments=draw(st.integers(1, 3)),
        weights=Weights(draw(number), draw(number), draw(number), draw(number)),
        cost_ceiling=draw(st.none() | st.integers(0, 80)),
    )


def as_reference(plan: Plan) -> ReferencePlan:
    return ReferencePlan(
        plan.assignment,
        plan.delivery_day,
        plan.cost,
        plan.co2_grams,
        plan.shipment_count,
        plan.penalty,
        plan.score,
    )


def check_valid(problem: SourcingProblem, plan: Plan) -> None:
    """The plan respects availability, exclusions, delivery, max_shipments and the ceiling,
    and its shipments add up to its totals."""
    for line, origin in enumerate(plan.assignment):
        assert problem.allowed[origin]
        assert problem.available[line, origin] >= problem.quantity[line]
        assert problem.delivery_day[line, origin] >= 0
    assert plan.shipment_count <= problem.max_shipments
    assert problem.cost_ceiling is None or plan.cost <= problem.cost_ceiling
    assert sorted(line for shipment in plan.shipments for line in shipment.lines) == list(
        range(problem.line_count)
    )
    assert plan.cost == sum(shipment.cost for shipment in plan.shipments)
    assert plan.co2_grams == sum(shipment.co2_grams for shipment in plan.shipments)
    assert plan.delivery_day == max(shipment.delivery_day for shipment in plan.shipments)


@PROPERTY_SETTINGS
@given(problems(), st.integers(0, 3))
def test_exact_search_matches_brute_force(problem: SourcingProblem, extra: int) -> None:
    """With k >= N every objective's plan is exactly brute force's optimum (ties included)."""
    result = search(problem, candidates_per_line=problem.origin_count + extra)
    reference = brute_force(problem)
    assert result.exhaustive
    if not reference:
        assert not result.feasible and not result.options
        assert result.infeasible is not None
        if problem.cost_ceiling is None:
            assert result.infeasible.reason != InfeasibleReason.OVER_COST_CEILING
        return
    assert result.feasible, result.infeasible
    assert result.options[0].reasons[0] == Objective.BEST
    for objective in Objective:
        plan = result.plan_for(objective)
        assert plan is not None
        check_valid(problem, plan)
        expected = min(reference, key=lambda candidate: candidate.key(objective))
        assert as_reference(plan) == expected, objective
    assignments = [option.plan.assignment for option in result.options]
    assert len(assignments) == len(set(assignments)), "options are deduplicated"
    assert sorted(reason for option in result.options for reason in option.reasons) == sorted(
        Objective
    )


@PROPERTY_SETTINGS
@given(problems(integral=False))
def test_weighted_optimum_with_real_weights(problem: SourcingProblem) -> None:
    """With real-valued weights and penalties the best plan's score is the least score."""
    result = search(problem, candidates_per_line=problem.origin_count)
    reference = brute_force(problem)
    assert result.feasible == bool(reference)
    if reference:
        best = result.best
        assert best is not None
        check_valid(problem, best)
        least = min(plan.score for plan in reference)
        assert best.score <= least + 1e-9 * max(1.0, abs(least))


@PROPERTY_SETTINGS
@given(problems(), st.integers(1, 3))
def test_bounded_search_plans_are_feasible(problem: SourcingProblem, k: int) -> None:
    """With fewer candidates than origins every plan is still feasible and no better than the
    true optimum, and a line without any candidate is reported by index."""
    result = search(problem, candidates_per_line=k)
    reference = brute_force(problem)
    if result.feasible:
        assert reference
        for objective in Objective:
            plan = result.plan_for(objective)
            assert plan is not None
            check_valid(problem, plan)
            best = min(reference, key=lambda candidate: candidate.key(objective))
            assert best.key(objective) <= as_reference(plan).key(objective)
    else:
        assert result.infeasible is not None
        if result.infeasible.reason == InfeasibleReason.NO_CANDIDATE:
            assert not reference and result.infeasible.lines
