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


# ---------------------------------------------------------------- mount section

MOUNT_TOOLS = ["ref", "bindfs", "squashfuse", "vaultfs", "restic", "borg"]
MOUNT_HEAD = {"ref": "ext4", "bindfs": "bindfs", "squashfuse": "squashfuse_ll",
              "vaultfs": "vaultfs", "restic": "restic", "borg": "borg"}
MOUNT_PEERS = ["restic", "borg", "squashfuse", "bindfs", "ref"]
# The mounts of one run whose readiness time counts for "mount → big.bin visible".
MOUNT_STEPS = ["cat", "rand", "find", "ls", "par", "cp"]


def isnum(v):
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def parse_size(v):
    """Bytes from 268435456, 256M, 1G, 256MiB."""
    if v is None:
        return None
    s = str(v).strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if s and s[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(s[-1]) + 1)
        s = s[:-1]
    return float(s) * mult if isnum(s) else None


class Row:
    """One row of the mount table: per tool a {run: number}, lower is better."""

    def __init__(self, key, label, get, fmt, failed=None):
        self.key, self.label, self.fmt = key, label, fmt
        self.runs = {t: get(t) for t in MOUNT_TOOLS}
        self.failed = {t: (failed(t) if failed else 0) for t in MOUNT_TOOLS}

    def med(self, tool):
        return med(list(self.runs[tool].values()))

    def ratio(self, tool, peer):
        return ratio(self.med(tool), self.med(peer))

    def per_run(self, tool, peer):
        a, b = self.runs[tool], self.runs[peer]
        return [a[k] / b[k] for k in sorted(a) if k in b and b[k]]

    def cell(self, tool):
        x = self.med(tool)
        f = self.failed[tool]
        if x is None:
            return f"DNF/failed ({f} runs)" if f else "-"
        return self.fmt(x) + (f" [{f} failed runs]" if f else "")


