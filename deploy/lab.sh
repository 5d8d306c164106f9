#!/usr/bin/env bash
# The demo lab: a control plane (embedded PostgreSQL) and three host agents, each
# in its own network namespace with its own address on a fabric bridge.
#
#   deploy/lab.sh up            start the lab and wait for Ctrl-C, then remove it
#   deploy/lab.sh down          remove everything the lab made (after a crash too)
#   deploy/lab.sh clean-tests   remove namespaces/bridges left by killed test runs
#
# Layout: bridge ferrybr0 (10.76.0.1/24, the control plane's gRPC address) in the
# root namespace; namespaces ferry-h1..ferry-h3 with eth0 10.76.0.11..13, joined to
# the bridge by veth pairs. Files live in ./lab (gitignored).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
LAB=$ROOT/lab
BIN=${FERRY_BIN_DIR:-$ROOT/target/release}
HOSTS=${FERRY_LAB_HOSTS:-3}
HTTP=${FERRY_DEMO_HTTP:-127.0.0.1:8080}
FABRIC_IP=10.76.0.1
BR=ferrybr0

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

pg_stop() {
  local data=$1/pg/data
  [ -f "$data/PG_VERSION" ] || return 0
  local pgctl; pgctl=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)
  [ -n "$pgctl" ] || return 0
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$pgctl" stop -D "$(readlink -f "$data")" -m fast -w >/dev/null 2>&1 || true
  else
    "$pgctl" stop -D "$data" -m fast -w >/dev/null 2>&1 || true
  fi
}

kill_ns() {
  local ns=$1
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
}

