#!/usr/bin/env python3
"""Before/after table of the mount section of a bench.sh run with BENCH_VAULTFS_OLD_BIN.

usage: before-after.py RESULTS.csv

One row per mount measurement: the medians over the runs of vaultfs-old, vaultfs and
squashfuse_ll, and new/old (above 1: the new binary is slower or bigger). Rows whose
new/old is above 1.05 are marked.
"""
import csv
import statistics
import sys
from collections import defaultdict

TIMED = [
    ("mount_cat_big_cold", "cat big.bin, cold (s)"),
    ("mount_cat_big_warm", "cat big.bin, warm (s)"),
    ("mount_find_cold", "`find tree \\| wc -l`, cold (s)"),
    ("mount_lsR_cold", "`ls -lR tree`, cold (s)"),
    ("mount_par4_cold", "4 parallel readers of big.bin, cold (s)"),
    ("mount_cp_tree_cold", "cp -a tree out, cold (s)"),
]
VALUES = [
    ("mount_ready_cat", "mount → big.bin visible (s)"),
    ("mount_rand_cold_p50_ms", "random 4 KiB pread p50, cold (ms)"),
    ("mount_rand_cold_p99_ms", "random 4 KiB pread p99, cold (ms)"),
    ("mount_rand_warm_p50_ms", "random 4 KiB pread p50, warm (ms)"),
    ("mount_rand_warm_p99_ms", "random 4 KiB pread p99, warm (ms)"),
]
TOOLS = ["vaultfs-old", "vaultfs", "squashfuse"]


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    by = defaultdict(list)
    rss = defaultdict(lambda: defaultdict(float))
    for r in rows:
        if r["exit"] not in ("0", ""):
            continue
        m, t = r["metric"], r["tool"]
        if any(m == k for k, _ in TIMED) and r["wall_s"]:
            by[(m, t)].append(float(r["wall_s"]))
        elif any(m == k for k, _ in VALUES) and r["value"]:
            by[(m, t)].append(float(r["value"]))
        elif m.startswith("mount_rss_") and m != "mount_rss_synth" and r["value"]:
            rss[t][r["run"]] = max(rss[t][r["run"]], float(r["value"]) / 1024)
    for t, per_run in rss.items():
        by[("rss", t)] = list(per_run.values())
    runs = sorted({r["run"] for r in rows})
    print(f"| row ({len(runs)} runs, medians) | vaultfs-old | vaultfs | squashfuse_ll | new/old |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for key, label in TIMED + VALUES + [("rss", "daemon peak RSS, max of the mounts of a run (MiB)")]:
        med = {t: statistics.median(by[(key, t)]) if by[(key, t)] else None for t in TOOLS}
        old, new = med["vaultfs-old"], med["vaultfs"]
        ratio = new / old if old and new is not None else None
        if ratio is not None:
            worst = max(worst, ratio)
        cells = ["-" if med[t] is None else f"{med[t]:.3g}" for t in TOOLS]
        rs = "-" if ratio is None else f"{ratio:.2f}" + (" (worse by >5%)" if ratio > 1.05 else "")
        print(f"| {label} | " + " | ".join(cells) + f" | {rs} |")
    print(f"\nworst new/old: {worst:.2f}")


if __name__ == "__main__":
    main()