def mount_data(timed, values, meta):
    """The rows of the mount table (None when the CSV has no mount rows)."""
    if not any(m.startswith("mount_") for _, m in list(timed) + list(values)):
        return None
    big, tree = meta["big_bytes"], meta["tree"]

    def wall(metric):
        return lambda t: {r: w for r, w, _, _, e in timed.get((t, metric), []) if e == 0}

    def failed(metric):
        return lambda t: sum(1 for *_, e in timed.get((t, metric), []) if e != 0)

    def val(metric):
        return lambda t: {r: float(v) for r, v in values.get((t, metric), []) if isnum(v)}

    def comb(metrics, how):
        def get(t):
            per = defaultdict(list)
            for m in metrics:
                for r, v in val(m)(t).items():
                    per[r].append(v)
            return {r: how(v) for r, v in per.items()}
        return get

    def amp(num, den):
        """vaultfs bytes fetched from the store / bytes read, per run."""
        def get(t):
            a = val(num)(t)
            b = den(t) if callable(den) else {r: den for r in a}
            return {r: a[r] / b[r] for r in a if b.get(r)}
        return get

    def mbps(x):
        return f"{big / x / 1e6:,.0f} MB/s ({secs(x)})"

    def ms(x):
        return f"{x:.3f} ms" if x < 1 else f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms"

    def files_s(x):
        return f"{secs(x)} = {tree['files'] / x:,.0f} files/s"

    def times(x):
        return f"{x:.2f}×"

    rows = []
    add = rows.append
    add(Row("repo", "repository / image size (du -sb; ext4: the bytes of tree + big)",
            lambda t: ({r: tree["bytes"] + big for r in range(1, int(meta["runs"]) + 1)}
                       if t == "ref" else val("mount_repo_bytes")(t)), gb))
    add(Row("ready", "mount → big.bin visible (median of the 6 fresh mounts of a run)",
            comb([f"mount_ready_{s}" for s in MOUNT_STEPS], med), secs))
    add(Row("cat_cold", f"cat big.bin ({big / 2**30:.2f} GiB), cold", wall("mount_cat_big_cold"),
            mbps, failed("mount_cat_big_cold")))
    add(Row("cat_warm", "cat big.bin again, warm (same mount)", wall("mount_cat_big_warm"),
            mbps, failed("mount_cat_big_warm")))
    n = meta.get("rand_reads", "")
    for phase, what in [("cold", "cold (fresh mount)"), ("warm", "warm (same offsets, same mount)")]:
        for q in ("p50", "p99"):
            add(Row(f"rand_{phase}_{q}", f"random 4 KiB pread of big.bin, {q}, {what}",
                    val(f"mount_rand_{phase}_{q}_ms"), ms, failed(f"mount_rand_{phase}")))
    add(Row("rand_first", "first 4 KiB pread on the fresh mount (cold pass)",
            val("mount_rand_cold_first_ms"), ms))
    add(Row("find", "`find tree \\| wc -l`, cold", wall("mount_find_cold"), secs,
            failed("mount_find_cold")))
    add(Row("ls", "`ls -lR tree > /dev/null`, cold", wall("mount_lsR_cold"), secs,
            failed("mount_lsR_cold")))
    add(Row("par", "4 parallel readers of big.bin (disjoint quarters, `dd bs=1M`), cold, aggregate",
            wall("mount_par4_cold"), mbps, failed("mount_par4_cold")))
    add(Row("cp", f"cp -a tree out ({tree['files']:,} files), cold", wall("mount_cp_tree_cold"),
            files_s, failed("mount_cp_tree_cold")))
    add(Row("rss", "daemon peak RSS (VmHWM, max of the 6 mounts)",
            comb([f"mount_rss_{s}" for s in MOUNT_STEPS], max), mib))
    add(Row("cpu", "daemon CPU, user+sys (sum of the 6 mounts)",
            comb([f"mount_cpu_{s}" for s in MOUNT_STEPS], sum),
            lambda x: f"{x:.1f} s"))
    amp_rows = [
        Row("amp_rand_cold", f"random reads, cold ({n} × 4 KiB)",
            amp("mount_rand_cold_chunk_fetch_bytes", val("mount_rand_cold_bytes_asked")), times),
        Row("amp_rand_warm", "random reads, warm (same offsets)",
            amp("mount_rand_warm_chunk_fetch_bytes", val("mount_rand_warm_bytes_asked")), times),
        Row("amp_cat", "cat big.bin cold + warm (whole mount / one size of big)",
            amp("mount_fetch_bytes_cat", big), times),
        Row("amp_cp", "cp -a tree (whole mount / bytes of tree)",
            amp("mount_fetch_bytes_cp", tree["bytes"]), times),
    ]
    synth = Row("synth", "", val("mount_ready_synth"), secs)
    synth_rss = Row("synth_rss", "", val("mount_rss_synth"), mib)
    budget = med(list(val("mount_cache_budget_bytes")("vaultfs").values()))
    counts = {t: sorted(set(int(v) for v in val("mount_find_count")(t).values())) for t in MOUNT_TOOLS}
    return {"rows": {r.key: r for r in rows}, "order": rows, "amp": amp_rows, "synth": synth,
            "synth_rss": synth_rss, "synth_bytes": med(list(val("synth_repo_bytes")("vaultfs").values())),
            "budget": budget, "counts": counts}


