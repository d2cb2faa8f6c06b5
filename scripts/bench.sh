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
#                   (also: prune, see section_prune)
#   BENCH_PRUNE_POINTS / BENCH_PRUNE_KEEP  points taken / kept (prune)   default 30 / 7
#   BENCH_MOUNT_TIMEOUT  limit for one read through a mount, s default 900
#   BENCH_EXTRA_CSV earlier results CSV(s) of the same dataset to merge into the report
#   BENCH_RAND_READS     random 4 KiB reads per pass (mount)   default 2000
#   BENCH_MOUNT_TOOLS    tools of the mount section  default "ref vaultfs restic borg squashfuse bindfs"
#   BENCH_VAULTFS_OLD_BIN  a second vaultfs binary (e.g. a release build of an older commit),
#                   measured in the mount section as the tool `vaultfs-old` beside `vaultfs`
#                   (added to BENCH_MOUNT_TOOLS unless that names it already); each binary
#                   mounts a repository made by itself; `scripts/bench/before-after.py CSV`
#                   prints the before/after table
#   BENCH_SYNTH_BIN generator of the synthetic repository (mount; the row is skipped
#                   without it)             default target/release/examples/synth-repo
#
# Runs as root (apt-get, drop_caches, restores with owners). Every timed step starts with
# `sync; echo 3 > /proc/sys/vm/drop_caches` (cold), is run under /usr/bin/time -v (wall,
# user+sys CPU, peak RSS) and appended to $BENCH_DIR/results-<stamp>.csv; the report
# (medians, vaultfs/peer ratios, targets) is written by scripts/bench/report.py.
#
# Sections are functions (section_*), called per run and per tool in a rotating order, so
# that a slow period of the machine hits every tool alike. The mount section
# (section_mount: vaultfs/restic/borg/squashfuse/bindfs mounts vs ext4, described above it)
# runs after the backup section of each run; it is skipped for vaultfs when the binary has
# no `mount` command.
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
  if [[ " $SECTIONS " == *" mount "* ]]; then
    command -v bindfs >/dev/null || need+=(bindfs)
    command -v squashfuse_ll >/dev/null || need+=(squashfuse)
    command -v mksquashfs >/dev/null || need+=(squashfs-tools)
    command -v fusermount3 >/dev/null || need+=(fuse3)
  fi
  [ ${#need[@]} -eq 0 ] && return
  log "installing: ${need[*]}"
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
  VFS_OLD=
  if [ -n "${BENCH_VAULTFS_OLD_BIN:-}" ]; then
    [ -x "$BENCH_VAULTFS_OLD_BIN" ] || die "no vaultfs binary at $BENCH_VAULTFS_OLD_BIN (BENCH_VAULTFS_OLD_BIN)"
    cp "$BENCH_VAULTFS_OLD_BIN" "$D/bin/vaultfs-old-$STAMP"
    VFS_OLD=$D/bin/vaultfs-old-$STAMP
  fi
}

# vfs_for TOOL: the vaultfs binary of TOOL (vaultfs or vaultfs-old).
vfs_for() { if [ "$1" = vaultfs-old ]; then echo "$VFS_OLD"; else echo "$VFS"; fi; }

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
    vaultfs | vaultfs-old)
      local b
      b=$(vfs_for "$tool")
      VAULTFS_REPO=$repo "$b" init >/dev/null && VAULTFS_REPO=$repo "$b" vault create bench >/dev/null
      ;;
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

# ---------------------------------------------------------------- prune
# Retention: BENCH_PRUNE_POINTS (30) points of a copy of `tree`, ~2% of its files changed in
# place between each (a 4 KiB block overwritten, seeded by the point number: the same
# changes for every tool), then keep the last BENCH_PRUNE_KEEP (7) and reclaim the space:
#   vaultfs  `vaultfs forget bench --keep-last 7 --prune` (or, in builds without forget,
#            the manifests of the other points deleted by hand, then `vaultfs prune`)
#   restic   `restic forget --keep-last 7 --prune`
# Timed (wall, CPU, peak RSS): prune_forget. Recorded: prune_repo_before, prune_repo_after
# (du -sb of the repository), prune_repo_fresh (a fresh repository that got only the kept
# points' backups, taken beside the others), and prune_check (`check --read-data` /
# `restic check --read-data` after the prune: ok or failed). Section name: prune (not in
# the default BENCH_SECTIONS).
PRUNE_POINTS=${BENCH_PRUNE_POINTS:-30}
PRUNE_KEEP=${BENCH_PRUNE_KEEP:-7}

