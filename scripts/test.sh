#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (run as root): installs what the tests
# need, starts a real S3 server (Ceph RADOS Gateway) on 127.0.0.1, then runs
# cargo fmt --check, clippy -D warnings and every test binary (all of them, also after a
# failure), and ends with one line per test binary and the totals:
#   N passed, N failed, N skipped
# It exits non-zero when anything failed.
#
# Strict by default: real FUSE mounts and the S3 server are parts of the suite, and a
# missing part is a failure. VAULTFS_TEST_SKIP (comma-separated) is the only way to skip
# one: `fuse` (every test that mounts), `s3` (every test that needs an S3 server; the
# RGW is then not started), `s3-stall` (the test that stops the RGW with SIGSTOP),
# `tar-tools` (the tar corpus's archives made by bsdtar, busybox or python3). Each
# test skipped so is listed and counted as skipped in the summary, as are #[ignore]d ones.
#
# Settings: RGW_DIR, RGW_PORT, S3_RGW_MON_PORT (the RGW's directory, port and monitor
# port; /tmp/vaultfs-test-rgw, 7480, 6789), VAULTFS_TEST_S3_ENDPOINT (use that server
# instead of starting one), VAULTFS_TEST_THREADS (2), VAULTFS_TEST_LOG_DIR (the log's
# directory; a new one in /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$SECONDS

SKIP=${VAULTFS_TEST_SKIP:-}
SKIP=${SKIP// /}
for part in ${SKIP//,/ }; do
  case $part in
    fuse | s3 | s3-stall | tar-tools) ;;
    *) echo "error: VAULTFS_TEST_SKIP=$SKIP: '$part' is not one of fuse, s3, s3-stall, tar-tools" >&2
       exit 2 ;;
  esac
done
skipping() { [[ ",$SKIP," == *",$1,"* ]]; }
[ -z "$SKIP" ] || echo "SKIPPING (VAULTFS_TEST_SKIP=$SKIP): the tests that need it are counted as skipped"

# What the tests run: apt packages for what is missing.
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v rsync >/dev/null || need+=(rsync)
command -v setfattr >/dev/null || need+=(attr)
{ command -v setfacl && command -v getfacl; } >/dev/null || need+=(acl)
command -v zstd >/dev/null || need+=(zstd)
command -v curl >/dev/null || need+=(curl)
command -v diff >/dev/null || need+=(diffutils)
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v python3 >/dev/null || need+=(python3)
command -v bsdtar >/dev/null || need+=(libarchive-tools)
command -v busybox >/dev/null || need+=(busybox)
command -v unzip >/dev/null || need+=(unzip)
command -v man >/dev/null || need+=(man-db)
command -v mkfifo >/dev/null || need+=(coreutils)
command -v fio >/dev/null || need+=(fio)
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