def mount_table(p, mount, meta):
    big, tree = meta["big_bytes"], meta["tree"]
    p("## Reading through a mount")
    p("")
    p("Every cold step starts on a fresh mount (daemon just started, the tool's cache "
      "emptied, `drop_caches`); warm steps repeat the read on the same mount. The tools:")
    p("")
    p("- `vaultfs mount` with its defaults"
      + (f" (chunk cache `--cache-size` {mib(mount['budget'] / 1024)})" if mount["budget"] else "")
      + "; `restic mount`; `borg mount -f`; each over a repository holding tree and big in one "
      "backup (made once per invocation, not timed).")
    p("- `squashfuse_ll` (squashfuse " + meta.get("squashfuse", "").removeprefix("squashfuse ")
      + ") over a `mksquashfs tree big -comp zstd -noappend -processors 2` image "
      "(default zstd level and 128 KiB blocks; " + (meta.get("mksquashfs") or "mksquashfs") + ").")
    p("- `bindfs -f --multithreaded` over the ext4 dataset (" + (meta.get("bindfs") or "bindfs")
      + "): a passthrough FUSE daemon, the ceiling of a FUSE file system on this machine.")
    p("- ext4: the same files read in place, no FUSE.")
    p("")
    p(f"Random reads: `scripts/bench/randread.py`, {meta.get('rand_reads', 2000)} `os.pread`s of "
      "4 KiB at 4 KiB-aligned offsets of big.bin drawn with a fixed seed (the same offsets for "
      "every tool), each timed with `perf_counter_ns`; cold on a fresh mount, then warm with "
      "the same offsets on the same mount. Parallel readers: `scripts/bench/parread.sh`, 4 "
      "concurrent `dd bs=1M` each reading its own quarter of big.bin; the aggregate is "
      "size / wall time. Ratios are vaultfs/peer of times, latencies or sizes (below 1: "
      "vaultfs faster or smaller).")
    p("")
    heads = [MOUNT_HEAD[t] for t in MOUNT_TOOLS]
    rheads = [f"vaultfs/{MOUNT_HEAD[t]}" for t in MOUNT_PEERS]
    p("| row | " + " | ".join(heads) + " | " + " | ".join(rheads) + " |")
    p("|---" * (1 + len(heads) + len(rheads)) + "|")
    for row in mount["order"]:
        p(f"| {row.label} | " + " | ".join(row.cell(t) for t in MOUNT_TOOLS) + " | "
          + " | ".join(fmt_ratio(row.ratio("vaultfs", t)) for t in MOUNT_PEERS) + " |")
    p("")
    amps = [r for r in mount["amp"] if r.med("vaultfs") is not None]
    p("Read amplification of vaultfs, bytes fetched from the store (`chunk_fetch_bytes` of "
      "`<mnt>/.vaultfs/stats.json`) / bytes read:"
      + (" " + "; ".join(f"{r.label}: {r.cell('vaultfs')}" for r in amps) + "."
         if amps else " not measured (this binary's mount offers no `.vaultfs/stats.json`)."))
    p("")
    s = mount["synth"]
    if s.med("vaultfs") is not None:
        p(f"Synthetic repository ({mount['synth_bytes'] / 1e9:.2f} GB, 1,000 recovery points, "
          f"over a million chunks, made by `examples/synth-repo`): `vaultfs mount` until "
          f"`ls <mnt>/<first vault>` succeeds: {s.cell('vaultfs')} (per run: "
          + ", ".join(f"{x:.3f}" for _, x in sorted(s.runs["vaultfs"].items()))
          + f"), daemon peak RSS {mount['synth_rss'].cell('vaultfs')}. restic and borg are "
          "not compared there: there is no generator of a repository of that shape for them.")
    else:
        p("Synthetic repository (1,000 points, a million chunks): not measured "
          "(no `target/release/examples/synth-repo` generator at the time of the run).")
    p("")


