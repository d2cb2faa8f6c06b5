#!/usr/bin/python3
"""Random 4 KiB preads on one file: per-read latency, printed as JSON.

    randread.py FILE [--count 2000] [--block 4096] [--seed 42] [--stats STATS_JSON]

The offsets are block-aligned, drawn with a fixed seed from the file's size, so two runs
on files of the same size (the same file through different mounts) read the same offsets
in the same order. Each read is one os.pread of BLOCK bytes timed with
time.perf_counter_ns; the open is timed apart. With --stats (a vaultfs mount's
.vaultfs/stats.json), the file is read before and after the pass and the difference of
its counters is printed too (chunk_fetch_bytes / bytes_asked = read amplification); a
missing or unreadable stats file only leaves those fields out. Exit status 1 if a read
failed or came back short.
"""

import argparse
import json
import os
import random
import sys
import time


def read_stats(path):
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def counters(stats):
    """The numeric top-level fields, plus backend.* flattened."""
    out = {}
    for k, v in (stats or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
        elif isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                    out[f"{k}.{k2}"] = v2
    return out


def pct(sorted_ns, p):
    """Nearest-rank percentile of sorted nanoseconds, in ms."""
    i = max(0, min(len(sorted_ns) - 1, -(-len(sorted_ns) * p // 100) - 1))
    return sorted_ns[i] / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--stats", help="a vaultfs .vaultfs/stats.json to diff around the pass")
    a = ap.parse_args()

    size = os.stat(a.file).st_size
    blocks = size // a.block
    if blocks < 1:
        sys.exit(f"{a.file}: smaller than one block")
    rng = random.Random(a.seed)
    offsets = [rng.randrange(blocks) * a.block for _ in range(a.count)]

    before = read_stats(a.stats)
    t0 = time.perf_counter_ns()
    fd = os.open(a.file, os.O_RDONLY)
    t1 = time.perf_counter_ns()
    lat = []
    short = 0
    asked = 0
    try:
        for off in offsets:
            s = time.perf_counter_ns()
            got = os.pread(fd, a.block, off)
            lat.append(time.perf_counter_ns() - s)
            asked += a.block
            if len(got) != a.block:
                short += 1
    finally:
        os.close(fd)
    total = time.perf_counter_ns() - t1
    after = read_stats(a.stats)

    srt = sorted(lat)
    out = {
        "file_bytes": size, "reads": len(lat), "block": a.block, "seed": a.seed,
        "bytes_asked": asked, "short_reads": short,
        "open_ms": (t1 - t0) / 1e6, "first_ms": lat[0] / 1e6,
        "p50_ms": pct(srt, 50), "p90_ms": pct(srt, 90), "p99_ms": pct(srt, 99),
        "max_ms": srt[-1] / 1e6, "mean_ms": sum(lat) / len(lat) / 1e6,
        "total_s": total / 1e9,
    }
    if a.stats:
        out["stats"] = a.stats if before is not None and after is not None else None
    if before is not None and after is not None:
        b, c = counters(before), counters(after)
        delta = {k: c[k] - b[k] for k in c if k in b}
        out["stats_delta"] = delta
        if "chunk_fetch_bytes" in delta:
            out["chunk_fetch_bytes"] = delta["chunk_fetch_bytes"]
            out["amplification"] = delta["chunk_fetch_bytes"] / asked if asked else None
    print(json.dumps(out))
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
