#!/usr/bin/env bash
# vaultfs vs restic vs borg, side by side, on real files of this machine.
#
#   sudo scripts/bench.sh                       # defaults: ~2 GB tree, 1.5 GiB big file, 3 runs
#   BENCH_TREE_GB=0.3 BENCH_BIG_GB=0.25 BENCH_RUNS=1 scripts/bench.sh   # quick look
#
# Environment:
#   BENCH_DIR       work dir (dataset, repos, logs, CSV)      default /var/tmp/vaultfs-bench
#   BENCH_TREE_GB   size of `tree` (sampled from /usr)         default 2   (~45k files per GB)
#   BENCH_BIG_GB    size of the big compressible file, GiB     default 1.5
#   BENCH_RUNS      interleaved runs per measurement           default 3
#   BENCH_OUT       markdown report                            default <repo>/BENCHMARKS.md
#   BENCH_SKIP_INSTALL=1   do not apt-get anything
#   VAULTFS_BIN     use this binary instead of `cargo build --release`
#   BENCH_NOTE      a sentence added to the report (e.g. "machine shared with a compile")
#   BENCH_SECTIONS  which sections to run                      default "backup mount"
#   BENCH_MOUNT_TIMEOUT  limit for one read through a mount, s default 900
#   BENCH_EXTRA_CSV earlier results CSV(s) of the same dataset to merge into the report
#
# Runs as root (apt-get, drop_caches, restores with owners). Every timed step starts with
# `sync; echo 3 > /proc/sys/vm/drop_caches` (cold), is run under /usr/bin/time -v (wall,
# user+sys CPU, peak RSS) and appended to $BENCH_DIR/results-<stamp>.csv; the report
# (medians, vaultfs/peer ratios, targets) is written by scripts/bench/report.py.
#
# Sections are functions (section_*), called per run and per tool in a rotating order, so
# that a slow period of the machine hits every tool alike. A mount section is prepared at
# the end: section_mount (vaultfs/restic/borg mount vs ext4), skipped for vaultfs when
# the binary has no `mount` command; more mount measurements are to be added there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS=$ROOT/scripts/bench
D=${BENCH_DIR:-/var/tmp/vaultfs-bench}
TREE_GB=${BENCH_TREE_GB:-2}
BIG_GB=${BENCH_BIG_GB:-1.5}
RUNS=${BENCH_RUNS:-3}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
DATA=$D/data-tree${TREE_GB}-big${BIG_GB}
TREE=$DATA/tree
BIG=$DATA/big/big.bin
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
CSV=$D/results-$STAMP.csv
LOGS=$D/logs-$STAMP
TOOLS=(ref vaultfs restic borg)
SECTIONS=${BENCH_SECTIONS:-backup mount}
MOUNT_TIMEOUT=${BENCH_MOUNT_TIMEOUT:-900}

export RESTIC_PASSWORD=bench-pw BORG_PASSPHRASE=bench-pw VAULTFS_PASSWORD=bench-pw
export BORG_BASE_DIR=$D/cache/borg RESTIC_CACHE_DIR=$D/cache/restic
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_CHECK_I_KNOW_WHAT_I_AM_DOING=YES

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- setup

