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
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt-get may be running on a busy machine: wait for its lock.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || {
  echo "error: cargo is missing: install Rust 1.88 or newer (https://rustup.rs)" >&2
  exit 1
}

cargo build --release
BIN=${CARGO_TARGET_DIR:-target}/release/vaultfs
WORK=${DEMO_DIR:-/tmp/vaultfs-demo}
SRC=${DEMO_SRC:-/usr/share/doc}
rm -rf "$WORK"; mkdir -p "$WORK"
export VAULTFS_REPO=$WORK/repo VAULTFS_PASSWORD=${VAULTFS_PASSWORD:-demo-password}

# Prints a command as typed, then runs it.
show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step() { show "$@"; "$@"; }

step "$BIN" init
step "$BIN" vault create docs --description "documentation of this machine"
step "$BIN" backup docs "$SRC"
step "$BIN" backup docs "$SRC"
step "$BIN" points docs
# The listing goes to a file (only its lines: the command is shown apart), of which
# the first five lines are shown; the count is of its lines, one per entry of the
# directory, and must be the count of the source directory's entries.
show "$BIN" ls docs latest "$(basename "$SRC")" --long "| head -n 5"
"$BIN" ls docs latest "$(basename "$SRC")" --long > "$WORK/listing.txt"
head -n 5 "$WORK/listing.txt"
entries=$(wc -l < "$WORK/listing.txt")
in_source=$(find "$SRC" -mindepth 1 -maxdepth 1 -printf x | wc -c)
echo "... ($entries entries in all, the first 5 shown)"
[ "$entries" -eq "$in_source" ] || {
  echo "error: the listing has $entries entries, $SRC has $in_source" >&2
  exit 1
}
first=$(find "$SRC" -maxdepth 2 -type f -name 'copyright' -print -quit)
rel=$(basename "$SRC")/${first#"$SRC"/}
step "$BIN" restore docs latest "$WORK/restored" --path "$rel"
step cmp "$first" "$WORK/restored/$(basename "$first")"
step "$BIN" check

if "$BIN" mount --help >/dev/null 2>&1; then
  MNT=$WORK/mnt; mkdir -p "$MNT"
  # --daemon returns once the mount answers (or fails, saying why).
  step "$BIN" mount "$MNT" --daemon --no-schedule
  trap 'fusermount3 -u -z "$MNT" 2>/dev/null || true' EXIT
  step ls -l "$MNT" "$MNT/docs"
  step cp -a "$MNT/docs/latest/$(basename "$SRC")" "$WORK/copied"
  show rsync -aHAXnc --itemize-changes "$SRC/" "$WORK/copied/"
  diffs=$(rsync -aHAXnc --itemize-changes "$SRC/" "$WORK/copied/")
  if [ -n "$diffs" ]; then
    printf '%s\n' "$diffs"
    echo "error: the copy through the mount differs from the source" >&2
    exit 1
  fi
  echo "(no rsync output: the copy through the mount equals the source)"
  step cat "$MNT/.vaultfs/vaults/docs.json"
  step "$BIN" umount "$MNT"
  trap - EXIT
fi
echo; echo "demo done: repository in $VAULTFS_REPO"