# prune_mutate DIR N: change ~2% of the regular files of DIR in place, chosen by seed N.
prune_mutate() {
  "$PY" - "$1" "$2" <<'EOF2'
import os, random, sys
top, n = sys.argv[1], int(sys.argv[2])
files = []
for d, _, names in os.walk(top):
    for name in names:
        p = os.path.join(d, name)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append(p)
files.sort()
rng = random.Random(n)
for p in rng.sample(files, max(1, len(files) // 50)):
    size = os.path.getsize(p)
    try:
        with open(p, "r+b") as f:
            f.seek(rng.randrange(max(1, size - 4096)) if size > 4096 else 0)
            f.write(rng.randbytes(4096))
    except OSError:
        pass
EOF2
}

section_prune() {
  local r=$1 tool=$2 repo=$D/repos/$2-prune fresh=$D/repos/$2-prune-fresh src=$D/prune-src
  case $tool in vaultfs | restic) ;; *) return 0 ;; esac
  fresh_caches
  tool_init "$tool" "$repo"
  tool_init "$tool" "$fresh"
  rm -rf "$src"; mkdir -p "$src"
  cp -a "$TREE" "$src/"
  local i
  for ((i = 1; i <= PRUNE_POINTS; i++)); do
    prune_mutate "$src/tree" "$i"
    backup_cmd "$tool" "$repo" "$src/tree" "p$i"
    "${CMD[@]}" >/dev/null 2>&1 || die "prune section: backup $i of $tool failed"
    if ((i > PRUNE_POINTS - PRUNE_KEEP)); then
      backup_cmd "$tool" "$fresh" "$src/tree" "p$i"
      "${CMD[@]}" >/dev/null 2>&1 || die "prune section: fresh backup $i of $tool failed"
    fi
  done
  record "$r" "$tool" prune_repo_before "$(du -sb "$repo" | cut -f1)"
  record "$r" "$tool" prune_repo_fresh "$(du -sb "$fresh" | cut -f1)"
  case $tool in
    vaultfs)
      if "$VFS" forget --help >/dev/null 2>&1; then
        CMD=(env VAULTFS_REPO="$repo" "$VFS" forget bench --keep-last "$PRUNE_KEEP" --prune)
      else
        # No forget in this build: drop the manifests as forget would, time the prune.
        local names
        names=$(VAULTFS_REPO=$repo "$VFS" points bench --json |
          "$PY" -c 'import json,sys; p=json.load(sys.stdin); print("
".join(x["id"] for x in p[:-int(sys.argv[1])]))' "$PRUNE_KEEP")
        local name
        for name in $names; do rm -f "$repo/points/bench/$name"; done
        CMD=(env VAULTFS_REPO="$repo" "$VFS" prune)
      fi
      ;;
    restic) CMD=(restic -r "$repo" forget --keep-last "$PRUNE_KEEP" --prune) ;;
  esac
  measure "$r" "$tool" prune_forget "${CMD[@]}"
  record "$r" "$tool" prune_repo_after "$(du -sb "$repo" | cut -f1)"
  local ok=failed
  case $tool in
    vaultfs) VAULTFS_REPO=$repo "$VFS" check --read-data >/dev/null 2>&1 && ok=ok ;;
    restic) restic -r "$repo" check --read-data >/dev/null 2>&1 && ok=ok ;;
  esac
  record "$r" "$tool" prune_check "$ok"
  rm -rf "$repo" "$fresh" "$src"
}

