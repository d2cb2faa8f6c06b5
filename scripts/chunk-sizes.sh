#!/usr/bin/env bash
# Measures what the average chunk size costs: backup time, repository and index size,
# and the read amplification of random 4 KiB reads. Used to choose the default (FORMAT.md).
# usage: scripts/chunk-sizes.sh [DATA_DIR...]   (default: /usr/bin /usr/share)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example chunk_stats >/dev/null 2>&1
T=${CARGO_TARGET_DIR:-target}/release
DATA=("$@"); [ ${#DATA[@]} -gt 0 ] || DATA=(/usr/bin /usr/share)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
export VAULTFS_PASSWORD=pw
printf '| avg KiB | backup s | repo MiB | chunks | index KiB | 4K read amp (all) | 4K read amp (files >= 8 MiB) |\n|---|---|---|---|---|---|---|\n'
for avg in 128 256 512 1024 2048; do
  export VAULTFS_REPO=$W/r$avg
  "$T/vaultfs" init --chunk-avg-kib "$avg" >/dev/null
  "$T/vaultfs" vault create v >/dev/null
  s=$(date +%s.%N)
  "$T/vaultfs" backup v "${DATA[@]}" >/dev/null
  e=$(date +%s.%N)
  read -r _ chunks _ idx _ amp _ ampbig < <("$T/examples/chunk_stats")
  size=$(du -sm "$VAULTFS_REPO" | cut -f1)
  printf '| %s | %.1f | %s | %s | %s | %s | %s |\n' "$avg" "$(echo "$e - $s" | bc)" "$size" "$chunks" "$((idx / 1024))" "$amp" "$ampbig"
  rm -rf "$VAULTFS_REPO"
done
