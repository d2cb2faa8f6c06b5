#!/usr/bin/env bash
# parread.sh FILE [N]: N concurrent readers (default 4), reader i reads the i-th of N
# disjoint, contiguous parts of FILE with dd (1 MiB reads) to /dev/null; the last part
# takes the remainder. Exits non-zero if any reader failed. Timed from outside, the
# aggregate throughput is size(FILE) / wall time.
set -euo pipefail
f=$1
n=${2:-4}
size=$(stat -c %s "$f")
part=$((size / n))
pids=()
for ((i = 0; i < n; i++)); do
  count=$part
  [ "$i" -eq $((n - 1)) ] && count=$((size - part * (n - 1)))
  dd if="$f" of=/dev/null bs=1M skip=$((part * i)) count="$count" \
    iflag=skip_bytes,count_bytes status=none &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit "$rc"