install_deps() {
  [ "${BENCH_SKIP_INSTALL:-0}" = 1 ] && return
  local need=()
  command -v restic >/dev/null || need+=(restic)
  command -v borg >/dev/null || need+=(borgbackup)
  command -v zstd >/dev/null || need+=(zstd)
  [ -x /usr/bin/time ] || need+=(time)
  [ ${#need[@]} -eq 0 ] && return
  log "installing ${need[*]}"
  # Another apt-get may be running on a shared machine: wait for its lock.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}"
}

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
      # The tree may be mid-edit on a shared machine: say so and use the last binary.
      [ -x "$VFS" ] || die "cargo build --release failed and there is no previous binary"
      log "WARNING: cargo build --release failed; using the existing $VFS"
      VFS_DESC="previous release binary (build of $VFS_DESC failed)"
    fi
  fi
  [ -x "$VFS" ] || die "no vaultfs binary at $VFS"
  # Snapshot the binary: someone may rebuild target/ while the bench runs.
  mkdir -p "$D/bin"
  rm -f "$D"/bin/vaultfs-*
  cp "$VFS" "$D/bin/vaultfs-$STAMP"
  VFS=$D/bin/vaultfs-$STAMP
}

build_dataset() {
  mkdir -p "$DATA"
  if [ ! -d "$TREE" ] || [ ! -d "$DATA/v2delta" ] || [ ! -f "$BIG" ] || [ ! -f "$DATA/tree.tar.zst" ]; then
    log "building the dataset under $DATA (once; reused afterwards)"
    "$PY" "$HELPERS/dataset.py" build "$DATA" "$TREE_GB" "$BIG_GB"
    # The reference archive (size reference, and the restore reference extracts it).
    (cd "$DATA" && tar -cf - tree | zstd -q -3 -T2 -o tree.tar.zst.tmp && mv tree.tar.zst.tmp tree.tar.zst)
  fi
  "$PY" "$HELPERS/dataset.py" revert-v2 "$DATA"   # after an interrupted run
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
}

v2_on() { "$PY" "$HELPERS/dataset.py" apply-v2 "$DATA"; }
v2_off() { "$PY" "$HELPERS/dataset.py" revert-v2 "$DATA"; }

cleanup() {
  local rc=$?
  [ -n "${DATA:-}" ] && [ -f "$DATA/V2_APPLIED" ] && v2_off || true
  section_mount_cleanup || true
  exit $rc
}
trap cleanup EXIT INT TERM

# ---------------------------------------------------------------- measuring

drop_caches() {
  [ "${BENCH_NO_DROP:-0}" = 1 ] && return 0 # development only: the figures are not cold
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

# measure RUN TOOL METRIC CMD...: cold caches (unless NO_DROP=1), /usr/bin/time -v, one CSV row.
measure() {
  local run=$1 tool=$2 metric=$3
  shift 3
  local base=$LOGS/r$run-$tool-$metric
  [ "${NO_DROP:-0}" = 1 ] || drop_caches
  local t0=$EPOCHREALTIME rc=0
  /usr/bin/time -v -o "$base.time" "$@" >"$base.log" 2>&1 || rc=$?
  local t1=$EPOCHREALTIME
  local user sys rss
  user=$(awk -F': ' '/User time \(seconds\)/{print $2}' "$base.time")
  sys=$(awk -F': ' '/System time \(seconds\)/{print $2}' "$base.time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$base.time")
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
  echo "$run,$tool,$metric,$wall,${user:-},${sys:-},${rss:-},$rc," >>"$CSV"
  if [ "$rc" != 0 ]; then
    log "FAILED ($rc): $tool $metric: $*"
    { echo "== run $run $tool $metric exit $rc: $*"; tail -20 "$base.log"; } >>"$LOGS/failures.log"
  fi
  log "r$run $tool $metric: ${wall}s cpu $(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN{print u+s}')s rss ${rss}KiB rc $rc"
  return 0
}

# record RUN TOOL METRIC VALUE NOTE: a non-timed figure (sizes, checks) in the value column.
record() { echo "$1,$2,$3,,,,,0,$4" >>"$CSV"; log "r$1 $2 $3: $4"; }

# ---------------------------------------------------------------- tools

# Each tool: init REPO, backup REPO PATH NAME, restore REPO NAME TARGET.
tool_init() {
  local tool=$1 repo=$2
  rm -rf "$repo"
  case $tool in
    vaultfs) VAULTFS_REPO=$repo "$VFS" init >/dev/null && VAULTFS_REPO=$repo "$VFS" vault create bench >/dev/null ;;
    restic) restic -r "$repo" init --repository-version 2 >/dev/null ;;
    borg) borg init -e repokey "$repo" >/dev/null 2>&1 ;;
  esac
}

# Sets CMD to the command that backs PATH up as NAME (run through `measure`).
backup_cmd() {
  local tool=$1 repo=$2 path=$3 name=$4
  case $tool in
    vaultfs) CMD=(env VAULTFS_REPO="$repo" "$VFS" backup bench "$path") ;;
    restic) CMD=(restic -r "$repo" backup --compression auto "$path") ;;
    borg) CMD=(borg create --compression zstd,3 --stats "$repo::$name" "$path") ;;
  esac
}

# Sets CMD to the command that restores backup NAME (the tree) under TARGET.
restore_cmd() {
  local tool=$1 repo=$2 name=$3 target=$4
  case $tool in
    vaultfs) CMD=(env VAULTFS_REPO="$repo" "$VFS" restore bench latest "$target") ;;
    restic) CMD=(restic -r "$repo" restore latest --target "$target") ;;
    # shellcheck disable=SC2016
    borg) CMD=(sh -c 'cd "$1" && exec borg extract "$2"' sh "$target" "$repo::$name") ;;
  esac
}

