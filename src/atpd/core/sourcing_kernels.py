"""Numba kernels of the sourcing search (issue 12): plain arrays in, plain arrays out.

`core/sourcing.py` is the Python face (validated inputs, plans as dataclasses) and documents
the problem; this module is the search itself, over dense arrays, with no Python object per
candidate. Shapes: L lines, N origins (an origin is a node shipping with one carrier service).

1. `select_candidates` keeps, for every line, the union of the k best feasible origins under
   each of five criteria: the weighted objective of a one-line shipment, delivery day, cost,
   CO2 and coverage (how many lines of the order the origin can serve, so that a node able to
   consolidate the order is a candidate of every line it can serve). Each line's list is
   ordered by the weighted criterion so that good plans are met first.
2. `search_plans` runs a depth-first branch and bound over the lines, fewest candidates first,
   keeping the best plan of five objectives at once (weighted, fastest, cheapest, greenest,
   fewest shipments). A branch is cut when it would exceed `max_shipments` or the cost ceiling,
   or when a lower bound of every objective is already worse than that objective's best.

Compiled with `cache=True`; `warm_up()` compiles everything on a tiny instance so that the
first promise never pays for compilation.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Objectives: rows of the outputs of `search_plans`.
OBJECTIVE_BEST = 0
OBJECTIVE_FASTEST = 1
OBJECTIVE_CHEAPEST = 2
OBJECTIVE_GREENEST = 3
OBJECTIVE_FEWEST_SHIPMENTS = 4
OBJECTIVE_COUNT = 5

# Metrics of a plan: columns of the metrics output of `search_plans`. Days, cost, CO2 and
# shipments are integers, exact in a float64 up to 2**53.
METRIC_DAY = 0
METRIC_COST = 1
METRIC_CO2 = 2
METRIC_SHIPMENTS = 3
METRIC_PENALTY = 4
METRIC_SCORE = 5
METRIC_COUNT = 6

# Per objective, the metrics compared in this order; a full tie is broken by the assignment
# itself (line 0's origin index first, lower wins), so the winner never depends on search order.
OBJECTIVE_KEYS = np.array(
    [
        [METRIC_SCORE, METRIC_DAY, METRIC_COST, METRIC_CO2, METRIC_SHIPMENTS, METRIC_PENALTY],
        [METRIC_DAY, METRIC_COST, METRIC_CO2, METRIC_SHIPMENTS, METRIC_PENALTY, METRIC_SCORE],
        [METRIC_COST, METRIC_DAY, METRIC_CO2, METRIC_SHIPMENTS, METRIC_PENALTY, METRIC_SCORE],
        [METRIC_CO2, METRIC_DAY, METRIC_COST, METRIC_SHIPMENTS, METRIC_PENALTY, METRIC_SCORE],
        [METRIC_SHIPMENTS, METRIC_DAY, METRIC_COST, METRIC_CO2, METRIC_PENALTY, METRIC_SCORE],
    ],
    dtype=np.int64,
)

# Weights: entries of the `weights` array.
WEIGHT_SPEED = 0
WEIGHT_COST = 1
WEIGHT_CO2 = 2
WEIGHT_SHIPMENTS = 3
WEIGHT_COUNT = 4

# Criteria used to keep candidates per line.
CRITERION_COUNT = 5

# `search_plans` status (info[INFO_STATUS]).
STATUS_FOUND = 0
STATUS_NO_CANDIDATE = 1
STATUS_NO_PLAN = 2
INFO_STATUS = 0
INFO_STEPS = 1
INFO_EXHAUSTIVE = 2
INFO_COUNT = 3

NO_COST_CEILING = -1


@njit(nogil=True, cache=True, inline="always")
def weighted_score(
    weights: Float64Array, day: float, cost: float, co2: float, shipments: float, penalty: float
) -> float:
    """The weighted objective; one formula (and one operation order) for bounds and plans, so
    that a bound computed from smaller metrics is never above the score of a plan."""
    return float(
        weights[WEIGHT_SPEED] * day
        + weights[WEIGHT_COST] * cost
        + weights[WEIGHT_CO2] * co2
        + weights[WEIGHT_SHIPMENTS] * shipments
        + penalty
    )


@njit(nogil=True, cache=True)
def select_candidates(
    quantity: Int64Array,
    available: Int64Array,
    delivery_day: Int64Array,
    shipment_cost: Int64Array,
    cost_per_item: Int64Array,
    shipment_co2: Int64Array,
    co2_per_item: Int64Array,
    allowed: BoolArray,
    penalty: Float64Array,
    weights: Float64Array,
    candidates_per_line: int,
) -> tuple[Int64Array, Int64Array]:
    """Per line, the feasible origins worth searching: `(candidates[L, width], counts[L])`.

    Origin n is feasible for line i when it is allowed, holds at least the line's quantity and
    can deliver (delivery_day >= 0). With `candidates_per_line >= N` every feasible origin is
    kept, which makes the search exact.
    """
    lines, origins = available.shape
    k = min(candidates_per_line, origins)
    feasible = np.zeros((lines, origins), np.bool_)
    coverage = np.zeros(origins, np.int64)
    for i in range(lines):
        for n in range(origins):
            if allowed[n] and available[i, n] >= quantity[i] and delivery_day[i, n] >= 0:
                feasible[i, n] = True
                coverage[n] += 1
    width = min(origins, CRITERION_COUNT * k)
    candidates = np.full((lines, max(width, 1)), -1, np.int64)
    counts = np.zeros(lines, np.int64)
    seen = np.zeros(origins, np.bool_)
    standalone = np.zeros(origins, np.float64)
    members = np.empty(origins, np.int64)
    primary_keys = np.empty((CRITERION_COUNT, origins), np.float64)
    secondary_keys = np.empty((CRITERION_COUNT, origins), np.float64)
    top_origin = np.empty(k, np.int64)
    top_primary = np.empty(k, np.float64)
    top_secondary = np.empty(k, np.float64)
    for i in range(lines):
        q = quantity[i]
        # The line's feasible origins and their keys under every criterion, in origin order.
        size_feasible = 0
        for n in range(origins):
            seen[n] = False
            if not feasible[i, n]:
                continue
            day = float(delivery_day[i, n])
            cost = float(shipment_cost[n] + cost_per_item[n] * q)
            co2 = float(shipment_co2[n] + co2_per_item[n] * q)
            score = weighted_score(weights, day, cost, co2, 1.0, penalty[n])
            standalone[n] = score
            members[size_feasible] = n
            primary_keys[0, size_feasible] = score
            secondary_keys[0, size_feasible] = day
            primary_keys[1, size_feasible] = day
            primary_keys[2, size_feasible] = cost
            primary_keys[3, size_feasible] = co2
            primary_keys[4, size_feasible] = -coverage[n]
            for criterion in range(1, CRITERION_COUNT):
                secondary_keys[criterion, size_feasible] = score
            size_feasible += 1
        for criterion in range(CRITERION_COUNT):
            size = 0
            for m in range(size_feasible):
                primary = primary_keys[criterion, m]
                secondary = secondary_keys[criterion, m]
                # Insert into the sorted top-k buffer; on a full tie the lower index stays first.
                if size == k and (
                    primary > top_primary[k - 1]
                    or (primary == top_primary[k - 1] and secondary >= top_secondary[k - 1])
                ):
                    continue
                position = size if size < k else k - 1
                while position > 0 and (
                    primary < top_primary[position - 1]
                    or (
                        primary == top_primary[position - 1]
                        and secondary < top_secondary[position - 1]
                    )
                ):
                    top_origin[position] = top_origin[position - 1]
                    top_primary[position] = top_primary[position - 1]
                    top_secondary[position] = top_secondary[position - 1]
                    position -= 1
                top_origin[position] = members[m]
                top_primary[position] = primary
                top_secondary[position] = secondary
                if size < k:
                    size += 1
            for j in range(size):
                n = top_origin[j]
                if not seen[n]:
                    seen[n] = True
                    candidates[i, counts[i]] = n
                    counts[i] += 1
        # Order the line's candidates by the weighted criterion (insertion sort: a few dozen).
        for a in range(1, counts[i]):
            n = candidates[i, a]
            b = a
            while b > 0 and (
                standalone[candidates[i, b - 1]] > standalone[n]
                or (standalone[candidates[i, b - 1]] == standalone[n] and candidates[i, b - 1] > n)
            ):
                candidates[i, b] = candidates[i, b - 1]
                b -= 1
            candidates[i, b] = n
    return candidates, counts


@njit(nogil=True, cache=True, inline="always")
def plan_is_better(
    metrics: Float64Array,
    assignment: Int64Array,
    best_metrics: Float64Array,
    best_assignment: Int64Array,
    keys: Int64Array,
) -> bool:
    """Whether a plan beats the best so far of one objective (its metric order, then the
    assignment: a total order, so the result is independent of the search order)."""
    for j in range(keys.shape[0]):
        metric = keys[j]
        if metrics[metric] != best_metrics[metric]:
            return bool(metrics[metric] < best_metrics[metric])
    for i in range(assignment.shape[0]):
        if assignment[i] != best_assignment[i]:
            return bool(assignment[i] < best_assignment[i])
    return False


@njit(nogil=True, cache=True, inline="always")
def bound_is_worse(bound: Float64Array, best_metrics: Float64Array, keys: Int64Array) -> bool:
    """Whether lower bounds of a branch's metrics already lose to an objective's best plan."""
    for j in range(keys.shape[0]):
        metric = keys[j]
        if bound[metric] != best_metrics[metric]:
            return bool(bound[metric] > best_metrics[metric])
    return False


@njit(nogil=True, cache=True)
def search_plans(
    quantity: Int64Array,
    available: Int64Array,
    delivery_day: Int64Array,
    shipment_cost: Int64Array,
    cost_per_item: Int64Array,
    shipment_co2: Int64Array,
    co2_per_item: Int64Array,
    allowed: BoolArray,
    penalty: Float64Array,
    weights: Float64Array,
    max_shipments: int,
    cost_ceiling: int,
    candidates_per_line: int,
    step_limit: int,
) -> tuple[Int64Array, Float64Array, Int64Array]:
    """The best plan of every objective: `(assignments[5, L], metrics[5, 6], info[3])`.

    Row o of `assignments` maps each line to its origin in objective o's best plan (all -1 when
    there is none) and row o of `metrics` holds that plan's day, cost, CO2, shipments, penalty
    and weighted score. `info` holds the status (found, a line without candidate, no plan
    within max_shipments and the ceiling), the search steps taken and whether the search ran
    to completion (it stops after `step_limit` steps, keeping the best plans met so far).
    `cost_ceiling` < 0 means none.
    """
    lines = quantity.shape[0]
    assignments = np.full((OBJECTIVE_COUNT, lines), -1, np.int64)
    best = np.zeros((OBJECTIVE_COUNT, METRIC_COUNT), np.float64)
    info = np.zeros(INFO_COUNT, np.int64)
    info[INFO_EXHAUSTIVE] = 1
    candidates, counts = select_candidates(
        quantity,
        available,
        delivery_day,
        shipment_cost,
        cost_per_item,
        shipment_co2,
        co2_per_item,
        allowed,
        penalty,
        weights,
        candidates_per_line,
    )
    for i in range(lines):
        if counts[i] == 0:
            info[INFO_STATUS] = STATUS_NO_CANDIDATE
            return assignments, best, info
    # Lines with fewest candidates first: the tree narrows where choice is scarce.
    order = np.argsort(counts, kind="mergesort")
    # Lower bounds of what the lines from depth d on add, whatever their origins.
    rest_day = np.zeros(lines + 1, np.float64)
    rest_cost = np.zeros(lines + 1, np.float64)
    rest_co2 = np.zeros(lines + 1, np.float64)
    for d in range(lines - 1, -1, -1):
        line = order[d]
        q = quantity[line]
        low_day = np.inf
        low_cost = np.inf
        low_co2 = np.inf
        for c in range(counts[line]):
            n = candidates[line, c]
            low_day = min(low_day, float(delivery_day[line, n]))
            low_cost = min(low_cost, float(cost_per_item[n] * q))
            low_co2 = min(low_co2, float(co2_per_item[n] * q))
        rest_day[d] = max(rest_day[d + 1], low_day)
        rest_cost[d] = rest_cost[d + 1] + low_cost
        rest_co2[d] = rest_co2[d + 1] + low_co2

    found = np.zeros(OBJECTIVE_COUNT, np.bool_)
    use = np.zeros(available.shape[1], np.int64)
    choice = np.full(lines, -1, np.int64)
    assignment = np.full(lines, -1, np.int64)
    day_at = np.zeros(lines + 1, np.float64)
    cost_at = np.zeros(lines + 1, np.float64)
    co2_at = np.zeros(lines + 1, np.float64)
    shipments_at = np.zeros(lines + 1, np.float64)
    penalty_at = np.zeros(lines + 1, np.float64)
    metrics = np.zeros(METRIC_COUNT, np.float64)
    bound = np.zeros(METRIC_COUNT, np.float64)
    steps = 0
    depth = 0
    while depth >= 0:
        line = order[depth]
        if choice[depth] >= 0:
            use[candidates[line, choice[depth]]] -= 1
        choice[depth] += 1
        if choice[depth] >= counts[line]:
            choice[depth] = -1
            assignment[line] = -1
            depth -= 1
            continue
        if steps >= step_limit:
            info[INFO_EXHAUSTIVE] = 0
            break
        steps += 1
        n = candidates[line, choice[depth]]
        opens = use[n] == 0
        use[n] += 1
        q = quantity[line]
        shipments = shipments_at[depth] + (1.0 if opens else 0.0)
        if shipments > max_shipments:
            continue
        cost = cost_at[depth] + float(cost_per_item[n] * q + (shipment_cost[n] if opens else 0))
        if cost_ceiling >= 0 and cost + rest_cost[depth + 1] > cost_ceiling:
            continue
        day = max(day_at[depth], float(delivery_day[line, n]))
        co2 = co2_at[depth] + float(co2_per_item[n] * q + (shipment_co2[n] if opens else 0))
        spent_penalty = penalty_at[depth] + (penalty[n] if opens else 0.0)
        assignment[line] = n
        bound[METRIC_DAY] = max(day, rest_day[depth + 1])
        bound[METRIC_COST] = cost + rest_cost[depth + 1]
        bound[METRIC_CO2] = co2 + rest_co2[depth + 1]
        bound[METRIC_SHIPMENTS] = shipments
        bound[METRIC_PENALTY] = spent_penalty
        bound[METRIC_SCORE] = weighted_score(
            weights,
            bound[METRIC_DAY],
            bound[METRIC_COST],
            bound[METRIC_CO2],
            shipments,
            spent_penalty,
        )
        # Cut when no objective can still improve. Every metric of a completion is at least its
        # bound, so a bound lexicographically above an objective's best (in that objective's
        # metric order) cannot win it; a bound equal to the best may still win a tie.
        promising = False
        for o in range(OBJECTIVE_COUNT):
            if not found[o] or not bound_is_worse(bound, best[o], OBJECTIVE_KEYS[o]):
                promising = True
                break
        if not promising:
            continue
        if depth + 1 < lines:
            depth += 1
            day_at[depth] = day
            cost_at[depth] = cost
            co2_at[depth] = co2
            shipments_at[depth] = shipments
            penalty_at[depth] = spent_penalty
            continue
        # A complete plan: the bound of a leaf is its metrics.
        for j in range(METRIC_COUNT):
            metrics[j] = bound[j]
        for o in range(OBJECTIVE_COUNT):
            if not found[o] or plan_is_better(
                metrics, assignment, best[o], assignments[o], OBJECTIVE_KEYS[o]
            ):
                found[o] = True
                best[o, :] = metrics
                assignments[o, :] = assignment
    info[INFO_STEPS] = steps
    if not found[OBJECTIVE_BEST]:
        info[INFO_STATUS] = STATUS_NO_PLAN
    return assignments, best, info


def warm_up() -> None:
    """Compile (or load from cache) every kernel on a tiny instance."""
    one = np.ones(1, np.int64)
    grid = np.ones((1, 1), np.int64)
    search_plans(
        one,
        grid,
        grid,
        one,
        one,
        one,
        one,
        np.ones(1, np.bool_),
        np.zeros(1, np.float64),
        np.ones(WEIGHT_COUNT, np.float64),
        1,
        NO_COST_CEILING,
        8,
        1_000,
    )
