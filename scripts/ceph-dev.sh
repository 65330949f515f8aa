#!/usr/bin/env bash
# ceph-dev.sh: a real single-node Ceph (1 mon + 1 OSD, cephx on) on 127.0.0.1 in a private
# directory, for tests, demos and benchmarks. Not for production. Facts behind each setting:
# the "ceph.md" notes of the team (paxos interval, pid files, memstore, no mgr).
#   scripts/ceph-dev.sh start DIR [--bluestore] [--pool NAME] [--mon-port N]
#   eval "$(scripts/ceph-dev.sh env DIR)"     # CEPH_CONF, GANTRY_CEPH_{POOL,ID,KEYRING,DIR,URI}
#   scripts/ceph-dev.sh stop DIR [--keep]      # SIGKILL by PID, then rm -rf DIR (unless --keep)
#   scripts/ceph-dev.sh status DIR             # exit 0 when mon and OSD are running
# `start` prints the env lines on stdout (progress goes to stderr), so
# `eval "$(scripts/ceph-dev.sh start DIR)"` works. Readiness = a successful write with the
# restricted client key, never HEALTH_OK. A stale DIR (killed cluster, old data) is cleaned.
set -euo pipefail

PY=/usr/bin/python3  # Debian python: has python3-rados (pyenv's python3 does not)
CLIENT=gantry        # restricted client: mon 'allow r', osd 'allow rwx pool=$POOL'
MARKER=.gantry-ceph-dev
START_TIMEOUT_S=${GANTRY_CEPH_START_TIMEOUT_S:-90}

