#!/usr/bin/env bash
# run_backplane.sh: fan-out through the Redis backplane, compared with one server.
# Prints one JSON line on stdout (progress on stderr).
#
#   bench/fanout/run_backplane.sh MODE [N]
#
#   MODE  cluster   redis-server + 3 kestrun servers (--redis), N clients on each (one loadgen per
#                   server); the broadcast loop runs on server 1, so 2/3 of the deliveries cross
#                   Redis: published once, framed once per server
#         single    1 kestrun server, 3 x N clients (one loadgen), the same broadcast loop
#   N     clients per server in cluster mode (default 1000)
#
# Environment: RATE (broadcasts/s; 0 = as fast as allowed, default 20), DURATION (5 s), WARMUP (1 s),
# KESTRUN (build/kestrun), FANOUT_BIN (build/fanout: make -C bench/fanout), KEEP_RUNDIR=1.
# The broadcast is bench/fanout/kestrun_fanout.lua's kr.send_event("tick", {n, t}); the loadgens
# measure publish-to-receive latency from t (every process on this machine shares the clock).
# No CPU pinning: three servers, Redis and the loadgens share the machine's cores, which is the
# point of the comparison (the same work, one process vs three).
#
# Output: {"mode", "servers", "clients", "rate", "deliveries_per_s" (sum over the loadgens),
#          "p50_us"/"p99_us" (the worst loadgen's), "per_server": [loadgen JSON...],
#          "server_cpu_s" (all kestrun processes over the window), "redis_cpu_s"}
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
MODE=${1:?usage: run_backplane.sh cluster|single [N]}
N=${2:-1000}
RATE=${RATE:-20}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
KESTRUN=${KESTRUN:-$repo/build/kestrun}
FANOUT_BIN=${FANOUT_BIN:-$repo/build/fanout}

log() { echo "run_backplane: $*" >&2; }
die() { log "$*"; exit 1; }

[[ -x $KESTRUN ]] || die "$KESTRUN not found (build kestrun first)"
[[ -x $FANOUT_BIN/loadgen ]] || make -s -C "$here" >&2
command -v redis-server >/dev/null || die "redis-server not installed (apt-get install redis-server)"

run=$(mktemp -d "${TMPDIR:-/tmp}/backplane.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [[ ${KEEP_RUNDIR:-0} == 1 ]]; then log "run directory kept: $run"; else rm -rf "$run"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_s() { # utime + stime of one process, in seconds
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  set -- $s
  awk -v t=$((${12} + ${13})) -v h="$(getconf CLK_TCK)" 'BEGIN { print t / h }'
}

case $MODE in
  cluster) nservers=3; per=$N ;;
  single) nservers=1; per=$((3 * N)) ;;
  *) die "unknown mode '$MODE' (cluster, single)" ;;
esac

args=()
redis_pid=""
if [[ $MODE == cluster ]]; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$run/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break
    sleep 0.1
  done
  args=(--redis "redis://127.0.0.1:$rport")
fi

ports=() spids=()
for i in $(seq "$nservers"); do
  "$KESTRUN" --no-watch --log-level Warning --listen 127.0.0.1:0 --port-file "$run/port$i" \
    "${args[@]}" "$here/kestrun_fanout.lua" >"$run/server$i.out" 2>"$run/server$i.err" &
  spids+=($!)
  pids+=($!)
done
for i in $(seq "$nservers"); do
  for _ in $(seq 100); do [[ -s $run/port$i ]] && break; sleep 0.1; done
  [[ -s $run/port$i ]] || die "server $i did not start: $(cat "$run/server$i.err")"
  ports+=("$(head -1 "$run/port$i")")
done
sleep 1 # the backplane connects in the background
log "$MODE: ${#ports[@]} server(s) ${ports[*]}, $per clients each, rate $RATE"

for i in $(seq "$nservers"); do
  "$FANOUT_BIN/loadgen" --proto signalr --port "${ports[$((i - 1))]}" -n "$per" --concurrency 200 \
    --duration "$DURATION" --warmup "$WARMUP" >"$run/lg$i.out" 2>"$run/lg$i.err" &
  pids+=($!)
done
for i in $(seq "$nservers"); do
  for _ in $(seq 900); do grep -q '^READY' "$run/lg$i.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^READY' "$run/lg$i.out" || die "loadgen $i: clients did not connect: $(tail -3 "$run/lg$i.err")"
done
secs=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print w + d + 3 }')
reply=$(curl -sS --max-time 5 "http://127.0.0.1:${ports[0]}/start?seconds=$secs&rate=$RATE")
[[ $reply == *'"started":true'* ]] || die "GET /start: $reply"
for i in $(seq "$nservers"); do
  for _ in $(seq 200); do grep -q '^START' "$run/lg$i.out" 2>/dev/null && break; sleep 0.05; done
done
c0=0; for p in "${spids[@]}"; do c0=$(awk -v a="$c0" -v b="$(cpu_s "$p")" 'BEGIN { print a + b }'); done
r0=0; [[ -n $redis_pid ]] && r0=$(cpu_s "$redis_pid")
for i in $(seq "$nservers"); do
  for _ in $(seq $((DURATION * 10 + 150))); do grep -q '^END' "$run/lg$i.out" 2>/dev/null && break; sleep 0.1; done
done
c1=0; for p in "${spids[@]}"; do c1=$(awk -v a="$c1" -v b="$(cpu_s "$p")" 'BEGIN { print a + b }'); done
r1=0; [[ -n $redis_pid ]] && r1=$(cpu_s "$redis_pid")
results=()
for i in $(seq "$nservers"); do
  for _ in $(seq 100); do grep -q '^{' "$run/lg$i.out" 2>/dev/null && break; sleep 0.1; done
  line=$(grep '^{' "$run/lg$i.out" | tail -1)
  [[ -n $line ]] || die "loadgen $i: no result"
  results+=("$line")
done
for p in "${spids[@]}"; do kill -0 "$p" 2>/dev/null || die "a server died: $(cat "$run"/server*.err)"; done

joined=$(IFS=,; echo "${results[*]}")
python3 - "$MODE" "$nservers" "$per" "$RATE" "$c0" "$c1" "$r0" "$r1" "[$joined]" <<'EOF'
import json, sys
mode, ns, per, rate, c0, c1, r0, r1, res = sys.argv[1:]
res = json.loads(res)
print(json.dumps({
    "mode": mode, "servers": int(ns), "clients": int(ns) * int(per), "rate": float(rate),
    "deliveries_per_s": round(sum(r.get("msgs_per_s", 0) for r in res)),
    "p50_us": max(r.get("p50_us", 0) for r in res),
    "p99_us": max(r.get("p99_us", 0) for r in res),
    "server_cpu_s": round(float(c1) - float(c0), 2),
    "redis_cpu_s": round(float(r1) - float(r0), 2),
    "per_server": res,
}))
EOF
