#!/usr/bin/python3
"""BENCHMARKS.md from a bench.sh CSV and its meta JSON: medians, ratios, targets."""

import csv
import json
import statistics
import sys
from collections import defaultdict

PEERS = ["restic", "borg"]


def load(paths):
    rows = [r for path in paths for r in csv.DictReader(open(path))]
    timed = defaultdict(list)    # (tool, metric) -> [(run, wall, cpu, rss, exit)]
    values = defaultdict(list)   # (tool, metric) -> [(run, value)]
    for r in rows:
        key = (r["tool"], r["metric"])
        if r["wall_s"]:
            cpu = (float(r["user_s"] or 0) + float(r["sys_s"] or 0))
            timed[key].append((int(r["run"]), float(r["wall_s"]), cpu,
                               int(r["maxrss_kb"] or 0), int(r["exit"] or 0)))
        else:
            values[key].append((int(r["run"]), r["value"]))
    return timed, values


def med(xs):
    return statistics.median(xs) if xs else None


def secs(x):
    if x is None:
        return "-"
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def gb(x):
    return "-" if x is None else f"{x / 1e9:.3f} GB"


def mib(kb):
    return "-" if kb is None else f"{kb / 1024:.0f} MiB"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}"


def main():
    # report.py CSV META [MORE_CSV...]: more CSVs (same dataset) are merged by run number.
    timed, values = load([sys.argv[1]] + sys.argv[3:])
    meta = json.load(open(sys.argv[2]))

    def wall(tool, metric):
        xs = [w for _, w, _, _, e in timed.get((tool, metric), []) if e == 0]
        return med(xs)

    def cpu(tool, metric):
        xs = [c for _, _, c, _, e in timed.get((tool, metric), []) if e == 0]
        return med(xs)

    def rss(tool, metric):
        xs = [m for _, _, _, m, e in timed.get((tool, metric), []) if e == 0]
        return med(xs)

    def failed(tool, metric):
        return sum(1 for *_, e in timed.get((tool, metric), []) if e != 0)

    def size(tool, metric):
        xs = [float(v) for _, v in values.get((tool, metric), []) if v]
        return med(xs)

    def per_run(tool, metric, peer, peer_metric=None, field=1):
        """vaultfs/peer ratio of each run (same run = same machine conditions)."""
        a = {r[0]: r[field] for r in timed.get((tool, metric), []) if r[4] == 0}
        b = {r[0]: r[field] for r in timed.get((peer, peer_metric or metric), []) if r[4] == 0}
        return [a[k] / b[k] for k in sorted(a) if k in b and b[k]]

    def cell(tool, metric, with_cpu=True):
        w = wall(tool, metric)
        if w is None:
            f = failed(tool, metric)
            return f"FAILED ({f} runs)" if f else "-"
        s = secs(w)
        if with_cpu:
            s += f" (cpu {secs(cpu(tool, metric))})"
        f = failed(tool, metric)
        if f:
            s += f" [{f} failed runs]"
        return s

    out = []
    p = out.append
    tree, v2 = meta["tree"], meta["v2"]
    p("# Benchmarks: vaultfs vs restic vs borg")
    p("")
    p(f"Measured {meta['date']} by `scripts/bench.sh` (raw numbers: `{meta['csv']}`, "
      f"logs: `{meta['logs']}`; {meta['runs']} interleaved runs, medians; the whole "
      f"bench took {meta['minutes']} min).")
    if meta.get("extra_csv"):
        p("")
        p(f"Merged with the rows of earlier invocation(s) on the same dataset, by run number: "
          f"`{meta['extra_csv']}` (BENCH_EXTRA_CSV).")
    p("")
    p("Reproduce (as root, Debian 12; installs restic, borgbackup, zstd, time):")
    p("")
    p("```sh")
    p(meta["command"])
    p("```")
    p("")
    p(f"- Machine: {meta['cores']} vCPU {meta['cpu']}, {meta['mem_gib']} GiB RAM, "
      f"{meta['fs']}, {meta['os']}, kernel {meta['kernel']}. Load average before / after: "
      f"{meta['load_before']} / {meta['load_after']}.")
    p(f"- Versions: vaultfs {meta['vaultfs']} (release build); {meta['restic']}; "
      f"{meta['borg']}; {meta['zstd']}.")
    p(f"- `tree`: {tree['files']:,} regular files, {tree['bytes'] / 1e9:.2f} GB, "
      f"{tree['dirs']:,} directories, {tree['symlinks']:,} symlinks, median file "
      f"{tree['median_file'] / 1024:.1f} KiB, largest {tree['largest_file'] / 2**20:.0f} MiB: "
      f"a sample of the real files under /usr (lib, share, include, bin, sbin, libexec, "
      f"local), small files sampled by count, files over 1 MiB by bytes "
      f"(BENCH_TREE_GB={meta['tree_gb']}).")
    p(f"- `v2`: `tree` with {meta['v2_modified']:,} files modified (up to 4 KiB overwritten "
      f"at a random offset, a line appended, mtime +1 s) and {meta['v2_added']:,} real files "
      f"added: {v2['files']:,} files, {v2['bytes'] / 1e9:.2f} GB. It is applied in place "
      f"(`scripts/bench/dataset.py apply-v2`) so that the untouched files keep their inode "
      f"and ctime, as between two backups of a real machine.")
    p(f"- `big`: one file of {meta['big_bytes'] / 2**30:.2f} GiB, binaries from /usr "
      f"concatenated (compressible; it shares content with `tree`, so it is backed up into "
      f"a fresh repository of its own).")
    p("- Every timed step starts with `sync; echo 3 > /proc/sys/vm/drop_caches` (cold) and "
      "runs under `/usr/bin/time -v` (wall, user+sys CPU, peak RSS). Each tool gets a fresh "
      "repository and cache directory per run; the order of tools rotates from run to run.")
    p("- Settings: restic `init --repository-version 2`, `backup --compression auto`; borg "
      "`init -e repokey`, `create --compression zstd,3`; vaultfs defaults (`init`, "
      "`vault create bench`, `backup bench tree`). Everything encrypted.")
    if meta.get("note"):
        p(f"- **Noise:** {meta['note']}")
    p("")
    p("## Results (medians)")
    p("")
    p("Times are wall clock, CPU = user+sys. Ratios are vaultfs/peer: below 1 means vaultfs "
      "is faster (or smaller).")
    p("")
    p("| row | reference | vaultfs | restic | borg | vaultfs/restic | vaultfs/borg | vaultfs/reference |")
    p("|---|---|---|---|---|---|---|---|")

    def trow(label, metric, ref_label, ref_metric):
        v = wall("vaultfs", metric)
        refw = wall("ref", ref_metric) if ref_metric else None
        ref_cell = f"{ref_label}: {cell('ref', ref_metric)}" if ref_metric else ref_label
        p(f"| {label} | {ref_cell} | {cell('vaultfs', metric)} | {cell('restic', metric)} | "
          f"{cell('borg', metric)} | {fmt_ratio(ratio(v, wall('restic', metric)))} | "
          f"{fmt_ratio(ratio(v, wall('borg', metric)))} | {fmt_ratio(ratio(v, refw))} |")

    trow(f"initial backup of tree ({tree['bytes'] / 1e9:.2f} GB, {tree['files']:,} files)",
         "backup_tree", "`tar -cf - tree \\| zstd -3 -T2`", "backup_tree")
    trow("unchanged re-backup of tree", "unchanged_tree",
         "metadata walk `find -printf`", "meta_walk")
    trow("incremental backup of v2 after tree", "incremental_v2",
         "metadata walk `find -printf`", "meta_walk")
    trow(f"backup of big ({meta['big_bytes'] / 2**30:.2f} GiB, fresh repo)", "backup_big",
         "`zstd -3 -T2`", "backup_big")
    trow("full restore of tree", "restore_tree", "`zstd -dc tree.tar.zst \\| tar -x`",
         "restore_tree")
    trow("open the repository and list backups (fixed cost of every command)", "open_list",
         "-", None)

    def srow(label, metric, ref_label, ref_metric):
        v = size("vaultfs", metric)
        ref = size("ref", ref_metric) if ref_metric else None
        ref_cell = f"{ref_label}: {gb(ref)}" if ref_metric else ref_label
        p(f"| {label} | {ref_cell} | {gb(v)} | {gb(size('restic', metric))} | "
          f"{gb(size('borg', metric))} | {fmt_ratio(ratio(v, size('restic', metric)))} | "
          f"{fmt_ratio(ratio(v, size('borg', metric)))} | {fmt_ratio(ratio(v, ref))} |")

    srow("repository size after tree (du -sb)", "repo_tree", "tree.tar.zst", "repo_tree")
    srow("repository size after tree + re-backup + v2", "repo_after_v2", "-", None)
    srow("repository size of big", "repo_big", "-", None)

    for metric, label in [("backup_tree", "initial backup"), ("unchanged_tree", "unchanged re-backup"),
                          ("incremental_v2", "incremental v2"), ("backup_big", "backup of big"),
                          ("restore_tree", "restore")]:
        v = rss("vaultfs", metric)
        p(f"| peak RSS, {label} | {mib(rss('ref', metric if metric != 'unchanged_tree' and metric != 'incremental_v2' else 'meta_walk'))} | "
          f"{mib(v)} | {mib(rss('restic', metric))} | {mib(rss('borg', metric))} | "
          f"{fmt_ratio(ratio(v, rss('restic', metric)))} | "
          f"{fmt_ratio(ratio(v, rss('borg', metric)))} | - |")
    if ("vaultfs", "check") in timed:
        p(f"| `vaultfs check` (after the v2 backup, run 1) | - | {cell('vaultfs', 'check')} | - | - | - | - | - |")
    p("")

    # Mount section.
    if any(m.startswith("mount_") for _, m in timed):
        big = meta["big_bytes"]
        p("## Reading through a mount (cold = fresh mount and dropped page cache)")
        p("")
        p("`ref` reads the same files straight from ext4. Throughput is bytes / wall time; "
          "ratios are vaultfs/peer of the times (below 1: vaultfs faster).")
        p("")
        p("| row | ext4 | vaultfs | restic | borg | vaultfs/restic | vaultfs/borg | vaultfs/ext4 |")
        p("|---|---|---|---|---|---|---|---|")

        def mcell(tool, metric, unit):
            w = wall(tool, metric)
            f = failed(tool, metric)
            if w is None:
                return f"DNF/failed ({f} runs)" if f else "-"
            if unit == "MB/s":
                s = f"{big / w / 1e6:,.0f} MB/s ({secs(w)})"
            else:
                s = f"{secs(w)} = {tree['files'] / w:,.0f} files/s"
            return s + (f" [{f} failed runs]" if f else "")

        def mrow(label, metric, unit):
            v = wall("vaultfs", metric)
            cells = [mcell(t, metric, unit) for t in ("ref", "vaultfs", "restic", "borg")]
            p(f"| {label} | " + " | ".join(cells) + f" | {fmt_ratio(ratio(v, wall('restic', metric)))} | "
              f"{fmt_ratio(ratio(v, wall('borg', metric)))} | {fmt_ratio(ratio(v, wall('ref', metric)))} |")

        def vrow(label, metric, fmt, combine=None):
            def get(tool):
                if combine:
                    per = defaultdict(list)
                    for m in combine:
                        for r, v in values.get((tool, m), []):
                            if v:
                                per[r].append(float(v))
                    xs = [max(v) if fmt == "mib" else sum(v) for v in per.values()]
                    return med(xs)
                return size(tool, metric)
            f = {"s": lambda x: "-" if x is None else secs(x),
                 "mib": lambda x: mib(x),
                 "cpu": lambda x: "-" if x is None else f"{x:.1f} s"}[fmt]
            v = get("vaultfs")
            p(f"| {label} | - | {f(v)} | {f(get('restic'))} | {f(get('borg'))} | "
              f"{fmt_ratio(ratio(v, get('restic')))} | {fmt_ratio(ratio(v, get('borg')))} | - |")

        vrow("mount → big.bin visible", "mount_ready_cat", "s")
        mrow(f"cat big.bin ({big / 2**30:.2f} GiB), cold", "mount_cat_big_cold", "MB/s")
        mrow("cat big.bin again, warm (same mount)", "mount_cat_big_warm", "MB/s")
        mrow(f"cp -a tree out ({tree['files']:,} files), cold", "mount_cp_tree_cold", "files/s")
        vrow("daemon peak RSS (max of the two mounts)", None, "mib",
             combine=["mount_rss_cat", "mount_rss_cp"])
        vrow("daemon CPU (both mounts)", None, "cpu", combine=["mount_cpu_cat", "mount_cpu_cp"])
        p("")

    # Targets.
    p("## Targets")
    p("")
    p("Per-run ratios are vaultfs/peer within the same run (the tools run back to back), "
      "which is what to trust on a noisy machine.")
    p("")
    p("| target | vaultfs/peer (median of medians) | per run | met? |")
    p("|---|---|---|---|")

    def target(label, metric, peer, peer_metric, limit, field=1, strict=False):
        if field == "size":
            a, b = size("vaultfs", metric), size(peer, peer_metric)
            x = ratio(a, b)
            runs = "-"
            va = dict(values.get(("vaultfs", metric), []))
            vb = dict(values.get((peer, peer_metric), []))
            rs = [float(va[k]) / float(vb[k]) for k in sorted(va) if k in vb and va[k] and vb[k]]
            runs = ", ".join(f"{y:.2f}" for y in rs) if rs else "-"
        else:
            get = {1: wall, 3: rss}[field]
            x = ratio(get("vaultfs", metric), get(peer, peer_metric))
            rs = per_run("vaultfs", metric, peer, peer_metric, field)
            runs = ", ".join(f"{y:.2f}" for y in rs) if rs else "-"
        if x is None:
            verdict = "not measured (failed?)"
        else:
            ok = x < limit if strict else x <= limit
            verdict = "**met**" if ok else "**not met**"
        p(f"| {label} | {fmt_ratio(x)} | {runs} | {verdict} |")

    target("initial backup ≥ 2× faster than restic (≤ 0.50)", "backup_tree", "restic", "backup_tree", 0.5)
    target("initial backup within 1.5× of tar\\|zstd (≤ 1.50)", "backup_tree", "ref", "backup_tree", 1.5)
    target("incremental v2 within 1.5× of the metadata walk (≤ 1.50)", "incremental_v2", "ref", "meta_walk", 1.5)
    target("unchanged re-backup ≥ 3× faster than restic (≤ 0.33)", "unchanged_tree", "restic", "unchanged_tree", 1 / 3)
    target("restore ≥ 1.5× faster than restic restore (≤ 0.67)", "restore_tree", "restic", "restore_tree", 1 / 1.5)
    target("repository no larger than restic's (≤ 1.00)", "repo_tree", "restic", "repo_tree", 1.0, field="size")
    for metric, label in [("backup_tree", "initial backup"), ("unchanged_tree", "unchanged re-backup"),
                          ("incremental_v2", "incremental v2"), ("backup_big", "backup of big")]:
        target(f"peak RSS under restic's, {label} (< 1.00)", metric, "restic", metric, 1.0, field=3, strict=True)
    p("")

    # Checks and failures.
    p("## Checks")
    p("")
    for (tool, metric), vs in sorted(values.items()):
        if metric.endswith(("_verified", "_diff")):
            p(f"- {tool} {metric}: " + "; ".join(f"run {r}: {v}" for r, v in vs))
    fails = meta.get("failures", "").strip()
    if fails:
        p("")
        p("Failed steps (exit status and the end of their output):")
        p("")
        p("```")
        p(fails[:6000])
        p("```")
    p("")
    return out


if __name__ == "__main__":
    print("\n".join(main()))