if ! skipping fuse && [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || {
    echo "error: /dev/fuse is missing (modprobe fuse; in a container, pass the device);" \
      "VAULTFS_TEST_SKIP=fuse skips the mount tests" >&2
    exit 1
  }
fi

# A real S3 server for the S3 tests, unless they are skipped or a server is given.
if skipping s3; then
  unset VAULTFS_TEST_S3_ENDPOINT
elif [ -z "${VAULTFS_TEST_S3_ENDPOINT:-}" ]; then
  RGW_DIR=${RGW_DIR:-/tmp/vaultfs-test-rgw}
  RGW_PORT=${RGW_PORT:-7480}
  export S3_RGW_MON_PORT=${S3_RGW_MON_PORT:-6789}
  bash scripts/s3-rgw.sh stop "$RGW_DIR" >/dev/null 2>&1 || true
  trap 'bash scripts/s3-rgw.sh stop "$RGW_DIR" >/dev/null 2>&1 || true' EXIT
  bash scripts/s3-rgw.sh start "$RGW_DIR" "$RGW_PORT" || {
    echo "error: the S3 server did not start (logs in $RGW_DIR/log);" \
      "VAULTFS_TEST_SKIP=s3 skips the S3 tests" >&2
    exit 1
  }
  export VAULTFS_TEST_S3_ENDPOINT="http://127.0.0.1:$RGW_PORT"
  export AWS_ACCESS_KEY_ID=${S3_ACCESS_KEY:-test}
  export AWS_SECRET_ACCESS_KEY=${S3_SECRET_KEY:-testsecret}
fi

LOG_DIR=${VAULTFS_TEST_LOG_DIR:-$(mktemp -d /tmp/vaultfs-test-XXXXXX)}
mkdir -p "$LOG_DIR"
LOG=$LOG_DIR/cargo-test.log
export VAULTFS_TEST_SKIP_LOG=$LOG_DIR/skipped.tsv
: >"$VAULTFS_TEST_SKIP_LOG"
# Each reliability family (tests/family) appends its figures here: name, seed, cases,
# faults injected, failures, seconds.
export VAULTFS_TEST_FAMILY_LOG=$LOG_DIR/families.tsv
: >"$VAULTFS_TEST_FAMILY_LOG"

fmt=ok clippy=ok
cargo fmt --all -- --check || fmt=FAILED
cargo clippy --all-targets -- -D warnings || clippy=FAILED
set +e
cargo test --no-fail-fast -- --test-threads="${VAULTFS_TEST_THREADS:-2}" 2>&1 | tee "$LOG"
test_status=${PIPESTATUS[0]}
set -e

# The summary: one line per test binary, then the skipped and failed tests, the totals.
echo
echo "==== summary (log: $LOG) ===="
printf '%-28s %s\n' "cargo fmt --check" "$fmt" "cargo clippy -D warnings" "$clippy"
awk -v skiplog="$VAULTFS_TEST_SKIP_LOG" -v fmt="$fmt" -v clippy="$clippy" \
  -v status="$test_status" '
  function finish() {
    if (name == "") return
    if (!have_result) {
      printf "%-28s CRASHED: no result line (see the log)\n", name
      failed_total++; problems++
    } else {
      s = skipped[exe] + 0
      printf "%-28s %4d passed, %d failed, %d skipped, %d ignored\n", \
        name, p - s, f, s, ig
      passed_total += p - s; failed_total += f; skipped_total += s; ignored_total += ig
    }
    name = ""
  }
  BEGIN {
    while ((getline line < skiplog) > 0) {
      split(line, a, "\t")
      if (seen[a[1] "\t" a[2]]++) continue
      skipped[a[1]]++
      skip_lines[++nskip] = line
    }
  }
  /^ *Running / {
    finish()
    # "Running unittests src/lib.rs (/target/debug/deps/vaultfs-0123)" or
    # "Running tests/mount.rs (/target/debug/deps/mount-4567)"
    line = $0; sub(/^ *Running (unittests )?/, "", line)
    name = line; sub(/ \(.*$/, "", name)
    exe = line; sub(/^.*\//, "", exe); sub(/\)$/, "", exe)
    exe_name[exe] = name
    have_result = 0
    next
  }
  /^ *Doc-tests / { finish(); name = "doc-tests " $2; exe = ""; have_result = 0; next }
  /^test result: / {
    have_result = 1
    p = f = ig = 0
    for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed;/) p = $i
      if ($(i+1) ~ /^failed;/) f = $i
      if ($(i+1) ~ /^ignored;/) ig = $i
    }
    next
  }
  /^test .* \.\.\. FAILED$/ {
    t = $0; sub(/^test /, "", t); sub(/ \.\.\. FAILED$/, "", t)
    fail_lines[++nfail] = name " " t
    next
  }
  END {
    finish()
    if (nskip > 0) {
      print "skipped by VAULTFS_TEST_SKIP:"
      for (i = 1; i <= nskip; i++) {
        split(skip_lines[i], a, "\t")
        n = (a[1] in exe_name) ? exe_name[a[1]] : a[1]
        print "  " n " " a[2] " (" a[3] ")"
      }
    }
    if (nfail > 0) {
      print "failed:"
      for (i = 1; i <= nfail; i++) print "  " fail_lines[i]
    }
    if (status != 0 && failed_total == 0) {
      print "cargo test exited with status " status " and no test failed: a build error? (see the log)"
      failed_total++
    }
    if (fmt != "ok" || clippy != "ok") print "cargo fmt --check: " fmt "; cargo clippy: " clippy
    if (ignored_total > 0)
      print ignored_total " #[ignore]d tests (not part of a run, see their comments), counted as skipped"
    printf "%d passed, %d failed, %d skipped\n", passed_total, failed_total, skipped_total + ignored_total
    exit (failed_total > 0 || fmt != "ok" || clippy != "ok") ? 1 : 0
  }' "$LOG" >"$LOG_DIR/summary.txt" && result=0 || result=$?
head -n -1 "$LOG_DIR/summary.txt"
if [ -s "$VAULTFS_TEST_FAMILY_LOG" ]; then
  echo "reliability families (RELIABILITY.md; VAULTFS_SEED=seed replays one):"
  awk -F'\t' '{ printf "  %-34s %7d cases %7d faults %3d failures %5d s  seed %s\n", \
    $1, $3, $4, $5, $6, ($2 == "0" ? "-" : $2) }' "$VAULTFS_TEST_FAMILY_LOG"
fi
echo "took $((SECONDS - t_start)) s"
tail -n 1 "$LOG_DIR/summary.txt"
exit "$result"
