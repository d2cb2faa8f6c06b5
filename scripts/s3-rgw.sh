#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with the RADOS Gateway, for the S3 backend tests.
#
#   scripts/s3-rgw.sh start DIR [PORT]   install Ceph if needed, start mon + osd + rgw on
#                                        127.0.0.1:PORT (default 7480), create the S3 user,
#                                        print "READY http://127.0.0.1:PORT"
#   scripts/s3-rgw.sh stop DIR           stop the daemons started from DIR and delete DIR
#   scripts/s3-rgw.sh status DIR         exit 0 when the gateway of DIR answers
#
# The user's keys come from S3_ACCESS_KEY / S3_SECRET_KEY (defaults test / testsecret).
# The monitor listens on 127.0.0.1:S3_RGW_MON_PORT (default 6789); the OSD takes free ports
# in 6800-7300. Everything lives in DIR (config, admin sockets, run files, logs and the
# monitor's cluster log, pids), nothing under /var/run/ceph, /var/lib/ceph or /var/log/ceph,
# and each cluster gets its own fsid: two clusters with different DIRs, PORTs and
# S3_RGW_MON_PORTs run side by side without touching each other, e.g.
#   S3_RGW_MON_PORT=6790 scripts/s3-rgw.sh start /var/tmp/rgw-b 7490
# S3_RGW_BEAST_OPTS adds options to the gateway's beast frontend, e.g. "tcp_nodelay=1"
# (without it the gateway's replies wait for the client's delayed ACK, ~40 ms, whenever a
# reply is written in two pieces: one small GET costs ~50 ms instead of a few).
# The OSD keeps its data in memory (memstore), so a stop loses it. Starting a DIR whose
# gateway already answers does nothing but print READY again; a DIR left over by a dead
# cluster is wiped and started afresh.
#
# Things that bite on a single loopback-only node, and how this script avoids them:
# - daemons must bind to 127.0.0.1 (public/cluster addr), never a routable address;
# - the OSD must be created with a UUID and mkfs'd with the same one;
# - no cephx (auth none), one replica, few placement groups per pool, or pool creation
#   by the gateway fails on the per-OSD PG limit;
# - a monitor left to pick its addresses binds v2 on the fixed port 3300 besides v1: the
#   monmap is made by hand with v1 on S3_RGW_MON_PORT only, and a start whose monitor port
#   already answers stops there (the new cluster's commands would reach the old monitor).
set -euo pipefail

usage() { echo "usage: $0 start DIR [PORT] | stop DIR | status DIR" >&2; exit 2; }

cmd=${1:-}; DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || usage
PORT=${3:-7480}
MON_PORT=${S3_RGW_MON_PORT:-6789}
BEAST_OPTS=${S3_RGW_BEAST_OPTS:-}
AK=${S3_ACCESS_KEY:-test}
SK=${S3_SECRET_KEY:-testsecret}
STORE=${S3_RGW_OBJECTSTORE:-memstore}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
export CEPH_CONF=$DIR/ceph.conf
URL_FILE=$DIR/url

log() { echo "s3-rgw: $*" >&2; }

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

answers() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/"; }

# True when something accepts TCP connections on 127.0.0.1:$1.
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

install_ceph() {
  command -v radosgw >/dev/null && command -v ceph-osd >/dev/null \
    && command -v ceph-mon >/dev/null && command -v radosgw-admin >/dev/null && return 0
  log "installing: radosgw ceph-mon ceph-osd ceph-common curl (Ceph, with apt-get)"
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$DIR/apt.log" 2>&1 || { tail -20 "$DIR/apt.log" >&2; return 1; }
  apt-get install -y -q --no-install-recommends radosgw ceph-mon ceph-osd ceph-common curl \
    >>"$DIR/apt.log" 2>&1 || { tail -20 "$DIR/apt.log" >&2; return 1; }
  log "installed in $((SECONDS - t0)) s"
}