# Where TARGET holds the restored tree.
restored_root() {
  case $1 in
    vaultfs) echo "$2/tree" ;;
    *) echo "$2$TREE" ;;
  esac
}

fresh_caches() { rm -rf "$D/cache"; mkdir -p "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR"; }

# ---------------------------------------------------------------- sections

# References: tar|zstd of tree, metadata walk, zstd of big, tar.zst extraction.
section_reference() {
  local r=$1
  measure "$r" ref backup_tree sh -c "cd '$DATA' && tar -cf - tree | zstd -q -3 -T2 > /dev/null"
  measure "$r" ref meta_walk sh -c "cd '$DATA' && find tree -printf '%s %T@ %C@ %i\n' > /dev/null"
  measure "$r" ref backup_big sh -c "zstd -q -3 -T2 -c '$BIG' > /dev/null"
  local t=$D/restore-ref
  rm -rf "$t"; mkdir -p "$t"
  measure "$r" ref restore_tree sh -c "zstd -q -dc '$DATA/tree.tar.zst' | tar -C '$t' -xpf -"
  rm -rf "$t"
  record "$r" ref repo_tree "$(stat -c %s "$DATA/tree.tar.zst")"
}

# Initial backup, repository size, restore, unchanged re-backup, incremental v2.
section_tree() {
  local r=$1 tool=$2 repo=$D/repos/$2-tree t=$D/restore-$2
  fresh_caches
  tool_init "$tool" "$repo"
  backup_cmd "$tool" "$repo" "$TREE" tree-1
  measure "$r" "$tool" backup_tree "${CMD[@]}"
  record "$r" "$tool" repo_tree "$(du -sb "$repo" | cut -f1)"
  rm -rf "$t"; mkdir -p "$t"
  restore_cmd "$tool" "$repo" tree-1 "$t"
  measure "$r" "$tool" restore_tree "${CMD[@]}"
  verify_restore "$r" "$tool" "$(restored_root "$tool" "$t")"
  rm -rf "$t"
  backup_cmd "$tool" "$repo" "$TREE" tree-2
  measure "$r" "$tool" unchanged_tree "${CMD[@]}"
  v2_on
  backup_cmd "$tool" "$repo" "$TREE" v2
  measure "$r" "$tool" incremental_v2 "${CMD[@]}"
  v2_off
  record "$r" "$tool" repo_after_v2 "$(du -sb "$repo" | cut -f1)"
  # Fixed cost of any command: open the repository (key derivation, index) and list.
  case $tool in
    vaultfs) CMD=(env VAULTFS_REPO="$repo" "$VFS" points bench) ;;
    restic) CMD=(restic -r "$repo" snapshots) ;;
    borg) CMD=(borg list "$repo") ;;
  esac
  measure "$r" "$tool" open_list "${CMD[@]}"
  if [ "$tool" = vaultfs ] && [ "$r" = 1 ]; then
    measure "$r" vaultfs check env VAULTFS_REPO="$repo" "$VFS" check
  fi
  rm -rf "$repo"
}

# A restore is checked on every run by counts and bytes, and byte for byte (diff -r) on
# run 1 for vaultfs.
# verify_restore RUN TOOL DIR [WHAT]: WHAT_verified and, for vaultfs in run 1, WHAT_diff.
verify_restore() {
  local r=$1 tool=$2 dir=$3 what=${4:-restore} got want
  got=$("$PY" "$HELPERS/dataset.py" stats "$dir" 2>/dev/null || echo missing)
  want=$(cat "$DATA/stats-tree.json")
  if [ "$got" = "$want" ]; then
    record "$r" "$tool" "${what}_verified" counts-ok
  else
    record "$r" "$tool" "${what}_verified" "MISMATCH got=${got//,/;} want=${want//,/;}"
    echo "== run $r $tool $what mismatch: got $got want $want" >>"$LOGS/failures.log"
  fi
  if [ "$tool" = vaultfs ] && [ "$r" = 1 ]; then
    if diff -rq --no-dereference "$TREE" "$dir" >"$LOGS/r$r-vaultfs-$what-diff.log" 2>&1; then
      record "$r" "$tool" "${what}_diff" identical
    else
      record "$r" "$tool" "${what}_diff" "DIFFERENT (see $LOGS/r$r-vaultfs-$what-diff.log)"
    fi
  fi
}

