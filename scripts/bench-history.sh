#!/usr/bin/env bash
# Finding things across time, vaultfs vs restic on the same points: `vaultfs versions`
# of one file, `vaultfs diff` of two consecutive points against `restic diff`, and
# `vaultfs find` of a name across all points against `restic find`; every run cold.
#
#   sudo scripts/bench-history.sh                  # 0.3 GB tree, 100 points, 5 runs
#   BENCH_POINTS=20 BENCH_RUNS=3 scripts/bench-history.sh   # quick look
#
# Environment:
#   BENCH_DIR      work dir (dataset, repositories, logs)   default /var/tmp/vaultfs-bench-history
#   BENCH_TREE_GB  size of the tree (sampled from /usr)     default 0.3
#   BENCH_POINTS   points taken (each after ~1% of files changed)   default 100
#   BENCH_RUNS     timed runs of each command (medians)     default 5
#   VAULTFS_BIN    use this binary instead of `cargo build --release`
#   BENCH_NO_SCHEDULE  extra mount flag (default --no-schedule; empty for binaries without it)
#
# The tree of scripts/bench/dataset.py; between points a seeded ~1% of its files get a
# line appended (and their mtime moves), so most directories stay the same from point to
# point. Both tools back up the same tree after each change. Each timed command starts
# after `sync; echo 3 > /proc/sys/vm/drop_caches` (cold page cache; restic's own cache
# directory is emptied too) and is timed with /usr/bin/time; the table gives medians and
# the restic/vaultfs ratio of the medians.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${BENCH_DIR:-/var/tmp/vaultfs-bench-history}
TREE_GB=${BENCH_TREE_GB:-0.3}
POINTS=${BENCH_POINTS:-100}
RUNS=${BENCH_RUNS:-5}
DATA=$D/data-tree$TREE_GB
TREE=$DATA/tree
export VAULTFS_PASSWORD=bench-pw RESTIC_PASSWORD=bench-pw
export RESTIC_CACHE_DIR=$D/cache/restic
VREPO=$D/repo-vaultfs
RREPO=$D/repo-restic

for tool in restic python3; do
  command -v $tool >/dev/null || { echo "error: $tool is missing (apt-get install restic python3)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
if [ -z "${VAULTFS_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  VAULTFS_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/vaultfs
fi
V=$VAULTFS_BIN
mkdir -p "$D"
python3 "$ROOT/scripts/bench/dataset.py" build "$DATA" "$TREE_GB" 0 >/dev/null

cold() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
  rm -rf "$RESTIC_CACHE_DIR"
}

# The same points in both repositories (made once per dataset and point count).
stamp=$D/points-$TREE_GB-$POINTS.done
if [ ! -e "$stamp" ]; then
  rm -rf "$VREPO" "$RREPO" "$D/cache"
  "$V" --repo "$VREPO" init >/dev/null
  "$V" --repo "$VREPO" vault create bench >/dev/null
  restic -q -r "$RREPO" init >/dev/null
  for i in $(seq 1 "$POINTS"); do
    if [ "$i" -gt 1 ]; then
      python3 - "$TREE" "$i" <<'EOF'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
               if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)))
