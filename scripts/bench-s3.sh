#!/usr/bin/env bash
# vaultfs vs restic through S3: the same data, the same Ceph RGW, one invocation.
#
#   sudo scripts/bench-s3.sh                     # defaults: ~1 GB tree, 1 GiB big file, 3 runs
#   BENCH_TREE_GB=0.3 BENCH_BIG_GB=0.25 BENCH_RUNS=1 BENCH_DIR=/tmp/b scripts/bench-s3.sh
#
# Rows, per run and tool (the order of the tools rotates from run to run):
#   backup_tree   `vaultfs backup` / `restic backup` of tree into a fresh bucket
#   backup_big    the same for big.bin, another fresh bucket
#   mount (big)   a fresh mount of the big.bin repository: time until big.bin is visible
#   cat_big_cold  `cat big.bin` through that mount, page cache dropped
#   mount (tree)  a fresh mount of the tree repository
#   cp_tree_cold  `cp -a` of the tree out of that mount, page cache dropped (checked by
#                 counts and bytes against the dataset)
# and for every step the requests the gateway served (scripts/bench/s3reqs.py: the
# gateway's perf counters and access log, diffed around the step), so that both tools are
# counted alike; for vaultfs also `.vaultfs/stats.json` around the reads (chunks fetched,
# store calls), to compare the GETs with the chunks touched. The buckets of a tool are
# deleted once its turn of a run is over (the OSD keeps everything in memory).
#
# Environment:
#   BENCH_DIR       work dir (dataset, logs, CSV)              default /var/tmp/vaultfs-bench
#                   (the dataset data-tree<GB>-big<GB> is shared with scripts/bench.sh;
#                   tree and big.bin are backed up from a copy in BENCH_DIR/s3)
#   BENCH_TREE_GB   size of `tree` (sampled from /usr)          default 1
#   BENCH_BIG_GB    size of the big compressible file, GiB      default 1
#   BENCH_RUNS      interleaved runs                            default 3
#   BENCH_OUT       markdown section                  default BENCH_DIR/report-s3-<stamp>.md
#   BENCH_RGW_PORT / BENCH_RGW_MON_PORT  the gateway's ports    default 7490 / 6790
#   BENCH_RGW_BEAST_OPTS options of the gateway's frontend      default tcp_nodelay=1
#                   (set it empty to measure Ceph's default, where every small reply
#                   waits ~40 ms for the client's delayed ACK)
#   BENCH_TOOLS     the tools                                   default "vaultfs restic"
#   BENCH_MOUNT_TIMEOUT  limit for one read through a mount, s  default 900
#   BENCH_NOTE      a sentence added to the report
#   VAULTFS_BIN     use this binary instead of `cargo build --release`
#   BENCH_VAULTFS_DESC  what the report says the binary is (e.g. "release build of abc1234")
#
# Runs as root (drop_caches, mounts, the Ceph daemons). The gateway is started with
# scripts/s3-rgw.sh in BENCH_DIR/s3/rgw on its own ports, so it runs beside the test
# suite's, and stopped at the end. Measuring as in scripts/bench.sh: every timed step
# starts with `sync; echo 3 > /proc/sys/vm/drop_caches`, runs under /usr/bin/time -v and
# is appended to BENCH_DIR/results-s3-<stamp>.csv; scripts/bench/s3report.py writes the
# medians, ratios and targets.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS=$ROOT/scripts/bench
D=${BENCH_DIR:-/var/tmp/vaultfs-bench}
TREE_GB=${BENCH_TREE_GB:-1}
BIG_GB=${BENCH_BIG_GB:-1}
RUNS=${BENCH_RUNS:-3}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
DATA=$D/data-tree${TREE_GB}-big${BIG_GB}
TREE=$DATA/tree
BIG=$DATA/big/big.bin
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
W=$D/s3                      # everything of this script but the dataset and results
CSV=$D/results-s3-$STAMP.csv
LOGS=$D/logs-s3-$STAMP
OUT=${BENCH_OUT:-$D/report-s3-$STAMP.md}
RGW_DIR=$W/rgw
RGW_PORT=${BENCH_RGW_PORT:-7490}
RGW_MON_PORT=${BENCH_RGW_MON_PORT:-6790}
ENDPOINT=http://127.0.0.1:$RGW_PORT
MOUNT_TIMEOUT=${BENCH_MOUNT_TIMEOUT:-900}
BEAST_OPTS=${BENCH_RGW_BEAST_OPTS-tcp_nodelay=1}
read -r -a TOOLS <<<"${BENCH_TOOLS:-vaultfs restic}"

