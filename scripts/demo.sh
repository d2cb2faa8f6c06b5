#!/usr/bin/env bash
# The main job on a fresh Debian machine (run as root): installs what is missing,
# builds vaultfs, backs up /usr/share/doc into a local repository, lists the recovery
# point, restores a file, then mounts the repository and copies files out with cp/rsync.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v rsync >/dev/null || need+=(rsync)
command -v cc >/dev/null || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release
BIN=${CARGO_TARGET_DIR:-target}/release/vaultfs
WORK=${DEMO_DIR:-/tmp/vaultfs-demo}
SRC=${DEMO_SRC:-/usr/share/doc}
rm -rf "$WORK"; mkdir -p "$WORK"
export VAULTFS_REPO=$WORK/repo VAULTFS_PASSWORD=${VAULTFS_PASSWORD:-demo-password}

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$BIN" init
step "$BIN" vault create docs --description "documentation of this machine"
step "$BIN" backup docs "$SRC"
step "$BIN" backup docs "$SRC"
step "$BIN" points docs
step "$BIN" ls docs latest "$(basename "$SRC")" --long > "$WORK/listing.txt"
sed -n '1,5p' "$WORK/listing.txt"; echo "... ($(wc -l < "$WORK/listing.txt") entries)"
first=$(find "$SRC" -maxdepth 2 -type f -name 'copyright' -print -quit)
rel=$(basename "$SRC")/${first#"$SRC"/}
step "$BIN" restore docs latest "$WORK/restored" --path "$rel"
step cmp "$first" "$WORK/restored/$(basename "$first")"
step "$BIN" check

if "$BIN" mount --help >/dev/null 2>&1; then
  MNT=$WORK/mnt; mkdir -p "$MNT"
  "$BIN" mount "$MNT" & pid=$!
  trap 'fusermount3 -u "$MNT" 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
  step ls -l "$MNT" "$MNT/docs"
  step cp -a "$MNT/docs/latest/$(basename "$SRC")" "$WORK/copied"
  step rsync -aHAXnc --itemize-changes "$SRC/" "$WORK/copied/"
  echo "(no rsync output above: the copy through the mount equals the source)"
  step cat "$MNT/.vaultfs/vaults/docs.json"
  fusermount3 -u "$MNT"; wait $pid; trap - EXIT
fi
echo; echo "demo done: repository in $VAULTFS_REPO"
