#!/usr/bin/env bash
# run_fanout.sh: one measurement of the broadcast benchmarks: one server x one scenario x N clients.
# Prints one JSON line on stdout (progress on stderr). bench/run.sh calls it in alternating rounds.
#
#   bench/fanout/run_fanout.sh SERVER SCENARIO [N]
#
#   SERVER    kestrun     build/kestrun with bench/fanout/kestrun_fanout.lua (SignalR, /runtime)
#             ws          node bench/fanout/ws_server.js (plain WebSocket)
#             socketio    node bench/fanout/sio_server.js (Engine.IO v4 over WebSocket)
#             raw         bench/fanout/raw_ceiling.c, one write() per frame per client
#             raw-batch   the same, BATCH frames per client per writev()
#   SCENARIO  fanout      N clients, broadcast as fast as allowed: deliveries/s, server CPU
#                         seconds per million deliveries (measured over the loadgen's window)
#             latency     N clients, open-loop publisher at RATE broadcasts/s: p50/p99/p99.9
#             slow        fanout plus SLOW clients that handshake and never read (with a 4 KiB
#                         receive buffer): the readers' deliveries/s and the server's RSS (end
#                         and peak). The server's kernel send buffer still absorbs up to 4 MiB
#                         (tcp_wmem max) per stalled socket before the server's own queue sees
#                         it: ~26k messages, so use N=100 (~1k msgs/s per client) and the
#                         default 30 s window to reach the server's policy
#             idle        N handshaken idle clients: (RSS after - RSS before) / N
#             connect     N connects (negotiate + handshake for kestrun): connections/s and
#                         server CPU µs per connection
#   N         clients (default 1000; up to ~19,800: one loadgen process, 20,000 fds)
#
# Environment (all optional):
#   DURATION=5        measurement window, s (idle: how long the clients stay idle; slow: 30 by
#                     default, see below)
#   WARMUP=1          s discarded after the first message
#   RATE=100          latency: broadcasts per second (deliveries/s = RATE x N); pick 10/50/80 %
#                     of the fanout scenario's msgs_per_s / N
#   SLOW=1            slow clients in the slow scenario
#   BATCH=16          frames per writev for raw-batch
#   RAW_PROTO=signalr the loadgen protocol against raw/raw-batch (signalr: the same client work
#                     as against kestrun; ws: plain frames)
#   CONCURRENCY=200   loadgen: connections being set up at once
#   PROTOCOL=json     kestrun only: the SignalR hub protocol, json or messagepack
#   TRANSPORT=websockets  kestrun only: websockets or longpolling (fanout, latency, idle,
#                     connect; not slow). The peers have no equivalent of these wire formats
#   SERVER_CPU=0 CLIENT_CPU=1   cores for the server and the load generator (taskset)
#   KESTRUN=build/kestrun       the binary under test
#   FANOUT_BIN=build/fanout     where loadgen and raw_ceiling are built (make -C bench/fanout)
#   KEEP_RUNDIR=1     keep the run directory (server and loadgen logs) and print its path
#
# Output fields: server, scenario, n, version, rate, server_cpu_s, server_cpu_pct (of one core,
# over the window), cpu_s_per_million (server CPU s per million deliveries counted by the
# clients), cpu_us_per_conn (connect), rss_base_kb, rss_kb, rss_hwm_kb, bytes_per_conn (idle),
# server_alive, server_stats (the server's GET /stats: broadcasts, skipped/failed sends; null for
# raw), then every field of the loadgen's JSON (protocol, transport, msgs_per_s, p50_us, p99_us,
# p999_us, connected, errors, loadgen_cpu_s, ...). A server_cpu_pct well under ~95 in fanout means the
# server was not the bottleneck (compare loadgen_cpu_s / seconds).
#
# Bounded: every wait has a time limit, the loadgen has its own hard timeout, and everything
# started here is killed on exit (also on Ctrl-C). Loopback only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() { sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'; }
(($# >= 2 && $# <= 3)) || { usage >&2; exit 2; }
SERVER=$1 SCENARIO=$2 N=${3:-1000}

# slow: 30 s by default. The kernel's send buffer of the stalled socket grows to tcp_wmem's
# maximum (4 MiB here, ~26k messages) before the server's own queue sees any backpressure.
[[ $SCENARIO == slow ]] && DURATION=${DURATION:-30}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
RATE=${RATE:-100}
SLOW=${SLOW:-1}
BATCH=${BATCH:-16}
RAW_PROTO=${RAW_PROTO:-signalr}
CONCURRENCY=${CONCURRENCY:-200}
PROTOCOL=${PROTOCOL:-json}
TRANSPORT=${TRANSPORT:-websockets}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
KESTRUN=${KESTRUN:-$repo/build/kestrun}
FANOUT_BIN=${FANOUT_BIN:-$repo/build/fanout}

die() { echo "run_fanout: $*" >&2; exit 2; }
log() { printf '[fanout %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
num() { [[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]] || die "$1 must be a number (got '$2')"; }
num N "$N"; num DURATION "$DURATION"; num WARMUP "$WARMUP"; num RATE "$RATE"; num SLOW "$SLOW"
num BATCH "$BATCH"; num CONCURRENCY "$CONCURRENCY"
if ! [[ $N =~ ^[0-9]+$ ]] || ((N < 1 || N > 19800)); then die "N must be 1..19800"; fi
awk -v d="$DURATION" 'BEGIN { exit !(d > 0 && d <= 600) }' || die "DURATION must be in (0, 600]"
case $SCENARIO in fanout | latency | slow | idle | connect) ;; *) die "unknown scenario '$SCENARIO'" ;; esac
((SERVER_CPU < $(nproc) && CLIENT_CPU < $(nproc))) || die "need cores $SERVER_CPU and $CLIENT_CPU"
case $PROTOCOL in json | messagepack) ;; *) die "PROTOCOL must be json or messagepack" ;; esac
case $TRANSPORT in websockets | longpolling) ;; *) die "TRANSPORT must be websockets or longpolling" ;; esac
if [[ $PROTOCOL != json || $TRANSPORT != websockets ]]; then
  [[ $SERVER == kestrun ]] || die "PROTOCOL/TRANSPORT other than json/websockets: kestrun only (the peers have no equivalent)"
  [[ $SCENARIO != slow || $TRANSPORT == websockets ]] || die "the slow scenario needs TRANSPORT=websockets"
