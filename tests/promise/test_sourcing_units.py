"""Unit tests of the sourcing search: tie-breaking, deduplication of options, consolidation with
few candidates, exclusions and penalties, infeasibility reasons, the step limit and input
validation (issue 12)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from atpd.core.sourcing import (
    InfeasibleReason,
    Objective,
    SourcingProblem,
    Weights,
    search,
)


def make_problem(
    quantity: list[int],
    available: list[list[int]],
    delivery_day: list[list[int]],
    shipment_cost: list[int],
    **overrides: Any,
) -> SourcingProblem:
    """A problem with per-item costs and CO2 zero unless given, every origin allowed."""
    origins = len(shipment_cost)
    fields: dict[str, Any] = {
        "quantity": np.array(quantity),
        "available": np.array(available),
        "delivery_day": np.array(delivery_day),
        "shipment_cost": np.array(shipment_cost),
        "cost_per_item": np.zeros(origins, np.int64),
        "shipment_co2_grams": np.zeros(origins, np.int64),
        "co2_grams_per_item": np.zeros(origins, np.int64),
        "allowed": np.ones(origins, np.bool_),
        "penalty": np.zeros(origins),
        "max_shipments": 3,
        "weights": Weights(cost=1.0),
    }
    fields.update(overrides)
    return SourcingProblem(**fields)


def test_one_plan_winning_everything_is_one_option_with_every_reason() -> None:
    """A plan best on every objective is listed once, with all five reasons in order."""
    problem = make_problem(
        [1, 1], [[1, 1], [1, 1]], [[1, 3], [1, 3]], [10, 20], shipment_co2_grams=np.array([5, 9])
    )
    result = search(problem)
    assert len(result.options) == 1
    option = result.options[0]
    assert option.reasons == tuple(Objective)
    assert option.plan.assignment == (0, 0)
    assert option.plan.shipment_count == 1
    assert option.plan.shipments[0].lines == (0, 1)


def test_distinct_options_say_why_they_were_chosen() -> None:
    """Fast-and-dear, cheap-and-slow and green origins give three options, each with its reason."""
    problem = make_problem(
        [1],
        [[1, 1, 1]],
        [[1, 5, 3]],
        [50, 10, 30],
        shipment_co2_grams=np.array([900, 400, 100]),
        weights=Weights(cost=1.0, speed_per_day=100.0),
    )
    result = search(problem)
    by_origin = {option.plan.assignment[0]: option.reasons for option in result.options}
    assert by_origin == {
        0: (Objective.BEST, Objective.FASTEST, Objective.FEWEST_SHIPMENTS),
        1: (Objective.CHEAPEST,),
        2: (Objective.GREENEST,),
    }
    assert result.options[0].plan.assignment == (0,)


def test_full_tie_goes_to_the_lower_origin_index() -> None:
    """Two identical origins: every objective picks the lower index, whatever their order."""
    problem = make_problem([1, 2], [[5, 5, 5], [5, 5, 5]], [[2, 2, 2], [2, 2, 2]], [9, 7, 7])
    result = search(problem)
    assert len(result.options) == 1
    assert result.options[0].plan.assignment == (1, 1)


def test_tie_on_objective_is_broken_by_the_other_metrics() -> None:
    """Equal cost: cheapest takes the faster plan, then the greener one."""
    problem = make_problem(
        [1],
        [[1, 1, 1]],
        [[4, 2, 2]],
        [10, 10, 10],
        shipment_co2_grams=np.array([1, 50, 40]),
    )
    cheapest = search(problem).plan_for(Objective.CHEAPEST)
    assert cheapest is not None and cheapest.assignment == (2,)


def test_consolidating_origin_found_with_one_candidate_per_line() -> None:
    """With k = 1 and max_shipments 1, the only origin holding all three lines is still found."""
    origins = 50
    # Every origin but 37 holds a single line; 37 is also the dearest and slowest.
    available = np.zeros((3, origins), np.int64)
    for line in range(3):
        available[line, line::3] = 1
    available[:, 37] = 1
    delivery_day = np.full((3, origins), 1, np.int64)
    delivery_day[:, 37] = 9
    cost = np.full(origins, 5, np.int64)
    cost[37] = 500
    problem = make_problem(
        [1, 1, 1],
        available.tolist(),
        delivery_day.tolist(),
        cost.tolist(),
        max_shipments=1,
    )
    result = search(problem, candidates_per_line=1)
    assert result.feasible
    assert result.best is not None and result.best.assignment == (37, 37, 37)


def test_excluded_origin_is_never_used_and_penalty_only_moves_best() -> None:
    """An excluded origin is never chosen; a penalty steers `best` but not `cheapest`."""
    problem = make_problem(
        [1],
        [[1, 1, 1]],
        [[1, 1, 1]],
        [1, 10, 12],
        allowed=np.array([False, True, True]),
        penalty=np.array([0.0, 5.0, 0.0]),
    )
    result = search(problem)
    best = result.plan_for(Objective.BEST)
    cheapest = result.plan_for(Objective.CHEAPEST)
    assert best is not None and best.assignment == (2,) and best.score == 12.0
    assert cheapest is not None and cheapest.assignment == (1,) and cheapest.penalty == 5.0


def test_line_without_candidate_is_named() -> None:
    """A line no allowed origin can deliver in full makes the order infeasible, naming it."""
    problem = make_problem([1, 3], [[1, 1], [2, 5]], [[1, 1], [1, -1]], [1, 1])
    result = search(problem)
    assert not result.feasible and result.options == ()
    assert result.infeasible is not None
    assert result.infeasible.reason == InfeasibleReason.NO_CANDIDATE
    assert result.infeasible.lines == (1,)
    assert "line(s) 1" in result.infeasible.message


def test_too_many_shipments_and_cost_ceiling_reasons() -> None:
    """Lines held at different origins only need two shipments; a ceiling below every plan's
    cost says so with the cheapest cost."""
    split = make_problem([1, 1], [[1, 0], [0, 1]], [[1, 1], [1, 1]], [10, 20], max_shipments=1)
    result = search(split)
    assert result.infeasible is not None
    assert result.infeasible.reason == InfeasibleReason.TOO_MANY_SHIPMENTS
    assert "max_shipments" in result.infeasible.message
    dear = make_problem([1, 1], [[1, 0], [0, 1]], [[1, 1], [1, 1]], [10, 20], cost_ceiling=29)
    result = search(dear)
    assert result.infeasible is not None
    assert result.infeasible.reason == InfeasibleReason.OVER_COST_CEILING
    assert "30" in result.infeasible.message
    within = search(
        make_problem([1, 1], [[1, 0], [0, 1]], [[1, 1], [1, 1]], [10, 20], cost_ceiling=30)
    )
    assert within.best is not None and within.best.cost == 30


def test_step_limit_stops_the_search_and_says_so() -> None:
    """A search cut by its step limit reports exhaustive=False and keeps the plans met so far."""
    lines, origins = 6, 40
    problem = make_problem(
        [1] * lines,
        np.ones((lines, origins), np.int64).tolist(),
        np.ones((lines, origins), np.int64).tolist(),
        list(range(origins, 0, -1)),
    )
    cut = search(problem, candidates_per_line=origins, step_limit=50)
    assert not cut.exhaustive and cut.steps == 50
    assert cut.feasible and cut.best is not None
    full = search(problem, candidates_per_line=origins)
    assert full.exhaustive and full.best is not None
    assert full.best.assignment == (origins - 1,) * lines


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quantity", np.array([0, 1]), "quantity: every entry must be >= 1"),
        ("quantity", np.array([1.5, 1.0]), "quantity: expected integers"),
        ("available", np.ones((3, 2), np.int64), "available: expected shape (2, 2)"),
        ("available", np.array([[1, -1], [1, 1]]), "available: every entry must be >= 0"),
        ("delivery_day", np.array([[1, -2], [1, 1]]), "delivery_day: every entry must be >= -1"),
        ("shipment_cost", np.array([1, -1]), "shipment_cost: every entry must be >= 0"),
        ("co2_grams_per_item", np.array([1]), "co2_grams_per_item: expected shape (2,)"),
        ("allowed", np.array([1, 1]), "allowed: expected 2 booleans"),
        ("penalty", np.array([np.inf, 0.0]), "penalty: every entry must be a finite number"),
        ("max_shipments", 0, "max_shipments: must be 1 to 16"),
        ("cost_ceiling", -5, "cost_ceiling: must be an integer >= 0"),
        ("weights", (1, 1, 1, 1), "weights: expected Weights"),
    ],
)
def test_bad_input_names_the_field(field: str, value: Any, message: str) -> None:
    """Each malformed field is refused with an error naming it."""
    fields: dict[str, Any] = {
        "quantity": [1, 1],
        "available": [[1, 1], [1, 1]],
        "delivery_day": [[1, 1], [1, 1]],
        "shipment_cost": [1, 1],
    }
    fields[field] = value
    with pytest.raises(ValueError) as error:
        make_problem(**fields)
    assert message in str(error.value)


def test_bad_weights_and_search_parameters_are_refused() -> None:
    """Negative or non-finite weights, k < 1 and a step limit < 1 are refused by name."""
    with pytest.raises(ValueError, match=r"weights\.co2_per_gram"):
        Weights(co2_per_gram=-1.0)
    with pytest.raises(ValueError, match=r"weights\.speed_per_day"):
        Weights(speed_per_day=float("nan"))
    problem = make_problem([1], [[1]], [[1]], [1])
    with pytest.raises(ValueError, match="candidates_per_line"):
        search(problem, candidates_per_line=0)
    with pytest.raises(ValueError, match="step_limit"):
        search(problem, step_limit=0)
