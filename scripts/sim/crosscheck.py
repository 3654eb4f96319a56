#!/usr/bin/env python3
"""Cross-checks Outpost's simulator against libCacheSim (PyPI `libcachesim`, an independent C
implementation) on the very same CSV trace.

    crosscheck.py --trace trace.csv --ours ours.csv [--markdown table.md] [--tolerance 1.0]
                  [--min-gap 8] [--gap-size 1%]

--ours is the CSV written by `outpost sim run --csv` in object mode (every object weighs 1). For
each cache capacity listed there, the trace is replayed through libCacheSim's LRU, S3FIFO,
WTinyLFU and Belady with the same capacity in objects: the CSV reader is told to ignore object
sizes (`ignore_obj_size`, every request weighs 1), which is what libCacheSim does for count-based
caches. Belady needs each request's next access time, which libCacheSim's CSV reader does not
compute, so the trace is converted to libCacheSim's oracleGeneral binary format first (with
libCacheSim's own converter when it has one, else here).

Parameters are matched to the engine's policies:
  - S3FIFO: small queue 10%, ghost 90%; move-to-main threshold 1 (Outpost promotes an object
    from the small queue when it was accessed at least once there; libCacheSim's default is 2,
    which is also run and reported as `S3FIFO-t2`);
  - WTinyLFU: window 1% of the cache, SLRU main (libCacheSim's 1:4 probation:protected split,
    Outpost's 80% protected).

Checks (exit status 1 if any fails):
  1. for each policy and size, |ours - libCacheSim| <= tolerance (points of object hit ratio);
     Outpost's `belady-admit` (admits every miss, libCacheSim's Belady semantics) is compared
     with libCacheSim's Belady; Outpost's `belady` (with bypass, the true optimum for unit
     sizes) is shown and must be >= libCacheSim's Belady;
  2. Outpost's w-tinylfu >= Outpost's lru + min-gap points at the gap size;
  3. Outpost's w-tinylfu >= libCacheSim's best online policy (every online configuration run
     here) at every size.
Exit status 2 on setup errors (libcachesim missing, bad input).
"""

import argparse
import csv
import os
import struct
import sys
import tempfile
import time

try:
    import libcachesim as lcs
except ImportError as e:  # pragma: no cover
    print(f"crosscheck: cannot import libcachesim: {e}", file=sys.stderr)
    sys.exit(2)

EXPECTED_VERSION = "0.3.5"


def lcs_version():
    try:
        from importlib.metadata import version

        return version("libcachesim")
    except Exception:  # noqa: BLE001
        return getattr(lcs, "__version__", "unknown")


def csv_reader(path, ignore_size=True):
    """libCacheSim's own CSV reader over our `time,key,size` file; with `ignore_size` every
    request weighs 1 (object mode), else its size in bytes (byte mode)."""
    p = lcs.ReaderInitParam(
        has_header=True,
        has_header_set=True,
        delimiter=",",
        obj_id_is_num=True,
        obj_id_is_num_set=True,
        ignore_obj_size=ignore_size,
    )
    # libCacheSim's CSV fields are 1-based column numbers.
    p.time_field = 1
    p.obj_id_field = 2
    p.obj_size_field = 3
    return lcs.TraceReader(path, lcs.TraceType.CSV_TRACE, p)


def write_oracle_general(trace_path, out_path):
    """oracleGeneral records: <uint32 time, uint64 id, uint32 size, int64 next access vtime>,
    size 1 (object mode), next access = index of the next request for the same id, or -1."""
    times, ids = [], []
    with open(trace_path, newline="") as f:
        rows = csv.reader(f)
        first = True
        for row in rows:
            if not row or row[0].startswith("#"):
                continue
            if first:
                first = False
                if row[0].strip() == "time":
                    continue
            times.append(int(float(row[0])))
            ids.append(int(row[1]))
    n = len(ids)
    nxt = [-1] * n
    last = {}
    for i in range(n - 1, -1, -1):
        j = last.get(ids[i])
        if j is not None:
            nxt[i] = j
        last[ids[i]] = i
    rec = struct.Struct("<IQIq")
    buf = bytearray(rec.size * n)
    for i in range(n):
        rec.pack_into(buf, i * rec.size, times[i] & 0xFFFFFFFF, ids[i], 1, nxt[i])
    with open(out_path, "wb") as f:
        f.write(buf)


def oracle_reader(trace_path, workdir):
    out = os.path.join(workdir, "trace.oracleGeneral.bin")
    converted = False
    util = getattr(lcs, "Util", None)
    if util is not None and hasattr(util, "convert_to_oracleGeneral"):
        try:
            # The converter takes the underlying C++ reader, not the Python wrapper.
            util.convert_to_oracleGeneral(csv_reader(trace_path)._reader, out)
            converted = os.path.exists(out) and os.path.getsize(out) > 0
        except Exception as e:  # noqa: BLE001
            print(f"crosscheck: libCacheSim's converter failed ({e}); converting here", file=sys.stderr)
    if not converted:
        write_oracle_general(trace_path, out)
    how = "libCacheSim's converter" if converted else "crosscheck.py"
    p = lcs.ReaderInitParam(ignore_obj_size=True)
    return lcs.TraceReader(out, lcs.TraceType.ORACLE_GENERAL_TRACE, p), how