down() {
  set +e
  for i in $(seq 1 9); do
    ip netns list 2>/dev/null | grep -qw "ferry-h$i" && kill_ns "ferry-h$i"
    # A namespace still pinned by a dying process keeps its veths; their root
    # ends go explicitly (deleting one end of a veth removes both).
    ip link del "ferry-h${i}a" 2>/dev/null
    ip link del "ferry-h${i}c" 2>/dev/null
  done
  if [ -f "$LAB/cp.pid" ]; then
    local pid; pid=$(cat "$LAB/cp.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$LAB/cp.pid"
  fi
  pg_stop "$LAB/cp"
  ip link del "$BR" 2>/dev/null
  set -e
}

clean_tests() {
  set +e
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^fy[0-9]+(h[0-9]+|c)$'); do kill_ns "$ns"; done
  for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^fy[0-9]+br$'); do
    ip link del "$br"
  done
  set -e
}

up() {
  [ "$(id -u)" = 0 ] || { echo "the lab needs root (network namespaces)" >&2; exit 1; }
  for b in ferry-control-plane ferry-agent ferryctl ferry-echo-client; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: run make build" >&2; exit 1; }
  done
  down
  rm -rf "$LAB" # every demo starts from a fresh inventory
  mkdir -p "$LAB"
  trap 'echo; log "stopping the lab"; down; log "lab removed"; exit 0' INT TERM EXIT

  log "fabric bridge $BR ($FABRIC_IP/24)"
  ip link add "$BR" type bridge
  ip addr add "$FABRIC_IP/24" dev "$BR"
  ip link set "$BR" up

  log "control plane (embedded PostgreSQL in $LAB/cp)"
  "$BIN/ferry-control-plane" --data-dir "$LAB/cp" --http-listen "$HTTP" \
    --grpc-listen "$FABRIC_IP:9090" >"$LAB/control-plane.log" 2>&1 &
  echo $! >"$LAB/cp.pid"
  for _ in $(seq 1 300); do
    curl -sf "http://$HTTP/api/v1/health" >/dev/null && break
    kill -0 "$(cat "$LAB/cp.pid")" 2>/dev/null || { tail -20 "$LAB/control-plane.log"; exit 1; }
    sleep 0.2
  done

  for i in $(seq 1 "$HOSTS"); do
    local ns=ferry-h$i ip=10.76.0.$((10 + i))
    log "host h$i: namespace $ns, address $ip"
    ip netns add "$ns"
    ip link add "ferry-h${i}a" type veth peer name "ferry-h${i}b"
    ip link set "ferry-h${i}a" master "$BR" up
    ip link set "ferry-h${i}b" netns "$ns"
    ip -n "$ns" link set "ferry-h${i}b" name eth0
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    # eth1: the uplink of the host's VM network bridge (no address of its own).
    ip link add "ferry-h${i}c" type veth peer name "ferry-h${i}d"
    ip link set "ferry-h${i}c" master "$BR" up
    ip link set "ferry-h${i}d" netns "$ns"
    ip -n "$ns" link set "ferry-h${i}d" name eth1
    ip netns exec "$ns" "$BIN/ferry-agent" --control-plane "https://$FABRIC_IP:9090" \
      --join-token "$(cat "$LAB/cp/join.token")" --ca-cert "$LAB/cp/ca.pem" \
      --name "h$i" --listen "$ip:9091" --backend qemu --state-dir "$LAB/agent-h$i" \
      --datastore "shared=$LAB/shared-ds" --datastore "local-h$i=$LAB/local-h$i" \
      --network vmnet=eth1 --metrics-listen "$ip:9102" >"$LAB/agent-h$i.log" 2>&1 &
  done

  export FERRY_URL=http://$HTTP FERRY_TOKEN_FILE=$LAB/cp/admin.token
  # Connected, and with their facts in (a host is connected from its join; its
  # first report, with CPU, memory and networks, follows a moment later).
  for _ in $(seq 1 150); do
    hosts=$("$BIN/ferryctl" hosts -o json 2>/dev/null || true)
    n=$(echo "$hosts" | grep -c '"state": "connected"' || true)
    f=$(echo "$hosts" | grep -c '"total_mib": [1-9]' || true)
    [ "$n" -ge "$HOSTS" ] && [ "$f" -ge "$HOSTS" ] && break
    sleep 0.2
  done
  echo
  "$BIN/ferryctl" hosts
  echo
  "$BIN/ferryctl" datastores

  # Two guests on two hosts, reachable from the fabric (this shell's namespace).
  local kernel=$ROOT/target/guest/vmlinuz initrd=$ROOT/target/guest/initrd.img
  for g in 1 2; do
    log "guest web-$g on h$g (10.76.0.$((100 + g)))"
    "$BIN/ferryctl" vms create "web-$g" --vcpus 1 --memory-mib 256 --host "h$g" --nic vmnet \
      --kernel "$kernel" --initrd "$initrd" --cmdline "console=ttyS0 quiet ferry.ip=10.76.0.$((100 + g))/24" >/dev/null
    "$BIN/ferryctl" vm power "web-$g" on
  done
  for g in 1 2; do
    for _ in $(seq 1 300); do
      curl -sf --max-time 1 "http://10.76.0.$((100 + g))/status" >/dev/null && break
      sleep 0.2
    done
    echo "web-$g: $(curl -s --max-time 2 "http://10.76.0.$((100 + g))/status")"
  done
  echo
  "$BIN/ferryctl" vms

  # A live migration while a client in the fabric keeps talking to the guest.
  log "live-migrating web-1 from h1 to h2 while a client sends a message every 10 ms"
  "$BIN/ferry-echo-client" 10.76.0.101:7 --interval-ms 10 >"$LAB/echo-client.txt" 2>&1 &
  local client=$!
  sleep 1
  "$BIN/ferryctl" vm migrate web-1 --to h2 || true
  sleep 1
  kill -TERM "$client" 2>/dev/null
  wait "$client" 2>/dev/null || true
  cat "$LAB/echo-client.txt"
  echo
  "$BIN/ferryctl" vms
  cat <<TXT

Ferry's lab is running.
  dashboard:   http://$HTTP/   (log in with the admin token below: cat $LAB/cp/admin.token)
  metrics:     http://$HTTP/metrics, and each agent's http://10.76.0.1N:9102/metrics
  API:         http://$HTTP/api/v1   (spec: /api/v1/openapi.json)
  admin token: $LAB/cp/admin.token
  logs:        $LAB/*.log

Guests (from this machine, which sits on the fabric):
  curl http://10.76.0.101/status              # uptime, dirty rate, integrity errors
  curl -X POST 'http://10.76.0.101/dirty?mbps=50&wss_mib=128'
  exec 3<>/dev/tcp/10.76.0.102/7; echo hello >&3; head -1 <&3   # TCP echo

Try, in another shell:
  export FERRY_URL=http://$HTTP FERRY_TOKEN_FILE=$LAB/cp/admin.token PATH=$BIN:\$PATH
  ferryctl hosts
  ferryctl host show h1
  ferryctl vms create db-1 --vcpus 1 --memory-mib 256 --host h3 --disk shared:1024 --nic vmnet
  ferryctl vms
  ferryctl vm console web-1
  ferryctl vm power web-2 reset
  ferryctl events --follow

Press Ctrl-C to stop the lab and remove every process and namespace it made.
TXT
  if [ -n "${FERRY_DEMO_EXIT:-}" ]; then exit 0; fi
  while kill -0 "$(cat "$LAB/cp.pid")" 2>/dev/null; do sleep 1; done
  echo "the control plane exited; see $LAB/control-plane.log" >&2
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  clean-tests) clean_tests ;;
  *) echo "usage: $0 up|down|clean-tests" >&2; exit 2 ;;
esac