section_big() {
  local r=$1 tool=$2 repo=$D/repos/$2-big
  fresh_caches
  tool_init "$tool" "$repo"
  backup_cmd "$tool" "$repo" "$DATA/big" big-1
  measure "$r" "$tool" backup_big "${CMD[@]}"
  record "$r" "$tool" repo_big "$(du -sb "$repo" | cut -f1)"
  rm -rf "$repo"
}

# ---------------------------------------------------------------- mount
# vaultfs mount vs restic mount vs borg mount vs the files on ext4 (tool "ref").
# Per run and tool: a fresh mount (daemon started, caches of the tool emptied) and the
# time until big.bin is visible; cat of big.bin cold, then warm (same mount, page cache
# kept); unmount, a fresh mount, cp -a of the tree out of it, cold. The daemon's peak RSS
# and CPU are read from /proc before each unmount. One repository per tool holding tree
# and big in one backup, built once per invocation (not timed), removed at the end.
# Still to add here: squashfuse, random 4 KiB preads (p50/p99), find and ls -lR of the
# tree, parallel readers, time to first byte.
have_vaultfs_mount() { "$VFS" mount --help >/dev/null 2>&1; }

MOUNT_PID=
MOUNT_DIR=

mount_prepare() {
  local tool=$1 repo=$D/repos/$1-mount
  [ "$tool" = ref ] && return 0
  [ -f "$repo.ready-$STAMP" ] && return 0
  log "preparing the $tool repository for the mount section"
  rm -f "$repo".ready-*
  tool_init "$tool" "$repo"
  case $tool in
    vaultfs) VAULTFS_REPO=$repo "$VFS" backup bench "$TREE" "$DATA/big" ;;
    restic) restic -r "$repo" backup --compression auto "$TREE" "$DATA/big" ;;
    borg) borg create --compression zstd,3 "$repo::m" "$TREE" "$DATA/big" ;;
  esac >"$LOGS/mount-prepare-$tool.log" 2>&1 || die "preparing the $tool mount repository failed (see $LOGS/mount-prepare-$tool.log)"
  touch "$repo.ready-$STAMP"
}

# Sets MTREE and MBIG: where tree and big.bin appear.
mount_paths() {
  local tool=$1 m=$D/mnt-$1
  case $tool in
    ref) MTREE=$TREE MBIG=$BIG ;;
    vaultfs) MTREE=$m/bench/latest/tree MBIG=$m/bench/latest/big/big.bin ;;
    restic) MTREE=$m/snapshots/latest$TREE MBIG=$m/snapshots/latest$BIG ;;
    borg) MTREE=$m$TREE MBIG=$m$BIG ;;
  esac
}

# mount_start RUN TOOL STEP: mounts, waits for big.bin, records the time it took.
mount_start() {
  local r=$1 tool=$2 step=$3 repo=$D/repos/$2-mount m=$D/mnt-$2
  mount_paths "$tool"
  [ "$tool" = ref ] && return 0
  fresh_caches
  mkdir -p "$m"
  MOUNT_DIR=$m
  drop_caches
  local t0=$EPOCHREALTIME
  case $tool in
    vaultfs) CMD=(env VAULTFS_REPO="$repo" "$VFS" mount "$m") ;;
    restic) CMD=(restic -r "$repo" mount "$m") ;;
    borg) CMD=(borg mount -f "$repo::m" "$m") ;;
  esac
  # A simple command in the background: $! is the daemon itself (env execs).
  "${CMD[@]}" >"$LOGS/r$r-$tool-mount-$step.log" 2>&1 &
  MOUNT_PID=$!
  local i
  for ((i = 0; i < 6000; i++)); do
    [ -e "$MBIG" ] && break
    kill -0 "$MOUNT_PID" 2>/dev/null || break
    sleep 0.02
  done
  if [ -e "$MBIG" ]; then
    record "$r" "$tool" "mount_ready_$step" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')"
    return 0
  fi
  log "FAILED: $tool mount did not show $MBIG"
  { echo "== run $r $tool mount ($step): $MBIG never appeared"; tail -20 "$LOGS/r$r-$tool-mount-$step.log"; } >>"$LOGS/failures.log"
  mount_stop "$r" "$tool" "$step"
  return 1
}

# Records the daemon's peak RSS (KiB) and CPU (s), then unmounts and waits for it.
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