export RESTIC_PASSWORD=bench-pw VAULTFS_PASSWORD=bench-pw
export RESTIC_CACHE_DIR=$W/cache/restic
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testsecret
export VAULTFS_S3_ENDPOINT=$ENDPOINT
export CEPH_CONF=$RGW_DIR/ceph.conf        # for radosgw-admin (bucket stats and removal)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- setup

build_vaultfs() {
  VFS_DESC=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] &&
    VFS_DESC="$VFS_DESC + uncommitted changes"
  if [ -n "${VAULTFS_BIN:-}" ]; then
    VFS=$VAULTFS_BIN
    VFS_DESC="binary $VAULTFS_BIN (VAULTFS_BIN; tree at $VFS_DESC)"
  else
    log "cargo build --release"
    VFS=${CARGO_TARGET_DIR:-$ROOT/target}/release/vaultfs
    case $VFS in /*) ;; *) VFS=$ROOT/$VFS ;; esac
    if ! (cd "$ROOT" && cargo build --release --quiet); then
      [ -x "$VFS" ] || die "cargo build --release failed and there is no previous binary"
      log "WARNING: cargo build --release failed; using the existing $VFS"
      VFS_DESC="previous release binary (build of $VFS_DESC failed)"
    fi
  fi
  [ -x "$VFS" ] || die "no vaultfs binary at $VFS"
  VFS_DESC=${BENCH_VAULTFS_DESC:-$VFS_DESC}
  # Snapshot the binary: someone may rebuild target/ while the bench runs.
  mkdir -p "$W/bin"
  rm -f "$W"/bin/vaultfs-*
  cp "$VFS" "$W/bin/vaultfs-$STAMP"
  VFS=$W/bin/vaultfs-$STAMP
}

# The dataset of scripts/bench.sh (built the same way when missing, so that it can reuse
# it); only tree and big are read here.
build_dataset() {
  mkdir -p "$DATA"
  if [ ! -d "$TREE" ] || [ ! -d "$DATA/v2delta" ] || [ ! -f "$BIG" ] || [ ! -f "$DATA/tree.tar.zst" ]; then
    log "building the dataset under $DATA (once; reused afterwards)"
    "$PY" "$HELPERS/dataset.py" build "$DATA" "$TREE_GB" "$BIG_GB"
    (cd "$DATA" && tar -cf - tree | zstd -q -3 -T2 -o tree.tar.zst.tmp && mv tree.tar.zst.tmp tree.tar.zst)
  fi
  # scripts/bench.sh turns tree into v2 in place for a while: wait for it to turn it back;
  # a v2 left by an interrupted bench.sh is reverted.
  local i=0
  while [ -f "$DATA/V2_APPLIED" ] && [ $i -lt 360 ] && pgrep -f 'scripts/bench.sh' >/dev/null; do
    [ $((i % 12)) = 0 ] && log "tree is v2 (scripts/bench.sh running); waiting"
    sleep 10
    i=$((i + 1))
  done
  "$PY" "$HELPERS/dataset.py" revert-v2 "$DATA"
  if [ ! -f "$DATA/stats.json" ]; then
    "$PY" "$HELPERS/dataset.py" stats "$TREE" >"$DATA/stats-tree.json"
    "$PY" "$HELPERS/dataset.py" apply-v2 "$DATA"
    "$PY" "$HELPERS/dataset.py" stats "$TREE" >"$DATA/stats-v2.json"
    "$PY" "$HELPERS/dataset.py" revert-v2 "$DATA"
    "$PY" - "$DATA" <<'EOF' >"$DATA/stats.json"
import json, os, sys
d = sys.argv[1]
out = {"tree": json.load(open(f"{d}/stats-tree.json")), "v2": json.load(open(f"{d}/stats-v2.json")),
       "big_bytes": os.path.getsize(f"{d}/big/big.bin"),
       "tree_tar_zst_bytes": os.path.getsize(f"{d}/tree.tar.zst"),
       "v2_modified": sum(1 for _ in open(f"{d}/v2-modified.list")),
       "v2_added": sum(1 for _ in open(f"{d}/v2-added.list"))}
print(json.dumps(out))
EOF
  fi
  # The tree must be the one stats-tree.json describes (the cp check compares with it).
  [ "$("$PY" "$HELPERS/dataset.py" stats "$TREE")" = "$(cat "$DATA/stats-tree.json")" ] ||
    die "$TREE does not match $DATA/stats-tree.json (being changed by someone?)"
  # Back up a private copy (cp -a, kept for the next invocation): scripts/bench.sh may
  # turn the shared tree into v2 while this runs. (A hard-linked copy would change the
  # ctime of the shared files, which bench.sh's unchanged re-backups would notice.)
  local copy=$W/data-tree${TREE_GB}-big${BIG_GB}
  if [ ! -f "$copy/ok" ] || [ "$copy/ok" -ot "$DATA/stats-tree.json" ]; then
    log "copying the dataset to $copy"
    rm -rf "$copy"
    mkdir -p "$copy"
    cp -a "$TREE" "$copy/tree"
    cp -a "$DATA/big" "$copy/big"
    [ "$("$PY" "$HELPERS/dataset.py" stats "$copy/tree")" = "$(cat "$DATA/stats-tree.json")" ] ||
      die "the copy $copy/tree does not match $DATA/stats-tree.json"
    cmp -s "$BIG" "$copy/big/big.bin" || die "the copy of big.bin differs"
    touch "$copy/ok"
  fi
  TREE=$copy/tree
  BIG=$copy/big/big.bin
}

start_rgw() {
  log "starting the gateway in $RGW_DIR on 127.0.0.1:$RGW_PORT (monitor port $RGW_MON_PORT; frontend options '$BEAST_OPTS')"
  bash "$ROOT/scripts/s3-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1 || true
  S3_RGW_MON_PORT=$RGW_MON_PORT S3_RGW_BEAST_OPTS=$BEAST_OPTS bash "$ROOT/scripts/s3-rgw.sh" start "$RGW_DIR" "$RGW_PORT" \
    >"$LOGS/rgw-start.log" 2>&1 </dev/null || { cat "$LOGS/rgw-start.log" >&2; die "the gateway did not start"; }
  RGW_STARTED=1
}

cleanup() {
  local rc=$?
  mount_stop 0 cleanup cleanup >/dev/null 2>&1 || true
  if [ "${RGW_STARTED:-0}" = 1 ] && [ "${BENCH_KEEP_RGW:-0}" != 1 ]; then
    # The gateway's log (one line per request) goes with the other logs.
    zstd -q -f -T2 "$RGW_DIR/log/rgw.log" -o "$LOGS/rgw.log.zst" 2>/dev/null || true
    bash "$ROOT/scripts/s3-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

# ---------------------------------------------------------------- measuring

drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

# measure RUN TOOL METRIC CMD...: cold caches, /usr/bin/time -v, one CSV row, and the
# gateway's requests during the command as METRIC.<key> rows.
measure() {
  local run=$1 tool=$2 metric=$3
  shift 3
  local base=$LOGS/r$run-$tool-$metric
  drop_caches
  reqs_snap "$base"
  local t0=$EPOCHREALTIME rc=0
  /usr/bin/time -v -o "$base.time" "$@" >"$base.log" 2>&1 || rc=$?
  local t1=$EPOCHREALTIME
  local user sys rss wall
  user=$(awk -F': ' '/User time \(seconds\)/{print $2}' "$base.time")
  sys=$(awk -F': ' '/System time \(seconds\)/{print $2}' "$base.time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$base.time")
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
  echo "$run,$tool,$metric,$wall,${user:-},${sys:-},${rss:-},$rc," >>"$CSV"
  if [ "$rc" != 0 ]; then
    log "FAILED ($rc): $tool $metric: $*"
    { echo "== run $run $tool $metric exit $rc: $*"; tail -20 "$base.log"; } >>"$LOGS/failures.log"
  fi
  log "r$run $tool $metric: ${wall}s cpu $(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN{print u+s}')s rss ${rss}KiB rc $rc"
  reqs_record "$run" "$tool" "$metric" "$base"
  return 0
}

# record RUN TOOL METRIC VALUE: a non-timed figure in the value column.
record() { echo "$1,$2,$3,,,,,0,$4" >>"$CSV"; }

# The gateway's counters and log position before a step (reqs_snap BASE), and the
# difference after it as rows METRIC.<key> (reqs_record RUN TOOL METRIC BASE).
reqs_snap() { "$PY" "$HELPERS/s3reqs.py" snap "$RGW_DIR" "$1.reqs0.json"; }
reqs_record() {
  local r=$1 tool=$2 metric=$3 base=$4 k v
  "$PY" "$HELPERS/s3reqs.py" diff "$RGW_DIR" "$base.reqs0.json" >"$base.reqs" ||
    { log "WARNING: no request counts for $tool $metric"; return 0; }
  while read -r k v; do record "$r" "$tool" "$metric.$k" "$v"; done <"$base.reqs"
  log "r$r $tool $metric: $(tr '\n' ' ' <"$base.reqs" | grep -o 'rgw_req [0-9]*\|rgw_get [0-9]*\|rgw_get_b [0-9]*\|rgw_put [0-9]*' | tr '\n' ' ')"
}

# ---------------------------------------------------------------- tools

bucket() { echo "b$STAMP-r$1-$2-$3" | tr '[:upper:]' '[:lower:]'; }   # RUN TOOL WHAT

# Sets REPO: the tool's address of bucket $1 (prefix "repo").
repo_of() {
  case $1 in
    vaultfs) REPO=s3://$2/repo ;;
    restic) REPO=s3:$ENDPOINT/$2/repo ;;
  esac
}

tool_init() {
  local tool=$1 bucket=$2
  repo_of "$tool" "$bucket"
  case $tool in
    vaultfs) VAULTFS_REPO=$REPO "$VFS" init && VAULTFS_REPO=$REPO "$VFS" vault create bench ;;
    restic) restic -r "$REPO" -o s3.bucket-lookup=path init --repository-version 2 ;;
  esac
}

backup_cmd() {
  local tool=$1 bucket=$2 path=$3
  repo_of "$tool" "$bucket"
  case $tool in
    vaultfs) CMD=(env VAULTFS_REPO="$REPO" "$VFS" backup bench "$path") ;;
    restic) CMD=(restic -r "$REPO" -o s3.bucket-lookup=path backup --compression auto "$path") ;;
  esac
}

fresh_caches() { rm -rf "$W/cache"; mkdir -p "$RESTIC_CACHE_DIR"; }

# bucket_size BUCKET: bytes stored (radosgw-admin bucket stats, rgw.main size).
bucket_size() {
  radosgw-admin bucket stats --bucket="$1" 2>/dev/null | "$PY" -c '
import json, sys
u = json.load(sys.stdin).get("usage", {})
print(sum(v.get("size", 0) for v in u.values()))' 2>/dev/null || echo ""
}

bucket_rm() {
  radosgw-admin bucket rm --bucket="$1" --purge-objects --bypass-gc >>"$LOGS/bucket-rm.log" 2>&1 ||
    log "WARNING: could not remove bucket $1"
}

# ---------------------------------------------------------------- mounts

MOUNT_PID=
MOUNT_DIR=

# mount_start RUN TOOL STEP BUCKET WANT: a fresh mount of BUCKET (page cache and restic's
# cache emptied first) until WANT exists under it; records mount_ready_STEP (s) and the
# gateway's requests until then as mount_STEP.<key>.
mount_start() {
  local r=$1 tool=$2 step=$3 bucket=$4 want=$5 m=$W/mnt-$2 base=$LOGS/r$1-$2-mount_$3
  repo_of "$tool" "$bucket"
  fresh_caches
  mkdir -p "$m"
  MOUNT_DIR=$m
  case $tool in
    vaultfs) CMD=(env VAULTFS_REPO="$REPO" "$VFS" mount "$m") ;;
    restic) CMD=(restic -r "$REPO" -o s3.bucket-lookup=path mount "$m") ;;
  esac
  drop_caches
  reqs_snap "$base"
  local t0=$EPOCHREALTIME
  "${CMD[@]}" >"$base.log" 2>&1 &
  MOUNT_PID=$!
  local i ok=0
  for ((i = 0; i < 12000; i++)); do
    if [ -e "$m/$want" ]; then ok=1; break; fi
    kill -0 "$MOUNT_PID" 2>/dev/null || break
    sleep 0.01
  done
  if [ "$ok" = 1 ]; then
    record "$r" "$tool" "mount_ready_$step" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')"
    reqs_record "$r" "$tool" "mount_$step" "$base"
    return 0
  fi
  log "FAILED: $tool mount ($step) never showed $want"
  { echo "== run $r $tool mount ($step): $m/$want never appeared"; tail -20 "$base.log"; } >>"$LOGS/failures.log"
  mount_stop "$r" "$tool" "$step"
  return 1
}

# The daemon's peak RSS (KiB) and CPU (s), then unmount and wait for the daemon.
mount_stop() {
  local r=$1 tool=$2 step=$3
  [ -n "$MOUNT_PID" ] || return 0
  if [ -r "/proc/$MOUNT_PID/status" ]; then
    record "$r" "$tool" "mount_rss_$step" "$(awk '/VmHWM/{print $2}' "/proc/$MOUNT_PID/status")"
    record "$r" "$tool" "mount_cpu_$step" "$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$MOUNT_PID/stat")"
  fi
  fusermount3 -u "$MOUNT_DIR" 2>/dev/null || fusermount -u "$MOUNT_DIR" 2>/dev/null || umount "$MOUNT_DIR" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$MOUNT_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$MOUNT_PID" 2>/dev/null; then
    log "WARNING: $tool mount daemon $MOUNT_PID still running after unmount; killing it"
    kill "$MOUNT_PID" 2>/dev/null || true
    sleep 1
    umount -l "$MOUNT_DIR" 2>/dev/null || true
  fi
  wait "$MOUNT_PID" 2>/dev/null || true
  MOUNT_PID=
  MOUNT_DIR=
}

# stats_snap FILE: a copy of vaultfs's .vaultfs/stats.json (nothing when absent).
stats_snap() { cp "$MOUNT_DIR/.vaultfs/stats.json" "$1" 2>/dev/null || rm -f "$1"; }

# stats_record RUN METRIC BEFORE AFTER: chunk fetches and store calls during the step.
stats_record() {
  local r=$1 metric=$2 k v
  [ -f "$3" ] && [ -f "$4" ] || return 0
  "$PY" - "$3" "$4" <<'EOF' >"$LOGS/r$r-vaultfs-$metric.stats" || return 0
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for k in ("chunk_fetches", "chunk_fetch_bytes", "cache_hits", "cache_misses", "cache_waits",
          "prefetches_queued", "prefetches_dropped"):
    if k in b:
        print(f"vfs_{k} {b[k] - a.get(k, 0)}")
ba, bb = a.get("backend", {}), b.get("backend", {})
for k in ("get", "get_range", "get_bytes", "list", "head"):
    if k in bb:
        print(f"vfs_backend_{k} {bb[k] - ba.get(k, 0)}")
EOF
  while read -r k v; do record "$r" vaultfs "$metric.$k" "$v"; done <"$LOGS/r$r-vaultfs-$metric.stats"
}

# Where tree and big.bin appear in a mount of the tree / big repository.
mount_rel() {
  case $1-$2 in
    vaultfs-tree) echo bench/latest/tree ;;
    vaultfs-big) echo bench/latest/big/big.bin ;;
    restic-tree) echo "snapshots/latest$TREE" ;;
    restic-big) echo "snapshots/latest$BIG" ;;
  esac
}

verify_copy() {
  local r=$1 tool=$2 dir=$3 got want
  got=$("$PY" "$HELPERS/dataset.py" stats "$dir" 2>/dev/null || echo missing)
  want=$(cat "$DATA/stats-tree.json")
  if [ "$got" = "$want" ]; then
    record "$r" "$tool" cp_tree_verified counts-ok
  else
    record "$r" "$tool" cp_tree_verified "MISMATCH got=${got//,/;} want=${want//,/;}"
    echo "== run $r $tool cp mismatch: got $got want $want" >>"$LOGS/failures.log"
  fi
}

# ---------------------------------------------------------------- one tool, one run

run_tool() {
  local r=$1 tool=$2 bt bb out=$W/cp-out
  bt=$(bucket "$r" "$tool" tree)
  bb=$(bucket "$r" "$tool" big)

  # Backups into fresh buckets (init not timed; its requests are not counted).
  fresh_caches
  tool_init "$tool" "$bt" >"$LOGS/r$r-$tool-init-tree.log" 2>&1 || die "init of $bt failed"
  backup_cmd "$tool" "$bt" "$TREE"
  measure "$r" "$tool" backup_tree "${CMD[@]}"
  record "$r" "$tool" repo_tree "$(bucket_size "$bt")"

  fresh_caches
  tool_init "$tool" "$bb" >"$LOGS/r$r-$tool-init-big.log" 2>&1 || die "init of $bb failed"
  backup_cmd "$tool" "$bb" "$(dirname "$BIG")"
  measure "$r" "$tool" backup_big "${CMD[@]}"
  record "$r" "$tool" repo_big "$(bucket_size "$bb")"

  # cat big.bin through a fresh mount of the big repository, cold.
  local rel s0=$LOGS/r$r-$tool-cat.stats0.json s1=$LOGS/r$r-$tool-cat.stats1.json
  rel=$(mount_rel "$tool" big)
  if mount_start "$r" "$tool" big "$bb" "$rel"; then
    stats_snap "$s0"
    # shellcheck disable=SC2016
    measure "$r" "$tool" cat_big_cold timeout "$MOUNT_TIMEOUT" sh -c 'exec cat "$1" >/dev/null' sh "$MOUNT_DIR/$rel"
    stats_snap "$s1"
    if [ "$tool" = vaultfs ]; then stats_record "$r" cat_big_cold "$s0" "$s1"; fi
    mount_stop "$r" "$tool" big
  fi

  # cp -a of the tree through a fresh mount of the tree repository, cold.
  rm -rf "$out"; mkdir -p "$out"
  s0=$LOGS/r$r-$tool-cp.stats0.json s1=$LOGS/r$r-$tool-cp.stats1.json
  rel=$(mount_rel "$tool" tree)
  if mount_start "$r" "$tool" tree "$bt" "$rel"; then
    stats_snap "$s0"
    measure "$r" "$tool" cp_tree_cold timeout "$MOUNT_TIMEOUT" cp -a "$MOUNT_DIR/$rel" "$out/"
    stats_snap "$s1"
    if [ "$tool" = vaultfs ]; then stats_record "$r" cp_tree_cold "$s0" "$s1"; fi
    mount_stop "$r" "$tool" tree
    verify_copy "$r" "$tool" "$out/tree"
  fi
  rm -rf "$out"

  bucket_rm "$bt"
  bucket_rm "$bb"
  log "r$r $tool done; memory: $(free -g | awk '/^Mem/{print "used " $3 " GiB, available " $7 " GiB"}')"
}

# ---------------------------------------------------------------- main

main() {
  [ "$(id -u)" = 0 ] || die "run as root (drop_caches, mounts, Ceph daemons)"
  command -v restic >/dev/null || die "restic is not installed (apt-get install restic)"
  [ -x /usr/bin/time ] || die "/usr/bin/time is not installed (apt-get install time)"
  mkdir -p "$D" "$W" "$LOGS"
  build_vaultfs
  build_dataset
  start_rgw
  echo "run,tool,metric,wall_s,user_s,sys_s,maxrss_kb,exit,value" >"$CSV"

  local started=$EPOCHREALTIME load_before
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  local n=${#TOOLS[@]} r i
  for ((r = 1; r <= RUNS; r++)); do
    log "run $r of $RUNS"
    for ((i = 0; i < n; i++)); do
      run_tool "$r" "${TOOLS[$(((i + r - 1) % n))]}"
    done
  done
  local minutes
  minutes=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b-a)/60}')

  local cmd="BENCH_TREE_GB=$TREE_GB BENCH_BIG_GB=$BIG_GB BENCH_RUNS=$RUNS scripts/bench-s3.sh"
  [ "$BEAST_OPTS" = tcp_nodelay=1 ] || cmd="BENCH_RGW_BEAST_OPTS='$BEAST_OPTS' $cmd"
  [ "${TOOLS[*]}" = "vaultfs restic" ] || cmd="BENCH_TOOLS='${TOOLS[*]}' $cmd"
  "$PY" - "$D/meta-s3-$STAMP.json" <<EOF
import json, os, platform, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
meta = {
  "date": sh("date -u '+%Y-%m-%d %H:%M UTC'"),
  "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
  "cores": os.cpu_count(),
  "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
  "kernel": platform.release(),
  "os": sh(". /etc/os-release && echo \$PRETTY_NAME"),
  "vaultfs": "$VFS_DESC",
  "restic": sh("restic version"),
  "ceph": sh("radosgw --version").split(" (")[0],
  "objectstore": "${S3_RGW_OBJECTSTORE:-memstore}",
  "beast_opts": "$BEAST_OPTS",
  "runs": $RUNS, "tree_gb": "$TREE_GB", "big_gb": "$BIG_GB",
  "command": "$cmd",
  "minutes": $minutes,
  "load_before": "$load_before", "load_after": sh("cut -d' ' -f1-3 /proc/loadavg"),
  "csv": "$CSV", "logs": "$LOGS",
  "note": os.environ.get("BENCH_NOTE", ""),
  "failures": open("$LOGS/failures.log").read() if os.path.exists("$LOGS/failures.log") else "",
}
meta.update(json.load(open("$DATA/stats.json")))
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
  "$PY" "$HELPERS/s3report.py" "$CSV" "$D/meta-s3-$STAMP.json" >"$OUT"
  log "wrote $OUT; raw numbers in $CSV; logs in $LOGS"
  [ -f "$LOGS/failures.log" ] && log "some steps failed: $LOGS/failures.log"
  return 0
}

main "$@"
