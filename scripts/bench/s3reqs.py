#!/usr/bin/python3
"""Requests seen by the S3 server (Ceph RGW) during one step of scripts/bench-s3.sh.

    s3reqs.py snap RGW_DIR OUT.json     # counters and log position before the step
    s3reqs.py diff RGW_DIR BEFORE.json  # "key value" lines: what the step cost the server

Two sources, both on the server side so that every client is counted alike:

- the gateway's perf counters (`ceph --admin-daemon <asok> perf dump`, logger "rgw"):
  req (every request), failed_req, get (object GETs and HEADs), get_b (body bytes sent),
  put (object PUTs and multipart parts), put_b (bytes received);
- the gateway's access log (the beast frontend logs one line per finished request at the
  default debug level: method, path, status, bytes sent, latency), which tells what the
  requests were: object GETs by the first path component under the repository prefix
  (packs, data, index, ...) and their summed latency, HEADs, bucket listings, PUTs, POSTs
  (multipart), DELETEs, errors.
"""

import glob
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import unquote, urlsplit

COUNTERS = ["req", "failed_req", "get", "get_b", "put", "put_b"]
LINE = re.compile(r' beast: \S+ \S+ - (\S+) \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d+) (\d+|-)')
LATENCY = re.compile(r" latency=([0-9.]+)s")


def asok(rgw_dir):
    socks = sorted(glob.glob(os.path.join(rgw_dir, "run", "*rgw*.asok")))
    if not socks:
        sys.exit(f"s3reqs: no gateway admin socket under {rgw_dir}/run")
    return socks[0]


def counters(rgw_dir):
    out = subprocess.run(["ceph", "--admin-daemon", asok(rgw_dir), "perf", "dump", "rgw"],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    d = d.get("rgw", d)
    return {k: int(d[k]) for k in COUNTERS if k in d}


def log_path(rgw_dir):
    return os.path.join(rgw_dir, "log", "rgw.log")


def snap(rgw_dir, out):
    try:
        pos = os.path.getsize(log_path(rgw_dir))
    except OSError:
        pos = 0
    json.dump({"counters": counters(rgw_dir), "log_pos": pos}, open(out, "w"))


def classify(lines):
    """Counts of the access-log lines by kind, and the bytes sent for object GETs."""
    c = Counter()
    for ln in lines:
        m = LINE.search(ln)
        if not m:
            continue
        _user, method, target, status, nbytes = m.groups()
        status = int(status)
        nbytes = 0 if nbytes == "-" else int(nbytes)
        u = urlsplit(target)
        parts = [p for p in unquote(u.path).split("/") if p]
        c["log_requests"] += 1
        if status >= 400:
            c["log_errors"] += 1
        if len(parts) <= 1:                      # the bucket itself (or the service)
            kind = {"GET": "list", "HEAD": "head_bucket", "PUT": "create_bucket"}.get(method, method.lower() + "_bucket")
            c[f"log_{kind}"] += 1
            continue
        # Object key: bucket/prefix/<dir>/...; the repository's "directory" is the first
        # component below the bench prefix (the prefix is always one component here).
        key = parts[2:] if len(parts) > 2 else parts[1:]
        top = key[0] if len(key) > 1 else "(top)"
        if method == "GET":
            c["log_get"] += 1
            c["log_get_bytes"] += nbytes
            lat = LATENCY.search(ln)
            if lat:   # summed over GETs / wall time of the step = GETs in flight on average
                c["log_get_latency_ms"] += round(float(lat.group(1)) * 1000)
            c[f"log_get_{top}"] += 1
            c[f"log_get_bytes_{top}"] += nbytes
        elif method == "HEAD":
            c["log_head"] += 1
        elif method == "PUT":
            c["log_put"] += 1
        elif method == "POST":
            c["log_post"] += 1
        elif method == "DELETE":
            c["log_delete"] += 1
        else:
            c["log_other"] += 1
    return c


def diff(rgw_dir, before_path):
    before = json.load(open(before_path))
    lines = []
    # The log is written by a thread of its own: wait until it holds as many lines as the
    # counters saw requests (at most 5 s).
    deadline = time.time() + 5
    while True:
        now = counters(rgw_dir)
        want = now.get("req", 0) - before["counters"].get("req", 0)
        with open(log_path(rgw_dir), "rb") as f:
            f.seek(before["log_pos"])
            lines = f.read().decode("utf-8", "replace").splitlines()
        got = sum(1 for ln in lines if LINE.search(ln))
        if got >= want or time.time() > deadline:
            break
        time.sleep(0.2)
    for k in COUNTERS:
        if k in now:
            print(f"rgw_{k} {now[k] - before['counters'].get(k, 0)}")
    for k, v in sorted(classify(lines).items()):
        print(f"{k} {v}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("snap", "diff"):
        sys.exit(__doc__)
    {"snap": snap, "diff": diff}[sys.argv[1]](sys.argv[2], sys.argv[3])