# ---------------------------------------------------------------- mount
# Reading through a mount, side by side on the same data:
#   vaultfs     `vaultfs mount` (defaults: --cache-size, --threads)
#   restic      `restic mount`
#   borg        `borg mount -f`
#   squashfuse  `squashfuse_ll -f` over a `mksquashfs -comp zstd` image of tree + big (the
#               image is kept with the dataset: squashfs_image)
#   bindfs      `bindfs -f --multithreaded` over the ext4 dataset: a passthrough FUSE
#               daemon, the ceiling of any FUSE file system on this machine
#   ref         the files read straight from ext4 (no FUSE)
# One repository (or image) per tool holds tree and big in one backup; it is built once per
# invocation (not timed) and removed at the end. Every step below starts on a fresh mount
# (daemon started, caches of the tool emptied, page cache dropped) and is cold unless it
# says warm (same mount, page cache kept):
#   cat     time from mount start until big.bin is visible (every mount records it);
#           cat big.bin cold, then warm
#   rand    random 4 KiB preads on big.bin (scripts/bench/randread.py: RAND_READS reads at
#           block-aligned offsets drawn with a fixed seed), p50/p99 latency cold, then the
#           same offsets warm; for vaultfs the bytes fetched from the store (the difference
#           of chunk_fetch_bytes in <mnt>/.vaultfs/stats.json, when the mount offers it)
#   find    find tree | wc -l
#   ls      ls -lR tree >/dev/null
#   par     4 concurrent readers of disjoint quarters of big.bin (scripts/bench/parread.sh)
#   cp      cp -a of the tree out of the mount, checked against the source
# Before each unmount the daemon's peak RSS (VmHWM) and CPU are read from /proc (and, for
# vaultfs, .vaultfs/stats.json is kept in the logs). The vaultfs slot also times, when the
# generator target/release/examples/synth-repo exists, the mount of a synthetic repository
# with SYNTH_POINTS recovery points and SYNTH_CHUNKS chunks until its first vault is listed.
read -r -a MOUNT_TOOLS <<<"${BENCH_MOUNT_TOOLS:-ref vaultfs restic borg squashfuse bindfs}"
if [ -n "${BENCH_VAULTFS_OLD_BIN:-}" ] && [[ " ${MOUNT_TOOLS[*]} " != *" vaultfs-old "* ]]; then
  MOUNT_TOOLS+=(vaultfs-old)
