#!/usr/bin/python3
"""The S3 section of BENCHMARKS.md from a bench-s3.sh CSV and its meta JSON.

    s3report.py CSV META [MORE_CSV...]   # markdown on stdout; more CSVs are merged by run
"""

import csv
import json
import statistics
import sys
from collections import defaultdict

TOOLS = ["vaultfs", "restic"]
GIB = 2**30


def load(paths):
    timed = defaultdict(list)    # (tool, metric) -> [(run, wall, cpu, rss, exit)]
    values = defaultdict(list)   # (tool, metric) -> [(run, value)]
    for path in paths:
        for r in csv.DictReader(open(path)):
            key = (r["tool"], r["metric"])
            if r["wall_s"]:
                cpu = float(r["user_s"] or 0) + float(r["sys_s"] or 0)
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


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fr(x):
    return "-" if x is None else f"{x:.2f}"


def num(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def main():
    timed, values = load([sys.argv[1]] + sys.argv[3:])
    meta = json.load(open(sys.argv[2]))
    tree = meta["tree"]
    big = meta["big_bytes"]
    read_bytes = {"cat_big_cold": big, "cp_tree_cold": tree["bytes"]}

    def ok_runs(tool, metric):
        return {r: (w, c, m) for r, w, c, m, e in timed.get((tool, metric), []) if e == 0}

    def wall(tool, metric):
        return med([w for w, _, _ in ok_runs(tool, metric).values()])

    def cpu(tool, metric):
        return med([c for _, c, _ in ok_runs(tool, metric).values()])

    def failed(tool, metric):
        return sum(1 for *_, e in timed.get((tool, metric), []) if e != 0)

    def per_run_values(tool, metric):
        out = {}
        for r, v in values.get((tool, metric), []):
            try:
                out[r] = float(v)
            except ValueError:
                pass
        return out

    def val(tool, metric):
        return med(list(per_run_values(tool, metric).values()))

    def cell(tool, metric):
        w = wall(tool, metric)
        f = failed(tool, metric)
        if w is None:
            return f"FAILED ({f} runs)" if f else "-"
        s = f"{secs(w)} (cpu {secs(cpu(tool, metric))})"
        return s + (f" [{f} failed runs]" if f else "")

    out = []
    p = out.append
    p("## Reading and writing through S3 (Ceph RGW)")
    p("")
    p(f"Measured {meta['date']} by `scripts/bench-s3.sh` (raw numbers: `{meta['csv']}`, logs: "
      f"`{meta['logs']}`; {meta['runs']} interleaved run(s), medians; the whole bench took "
      f"{meta['minutes']} min). Reproduce (as root, Debian 12, restic and Ceph installed or "
      f"installable):")
    p("")
    p("```sh")
    p(meta["command"])
    p("```")
    p("")
    p(f"- Machine: {meta['cores']} vCPU {meta['cpu']}, {meta['mem_gib']} GiB RAM, "
      f"{meta['os']}, kernel {meta['kernel']}. Load average before / after: "
      f"{meta['load_before']} / {meta['load_after']}.")
    vfs = meta["vaultfs"] if "release build" in meta["vaultfs"] else meta["vaultfs"] + " (release build)"
    p(f"- Versions: vaultfs {vfs}; {meta['restic']}; "
      f"Ceph RGW {meta['ceph']} (beast frontend, options `{meta.get('beast_opts') or '(none)'}`; one OSD on {meta['objectstore']}; all on "
      f"this machine over loopback: `scripts/s3-rgw.sh`).")
    p(f"- Data: `tree`, {tree['files']:,} files, {tree['bytes'] / 1e9:.2f} GB, "
      f"{tree['dirs']:,} directories, median file {tree['median_file'] / 1024:.1f} KiB "
      f"(sampled from /usr); `big.bin`, {big / GIB:.2f} GiB of /usr binaries concatenated; "
      f"the dataset of `scripts/bench.sh`, backed up from a copy of its own.")
    p("- Per run and tool (order rotating): `backup` of tree into a fresh bucket, of big.bin "
      "into another; a fresh mount of the big.bin bucket, `cat big.bin`; a fresh mount of "
      "the tree bucket, `cp -a` of the tree out (checked by counts and bytes). Page cache "
      "dropped before every timed step and every mount; restic's cache directory emptied "
      "before every backup and mount; vaultfs keeps nothing locally (no `--disk-cache`). "
      "Settings: restic `init --repository-version 2`, `backup --compression auto`, "
      "`-o s3.bucket-lookup=path`; vaultfs defaults.")
    p("- Requests are counted by the server, so both tools alike: the gateway's perf "
      "counters (`ceph --admin-daemon …rgw….asok perf dump`: `req`, `get`, `get_b`, `put`, "
      "`put_b`) and its access log (method, path, status, bytes of each request), diffed "
      "around each step (`scripts/bench/s3reqs.py`). vaultfs's own `.vaultfs/stats.json`, "
      "read before and after each read, gives the chunks it fetched.")
    if meta.get("note"):
        p(f"- **Noise:** {meta['note']}")
    p("")

    # ---- times
    p("### Times (medians)")
    p("")
    p("Ratios are vaultfs/restic: below 1 means vaultfs is faster (or smaller).")
    p("")
    p("| row | vaultfs | restic | vaultfs/restic |")
    p("|---|---|---|---|")

    def trow(label, metric):
        p(f"| {label} | {cell('vaultfs', metric)} | {cell('restic', metric)} | "
          f"{fr(ratio(wall('vaultfs', metric), wall('restic', metric)))} |")

    def vrow(label, metric, fmt):
        a, b = val("vaultfs", metric), val("restic", metric)
        p(f"| {label} | {fmt(a)} | {fmt(b)} | {fr(ratio(a, b))} |")

    def thr(label, metric, nbytes, files=None):
        cells = []
        for t in TOOLS:
            w = wall(t, metric)
            f = failed(t, metric)
            if w is None:
                cells.append(f"FAILED ({f} runs)" if f else "-")
                continue
            s = f"{nbytes / w / 1e6:,.0f} MB/s ({secs(w)}"
            s += f", {files / w:,.0f} files/s)" if files else ")"
            cells.append(s + (f" [{f} failed runs]" if f else ""))
        p(f"| {label} | {cells[0]} | {cells[1]} | "
          f"{fr(ratio(wall('vaultfs', metric), wall('restic', metric)))} |")

    trow(f"backup of tree to S3 ({tree['bytes'] / 1e9:.2f} GB, {tree['files']:,} files)", "backup_tree")
    trow(f"backup of big.bin to S3 ({big / GIB:.2f} GiB)", "backup_big")
    vrow("bucket size after tree (stored bytes)", "repo_tree", lambda x: "-" if x is None else f"{x / 1e9:.3f} GB")
    vrow("bucket size after big.bin", "repo_big", lambda x: "-" if x is None else f"{x / 1e9:.3f} GB")
    vrow("mount → big.bin visible", "mount_ready_big", lambda x: "-" if x is None else secs(x))
    thr(f"cat big.bin through the mount, cold", "cat_big_cold", big)
    vrow("mount → tree visible", "mount_ready_tree", lambda x: "-" if x is None else secs(x))
    thr(f"cp -a tree out of the mount, cold", "cp_tree_cold", tree["bytes"], tree["files"])

    def rss_cpu(kind):
        def get(tool):
            per = defaultdict(list)
            for step in ("big", "tree"):
                for r, v in per_run_values(tool, f"mount_{kind}_{step}").items():
                    per[r].append(v)
            return med([max(v) if kind == "rss" else sum(v) for v in per.values()])
        return get
    g = rss_cpu("rss")
    a, b = g("vaultfs"), g("restic")
    p(f"| mount daemon peak RSS (max of the two mounts) | {num(a and a / 1024)} MiB | "
      f"{num(b and b / 1024)} MiB | {fr(ratio(a, b))} |")
    g = rss_cpu("cpu")
    a, b = g("vaultfs"), g("restic")
    p(f"| mount daemon CPU (both mounts) | {num(a, 1)} s | {num(b, 1)} s | {fr(ratio(a, b))} |")
    p("")

    # ---- requests
    p("### Requests served by the gateway (medians per step)")
    p("")
    p("`requests` is every request (perf counter `req`); object GETs, HEADs and bucket "
      "listings come from the access log; `GET bytes` is the body bytes sent for object GETs, "
      "`PUT bytes` the bytes received (counter `put_b`). Mount steps run from the start of "
      "the daemon until the file or directory is visible.")
    p("")
    p("| step | tool | requests | object GETs | GET bytes | HEADs | listings | PUTs | POSTs | PUT bytes | errors |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    steps = [("backup_tree", "backup of tree"), ("backup_big", "backup of big.bin"),
             ("mount_big", "mount → big.bin visible"), ("cat_big_cold", "cat big.bin, cold"),
             ("mount_tree", "mount → tree visible"), ("cp_tree_cold", "cp -a tree, cold")]

    def v0(tool, metric):
        """Median of a per-step counter; 0 in runs where the step ran but the key is absent."""
        runs = {r for r, _ in values.get((tool, f"{metric.split('.')[0]}.rgw_req"), [])}
        got = per_run_values(tool, metric)
        xs = [got.get(r, 0.0) for r in runs]
        return med(xs)

    def mb(x):
        return "-" if x is None else (f"{x / 1e6:,.1f} MB" if x < 1e9 else f"{x / 1e9:,.2f} GB")

    for step, label in steps:
        for t in TOOLS:
            if (t, f"{step}.rgw_req") not in values:
                continue
            p(f"| {label} | {t} | {num(v0(t, step + '.rgw_req'))} | {num(v0(t, step + '.log_get'))} | "
              f"{mb(v0(t, step + '.log_get_bytes'))} | {num(v0(t, step + '.log_head'))} | "
              f"{num(v0(t, step + '.log_list'))} | {num(v0(t, step + '.log_put'))} | "
              f"{num(v0(t, step + '.log_post'))} | {mb(v0(t, step + '.rgw_put_b'))} | "
              f"{num(v0(t, step + '.log_errors'))} |")
    p("")

    # Which objects the GETs of the reads went to.
    p("Object GETs of the reads by object kind (first path component under the repository "
      "prefix; vaultfs `packs`, restic `data`, ...):")
    p("")
    for step, label in steps:
        if step not in read_bytes:
            continue
        for t in TOOLS:
            kinds = sorted({m.split(".", 1)[1][len("log_get_"):] for (tt, m) in values
                            if tt == t and m.startswith(step + ".log_get_")
                            and not m.startswith((step + ".log_get_bytes", step + ".log_get_latency"))})
            if not kinds:
                continue
            parts = []
            for k in kinds:
                n = v0(t, f"{step}.log_get_{k}")
                nb = v0(t, f"{step}.log_get_bytes_{k}")
                parts.append(f"{k}: {num(n)} ({mb(nb)})")
            p(f"- {label}, {t}: " + "; ".join(parts))
    p("")

    # ---- per GiB read
    p("### Requests per GiB read (medians of per-run figures)")
    p("")
    p("GiB read = the bytes the reader got (big.bin; the tree's file bytes). `GET bytes per "
      "GiB read` above 1 GiB means more was downloaded than read (whole packs, unused "
      "blobs, metadata); below 1 GiB, compression. `GETs in flight`: the gateway's summed "
      "latency of the object GETs over the wall time of the read, i.e. how many GETs the "
      "reader kept busy on average (the gateway logs latencies in 4 ms steps: approximate).")
    p("")
    p("| read | tool | object GETs per GiB | GET bytes per GiB read | all requests per GiB | KiB per GET | GETs in flight | vaultfs/restic (GETs) |")
    p("|---|---|---|---|---|---|---|---|")

    def per_gib(tool, step, key):
        got = per_run_values(tool, f"{step}.{key}")
        runs = {r for r, _ in values.get((tool, f"{step}.rgw_req"), [])}
        ok = ok_runs(tool, step)
        xs = [got.get(r, 0.0) / (read_bytes[step] / GIB) for r in runs if r in ok]
        return med(xs)

    for step, label in steps:
        if step not in read_bytes:
            continue
        gets = {t: per_gib(t, step, "log_get") for t in TOOLS}
        for t in TOOLS:
            gb_ = per_gib(t, step, "log_get_bytes")
            n, nb = v0(t, step + ".log_get"), v0(t, step + ".log_get_bytes")
            lat = per_run_values(t, step + ".log_get_latency_ms")
            ok = ok_runs(t, step)
            infl = med([lat[r] / 1000 / ok[r][0] for r in lat if r in ok and ok[r][0]])
            p(f"| {label} | {t} | {num(gets[t], 1)} | "
              f"{'-' if gb_ is None else f'{gb_ / GIB:.2f} GiB'} | "
              f"{num(per_gib(t, step, 'rgw_req'), 1)} | "
              f"{num(ratio(nb, n) and ratio(nb, n) / 1024, 0)} | {num(infl, 1)} | "
              f"{fr(ratio(gets['vaultfs'], gets['restic'])) if t == 'vaultfs' else ''} |")
    p("")

    # ---- vaultfs: GETs vs chunks
    have_stats = any(m.endswith(".vfs_chunk_fetches") for (t, m) in values if t == "vaultfs")
    if have_stats:
        p("### vaultfs: GETs against chunks touched (medians)")
        p("")
        p("Chunks fetched, store calls and prefetches from `.vaultfs/stats.json` (diffed "
          "around the read); server GETs from the gateway's log. A chunk a read needs "
          "and does not find in memory is fetched; in one cold pass over the data, where nothing "
          "still needed is evicted, chunks fetched = distinct chunks touched.")
        p("")
        p("| read | chunks fetched | chunk bytes fetched | store get / get_range | store bytes | server object GETs | of which packs | server GETs / chunks | prefetches queued / dropped | reads that waited for a fetch |")
        p("|---|---|---|---|---|---|---|---|---|---|")
        for step, label in steps:
            if step not in read_bytes:
                continue
            ch = per_run_values("vaultfs", f"{step}.vfs_chunk_fetches")
            sg = per_run_values("vaultfs", f"{step}.log_get")
            rs = [sg.get(r, 0.0) / ch[r] for r in ch if ch[r]]
            p(f"| {label} | {num(val('vaultfs', step + '.vfs_chunk_fetches'))} | "
              f"{mb(val('vaultfs', step + '.vfs_chunk_fetch_bytes'))} | "
              f"{num(val('vaultfs', step + '.vfs_backend_get'))} / "
              f"{num(val('vaultfs', step + '.vfs_backend_get_range'))} | "
              f"{mb(val('vaultfs', step + '.vfs_backend_get_bytes'))} | "
              f"{num(v0('vaultfs', step + '.log_get'))} | {num(v0('vaultfs', step + '.log_get_packs'))} | "
              f"{fr(med(rs))} | {num(val('vaultfs', step + '.vfs_prefetches_queued'))} / "
              f"{num(val('vaultfs', step + '.vfs_prefetches_dropped'))} | "
              f"{num(val('vaultfs', step + '.vfs_cache_waits'))} |")
        p("")

    # ---- targets
    p("### Targets")
    p("")
    p("Per-run ratios are vaultfs/restic within the same run (the tools run back to back).")
    p("")
    p("| target | measured (medians) | per run | met? |")
    p("|---|---|---|---|")

    def verdict(x, limit):
        if x is None:
            return "not measured (failed?)"
        return "**met**" if x <= limit else "**not met**"

    def time_target(label, metric, limit):
        a, b = ok_runs("vaultfs", metric), ok_runs("restic", metric)
        rs = [a[r][0] / b[r][0] for r in sorted(a) if r in b and b[r][0]]
        x = ratio(wall("vaultfs", metric), wall("restic", metric))
        speed = "-" if x is None else f"{fr(x)} (vaultfs {1 / x:.2f}× as fast)"
        p(f"| {label} | {speed} | {', '.join(fr(y) for y in rs) or '-'} | {verdict(x, limit)} |")

    time_target("cold `cat big.bin` through the mount ≥ 2× restic (vaultfs/restic ≤ 0.50)",
                "cat_big_cold", 0.5)
    time_target("cold `cp -a` of the tree through the mount ≥ 2× restic (≤ 0.50)",
                "cp_tree_cold", 0.5)
    if have_stats:
        for step, label in steps:
            if step not in read_bytes:
                continue
            ch = per_run_values("vaultfs", f"{step}.vfs_chunk_fetches")
            sg = per_run_values("vaultfs", f"{step}.log_get")
            rs = [sg.get(r, 0.0) / ch[r] for r in sorted(ch) if ch[r]]
            x = ratio(v0("vaultfs", step + ".log_get"), val("vaultfs", step + ".vfs_chunk_fetches"))
            m = (f"{num(v0('vaultfs', step + '.log_get'))} GETs / "
                 f"{num(val('vaultfs', step + '.vfs_chunk_fetches'))} chunks = {fr(x)}")
            p(f"| {label}: server GETs ≤ chunks fetched (≤ 1.00) | {m} | "
              f"{', '.join(fr(y) for y in rs) or '-'} | {verdict(x, 1.0)} |")
    else:
        p("| GETs ≤ chunks touched | this vaultfs has no `.vaultfs/stats.json` | - | not measured |")
    p("")

    # ---- checks
    checks = [(t, vs) for (t, m), vs in sorted(values.items()) if m == "cp_tree_verified"]
    if checks:
        p("Checks of the copies: " + "; ".join(
            f"{t} " + ", ".join(f"run {r}: {v}" for r, v in vs) for t, vs in checks) + ".")
        p("")
    fails = meta.get("failures", "").strip()
    if fails:
        p("Failed steps (exit status and the end of their output):")
        p("")
        p("```")
        p(fails[:4000])
        p("```")
        p("")
    return out


if __name__ == "__main__":
    print("\n".join(main()))