log() { echo "ceph-dev: $*" >&2; }
die() { echo "ceph-dev: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

usage() {
  sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

abs_dir() { realpath -m -- "$1"; }

# PIDs recorded for this cluster (daemon pid files + launcher record).
cluster_pids() {
  local dir=$1 f
  for f in "$dir"/run/*.pid "$dir"/pids; do
    [[ -f $f ]] && cat "$f"
  done 2>/dev/null | sort -u
}

# True when PID is alive (not a zombie) and is a ceph daemon of this DIR.
is_our_daemon() {
  local pid=$1 dir=$2 state cmd
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *ceph-* && $cmd == *"$dir/"* ]]
}

kill_cluster() {
  local dir=$1 pid left i
  for pid in $(cluster_pids "$dir"); do
    if is_our_daemon "$pid" "$dir"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for i in $(seq 1 100); do  # wait until gone or zombie (a daemonized mon is reparented)
    left=0
    for pid in $(cluster_pids "$dir"); do is_our_daemon "$pid" "$dir" && left=1; done
    [[ $left == 0 ]] && return 0
    sleep 0.05
  done
  die "daemons of $dir did not exit after SIGKILL: $(cluster_pids "$dir" | tr '\n' ' ')"
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

pick_mon_port() {
  local dir=$1 base p
  base=$(( 3300 + ($(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 200) * 2 ))
  for ((p = base; p < base + 400; p += 2)); do
    if port_free "$p" && port_free $((p + 1)); then echo "$p"; return; fi
  done
  die "no two free ports near $base for the monitor; pass --mon-port N"
}

write_conf() {
  local dir=$1 fsid=$2 port=$3 store=$4
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = 6800
ms bind port max = 7300
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.\$pid.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mon mgr mkfs grace = 86400
paxos propose interval = 0.01
paxos min wait = 0.001
[mon]
mon data = $dir/mon.\$id
mon cluster log file = $dir/log/cluster.log
[osd]
osd data = $dir/osd.\$id
keyring = $dir/osd.\$id/keyring
osd objectstore = $store
memstore device bytes = 8589934592
bluestore block create = true
bluestore block size = 21474836480
bluestore fsck on mkfs = false
osd memory target = 1073741824
EOF
}

write_keys() {
  local dir=$1 pool=$2 k=$dir/bootstrap.keyring
  ceph-authtool --create-keyring "$k" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$k" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$k" --gen-key -n osd.0 --cap mon 'allow profile osd' \
    --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
  ceph-authtool "$k" --gen-key -n "client.$CLIENT" --cap mon 'allow r' \
    --cap osd "allow rwx pool=$pool" >/dev/null
  printf '[client.admin]\n\tkey = %s\n' "$(ceph-authtool -p -n client.admin "$k")" >"$dir/keyring"
  printf '[osd.0]\n\tkey = %s\n' "$(ceph-authtool -p -n osd.0 "$k")" >"$dir/osd.0/keyring"
  printf '[client.%s]\n\tkey = %s\n' "$CLIENT" "$(ceph-authtool -p -n "client.$CLIENT" "$k")" \
    >"$dir/client.$CLIENT.keyring"
  chmod 600 "$dir"/keyring "$dir"/osd.0/keyring "$dir/client.$CLIENT.keyring" "$k"
}

# One python process sends every mon command (each `ceph` CLI call costs ~1 s of start-up).
# Phase "setup": osd new + pool; phase "ready": wait OSD up, probe writes (admin + client).
mon_py() {
  local dir=$1 phase=$2 pool=$3 uuid=$4
  timeout "$START_TIMEOUT_S" "$PY" - "$dir" "$phase" "$pool" "$uuid" "$CLIENT" <<'PYEOF'
import json, sys, time, rados
d, phase, pool, uuid, client = sys.argv[1:6]
conf = d + "/ceph.conf"
def cmd(c, **kw):
    kw["prefix"] = c
    ret, out, err = r.mon_command(json.dumps(kw), b"")
    if ret != 0:
        sys.exit("mon command %s failed: %s (%d)" % (c, err, ret))
    return out
r = rados.Rados(conffile=conf, name="client.admin",
                conf={"client_mount_timeout": "30", "rados_mon_op_timeout": "30"})
r.connect(timeout=30)
if phase == "setup":
    cmd("osd new", uuid=uuid, id=0)
    cmd("osd pool create", pool=pool, pg_num=8, pgp_num=8)
    cmd("osd pool application enable", pool=pool, app="rados")
    sys.exit(0)
deadline = time.time() + 80
while True:
    osds = json.loads(cmd("osd dump", format="json"))["osds"]
    if osds and osds[0]["up"] == 1:
        break
    if time.time() > deadline:
        sys.exit("osd.0 did not come up; see %s/log/osd.0.log" % d)
    time.sleep(0.05)
r.wait_for_latest_osdmap()
io = r.open_ioctx(pool)
io.write_full("ceph-dev-probe-admin", b"ok")
io.close(); r.shutdown()
c = rados.Rados(conffile=conf, name="client." + client,
                conf={"keyring": d + "/client." + client + ".keyring",
                      "client_mount_timeout": "30", "rados_osd_op_timeout": "30"})
c.connect(timeout=30)
io = c.open_ioctx(pool)
io.write_full("ceph-dev-probe-client", b"ok")
assert io.read("ceph-dev-probe-client") == b"ok"
io.remove_object("ceph-dev-probe-client")
io.close(); c.shutdown()
PYEOF
}

print_env() {
  local dir=$1 pool
  [[ -f $dir/ceph.conf && -f $dir/pool ]] || die "$dir holds no ceph-dev cluster (start it first)"
  pool=$(cat "$dir/pool")
  local keyring=$dir/client.$CLIENT.keyring
  cat <<EOF
export CEPH_CONF=$dir/ceph.conf
export GANTRY_CEPH_POOL=$pool
export GANTRY_CEPH_ID=$CLIENT
export GANTRY_CEPH_KEYRING=$keyring
export GANTRY_CEPH_DIR=$dir
export GANTRY_CEPH_URI='ceph://$pool/?conf=$dir/ceph.conf&id=$CLIENT&keyring=$keyring'
EOF
}

cmd_start() {
  local dir=$1; shift
  local store=memstore pool=gantry port=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --bluestore) store=bluestore ;;
      --memstore) store=memstore ;;
      --pool) pool=${2:?--pool needs a name}; shift ;;
      --mon-port) port=${2:?--mon-port needs a number}; shift ;;
      *) die "unknown option '$1' for start (known: --bluestore --pool NAME --mon-port N)" ;;
    esac
    shift
  done
  for tool in ceph-mon ceph-osd ceph-authtool monmaptool uuidgen ss; do
    command -v "$tool" >/dev/null || die "$tool not found; run scripts/setup.sh (Debian ceph-mon ceph-osd ceph-common)"
  done
  "$PY" -c 'import rados' 2>/dev/null || die "$PY cannot import rados; apt-get install python3-rados"
  local t0; t0=$(now)
  if [[ -e $dir ]]; then
    if [[ -n $(ls -A "$dir" 2>/dev/null) && ! -e $dir/$MARKER ]]; then
      die "$dir exists, is not empty and is not a ceph-dev directory; choose another DIR"
    fi
    kill_cluster "$dir"
    rm -rf "$dir"
  fi
  mkdir -p "$dir"/{run,log,crash,mon.a,osd.0}
  touch "$dir/$MARKER"
  echo "$pool" >"$dir/pool"
  [[ -n $port ]] || port=$(pick_mon_port "$dir")
  local fsid osd_uuid; fsid=$(uuidgen); osd_uuid=$(uuidgen)
  write_conf "$dir" "$fsid" "$port" "$store"
  write_keys "$dir" "$pool"
  local c=$dir/ceph.conf
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]" \
    "$dir/monmap" >/dev/null
  ceph-mon -c "$c" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/bootstrap.keyring" \
    >>"$dir/log/setup.log" 2>&1 || die "ceph-mon --mkfs failed; see $dir/log/"
  ceph-osd -c "$c" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/setup.log" 2>&1 &
  local mkfs_pid=$!
  ceph-mon -c "$c" -i a >>"$dir/log/setup.log" 2>&1 || die "ceph-mon failed to start; see $dir/log/mon.a.log"
  mon_py "$dir" setup "$pool" "$osd_uuid" || { kill_cluster "$dir"; die "mon setup failed; see $dir/log/"; }
  wait "$mkfs_pid" || { kill_cluster "$dir"; die "ceph-osd --mkfs failed; see $dir/log/osd.0.log"; }
  setsid ceph-osd -c "$c" -f -i 0 </dev/null >>"$dir/log/osd.0.stdout" 2>&1 &
  echo $! >>"$dir/pids"
  mon_py "$dir" ready "$pool" "$osd_uuid" || { kill_cluster "$dir"; die "cluster not ready; see $dir/log/"; }
  log "ready in $(elapsed "$t0") s: $store, mon 127.0.0.1:$port, pool $pool, client.$CLIENT ($dir)"
  print_env "$dir"
  local keyring=$dir/client.$CLIENT.keyring
  echo "# dataset URI: ceph://$pool/datasets/NAME?conf=$c&id=$CLIENT&keyring=$keyring"
}

cmd_stop() {
  local dir=$1 keep=${2:-}
  [[ -e $dir ]] || { log "$dir does not exist: nothing to stop"; return 0; }
  [[ -e $dir/$MARKER ]] || die "$dir is not a ceph-dev directory; refusing to touch it"
  kill_cluster "$dir"
  if [[ $keep == --keep ]]; then log "stopped; kept $dir"; else rm -rf "$dir"; log "stopped; removed $dir"; fi
}

cmd_status() {
  local dir=$1 pid n=0
  for pid in $(cluster_pids "$dir"); do is_our_daemon "$pid" "$dir" && n=$((n + 1)); done
  if [[ $n -ge 2 ]]; then echo "running ($n daemons) in $dir"; else echo "not running in $dir"; return 1; fi
}

[[ $# -ge 2 ]] || usage
action=$1
dir=$(abs_dir "$2")
shift 2
case $action in
  start) cmd_start "$dir" "$@" ;;
  stop) cmd_stop "$dir" "$@" ;;
  env) print_env "$dir" ;;
  status) cmd_status "$dir" ;;
  *) usage ;;
esac
