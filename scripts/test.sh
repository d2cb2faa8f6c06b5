#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (run as root): installs what the tests
# need, starts a real S3 server (Ceph RADOS Gateway) on 127.0.0.1, then runs
# cargo fmt --check, clippy -D warnings and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v rsync >/dev/null || need+=(rsync)
command -v setfattr >/dev/null || need+=(attr)
command -v zstd >/dev/null || need+=(zstd)
command -v curl >/dev/null || need+=(curl)
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || { echo "error: /dev/fuse is missing" >&2; [ "${CI:-}" = true ] && exit 1; }

# A real S3 server for the S3 tests.
RGW_DIR=${RGW_DIR:-/tmp/vaultfs-test-rgw}
RGW_PORT=${RGW_PORT:-7480}
if [ -f scripts/s3-rgw.sh ] && [ "${VAULTFS_TEST_NO_S3:-}" != 1 ]; then
  bash scripts/s3-rgw.sh stop "$RGW_DIR" >/dev/null 2>&1 || true
  bash scripts/s3-rgw.sh start "$RGW_DIR" "$RGW_PORT"
  trap 'bash scripts/s3-rgw.sh stop "$RGW_DIR" >/dev/null 2>&1 || true' EXIT
  export VAULTFS_TEST_S3_ENDPOINT="http://127.0.0.1:$RGW_PORT"
  export AWS_ACCESS_KEY_ID=${S3_ACCESS_KEY:-test}
  export AWS_SECRET_ACCESS_KEY=${S3_SECRET_KEY:-testsecret}
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets -- --test-threads=2
