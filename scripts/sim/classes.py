#!/usr/bin/env python3
"""Outpost's policies against libCacheSim's online policies on the workload classes of
scripts/sim-classes.sh, in object mode (every object weighs 1) and byte mode (capacities and hit
ratios in bytes), on the very same CSV traces.

    classes.py --class NAME TRACE OURS_OBJECTS_CSV OURS_BYTES_CSV [--class ...]
               [--markdown out.md] [--bar 0.5] [--default w-tinylfu] [--check]

For each class, mode and cache size (the capacities of our `outpost sim run --csv` output), the
trace is replayed through libCacheSim 0.3.5's online size-unaware policies (LRU, FIFO, ARC, LIRS,
TwoQ, S3FIFO, Sieve, ClockPro, Cacheus, LeCaR, LFUDA, Hyperbolic, WTinyLFU) with libCacheSim's
default parameters. The table gives Outpost's default policy, the best libCacheSim policy and
the gap, and our simulator's Belady as the bound (in byte mode our `belady` is size-aware).
`--check` exits 1 when the default falls more than `--bar` points below the best libCacheSim
policy, in object hit ratio (object mode) or byte hit ratio (byte mode); exit 2 on setup errors.
"""

import argparse
import csv
import multiprocessing as mp
import sys
import time

try:
    import libcachesim as lcs
except ImportError as e:  # pragma: no cover
    print(f"classes: cannot import libcachesim: {e}", file=sys.stderr)
    sys.exit(2)

from crosscheck import csv_reader  # noqa: E402  (same directory)

ONLINE = [
    ("LRU", lambda c: lcs.LRU(c)),
    ("FIFO", lambda c: lcs.FIFO(c)),
    ("ARC", lambda c: lcs.ARC(c)),
    ("LIRS", lambda c: lcs.LIRS(c)),
    ("TwoQ", lambda c: lcs.TwoQ(c)),
    ("S3FIFO", lambda c: lcs.S3FIFO(c)),
    ("Sieve", lambda c: lcs.Sieve(c)),
    ("ClockPro", lambda c: lcs.ClockPro(c)),
    ("Cacheus", lambda c: lcs.Cacheus(c)),
    ("LeCaR", lambda c: lcs.LeCaR(c)),
    ("LFUDA", lambda c: lcs.LFUDA(c)),
    ("Hyperbolic", lambda c: lcs.Hyperbolic(c)),
    ("WTinyLFU", lambda c: lcs.WTinyLFU(c)),
]


def reader(path, ignore_size):
    return csv_reader(path, ignore_size)


def simulate(trace, mode, pname, cap, out):
    """One libCacheSim run (in its own process: some policies never finish on caches smaller
    than an object, e.g. LIRS in byte mode at 0.1%)."""
    make = dict(ONLINE)[pname]
    obj_miss, byte_miss = make(cap).process_trace(reader(trace, ignore_size=(mode == "objects")))
    out.put(100.0 * (1.0 - (obj_miss if mode == "objects" else byte_miss)))


def run_all(jobs, timeout, parallel=2):
    """Run (key, args) simulations, `parallel` at a time; a run past `timeout` s counts as None."""
    results, pending, running = {}, list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            key, args = pending.pop(0)
            q = mp.Queue()
            proc = mp.Process(target=simulate, args=(*args, q))
            proc.start()
            running.append((key, proc, q, time.time()))
        time.sleep(0.02)
        still = []
        for key, proc, q, t0 in running:
            if not q.empty():
                results[key] = q.get()
                proc.join()
            elif not proc.is_alive():
                results[key] = None
            elif time.time() - t0 > timeout:
                proc.kill()
                proc.join()
                results[key] = None
            else:
                still.append((key, proc, q, t0))
        running = still
    return results


def ours(path):
    """(size label, capacity) in order, and {(policy, capacity): (object %, byte %)}."""
    sizes, res = [], {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            cap = int(row["capacity"])
            res[(row["policy"], cap)] = (
                100.0 * float(row["object_hit_ratio"]),
                100.0 * float(row["byte_hit_ratio"]),
            )
            if (row["size"], cap) not in sizes:
                sizes.append((row["size"], cap))
    return sizes, res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--class", dest="classes", nargs=4, action="append", required=True,
                    metavar=("NAME", "TRACE", "OURS_OBJECTS", "OURS_BYTES"))
    ap.add_argument("--markdown")
    ap.add_argument("--bar", type=float, default=0.5)
    ap.add_argument("--default", default="w-tinylfu")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per libCacheSim run")
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()

    lines = [
        "| class | mode | size | Outpost default | best libCacheSim | gap (points) | Outpost lru / s3-fifo | Outpost Belady (bound) | every libCacheSim policy |",
        "|---|---|---|---:|---|---:|---|---:|---|",
    ]
    failures = []
    started = time.time()
    for name, trace, ours_obj, ours_bytes in args.classes:
        for mode, path in (("objects", ours_obj), ("bytes", ours_bytes)):
            sizes, mine = ours(path)
            idx = 0 if mode == "objects" else 1
            jobs = [((label, cap, pname), (trace, mode, pname, cap)) for label, cap in sizes for pname, _ in ONLINE]
            got = run_all(jobs, args.timeout, args.parallel)
            for label, cap in sizes:
                theirs = {p: got[(label, cap, p)] for p, _ in ONLINE if got[(label, cap, p)] is not None}
                hung = [p for p, _ in ONLINE if got[(label, cap, p)] is None]
                best_name = max(theirs, key=theirs.get)
                best = theirs[best_name]
                d = mine.get((args.default, cap), (float("nan"),) * 2)[idx]
                gap = d - best
                ok = gap >= -args.bar
                if not ok:
                    failures.append(f"{name} {mode} {label}: {args.default} {d:.2f} vs {best_name} {best:.2f} ({gap:+.2f})")
                lru = mine.get(("lru", cap), (float("nan"),) * 2)[idx]
                s3 = mine.get(("s3-fifo", cap), (float("nan"),) * 2)[idx]
                bound = mine.get(("belady", cap), (float("nan"),) * 2)[idx]
                every = ", ".join(f"{k} {v:.1f}" for k, v in sorted(theirs.items(), key=lambda t: -t[1]))
                if hung:
                    every += f"; did not finish: {', '.join(hung)}"
                lines.append(
                    f"| {name} | {mode} | {label} | {d:.2f} | {best_name} {best:.2f} | {gap:+.2f}{'' if ok else ' **below**'} "
                    f"| {lru:.2f} / {s3:.2f} | {bound:.2f} | {every} |"
                )
                print(lines[-1], flush=True)
    table = "\n".join(lines)
    elapsed = time.time() - started
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"libcachesim 0.3.5, default parameters; hit ratios in percent (object hit ratio in object mode, byte hit ratio in byte mode); bar: default >= best - {args.bar:g}.\n\n")
            f.write(table + "\n")
            if failures:
                f.write("\nBelow the bar:\n\n" + "".join(f"- {x}\n" for x in failures))
    print(f"\nlibCacheSim: {elapsed:.0f} s")
    if failures:
        print(f"\n{len(failures)} class/mode/size cells below the bar:", file=sys.stderr)
        for x in failures:
            print(f"  {x}", file=sys.stderr)
        if args.check:
            sys.exit(1)
    else:
        print("every cell meets the bar")


if __name__ == "__main__":
    main()