fi

# --- build and dependencies ----------------------------------------------------------------
make -s -C "$here" OUT="$FANOUT_BIN" >&2
if [[ $SERVER == ws || $SERVER == socketio ]] && [[ ! -d $here/node_modules/ws || ! -d $here/node_modules/socket.io ]]; then
  log "npm ci in bench/fanout"
  make -s -C "$here" node_modules >&2
fi

run=$(mktemp -d "${TMPDIR:-/tmp}/fanout.XXXXXX")
spid="" lgpid=""
cleanup() {
  local rc=$?
  if [[ -n $lgpid ]]; then kill "$lgpid" 2>/dev/null || true; fi
  if [[ -n $spid ]] && kill -0 "$spid" 2>/dev/null; then
    kill -TERM "$spid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$spid" 2>/dev/null || true
  fi
  if [[ ${KEEP_RUNDIR:-0} == 1 ]]; then echo "run_fanout: run directory kept: $run" >&2; else rm -rf "$run"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the server ------------------------------------------------------------------------------
proto=signalr
case $SERVER in
  kestrun)
    [[ -x $KESTRUN ]] || die "$KESTRUN not found (build kestrun first: make build)"
    cmd=("$KESTRUN" --no-watch --log-level Warning --listen 127.0.0.1:0 --port-file "$run/port"
         "$here/kestrun_fanout.lua")
    version=$("$KESTRUN" --version 2>/dev/null | head -1 || echo kestrun) ;;
  ws)
    cmd=(node "$here/ws_server.js" --port 0 --port-file "$run/port"); proto=ws
    version="node $(node --version) ws $(node -p 'require(process.argv[1]+"/node_modules/ws/package.json").version' "$here")" ;;
  socketio)
    cmd=(node "$here/sio_server.js" --port 0 --port-file "$run/port"); proto=socketio
    version="node $(node --version) socket.io $(node -p 'require(process.argv[1]+"/node_modules/socket.io/package.json").version' "$here")" ;;
  raw)
    cmd=("$FANOUT_BIN/raw_ceiling" --port 0 --port-file "$run/port" --batch 1); proto=$RAW_PROTO
    version="raw_ceiling write() per frame" ;;
  raw-batch)
    cmd=("$FANOUT_BIN/raw_ceiling" --port 0 --port-file "$run/port" --batch "$BATCH"); proto=$RAW_PROTO
    version="raw_ceiling writev() of $BATCH frames" ;;
  *) die "unknown server '$SERVER' (kestrun, ws, socketio, raw, raw-batch)" ;;
esac

taskset -c "$SERVER_CPU" "${cmd[@]}" >"$run/server.out" 2>"$run/server.err" &
spid=$!
for _ in $(seq 100); do
  [[ -s $run/port ]] && break
  kill -0 "$spid" 2>/dev/null || { cat "$run/server.err" >&2; die "$SERVER exited at start"; }
  sleep 0.1
done
[[ -s $run/port ]] || die "$SERVER did not write its port within 10 s"
port=$(head -1 "$run/port")
log "$SERVER listening on 127.0.0.1:$port (pid $spid, cpu $SERVER_CPU); $SCENARIO, N=$N, $proto $PROTOCOL/$TRANSPORT"

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of the whole process (all threads)
  local s
  s=$(cat "/proc/$spid/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # shellcheck disable=SC2086 # split the fields on purpose
  set -- $s
  echo $((${12} + ${13}))
}
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$spid/status" 2>/dev/null || echo 0; }

sleep 0.5 # let the server settle before the baseline
rss_base=$(status_kb VmRSS)