section_mount() {
  local r=$1 tool=$2 out=$D/cp-out
  if [ "$tool" = vaultfs ] && ! have_vaultfs_mount; then return 0; fi
  mount_prepare "$tool"
  if mount_start "$r" "$tool" cat; then
    # shellcheck disable=SC2016
    local catcmd=(timeout "$MOUNT_TIMEOUT" sh -c 'exec cat "$1" >/dev/null' sh "$MBIG")
    measure "$r" "$tool" mount_cat_big_cold "${catcmd[@]}"
    NO_DROP=1 measure "$r" "$tool" mount_cat_big_warm "${catcmd[@]}"
    mount_stop "$r" "$tool" cat
  fi
  rm -rf "$out"; mkdir -p "$out"
  if mount_start "$r" "$tool" cp; then
    measure "$r" "$tool" mount_cp_tree_cold timeout "$MOUNT_TIMEOUT" cp -a "$MTREE" "$out/"
    mount_stop "$r" "$tool" cp
    [ "$tool" = ref ] || verify_restore "$r" "$tool" "$out/tree" mount_cp
  fi
  rm -rf "$out"
}

section_mount_cleanup() { mount_stop 0 cleanup cleanup >/dev/null 2>&1; }

# ---------------------------------------------------------------- main

main() {
  [ "$(id -u)" = 0 ] || die "run as root (drop_caches, apt-get, restores with owners)"
  mkdir -p "$D" "$LOGS"
  install_deps
  build_vaultfs
  build_dataset
  echo "run,tool,metric,wall_s,user_s,sys_s,maxrss_kb,exit,value" >"$CSV"
  ln -sfn "$(basename "$CSV")" "$D/results-latest.csv"

  local started=$EPOCHREALTIME load_before
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  local n=${#TOOLS[@]} r i
  for ((r = 1; r <= RUNS; r++)); do
    log "run $r of $RUNS"
    for ((i = 0; i < n; i++)); do
      local tool=${TOOLS[$(((i + r - 1) % n))]}
      if [[ " $SECTIONS " == *" backup "* ]]; then
        if [ "$tool" = ref ]; then
          section_reference "$r"
        else
          section_tree "$r" "$tool"
          section_big "$r" "$tool"
        fi
      fi
      if [[ " $SECTIONS " == *" mount "* ]]; then section_mount "$r" "$tool"; fi
    done
  done
  rm -rf "$D"/repos/*-mount "$D"/repos/*-mount.ready-*
  rmdir "$D"/mnt-* 2>/dev/null || true
  local minutes
  minutes=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b-a)/60}')

  local cmd="BENCH_TREE_GB=$TREE_GB BENCH_BIG_GB=$BIG_GB BENCH_RUNS=$RUNS scripts/bench.sh"
  if [ "$SECTIONS" != "backup mount" ]; then cmd="BENCH_SECTIONS='$SECTIONS' $cmd"; fi
  "$PY" - "$D/meta-$STAMP.json" <<EOF
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
  "fs": sh("df -T '$D' | awk 'NR==2{print \$2\" on \"\$1}'"),
  "vaultfs": "$VFS_DESC",
  "restic": sh("restic version"),
  "borg": sh("borg --version"),
  "zstd": sh("zstd --version").strip("* ").split(",")[0],
  "runs": $RUNS, "tree_gb": "$TREE_GB", "big_gb": "$BIG_GB",
  "command": "$cmd",
  "minutes": $minutes,
  "load_before": "$load_before", "load_after": sh("cut -d' ' -f1-3 /proc/loadavg"),
  "csv": "$CSV", "logs": "$LOGS",
  "note": os.environ.get("BENCH_NOTE", ""),
  "sections": "$SECTIONS",
  "extra_csv": os.environ.get("BENCH_EXTRA_CSV", ""),
  "failures": open("$LOGS/failures.log").read() if os.path.exists("$LOGS/failures.log") else "",
}
meta.update(json.load(open("$DATA/stats.json")))
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
  # shellcheck disable=SC2086
  "$PY" "$HELPERS/report.py" "$CSV" "$D/meta-$STAMP.json" ${BENCH_EXTRA_CSV:-} >"$OUT"
  log "wrote $OUT; raw numbers in $CSV; logs in $LOGS"
  [ -f "$LOGS/failures.log" ] && log "some steps failed: $LOGS/failures.log"
  return 0
}

main "$@"