rng = random.Random(seed)
for p in rng.sample(files, max(1, len(files) // 100)):
    with open(p, "ab") as f:
        f.write(b"changed at point %d\n" % seed)
# The file whose versions are asked: changed at every 10th point.
if seed % 10 == 0:
    with open(os.path.join(root, "history-probe.txt"), "ab") as f:
        f.write(b"line %d\n" % seed)
EOF
    else
      echo "line 1" >"$TREE/history-probe.txt"
    fi
    "$V" --repo "$VREPO" backup bench "$TREE" >/dev/null
    restic -q -r "$RREPO" backup "$TREE" >/dev/null
  done
  touch "$stamp"
fi

mapfile -t VP < <("$V" --repo "$VREPO" points bench --json | python3 -c 'import json,sys; [print(p["id"]) for p in json.load(sys.stdin)]')
mapfile -t RP < <(restic -q -r "$RREPO" snapshots --json | python3 -c 'import json,sys; [print(s["short_id"]) for s in sorted(json.load(sys.stdin), key=lambda s: s["time"])]')
[ "${#VP[@]}" -eq "$POINTS" ] && [ "${#RP[@]}" -eq "$POINTS" ] || {
  echo "error: expected $POINTS points in both repositories (vaultfs ${#VP[@]}, restic ${#RP[@]}); remove $stamp" >&2
  exit 1
}
mid=$((POINTS / 2))
# A name that exists in the tree once (a file of the sample).
name=$(cd "$TREE" && find . -type f -name '*.py' -printf '%f\n' | sort | awk 'NR == 1')
[ -n "$name" ] || name=history-probe.txt

# median SECONDS of RUNS cold runs of a command; its output goes to $D/last.out
timed() {
  local times=()
  for _ in $(seq 1 "$RUNS"); do
    cold
    /usr/bin/time -f %e -o "$D/time" "$@" >"$D/last.out" 2>"$D/last.err" || {
      echo "error: $* failed:" >&2
      cat "$D/last.err" >&2
      exit 1
    }
    times+=("$(cat "$D/time")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# median SECONDS of RUNS: a fresh mount each run (nothing cached in the daemon), then a
# cold `ls` of the versions of the probe file in it.
timed_versions_ls() {
  local times=() mnt=$D/mnt
  mkdir -p "$mnt"
  for _ in $(seq 1 "$RUNS"); do
    "$V" --repo "$VREPO" mount "$mnt" ${BENCH_NO_SCHEDULE---no-schedule} >"$D/mount.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do [ -d "$mnt/.vaultfs" ] && break; sleep 0.05; done
    cold
    /usr/bin/time -f %e -o "$D/time" ls "$mnt/.vaultfs/versions/bench/tree/history-probe.txt" >"$D/last.out"
    times+=("$(cat "$D/time")")
    kill -INT "$pid"
    wait "$pid" || true
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

echo "tree: $(python3 "$ROOT/scripts/bench/dataset.py" stats "$TREE"), $POINTS points, $RUNS cold runs each"
v_versions=$(timed "$V" --repo "$VREPO" versions bench tree/history-probe.txt)
n_versions=$(wc -l <"$D/last.out")
v_ls=$(timed_versions_ls)
n_ls=$(wc -l <"$D/last.out")
v_diff=$(timed "$V" --repo "$VREPO" diff bench "${VP[$((mid - 1))]}" "${VP[$mid]}")
n_vdiff=$(wc -l <"$D/last.out")
r_diff=$(timed restic -r "$RREPO" diff "${RP[$((mid - 1))]}" "${RP[$mid]}")
n_rdiff=$(grep -c '^[-+MUT?] ' "$D/last.out" || true)
v_find=$(timed "$V" --repo "$VREPO" find bench "$name")
n_vfind=$(wc -l <"$D/last.out")
r_find=$(timed restic -r "$RREPO" find "$name")
n_rfind=$(grep -c "/$name" "$D/last.out" || true)

ratio() { python3 -c "import sys; print('%.1f' % (float(sys.argv[1]) / max(float(sys.argv[2]), 1e-3)))" "$1" "$2"; }
cat <<EOF

| question (cold) | vaultfs | restic | restic / vaultfs | output lines (vaultfs / restic) |
| --- | --- | --- | --- | --- |
| versions of one file across $POINTS points | ${v_versions} s | - | - | $n_versions |
| \`ls\` of its \`.vaultfs/versions/\` directory (fresh mount) | ${v_ls} s | - | - | $n_ls |
| diff of two consecutive points | ${v_diff} s | ${r_diff} s | $(ratio "$r_diff" "$v_diff") | $n_vdiff / $n_rdiff |
| find of one name across all points (\`$name\`) | ${v_find} s | ${r_find} s | $(ratio "$r_find" "$v_find") | $n_vfind / $n_rfind |
EOF