def mount_targets(p, mount):
    """Rows of the Targets table (floors), then the Goals table."""
    rows = mount["rows"]

    def verdict(x, limit, strict):
        if x is None:
            return "not measured (failed?)"
        return "**met**" if (x < limit if strict else x <= limit) else "**not met**"

    def rel(label, key, peer, limit, strict=False):
        row = rows[key]
        x = row.ratio("vaultfs", peer)
        runs = ", ".join(f"{y:.2f}" for y in row.per_run("vaultfs", peer)) or "-"
        return f"| {label} | {fmt_ratio(x)} | {runs} | {verdict(x, limit, strict)} |"

    def absolute(label, row, limit, fmt, scale=1.0, strict=True):
        x = row.med("vaultfs")
        x = None if x is None else x * scale
        runs = ", ".join(fmt(y * scale) for _, y in sorted(row.runs["vaultfs"].items())) or "-"
        return f"| {label} | {'-' if x is None else fmt(x)} | {runs} | {verdict(x, limit, strict)} |"

    p(rel("mount: cold sequential read of big ≥ 2× restic mount (≤ 0.50)", "cat_cold", "restic", 0.5))
    p(rel("mount: cold sequential read of big ahead of borg mount (< 1.00)", "cat_cold", "borg", 1.0, True))
    p(rel("mount: `cp -a` of tree ≥ 2× restic mount (≤ 0.50)", "cp", "restic", 0.5))
    p(rel("mount: `cp -a` of tree ahead of borg mount (< 1.00)", "cp", "borg", 1.0, True))
    p(rel("mount: `find` ≥ 3× restic mount (≤ 0.33)", "find", "restic", 1 / 3))
    p(rel("mount: `ls -lR` ≥ 3× restic mount (≤ 0.33)", "ls", "restic", 1 / 3))
    p(absolute("mount: mount → first listing (big.bin visible) under 0.2 s (seconds)", rows["ready"],
               0.2, lambda y: f"{y:.3f}"))
    if mount["synth"].med("vaultfs") is not None:
        p(absolute("mount: synthetic repository (1,000 points, 1M chunks) → first vault listed "
                   "under 0.2 s (seconds)", mount["synth"], 0.2, lambda y: f"{y:.3f}"))
    b = mount["budget"]
    if b:
        p(absolute(f"mount: daemon peak RSS within the chunk cache budget ({mib(b / 1024)}; "
                   f"RSS / budget ≤ 1.00)", rows["rss"], 1.0, lambda y: f"{y:.2f}",
                   scale=1024 / b, strict=False))
    p("")
    p("### Goals (mount)")
    p("")
    p("| goal | vaultfs/peer or value (median) | per run | met? |")
    p("|---|---|---|---|")
    for key in ["ready", "cat_cold", "cat_warm", "rand_cold_p50", "rand_cold_p99", "rand_warm_p50",
                "rand_warm_p99", "find", "ls", "par", "cp", "rss", "cpu"]:
        row = rows[key]
        p(rel(f"ahead of squashfuse_ll: {row.label} (< 1.00)", key, "squashfuse", 1.0, True))
    p(rel("cold read of big at least ext4's speed (≤ 1.00)", "cat_cold", "ref", 1.0))
    p(rel("`cp -a` ≥ 0.5× ext4's speed (≤ 2.00)", "cp", "ref", 2.0))
    p(rel("`find` ≥ 0.5× ext4's speed (≤ 2.00)", "find", "ref", 2.0))
    p(rel("`ls -lR` ≥ 0.3× ext4's speed (≤ 3.33)", "ls", "ref", 1 / 0.3))
    p(absolute("random 4 KiB p50, warm, ≤ 0.3 ms (ms)", rows["rand_warm_p50"], 0.3,
               lambda y: f"{y:.3f}", strict=False))
    p("")


def mount_checks(p, mount):
    c = {t: v for t, v in mount["counts"].items() if v}
    if not c:
        return
    ref = c.get("ref")
    p("- entries seen by `find tree | wc -l`: " + "; ".join(
        f"{MOUNT_HEAD[t]}: {', '.join(f'{x:,}' for x in v)}"
        + ("" if ref is None or v == ref else " (DIFFERS from ext4)") for t, v in c.items()))



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
    p("Reproduce (as root, Debian 12; installs restic, borgbackup, zstd, time, and for the "
      "mount section bindfs, squashfuse, squashfs-tools):")
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
    mount = mount_data(timed, values, meta)
    if mount:
        mount_table(p, mount, meta)

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
    if mount:
        mount_targets(p, mount)
    else:
        p("")

    # Checks and failures.
    p("## Checks")
    p("")
    for (tool, metric), vs in sorted(values.items()):
        if metric.endswith(("_verified", "_diff")):
            p(f"- {tool} {metric}: " + "; ".join(f"run {r}: {v}" for r, v in vs))
    if mount:
        mount_checks(p, mount)
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