# --- the load generator --------------------------------------------------------------------
lg=("$FANOUT_BIN/loadgen" --proto "$proto" --port "$port" -n "$N" --concurrency "$CONCURRENCY"
    --duration "$DURATION" --warmup "$WARMUP")
[[ $proto == signalr ]] && lg+=(--protocol "$PROTOCOL" --transport "$TRANSPORT")
case $SCENARIO in
  slow) lg+=(--slow "$SLOW") ;;
  idle | connect) lg+=(--conns-only) ;;
esac
[[ $SCENARIO == connect ]] && lg+=(--duration 0.1) # the last --duration wins

cpu_before_connect=$(cpu_ticks)
t_before_connect=$EPOCHREALTIME
coproc LG { exec taskset -c "$CLIENT_CPU" "${lg[@]}" 2>"$run/loadgen.err"; }
lgpid=$LG_PID
exec {lgout}<&"${LG[0]}"

# expect PREFIX TIMEOUT: read loadgen lines until one starts with PREFIX; sets $line.
expect() {
  local deadline=$((SECONDS + ${2%.*} + 1))
  while ((SECONDS <= deadline)); do
    if IFS= read -r -t "$2" -u "$lgout" line; then
      [[ $line == "$1"* ]] && return 0
      echo "run_fanout: loadgen: $line" >&2
    else
      break
    fi
  done
  echo "run_fanout: no '$1' from the loadgen within $2 s" >&2
  cat "$run/loadgen.err" >&2 || true
  return 1
}

expect READY 75 || die "clients did not connect"
cpu_ready=$(cpu_ticks)
t_ready=$EPOCHREALTIME
log "$line"
rate=0
case $SCENARIO in
  fanout | slow | latency)
    [[ $SCENARIO == latency ]] && rate=$RATE
    secs=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print w + d + 3 }')
    reply=$(curl -sS --max-time 5 "http://127.0.0.1:$port/start?seconds=$secs&rate=$rate") ||
      die "GET /start failed"
    [[ $reply == *'"started":true'* ]] || die "GET /start: $reply"
    ;;
esac

expect START 20 || die "the measurement window did not open"
cpu0=$(cpu_ticks)
t0=$EPOCHREALTIME
expect END "$(awk -v d="$DURATION" 'BEGIN { print int(d) + 10 }')" || die "the window did not close"
cpu1=$(cpu_ticks)
t1=$EPOCHREALTIME
rss=$(status_kb VmRSS)
hwm=$(status_kb VmHWM)
# The server's own counters (broadcasts, skipped or failed sends); raw_ceiling has none.
sstats=$(curl -sS --max-time 2 "http://127.0.0.1:$port/stats" 2>/dev/null || true)
[[ $sstats == '{'*'}' && $sstats != *'"error"'* ]] || sstats=null
expect '{' 10 || die "no result line from the loadgen"
result=$line
alive=true
kill -0 "$spid" 2>/dev/null || alive=false

# --- the result line -------------------------------------------------------------------------
msgs=$(sed -n 's/.*"messages":\([0-9]*\).*/\1/p' <<<"$result")
connected=$(sed -n 's/.*"connected":\([0-9]*\).*/\1/p' <<<"$result")
# (awk: the conditionals are in parentheses, else printf's ">" would redirect the output)
extra=$(awk -v tck="$clk_tck" -v c0="$cpu0" -v c1="$cpu1" -v t0="$t0" -v t1="$t1" \
  -v cb="$cpu_before_connect" -v cr="$cpu_ready" -v tb="$t_before_connect" -v tr="$t_ready" \
  -v m="${msgs:-0}" -v conn="${connected:-0}" -v rb="$rss_base" -v r="$rss" -v sc="$SCENARIO" 'BEGIN {
    if (sc == "connect") { cpu = (cr - cb) / tck; wall = tr - tb } else { cpu = (c1 - c0) / tck; wall = t1 - t0 }
    printf "\"server_cpu_s\":%.2f,\"server_cpu_pct\":%.1f", cpu, (wall > 0 ? 100 * cpu / wall : 0)
    printf ",\"cpu_s_per_million\":%s", (m > 0 ? sprintf("%.3f", cpu * 1e6 / m) : "null")
    printf ",\"cpu_us_per_conn\":%s", ((sc == "connect" && conn > 0) ? sprintf("%.1f", cpu * 1e6 / conn) : "null")
    printf ",\"bytes_per_conn\":%s", ((sc == "idle" && conn > 0) ? sprintf("%.0f", (r - rb) * 1024 / conn) : "null")
  }')
printf '{"server":"%s","scenario":"%s","n":%d,"version":"%s","rate":%s,%s,"rss_base_kb":%d,"rss_kb":%d,"rss_hwm_kb":%d,"server_alive":%s,"server_stats":%s,%s\n' \
  "$SERVER" "$SCENARIO" "$N" "$version" "$rate" "$extra" "${rss_base:-0}" "${rss:-0}" "${hwm:-0}" \
  "$alive" "$sstats" "${result#\{}"
