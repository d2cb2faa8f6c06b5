#!/usr/bin/env bash
# Ingest through the mount, side by side: a tar of a tree copied into
# .vaultfs/incoming/ vs `vaultfs backup` of the same tree vs `restic backup --stdin` of
# the same tar. Cold caches before each step; medians of BENCH_RUNS runs; peak RSS of
# the process that does the work (for the mount: the daemon's VmHWM).
# usage: scripts/bench-ingest.sh [TREE]   (default: /usr/share; env BENCH_RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v restic >/dev/null || { echo "installing: restic"; apt-get update -qq; apt-get install -y -qq restic >/dev/null; }
command -v fusermount3 >/dev/null || { echo "installing: fuse3"; apt-get update -qq; apt-get install -y -qq fuse3 >/dev/null; }
cargo build --release >/dev/null 2>&1
V=$(pwd)/${CARGO_TARGET_DIR:-target}/release/vaultfs
TREE=${1:-/usr/share}
RUNS=${BENCH_RUNS:-3}
W=${BENCH_DIR:-/var/tmp/vaultfs-bench-ingest}
mkdir -p "$W"
TAR=$W/tree.tar
[ -f "$TAR" ] || tar -C "$TREE" -cf "$TAR" .
export VAULTFS_PASSWORD=pw RESTIC_PASSWORD=pw
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
fresh() { rm -rf "$W/repo" "$W/restic"; "$V" --repo "$W/repo" init >/dev/null; "$V" --repo "$W/repo" vault create b >/dev/null; }
declare -A T R
for run in $(seq 1 "$RUNS"); do
  fresh; cold
  /usr/bin/time -f "%e %M" -o "$W/t" "$V" --repo "$W/repo" backup b "$TREE" >/dev/null
  read -r t r < "$W/t"; T[backup]+="$t "; R[backup]+="$r "
  fresh; mkdir -p "$W/mnt"
  "$V" --repo "$W/repo" mount "$W/mnt" 2>"$W/mount.log" & pid=$!
  for _ in $(seq 100); do mountpoint -q "$W/mnt" && break; sleep 0.1; done
  cold
  s=$(date +%s.%N); cp "$TAR" "$W/mnt/.vaultfs/incoming/b/tree.tar"; e=$(date +%s.%N)
  r=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  fusermount3 -u "$W/mnt"; wait "$pid"
  T[incoming]+="$(echo "$e - $s" | bc) "; R[incoming]+="$r "
  rm -rf "$W/restic"; restic init -q -r "$W/restic" --repository-version 2 >/dev/null; cold
  /usr/bin/time -f "%e %M" -o "$W/t" restic -q -r "$W/restic" backup --stdin --stdin-filename tree.tar --compression auto < "$TAR" >/dev/null
  read -r t r < "$W/t"; T[restic]+="$t "; R[restic]+="$r "
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size=$(stat -c %s "$TAR")
printf 'tar of %s: %.2f GB, %s runs, medians\n\n' "$TREE" "$(echo "$size / 1000000000" | bc -l)" "$RUNS"
printf '| step | wall s | MB/s | peak RSS MiB |\n|---|---|---|---|\n'
for k in backup incoming restic; do
  t=$(echo "${T[$k]}" | median); r=$(echo "${R[$k]}" | median)
  printf '| %s | %s | %.0f | %.0f |\n' "$k" "$t" "$(echo "$size / $t / 1000000" | bc -l)" "$(echo "$r / 1024" | bc -l)"
done
echo; echo "backup = vaultfs backup of the tree; incoming = cp of its tar into the mount's incoming/; restic = restic backup --stdin of the tar"