def hit_ratio(cache, reader):
    reader.reset()
    obj_miss, _byte_miss = cache.process_trace(reader)
    return 1.0 - obj_miss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--markdown")
    ap.add_argument("--tolerance", type=float, default=1.0, help="max |ours - libCacheSim| in points")
    ap.add_argument("--min-gap", type=float, default=8.0, help="w-tinylfu over lru, in points")
    ap.add_argument("--gap-size", default="1%")
    ap.add_argument("--default-policy", default="w-tinylfu")
    args = ap.parse_args()

    version = lcs_version()
    print(f"libcachesim {version}")
    if version != EXPECTED_VERSION:
        print(f"crosscheck: warning: expected libcachesim {EXPECTED_VERSION}", file=sys.stderr)

    ours = {}  # (policy, capacity) -> ratio
    sizes = []  # (label, capacity) in order
    with open(args.ours, newline="") as f:
        for row in csv.DictReader(f):
            if row["mode"] != "objects":
                print("crosscheck: --ours must be an object-mode run (no --bytes)", file=sys.stderr)
                sys.exit(2)
            cap = int(row["capacity"])
            ours[(row["policy"], cap)] = float(row["object_hit_ratio"])
            if (row["size"], cap) not in sizes:
                sizes.append((row["size"], cap))
    if not sizes:
        print("crosscheck: no results in --ours", file=sys.stderr)
        sys.exit(2)

    online = [
        # (name in the table, our policy to compare with or None, factory)
        ("LRU", "lru", lambda c: lcs.LRU(c)),
        ("S3FIFO", "s3-fifo", lambda c: lcs.S3FIFO(c, small_size_ratio=0.1, ghost_size_ratio=0.9, move_to_main_threshold=1)),
        ("S3FIFO-t2", None, lambda c: lcs.S3FIFO(c, small_size_ratio=0.1, ghost_size_ratio=0.9, move_to_main_threshold=2)),
        ("WTinyLFU", "w-tinylfu", lambda c: lcs.WTinyLFU(c, main_cache="SLRU", window_size=0.01)),
    ]
    started = time.time()
    theirs = {}  # (name, capacity) -> ratio
    reader = csv_reader(args.trace)
    with tempfile.TemporaryDirectory() as workdir:
        oracle, how = oracle_reader(args.trace, workdir)
        print(f"Belady input: oracleGeneral written by {how}")
        for _label, cap in sizes:
            for name, _ours, make in online:
                theirs[(name, cap)] = hit_ratio(make(cap), reader)
            theirs[("Belady", cap)] = hit_ratio(lcs.Belady(cap), oracle)
    elapsed = time.time() - started
    print(f"libCacheSim: {len(theirs)} simulations in {elapsed:.1f}s")

    pairs = [
        ("lru", "LRU"),
        ("s3-fifo", "S3FIFO"),
        ("w-tinylfu", "WTinyLFU"),
        ("belady-admit", "Belady"),
        ("belady", "Belady"),
    ]
    failures = []
    lines = []
    header = "| cache size | policy | Outpost | libCacheSim | diff (points) | check |"
    lines.append(header)
    lines.append("|---|---|---:|---:|---:|---|")
    for label, cap in sizes:
        for mine, name in pairs:
            if (mine, cap) not in ours:
                continue
            a = 100.0 * ours[(mine, cap)]
            b = 100.0 * theirs[(name, cap)]
            d = a - b
            if mine == "belady":
                ok = a >= b - 1e-9
                check = "bound >= lcs Belady" if ok else "FAIL: below libCacheSim's Belady"
            else:
                ok = abs(d) <= args.tolerance
                check = f"within {args.tolerance:g}" if ok else f"FAIL: off by more than {args.tolerance:g}"
            if not ok:
                failures.append(f"{label} {mine}: ours {a:.2f} vs libCacheSim {name} {b:.2f}")
            lines.append(f"| {label} ({cap}) | {mine} vs {name} | {a:.2f} | {b:.2f} | {d:+.2f} | {check} |")
        b = 100.0 * theirs[("S3FIFO-t2", cap)]
        lines.append(f"| {label} ({cap}) | (libCacheSim S3FIFO, default threshold 2) | | {b:.2f} | | info |")

    summary = []
    default = args.default_policy
    for label, cap in sizes:
        if (default, cap) not in ours:
            failures.append(f"{label}: no {default} result in --ours")
            continue
        w = 100.0 * ours[(default, cap)]
        best_name, best = max(
            ((name, 100.0 * theirs[(name, cap)]) for name, _o, _m in online), key=lambda t: t[1]
        )
        ok = w >= best
        summary.append(
            f"{label}: Outpost {default} {w:.2f} vs libCacheSim best online ({best_name}) {best:.2f}: "
            + ("ok" if ok else "FAIL")
        )
        if not ok:
            failures.append(f"{label}: {default} {w:.2f} < libCacheSim best online {best_name} {best:.2f}")
        if label == args.gap_size:
            lru = 100.0 * ours.get(("lru", cap), float("nan"))
            gap = w - lru
            ok = gap >= args.min_gap
            summary.append(
                f"{label}: Outpost {default} {w:.2f} - lru {lru:.2f} = {gap:+.2f} points "
                f"(need >= {args.min_gap:g}): " + ("ok" if ok else "FAIL")
            )
            if not ok:
                failures.append(f"{label}: {default} only {gap:+.2f} points over lru")
    if args.gap_size not in [l for l, _ in sizes]:
        failures.append(f"gap size {args.gap_size} not among the sizes run")

    table = "\n".join(lines)
    print()
    print(table)
    print()
    for s in summary:
        print(s)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"libcachesim {version}; object hit ratio in percent; capacities in objects.\n\n")
            f.write(table + "\n\n")
            for s in summary:
                f.write(f"- {s}\n")
    if failures:
        print("\nFAILED:", file=sys.stderr)
        for fl in failures:
            print(f"  {fl}", file=sys.stderr)
        sys.exit(1)
    print("\ncross-check passed")


if __name__ == "__main__":
    main()
