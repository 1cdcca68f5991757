#!/usr/bin/env bash
# A Ray "cluster" on this machine: a head and N worker nodes listening on 127.0.0.1 only,
# token-authenticated, no dashboard. It prints the address to pass as --address, and how to stop
# exactly these processes (by their process ids; never `ray stop`, which would stop every Ray on
# the machine).
#
#   cluster/local.sh [WORKERS=2] [CPUS_PER_WORKER=1]
#   cluster/local.sh stop
set -euo pipefail
state=${DFU_LOCAL_CLUSTER:-/tmp/dfu-local-cluster}
port=${DFU_LOCAL_PORT:-6390}

if [ "${1:-}" = stop ]; then
  # The recorded processes and their children (agents, workers), TERM first, then KILL.
  pids=$(cat "$state/pids")
  children=$(for pid in $pids; do pgrep -P "$pid" || true; done | tr '\n' ' ')
  alive() { for pid in $pids $children; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done; true; }
  settle() { for _ in $(seq 1 20); do [ -z "$(alive)" ] && return; sleep 0.5; done; }
  kill $pids $children 2>/dev/null || true
  settle
  left=$(alive)
  [ -z "$left" ] || { kill -9 $left 2>/dev/null || true; settle; }
  echo "stopped: $pids $children"
  exit 0
fi
workers=${1:-2}
cpus=${2:-1}
mkdir -p "$state"
token="$state/auth_token"
[ -s "$token" ] || python3 -c "import secrets; print(secrets.token_hex(32))" > "$token"
chmod 600 "$token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token"
failed() {
  echo "cluster/local.sh: the $1 node did not start; the end of $state/$1.log:" >&2
  tail -n 3 "$state/$1.log" >&2
  exit 1
}

# Single-machine mode keeps the head's address 127.0.0.1, so every server it starts listens on
# loopback only; worker nodes join through a `ray start` that keeps that address too.
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --node-ip-address=127.0.0.1 --port="$port" \
  --num-cpus=0 --temp-dir="$state/ray" --resources='{"driver": 1}' --include-dashboard=false \
  --disable-usage-stats >"$state/head.log" 2>&1 || failed head
for i in $(seq 1 "$workers"); do
  python -m dfu_train.sweep.local_ray worker --address="127.0.0.1:$port" --num-cpus="$cpus" \
    --disable-usage-stats >"$state/worker-$i.log" 2>&1 || failed "worker-$i"
done
sleep 2
# Every process of this cluster names its own temp folder on its command line (and the worker
# processes are children of these): nothing of another Ray on the machine matches.
mine=$(pgrep -d ' ' -f "$state/ray" || true)
echo "$mine" > "$state/pids"
echo "address: 127.0.0.1:$port  (head: no CPUs; $workers workers x $cpus CPU)"
echo "use:     RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$token dfu sweep run FILE --address 127.0.0.1:$port"
echo "         (other Ray clients also need RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 to reach 127.0.0.1)"
echo "stop:    cluster/local.sh stop    # these processes and their children only: $mine"