fi
RAND_READS=${BENCH_RAND_READS:-2000}
SYNTH_BIN=${BENCH_SYNTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/synth-repo}
case $SYNTH_BIN in /*) ;; *) SYNTH_BIN=$ROOT/$SYNTH_BIN ;; esac
SYNTH_POINTS=1000
SYNTH_CHUNKS=1000000

have_vaultfs_mount() { "$VFS" mount --help >/dev/null 2>&1; }

MOUNT_PID=
MOUNT_DIR=

# mount_prepare RUN TOOL: the repository (or image) of TOOL, once per invocation.
mount_prepare() {
  local r=$1 tool=$2 repo=$D/repos/$2-mount
  case $tool in ref | bindfs) return 0 ;; esac
  [ -f "$repo.ready-$STAMP" ] && return 0
  log "preparing the $tool repository for the mount section"
  rm -f "$repo".ready-*
  tool_init "$tool" "$repo"
  case $tool in
    vaultfs | vaultfs-old) VAULTFS_REPO=$repo "$(vfs_for "$tool")" backup bench "$TREE" "$DATA/big" ;;
    restic) restic -r "$repo" backup --compression auto "$TREE" "$DATA/big" ;;
    borg) borg create --compression zstd,3 "$repo::m" "$TREE" "$DATA/big" ;;
    squashfuse) squashfs_image "$repo" ;;
  esac >"$LOGS/mount-prepare-$tool.log" 2>&1 || die "preparing the $tool mount repository failed (see $LOGS/mount-prepare-$tool.log)"
  touch "$repo.ready-$STAMP"
  record "$r" "$tool" mount_repo_bytes "$(du -sb "$repo" | cut -f1)"
}

# squashfs_image DEST: the squashfs image of tree + big at DEST (a hard link). Like the
# dataset and its tree.tar.zst, the image is made once (not timed; mksquashfs at the
# default zstd level takes ~10 min for 2 GB on 2 busy cores) and kept in $DATA, made again
# when the dataset's stats or the mksquashfs options changed.
SQUASHFS_OPTS=(-comp zstd -noappend -processors 2)
squashfs_image() {
  local img=$DATA/squashfs-zstd.img key
  key=$(cat "$DATA/stats.json" - <<<"${SQUASHFS_OPTS[*]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$img.key" 2>/dev/null)" != "$key" ] || [ ! -f "$img" ]; then
    log "building the squashfs image $img (once; reused afterwards)"
    rm -f "$img" "$img.key"
    mksquashfs "$TREE" "$DATA/big" "$img.tmp" "${SQUASHFS_OPTS[@]}" -no-progress || return 1
    mv "$img.tmp" "$img"
    echo "$key" >"$img.key"
  fi
  rm -f "$1" && ln "$img" "$1"
}

# Sets MTREE and MBIG: where tree and big.bin appear.
mount_paths() {
  local tool=$1 m=$D/mnt-$1
  case $tool in
    ref) MTREE=$TREE MBIG=$BIG ;;
    vaultfs | vaultfs-old) MTREE=$m/bench/latest/tree MBIG=$m/bench/latest/big/big.bin ;;
    restic) MTREE=$m/snapshots/latest$TREE MBIG=$m/snapshots/latest$BIG ;;
    borg) MTREE=$m$TREE MBIG=$m$BIG ;;
    squashfuse | bindfs) MTREE=$m/tree MBIG=$m/big/big.bin ;;
  esac
}

# Readiness checks, polled while a mount comes up.
ready_big() { [ -e "$MBIG" ]; }
# The first vault (ls hides the dot entries) can be listed.
ready_first_vault() {
  local v
  # shellcheck disable=SC2012
  v=$(ls "$MOUNT_DIR" 2>/dev/null | head -n 1) || return 1
  [ -n "$v" ] && ls "$MOUNT_DIR/$v" >/dev/null 2>&1
}

# mount_start RUN TOOL STEP [READY [REPO MNT]]: mounts (page cache dropped first), polls
# READY (default ready_big) and records the time it took as mount_ready_STEP.
mount_start() {
  local r=$1 tool=$2 step=$3 ready=${4:-ready_big} repo=${5:-$D/repos/$2-mount} m=${6:-$D/mnt-$2}
  mount_paths "$tool"
  [ "$tool" = ref ] && return 0
  fresh_caches
  mkdir -p "$m"
  MOUNT_DIR=$m
  drop_caches
  case $tool in
    vaultfs | vaultfs-old) CMD=(env VAULTFS_REPO="$repo" "$(vfs_for "$tool")" mount "$m") ;;
    restic) CMD=(restic -r "$repo" mount "$m") ;;
    borg) CMD=(borg mount -f "$repo::m" "$m") ;;
    squashfuse) CMD=(squashfuse_ll -f "$repo" "$m") ;;
    bindfs) CMD=(bindfs -f --no-allow-other --multithreaded "$DATA" "$m") ;;
  esac
  local t0=$EPOCHREALTIME
  # A simple command in the background: $! is the daemon itself (env execs).
  "${CMD[@]}" >"$LOGS/r$r-$tool-mount-$step.log" 2>&1 &
  MOUNT_PID=$!
  local i ok=0
  for ((i = 0; i < 12000; i++)); do
    if "$ready"; then ok=1; break; fi
    kill -0 "$MOUNT_PID" 2>/dev/null || break
    sleep 0.01
  done
  if [ "$ok" = 1 ]; then
    record "$r" "$tool" "mount_ready_$step" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')"
    return 0
  fi
  log "FAILED: $tool mount ($step) never passed $ready"
  { echo "== run $r $tool mount ($step): $ready never passed ($MBIG)"; tail -20 "$LOGS/r$r-$tool-mount-$step.log"; } >>"$LOGS/failures.log"
  mount_stop "$r" "$tool" "$step"
  return 1
}

# json_get FILE KEY: a top-level field of a JSON file, empty if absent.
json_get() {
  "$PY" -c 'import json, sys
try: v = json.load(open(sys.argv[1])).get(sys.argv[2])
except Exception: v = None
print("" if v is None else v)' "$1" "$2"
}

# Records the daemon's peak RSS (KiB) and CPU (s) (and keeps vaultfs's stats.json), then
# unmounts and waits for the daemon to exit.
mount_stop() {
  local r=$1 tool=$2 step=$3
  [ -n "$MOUNT_PID" ] || return 0
  if [ -r "/proc/$MOUNT_PID/status" ]; then
    record "$r" "$tool" "mount_rss_$step" "$(awk '/VmHWM/{print $2}' "/proc/$MOUNT_PID/status")"
    record "$r" "$tool" "mount_cpu_$step" "$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$MOUNT_PID/stat")"
  fi
  local stats=$LOGS/r$r-$tool-stats-$step.json
  if [[ $tool == vaultfs* ]] && cp "$MOUNT_DIR/.vaultfs/stats.json" "$stats" 2>/dev/null; then
    local fetched
    fetched=$(json_get "$stats" chunk_fetch_bytes)
    [ -z "$fetched" ] || record "$r" "$tool" "mount_fetch_bytes_$step" "$fetched"
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

# randread RUN TOOL METRIC [NO_DROP]: one randread.py pass on MBIG, its figures recorded as
# METRIC_p50_ms, METRIC_p99_ms, ... (and METRIC_chunk_fetch_bytes, METRIC_amplification).
randread() {
  local r=$1 tool=$2 metric=$3 stats=()
  [[ $tool == vaultfs* ]] && stats=(--stats "$MOUNT_DIR/.vaultfs/stats.json")
  NO_DROP=${4:-0} measure "$r" "$tool" "$metric" timeout "$MOUNT_TIMEOUT" \
    "$PY" "$HELPERS/randread.py" "$MBIG" --count "$RAND_READS" "${stats[@]}"
  local k v
  "$PY" - "$LOGS/r$r-$tool-$metric.log" <<'EOF' | while read -r k v; do record "$r" "$tool" "${metric}_$k" "$v"; done
import json, sys
try:
    d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    sys.exit(0)
for k in ("p50_ms", "p99_ms", "mean_ms", "first_ms", "bytes_asked", "chunk_fetch_bytes", "amplification"):
    if d.get(k) is not None:
        print(k, d[k])
EOF
}

# The default --cache-size of `vaultfs mount`, in bytes (from its --help).
vaultfs_cache_budget() {
  "$VFS" mount --help 2>/dev/null | "$PY" -c 'import re, sys
m = re.search(r"--cache-size.*?\[default: *([0-9.]+) *([KMGT]?)i?B?\]", sys.stdin.read(), re.S)
if m:
    print(int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")))'
}

section_mount() {
  local r=$1 tool=$2 out=$D/cp-out
  if [ "$tool" = vaultfs ] && ! have_vaultfs_mount; then return 0; fi
  if [ "$tool" = vaultfs-old ] && [ -z "$VFS_OLD" ]; then return 0; fi
  mount_prepare "$r" "$tool"
  if [ "$tool" = vaultfs ]; then
    local budget
    budget=$(vaultfs_cache_budget)
    [ -z "$budget" ] || record "$r" vaultfs mount_cache_budget_bytes "$budget"
    section_mount_synth "$r"
  fi
  if mount_start "$r" "$tool" cat; then
    # shellcheck disable=SC2016
    local catcmd=(timeout "$MOUNT_TIMEOUT" sh -c 'exec cat "$1" >/dev/null' sh "$MBIG")
    measure "$r" "$tool" mount_cat_big_cold "${catcmd[@]}"
    NO_DROP=1 measure "$r" "$tool" mount_cat_big_warm "${catcmd[@]}"
    mount_stop "$r" "$tool" cat
  fi
  if mount_start "$r" "$tool" rand; then
    randread "$r" "$tool" mount_rand_cold
    randread "$r" "$tool" mount_rand_warm 1
    mount_stop "$r" "$tool" rand
  fi
  if mount_start "$r" "$tool" find; then
    # shellcheck disable=SC2016
    measure "$r" "$tool" mount_find_cold timeout "$MOUNT_TIMEOUT" bash -c 'set -o pipefail; find "$1" | wc -l' bash "$MTREE"
    record "$r" "$tool" mount_find_count "$(tail -n 1 "$LOGS/r$r-$tool-mount_find_cold.log")"
    mount_stop "$r" "$tool" find
  fi
  if mount_start "$r" "$tool" ls; then
    # shellcheck disable=SC2016
    measure "$r" "$tool" mount_lsR_cold timeout "$MOUNT_TIMEOUT" sh -c 'exec ls -lR "$1" >/dev/null' sh "$MTREE"
    mount_stop "$r" "$tool" ls
  fi
  if mount_start "$r" "$tool" par; then
    measure "$r" "$tool" mount_par4_cold timeout "$MOUNT_TIMEOUT" bash "$HELPERS/parread.sh" "$MBIG" 4
    mount_stop "$r" "$tool" par
  fi
  rm -rf "$out"; mkdir -p "$out"
  if mount_start "$r" "$tool" cp; then
    measure "$r" "$tool" mount_cp_tree_cold timeout "$MOUNT_TIMEOUT" cp -a "$MTREE" "$out/"
    mount_stop "$r" "$tool" cp
    [ "$tool" = ref ] || verify_restore "$r" "$tool" "$out/tree" mount_cp
  fi
  rm -rf "$out"
}

# Mount of a synthetic repository (many points, many chunks) until its first vault is
# listed; vaultfs only (the other tools have no such repository). Skipped without the
# generator. The repository is built once (not timed) and kept under $D between invocations
# (made again when the generator binary changed).
section_mount_synth() {
  local r=$1 repo=$D/synth-p$SYNTH_POINTS-c$SYNTH_CHUNKS
  if [ ! -x "$SYNTH_BIN" ]; then
    [ "$r" != 1 ] || log "no $SYNTH_BIN: skipping the synthetic-repository mount"
    return 0
  fi
  # Made again only when the generator changed (its format follows the vaultfs sources).
  local gen
  gen=$(sha256sum "$SYNTH_BIN" | cut -d' ' -f1)
  if [ "$(cat "$repo.ready" 2>/dev/null)" != "$gen" ]; then
    log "building the synthetic repository $repo (once per generator; reused afterwards)"
    rm -rf "$repo" "$repo.ready"
    if ! "$SYNTH_BIN" "$repo" --points "$SYNTH_POINTS" --chunks "$SYNTH_CHUNKS" >"$LOGS/synth-build.log" 2>&1; then
      log "FAILED: building the synthetic repository (see $LOGS/synth-build.log)"
      { echo "== synth-repo $repo failed"; tail -20 "$LOGS/synth-build.log"; } >>"$LOGS/failures.log"
      return 0
    fi
    echo "$gen" >"$repo.ready"
  fi
  [ "$r" != 1 ] || record "$r" vaultfs synth_repo_bytes "$(du -sb "$repo" | cut -f1)"
  if mount_start "$r" vaultfs synth ready_first_vault "$repo" "$D/mnt-synth"; then
    mount_stop "$r" vaultfs synth
  fi
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
  local n=${#TOOLS[@]} nm=${#MOUNT_TOOLS[@]} r i tool
  for ((r = 1; r <= RUNS; r++)); do
    log "run $r of $RUNS"
    for ((i = 0; i < n; i++)); do
      tool=${TOOLS[$(((i + r - 1) % n))]}
      if [[ " $SECTIONS " == *" backup "* ]]; then
        if [ "$tool" = ref ]; then
          section_reference "$r"
        else
          section_tree "$r" "$tool"
          section_big "$r" "$tool"
        fi
      fi
    done
    if [[ " $SECTIONS " == *" prune "* ]]; then
      for ((i = 0; i < n; i++)); do section_prune "$r" "${TOOLS[$(((i + r - 1) % n))]}"; done
    fi
    if [[ " $SECTIONS " == *" mount "* ]]; then
      for ((i = 0; i < nm; i++)); do section_mount "$r" "${MOUNT_TOOLS[$(((i + r - 1) % nm))]}"; done
    fi
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
  "squashfuse": sh("dpkg-query -W -f='squashfuse \${Version}' squashfuse"),
  "mksquashfs": sh("mksquashfs -version 2>&1 | head -n 1"),
  "bindfs": sh("bindfs --version"),
  "rand_reads": $RAND_READS,
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