# Stops every daemon started from DIR, newest first; waits for each to exit.
stop_daemons() {
  local name pid
  for name in rgw osd mon; do
    [ -f "$DIR/$name.pid" ] || continue
    pid=$(cat "$DIR/$name.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$name.pid"
  done
}

# Waits up to $1 seconds for the command in the remaining arguments to succeed.
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

osd_up() { timeout 10 ceph --connect-timeout 5 osd stat 2>/dev/null | grep -q ' 1 up'; }

write_conf() {
  FSID=$(cat /proc/sys/kernel/random/uuid)
  cat >"$CEPH_CONF" <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = true
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pidfile
log file = $DIR/log/\$name.log
mon cluster log file = default=$DIR/log/cluster.\$channel.log cluster=$DIR/log/cluster.log
crash dir = $DIR/crash
rgw data = $DIR/rgw
rgw luarocks location = $DIR/luarocks
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
[mon.a]
mon data = $DIR/mon
mon data avail crit = 0
mon data avail warn = 0
log file = $DIR/log/mon.log
[osd]
osd data = $DIR/osd
osd objectstore = $STORE
memstore device bytes = 4294967296
# for S3_RGW_OBJECTSTORE=bluestore: the block file lives beside, never inside, the data dir
bluestore block path = $DIR/osd-block.img
bluestore block size = 4294967296
bluestore block create = true
osd class update on start = false
osd crush update on start = false
log file = $DIR/log/osd.log
[client.rgw.vaultfs]
rgw frontends = beast endpoint=127.0.0.1:$PORT${BEAST_OPTS:+ $BEAST_OPTS}
rgw dns name = localhost
rgw thread pool size = 64
log file = $DIR/log/rgw.log
CONF
}

start() {
  if alive rgw && answers "$PORT"; then
    log "already running from $DIR"
    echo "READY http://127.0.0.1:$PORT"
    return 0
  fi
  if [ -e "$CEPH_CONF" ] || ls "$DIR"/*.pid >/dev/null 2>&1; then
    log "wiping the remains of an earlier cluster in $DIR"
    stop_daemons
    find "$DIR" -mindepth 1 -maxdepth 1 ! -name apt.log -exec rm -rf {} +
  fi
  if answers "$PORT"; then
    log "something else already answers on 127.0.0.1:$PORT"; return 1
  fi
  # A monitor of another cluster on this port would take this cluster's commands.
  if listening "$MON_PORT"; then
    log "the monitor port 127.0.0.1:$MON_PORT is taken (another cluster? set S3_RGW_MON_PORT)"
    return 1
  fi
  install_ceph
  local t0=$SECONDS
  mkdir -p "$DIR"/{log,mon,osd,run,crash,rgw}
  write_conf

  # The monitor binds the address its monmap gives it: only v1 on MON_PORT. (Left to
  # itself, it would also bind v2 on the fixed port 3300, which a second cluster can't.)
  monmaptool --create --fsid "$FSID" --addv a "[v1:127.0.0.1:$MON_PORT]" "$DIR/monmap" \
    >"$DIR/log/mon-mkfs.out" 2>&1
  ceph-mon --id a --mkfs --monmap "$DIR/monmap" --keyring /dev/null >>"$DIR/log/mon-mkfs.out" 2>&1
  touch "$DIR/mon/keyring"
  ceph-mon --id a -f >"$DIR/log/mon.out" 2>&1 &
  echo $! >"$DIR/mon.pid"

  local uuid id
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(timeout 60 ceph --connect-timeout 60 osd create "$uuid") && [ -n "$id" ] || { log "osd create failed"; return 1; }
  ceph osd crush add "osd.$id" 1 root=default >/dev/null 2>&1
  ceph-osd --id "$id" --mkfs --osd-uuid "$uuid" >"$DIR/log/osd-mkfs.out" 2>&1
  ceph-osd --id "$id" -f >"$DIR/log/osd.out" 2>&1 &
  echo $! >"$DIR/osd.pid"
  wait_for 90 osd_up || { log "the OSD did not come up"; return 1; }

  radosgw -n client.rgw.vaultfs -f >"$DIR/log/rgw.out" 2>&1 &
  echo $! >"$DIR/rgw.pid"
  wait_for 120 answers "$PORT" || { log "the gateway did not answer"; return 1; }

  if ! radosgw-admin user info --uid vaultfs-test >/dev/null 2>&1; then
    radosgw-admin user create --uid vaultfs-test --display-name "vaultfs tests" \
      --access-key "$AK" --secret-key "$SK" >"$DIR/log/user.json"
  fi
  echo "http://127.0.0.1:$PORT" >"$URL_FILE"
  log "cluster up in $((SECONDS - t0)) s"
  echo "READY http://127.0.0.1:$PORT"
}

case $cmd in
  start)
    start || { log "start failed; logs in $DIR/log"; stop_daemons; exit 1; } ;;
  stop)
    stop_daemons
    # Only ever delete a directory this script made (or an empty one).
    if [ -e "$CEPH_CONF" ] || [ -z "$(ls -A "$DIR")" ]; then
      rm -rf "$DIR"
    else
      log "$DIR does not look like a cluster directory; left in place"
    fi ;;
  status)
    alive rgw && answers "$(sed 's/.*://' "$URL_FILE" 2>/dev/null || echo "$PORT")" ;;
  *) usage ;;
esac
