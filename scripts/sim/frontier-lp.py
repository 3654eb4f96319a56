#!/usr/bin/env python3
"""Offline upper bound on a cache's object and byte hit ratios under a byte budget (issue 11).

    python3 scripts/sim/frontier-lp.py TRACE.csv 0.001 [ALPHA ...]

TRACE is an `outpost sim gen` CSV (time,key,size); the budget is that fraction of the trace's
unique bytes, rounded as `outpost sim run --sizes` rounds it. For each ALPHA (default 1 0.5 0)
it solves the linear relaxation of offline caching with sizes (FOO, Berger, Beckmann and
Harchol-Balter, "Practical Bounds on Optimal Caching with Variable Object Sizes", SIGMETRICS
2018) for the objective ALPHA x ohr + (1 - ALPHA) x bhr, and prints the bound with the object
and byte hit ratios of the optimal fractional solution. No policy, online or offline, scores
above the bound for that ALPHA: a pair of bars (ohr >= a, bhr >= b) with
ALPHA x a + (1 - ALPHA) x b above it is out of reach for every policy.

The model: request i of a key whose next request is j opens an interval; z_i in [0, size]
bytes of it are kept from i to j (a hit on j if all are kept). Flow conservation over the
requests in time order, with the bytes kept across each step at most the budget, makes it a
min-cost flow with one row per request. Needs highspy (`pip install highspy`); 200,000
requests take about 30-70 s per ALPHA, 1,000,000 requests several minutes.
"""
import csv
import sys
import time

try:
    import highspy
    import numpy as np
except ImportError as e:  # pragma: no cover
    sys.exit(f"frontier-lp: {e.name} is missing (pip install highspy numpy)")


def load(path):
    ids, keys, sizes = {}, [], []
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or header[:3] != ["time", "key", "size"]:
            sys.exit(f"frontier-lp: {path}: expected a time,key,size header")
        for n, row in enumerate(rows, start=2):
            try:
                size = int(row[2])
            except (IndexError, ValueError):
                sys.exit(f"frontier-lp: {path}:{n}: bad size field")
            keys.append(ids.setdefault(row[1], len(ids)))
            sizes.append(size)
    return np.array(keys, dtype=np.int64), np.array(sizes, dtype=np.float64), len(ids)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    keys, sizes, unique = load(sys.argv[1])
    try:
        fraction = float(sys.argv[2])
        alphas = [float(a) for a in sys.argv[3:]] or [1.0, 0.5, 0.0]
    except ValueError:
        sys.exit("frontier-lp: FRACTION and ALPHA must be numbers")
    if not 0 < fraction <= 1 or any(not 0 <= a <= 1 for a in alphas):
        sys.exit("frontier-lp: FRACTION must be in (0, 1] and ALPHA in [0, 1]")
    n = len(keys)
    per_key = np.zeros(unique)
    per_key[keys] = sizes
    budget = max(1, round(per_key.sum() * fraction))
    total_bytes = sizes.sum()

    following = np.full(n, -1, dtype=np.int64)
    last = {}
    for i in range(n - 1, -1, -1):
        following[i] = last.get(keys[i], -1)
        last[keys[i]] = i
    opened = np.nonzero(following >= 0)[0]
    opened = opened[sizes[opened] <= budget]  # larger than the cache: never a hit
    m = len(opened)
    print(f"{n} requests, {unique} keys, budget {budget} bytes, {m} intervals", flush=True)

    # Columns: f_t (kept across t -> t+1, in budgets, 0..1), then z_i (kept over interval i, in
    # budgets). Row t: f_{t-1} + z(opened at t) - z(closing at t) - f_t = 0.
    steps = n - 1
    t = np.arange(steps)
    z = steps + np.arange(m)
    rows = np.concatenate([t, t + 1, opened, following[opened]])
    cols = np.concatenate([t, t, z, z])
    vals = np.concatenate([-np.ones(steps), np.ones(steps), np.ones(m), -np.ones(m)])
    order = np.lexsort((rows, cols))
    lp = highspy.HighsLp()
    lp.num_col_ = steps + m
    lp.num_row_ = n
    lp.col_lower_ = np.zeros(steps + m)
    lp.col_upper_ = np.concatenate([np.ones(steps), sizes[opened] / budget])
    lp.row_lower_ = np.zeros(n)
    lp.row_upper_ = np.zeros(n)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(cols[order], np.arange(steps + m + 1)).astype(np.int32)
    lp.a_matrix_.index_ = rows[order].astype(np.int32)
    lp.a_matrix_.value_ = vals[order]
    lp.sense_ = highspy.ObjSense.kMaximize
    for alpha in alphas:
        # A budget's worth kept over interval i earns ohr 100 x budget / (n x size) and bhr
        # 100 x budget / total bytes (scaled so that the solver's tolerances do not drown it).
        per_budget = 100 * budget * (alpha / (n * sizes[opened]) + (1 - alpha) / total_bytes)
        lp.col_cost_ = np.concatenate([np.zeros(steps), per_budget])
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("solver", "ipm" if n > 300_000 else "simplex")
        h.passModel(lp)
        started = time.time()
        h.run()
        status = h.modelStatusToString(h.getModelStatus())
        kept = np.array(h.getSolution().col_value)[steps:] * budget / sizes[opened]
        ohr = 100 * kept.sum() / n
        bhr = 100 * (kept * sizes[opened]).sum() / total_bytes
        print(
            f"alpha {alpha:.2f}: bound {h.getInfo().objective_function_value:.2f}"
            f" at ohr {ohr:.2f} bhr {bhr:.2f} ({status}, {time.time() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
