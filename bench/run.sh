#!/usr/bin/env bash
# bench/run.sh: run the benchmarks side by side with their peers and write docs/benchmarks.md.
#
#   bench/run.sh            every scenario (routes, then fanout, then fanout-wire)
#   bench/run.sh routes     only the HTTP route scenario (kestrun vs nginx + lua-nginx-module)
#   bench/run.sh fanout     only the SignalR broadcast scenarios (kestrun vs Node ws and socket.io):
#                           fan-out, idle memory, connect rate, latency, slow consumer
#   bench/run.sh fanout-wire  kestrun's fan-out per wire format at N = WIRE_N: WebSocket JSON,
#                           WebSocket MessagePack, long polling JSON, long polling MessagePack
#                           (kestrun only: the ws and socket.io peers have no such formats)
#
# Environment (all optional):
#   ROUNDS=5         rounds per scenario (each round measures every route on both servers)
#   DURATION=5       seconds of each wrk measurement
#   WARMUP=1         seconds of the wrk warm-up before each measurement (discarded)
#   CONNS=50         wrk connections (-c); wrk always runs one thread (-t1)
#   SAT_MIN=90       a measurement in which neither the server nor wrk used this % of its core was
#                    disturbed by other work: it is repeated, at most RETRIES=2 times (the best is kept)
#   SERVER_CPU=0     core the server is pinned to; CLIENT_CPU=1 core wrk is pinned to
#   NICE=0           nice value for the server and wrk (e.g. -10, as root, on a busy shared machine:
#                    less disturbance, but the other work there slows down meanwhile)
#   KESTRUN=...      the binary under test (default: build/kestrun, built when missing; run.sh runs
#                    a copy of it, so a rebuild during the run changes nothing)
#   SKIP_DEPS=1      do not call scripts/deps.sh bench
#   KEEP_RUNDIR=1    keep the temporary run directory (server logs, raw wrk outputs)
#   OUT=...          where to write the report (default: docs/benchmarks.md)
#   RESULTS_DIR=...  where each section's text is kept (default: bench/results/, git-ignored); a
#                    section not run this time is taken from there, else from the previous report
# fanout only (each measurement is one bench/fanout/run_fanout.sh call):
#   FANOUT_ROUNDS=3  rounds of the fan-out and latency measurements (kestrun ws socketio, then the
#                    reverse order the next round)
#   FANOUT_N="100 1000"   client counts of the fan-out scenario (e.g. "100 1000 10000")
#   RATES="10 50"    broadcasts/s of the open-loop latency scenario (N = LAT_N=1000)
#   IDLE_N=10000     clients of the idle-memory and connect-rate scenarios (one round each)
#   SLOW_N=100 SLOW_DURATION=30   slow-consumer scenario: N readers + 1 client that never reads, and
#                    the same fan-out without it, SLOW_DURATION s each (SLOW_SERVERS="kestrun ws socketio")
#   FANOUT_RETRIES=1 a fan-out measurement where neither the server nor the loadgen used SAT_MIN % of
#                    its core is repeated at most this many times
# fanout-wire only (FANOUT_ROUNDS rounds, the four wire formats alternating, reversed each round):
#   WIRE_N=1000      clients
#   WIRE_RATE=50     broadcasts/s of an open-loop latency measurement per wire format (0: none)
#
# Method (see bench/README.md): the server runs on SERVER_CPU, wrk on CLIENT_CPU, loopback only.
# The two servers alternate (A B, then B A the next round), each measurement gets a fresh server
# process and a warm-up; the report gives medians over the rounds and the median of the per-round
# ratios. Every loop is bounded in count and time and every server started is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
DURATION=${DURATION%s}
WARMUP=${WARMUP:-1}
WARMUP=${WARMUP%s}
CONNS=${CONNS:-50}
RETRIES=${RETRIES:-2}
SAT_MIN=${SAT_MIN:-90}
NICE=${NICE:-0}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
KESTRUN=${KESTRUN:-$repo/build/kestrun}
OUT=${OUT:-$repo/docs/benchmarks.md}

for v in ROUNDS DURATION WARMUP CONNS SERVER_CPU CLIENT_CPU RETRIES SAT_MIN; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "run.sh: $v must be a whole number (got '${!v}')" >&2; exit 2; }
done
[[ $NICE =~ ^-?[0-9]+$ ]] && ((NICE >= -20 && NICE <= 19)) || { echo "run.sh: NICE must be -20..19" >&2; exit 2; }
((ROUNDS >= 1 && ROUNDS <= 100)) || { echo "run.sh: ROUNDS must be 1..100" >&2; exit 2; }
((DURATION >= 1 && DURATION <= 600)) || { echo "run.sh: DURATION must be 1..600 s" >&2; exit 2; }
((WARMUP <= 60)) || { echo "run.sh: WARMUP must be 0..60 s" >&2; exit 2; }
((RETRIES <= 5)) || { echo "run.sh: RETRIES must be 0..5" >&2; exit 2; }

all_scenarios=(routes fanout fanout-wire)
scenarios=()
if (($# == 0)); then
  scenarios=("${all_scenarios[@]}")
else
  for s in "$@"; do
    case "$s" in
      routes | fanout | fanout-wire) scenarios+=("$s") ;;
      -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
      *) echo "run.sh: unknown scenario '$s' (known: ${all_scenarios[*]})" >&2; exit 2 ;;
    esac
  done
fi

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- dependencies and build ------------------------------------------------------------------
if [[ ${SKIP_DEPS:-0} != 1 && -x $repo/scripts/deps.sh ]]; then
  log "scripts/deps.sh bench"
  "$repo/scripts/deps.sh" bench
fi
want() { local s; for s in "${scenarios[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }
for cmd in taskset curl ss pgrep awk; do
  command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found"
done
if want routes; then
  for cmd in nginx wrk; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found (scripts/deps.sh bench installs the peers)"
  done
  for pkg in libnginx-mod-http-lua lua-cjson; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      die "Debian package '$pkg' is missing (apt-get install $pkg)"
  done
fi
if want fanout-wire; then
  for cmd in python3 make cc; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found (the fan-out scenarios need it)"
  done
fi
if want fanout; then
  for cmd in node npm python3 make cc; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found (the fan-out scenarios need it)"
  done
fi
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) || die "need cores $SERVER_CPU and $CLIENT_CPU, this machine has $ncpu"
((SERVER_CPU != CLIENT_CPU)) || log "warning: server and wrk pinned to the same core"

if [[ ! -x $KESTRUN ]]; then
  if [[ $KESTRUN != "$repo/build/kestrun" ]]; then die "KESTRUN=$KESTRUN is not executable"; fi
  if [[ -f $repo/Makefile ]] && make -C "$repo" -n build >/dev/null 2>&1; then
    log "build/kestrun missing: make build"
    make -C "$repo" build
  else
    log "build/kestrun missing: cmake Release build"
    cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$repo/build" -j2
  fi
  [[ -x $KESTRUN ]] || die "the build did not produce $KESTRUN"
fi
"$KESTRUN" --version >/dev/null 2>&1 || die "$KESTRUN --version fails"

# --- run directory, process bookkeeping ------------------------------------------------------
rundir=$(mktemp -d /tmp/kr-bench.XXXXXX)
PIDS=()
CLK_TCK=$(getconf CLK_TCK)
# Run a private copy of the binary: a rebuild of build/ during the run must neither break it nor
# mix two versions in one report.
cp "$KESTRUN" "$rundir/kestrun"
KESTRUN_ORIG=$KESTRUN
KESTRUN="$rundir/kestrun"

proc_alive() { # pid: running (not gone, not a zombie)
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $st && $st != Z* ]]
}

stop_pid() { # pid: TERM, wait up to 5 s, then KILL (with its children)
  local pid=$1 kids i
  kids=$(pgrep -P "$pid" 2>/dev/null || true)
  if proc_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
    if proc_alive "$pid"; then
      log "pid $pid ignored SIGTERM for 5 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  for k in $kids; do
    proc_alive "$k" && kill -KILL "$k" 2>/dev/null || true
  done
  wait "$pid" 2>/dev/null || true
  local rest=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || rest+=("$p"); done
  PIDS=("${rest[@]}")
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [[ ${KEEP_RUNDIR:-0} == 1 ]]; then
    log "run directory kept: $rundir"
  else
    rm -rf "$rundir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cpu_ticks() { # pid: utime+stime of the process and its direct children, in clock ticks
  local total=0 p s f
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -ra f <<<"$s"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

free_port() { # a free TCP port on 127.0.0.1 (bounded number of tries)
  local i p
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if [[ -z $(ss -Htln "sport = :$p" 2>/dev/null) ]]; then echo "$p"; return 0; fi
  done
  return 1
}

wait_http() { # pid port: until the port answers HTTP (any status), at most 10 s
  local pid=$1 port=$2 i
  for ((i = 0; i < 100; i++)); do
    proc_alive "$pid" || return 1
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then return 0; fi
    sleep 0.1
  done
  return 1
}

SERVER_PID="" SERVER_PORT="" SERVER_LOG=""

start_kestrun() { # tag
  local tag=$1 portfile i
  portfile="$rundir/$tag.port"
  SERVER_LOG="$rundir/$tag.log"
  rm -f "$portfile"
  nice -n "$NICE" taskset -c "$SERVER_CPU" "$KESTRUN" --listen 127.0.0.1:0 --port-file "$portfile" --log-level Warning \
    "$here/routes.lua" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for ((i = 0; i < 100; i++)); do
    [[ -s $portfile ]] && break
    proc_alive "$SERVER_PID" || break
    sleep 0.1
  done
  if [[ ! -s $portfile ]]; then
    log "kestrun did not write its port file within 10 s; its output:"
    tail -n 20 "$SERVER_LOG" >&2 || true
    return 1
  fi
  SERVER_PORT=$(head -n 1 "$portfile" | grep -oE '[0-9]+' | tail -n 1)
  [[ -n $SERVER_PORT ]] || { log "kestrun port file has no port: $(head -c 200 "$portfile")"; return 1; }
  wait_http "$SERVER_PID" "$SERVER_PORT" || { log "kestrun does not answer on port $SERVER_PORT"; tail -n 20 "$SERVER_LOG" >&2; return 1; }
}

start_nginx() { # tag
  local tag=$1 dir attempt
  dir="$rundir/$tag"
  mkdir -p "$dir/logs" "$dir/tmp"
  SERVER_LOG="$dir/logs/error.log"
  for ((attempt = 0; attempt < 5; attempt++)); do
    SERVER_PORT=$(free_port) || { log "no free port found"; return 1; }
    sed "s/__PORT__/$SERVER_PORT/" "$here/nginx.conf" >"$dir/nginx.conf"
    nice -n "$NICE" taskset -c "$SERVER_CPU" nginx -p "$dir/" -c nginx.conf -e stderr >"$dir/stderr.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    if wait_http "$SERVER_PID" "$SERVER_PORT"; then return 0; fi
    log "nginx did not start on port $SERVER_PORT (attempt $((attempt + 1))):"
    tail -n 5 "$dir/stderr.log" "$SERVER_LOG" >&2 2>/dev/null || true
    stop_pid "$SERVER_PID"
  done
  return 1
}

# wrk output -> "rps p99_ms requests non2xx socket_errors" (p99 converted from us/ms/s to ms)
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /m$/)  return substr(v, 1, length(v) - 1) * 60000
      if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
      return v + 0
    }
    /^Requests\/sec:/          { rps = $2 }
    $1 == "99%"                { p99 = ms($2) }
    /requests in/              { reqs = $1 }
    /Non-2xx or 3xx responses/ { non2xx = $NF }
    /Socket errors:/           { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    END {
      if (rps == "") rps = 0
      if (p99 == "") p99 = -1
      printf "%s %.3f %d %d %d\n", rps, p99, reqs + 0, non2xx + 0, errs + 0
    }'
}

median() { # numbers on stdin -> median (empty when none)
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

NOTES=()
note() { NOTES+=("$*"); log "note: $*"; }

# --- scenario: routes ------------------------------------------------------------------------
ROUTES=("/hello" "/api/item/42")
declare -A EXPECT_BODY=(
  ["/hello"]='Hello, World!'
  ["/api/item/42"]='{"id":42,"name":"item 42","price":9.99,"tags":["a","b"]}'
)
declare -A EXPECT_TYPE=(
  ["/hello"]='text/plain'
  ["/api/item/42"]='application/json'
)
declare -A RESP_INFO=() # "server route" -> "header bytes/body bytes"
RESULTS="$rundir/routes.tsv"

json_canon() { # JSON on stdin -> canonical form (sorted keys) when python3 is there, else as is
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys
try: print(json.dumps(json.loads(sys.stdin.read()), sort_keys=True, separators=(",",":")))
except Exception: print("<not JSON>")' 2>/dev/null || cat
  else
    cat
  fi
}

check_response() { # server route port: status, type, body, keep-alive; notes any difference
  local server=$1 route=$2 port=$3 url info code type hsize bsize body conns
  url="http://127.0.0.1:$port$route"
  info=$(curl -s --max-time 5 -o "$rundir/body" -w '%{http_code}\t%{content_type}\t%{size_header}\t%{size_download}' "$url") ||
    { note "$server $route: curl failed ($info)"; return 0; }
  IFS=$'\t' read -r code type hsize bsize <<<"$info"
  body=$(cat "$rundir/body")
  RESP_INFO["$server $route"]="$hsize + $bsize"
  [[ $code == 200 ]] || note "$server GET $route: status $code (expected 200), body: $(head -c 200 "$rundir/body")"
  [[ $type == "${EXPECT_TYPE[$route]}"* ]] || note "$server GET $route: Content-Type '$type' (expected ${EXPECT_TYPE[$route]}...)"
  if [[ ${EXPECT_TYPE[$route]} == application/json ]]; then
    [[ "$(json_canon <<<"$body")" == "$(json_canon <<<"${EXPECT_BODY[$route]}")" ]] ||
      note "$server GET $route: body '$(head -c 200 <<<"$body")' differs from '${EXPECT_BODY[$route]}'"
  else
    [[ $body == "${EXPECT_BODY[$route]}" ]] ||
      note "$server GET $route: body '$(head -c 200 <<<"$body")' differs from '${EXPECT_BODY[$route]}'"
  fi
  # keep-alive: two requests in one curl run should make exactly one connection
  conns=$(curl -s --max-time 5 -o /dev/null -o /dev/null -w '%{num_connects}\n' "$url" "$url" | awk '{ s += $1 } END { print s + 0 }')
  [[ $conns == 1 ]] || note "$server GET $route: keep-alive not honoured ($conns connections for 2 requests)"
}

children_ticks() { # file written by `times` -> CPU ticks of the finished children of this shell (2nd line)
  awk -v hz="$CLK_TCK" 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] }
    printf "%.0f\n", s * hz }' "$1"
}

# One measurement: fresh server, response check (first time), warm-up, wrk, stop. Sets LAST_LINE
# (a RESULTS line) and LAST_SAT (saturation: the larger of the server's and wrk's CPU use, % of a core).
measure_once() { # server round route attempt
  local server=$1 round=$2 route=$3 attempt=$4 tag raw t0 t1 c0 c1 w0 w1 parsed cpu wcpu uspr
  LAST_SAT=0
  tag="$server-r$round-$(tr -c 'a-z0-9' '_' <<<"$route")a$attempt"
  if [[ $server == kestrun ]]; then
    if ! start_kestrun "$tag"; then
      note "round $round $route: kestrun failed to start"
      stop_pid "$SERVER_PID"
      LAST_LINE="$server $round $route 0 -1 -1 0 0 0 -1 -1 -1"
      return 0
    fi
  else
    start_nginx "$tag" || die "nginx failed to start (see above)"
  fi
  if [[ -z ${CHECKED["$server $route"]:-} ]]; then
    check_response "$server" "$route" "$SERVER_PORT"
    CHECKED["$server $route"]=1
  fi
  local url="http://127.0.0.1:$SERVER_PORT$route"
  if ((WARMUP > 0)); then
    timeout $((WARMUP + 30)) nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >"$rundir/$tag.warmup" 2>&1 || true
  fi
  raw="$rundir/$tag.wrk"
  times >"$rundir/times.0" # in this shell (not in a $(...) subshell): wrk will be its child
  c0=$(cpu_ticks "$SERVER_PID")
  t0=$(date +%s.%N)
  timeout $((DURATION + 30)) nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$raw" 2>&1 || true
  t1=$(date +%s.%N)
  times >"$rundir/times.1"
  c1=$(cpu_ticks "$SERVER_PID")
  w0=$(children_ticks "$rundir/times.0")
  w1=$(children_ticks "$rundir/times.1")
  cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (b - a) / hz / (t1 - t0) * 100 }')
  wcpu=$(awk -v a="$w0" -v b="$w1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (b - a) / hz / (t1 - t0) * 100 }')
  # In a closed loop on two otherwise idle cores, the server or wrk keeps its core busy: when neither
  # does, other work on the machine (or the hypervisor) took the time.
  LAST_SAT=$((cpu > wcpu ? cpu : wcpu))
  parsed=$(parse_wrk <"$raw")
  if ! proc_alive "$SERVER_PID"; then
    note "round $round $route: $server died during the measurement; last output: $(tail -n 5 "$SERVER_LOG" 2>/dev/null | tr '\n' ' ')"
  fi
  stop_pid "$SERVER_PID"
  if [[ $server == kestrun && -s $SERVER_LOG ]] && grep -qiE 'error|fatal|assert|sanitizer|segmentation' "$SERVER_LOG"; then
    note "kestrun logged during $route: $(grep -iE 'error|fatal|assert|sanitizer|segmentation' "$SERVER_LOG" | head -n 3 | tr '\n' ' ' | head -c 400)"
  fi
  local rps p99 reqs non2xx errs
  read -r rps p99 reqs non2xx errs <<<"$parsed"
  uspr=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / hz * 1e6 / n; else print -1 }')
  ((non2xx == 0)) || note "round $round $route: $server answered $non2xx of $reqs requests with a non-2xx/3xx status"
  ((errs == 0)) || note "round $round $route: wrk saw $errs socket errors against $server ($(grep -m1 'Socket errors' "$raw" | sed 's/^ *//'))"
  [[ $rps != 0 ]] || note "round $round $route: wrk against $server measured nothing: $(head -c 300 "$raw" | tr '\n' ' ')"
  log "round $round $route $server: $rps req/s, p99 $p99 ms, server CPU $cpu% ($uspr us/request), wrk CPU $wcpu%"
  LAST_LINE="$server $round $route $rps $p99 $cpu $reqs $non2xx $errs $uspr $wcpu $LAST_SAT"
}

# A measurement in which neither the server nor wrk kept its core busy (saturation below SAT_MIN %)
# was disturbed by other work on the machine: it is repeated, at most RETRIES times, and the most
# saturated attempt is kept.
measure() { # server round route
  local server=$1 round=$2 route=$3 attempt best_line="" best_sat=-1
  for ((attempt = 0; attempt <= RETRIES; attempt++)); do
    measure_once "$server" "$round" "$route" "$attempt"
    if ((LAST_SAT > best_sat)); then best_sat=$LAST_SAT; best_line=$LAST_LINE; fi
    if ((LAST_SAT >= SAT_MIN)); then break; fi
    if ((attempt < RETRIES)); then
      log "round $round $route $server: neither server nor wrk was busy (${LAST_SAT}% < ${SAT_MIN}%): measuring again in $((5 * (attempt + 1))) s"
      sleep $((5 * (attempt + 1))) # give a passing burst of other work time to end
    fi
  done
  if ((best_sat < SAT_MIN)); then
    note "round $round $route $server: still disturbed after $RETRIES retries (server or wrk busy at most ${best_sat}% of its core)"
  fi
  echo "$best_line" >>"$RESULTS"
}

declare -A CHECKED=()

run_routes() {
  : >"$RESULTS"
  local round route order
  log "routes: $ROUNDS rounds x ${#ROUTES[@]} routes x 2 servers, ${DURATION}s each (+${WARMUP}s warm-up), wrk -t1 -c$CONNS"
  for ((round = 1; round <= ROUNDS; round++)); do
    for route in "${ROUTES[@]}"; do
      if ((round % 2)); then order=(kestrun nginx); else order=(nginx kestrun); fi
      measure "${order[0]}" "$round" "$route"
      measure "${order[1]}" "$round" "$route"
    done
  done
}

# RESULTS columns: 1 server, 2 round, 3 route, 4 req/s, 5 p99 ms, 6 server CPU %, 7 requests,
# 8 non-2xx, 9 socket errors, 10 server CPU us per request (-1 = not measured), 11 wrk CPU %,
# 12 saturation % (the larger of server and wrk CPU %)
# column of RESULTS for server+route -> median over the rounds
col_median() { awk -v s="$1" -v r="$2" -v c="$3" '$1 == s && $3 == r && $c >= 0 { print $c }' "$RESULTS" | median; }
ratios() { # route [col [invert]] -> per-round kestrun/nginx ratios of a column (default req/s), in round order
  awk -v r="$1" -v c="${2:-4}" -v inv="${3:-0}" '$3 == r { v[$1 " " $2] = $c; if ($2 > n) n = $2 }
    END { for (i = 1; i <= n; i++) {
      k = v["kestrun " i]; g = v["nginx " i]
      if (inv && k > 0 && g > 0) printf "%.3f\n", g / k
      else if (!inv && g > 0 && k >= 0) printf "%.3f\n", k / g } }' "$RESULTS"
}
fmt_int() { [[ -n $1 ]] && printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' || printf '—'; }
fmt_2() { [[ -n $1 ]] && printf '%.2f' "$1" || printf '—'; }

routes_report() {
  local route k n r kp np kc nc ku nu kw nw per
  cat <<EOF
## HTTP routes: kestrun vs nginx + lua-nginx-module

\`wrk -t1 -c$CONNS -d${DURATION}s --latency\` (keep-alive, no pipelining), $ROUNDS round(s), a ${WARMUP} s warm-up before each
measurement. kestrun runs [\`bench/routes.lua\`](../bench/routes.lua); nginx runs
[\`bench/nginx.conf\`](../bench/nginx.conf) (1 worker, \`content_by_lua_block\`, JSON by cjson).
Ratio = kestrun req/s ÷ nginx req/s, computed per round, median over the rounds (> 1 means kestrun is faster).
p99 is the median over the rounds of wrk's 99th percentile.

| route | kestrun req/s | nginx-lua req/s | ratio (median) | kestrun p99 ms | nginx p99 ms |
|---|---:|---:|---:|---:|---:|
EOF
  for route in "${ROUTES[@]}"; do
    k=$(col_median kestrun "$route" 4); n=$(col_median nginx "$route" 4)
    r=$(ratios "$route" | median)
    kp=$(col_median kestrun "$route" 5); np=$(col_median nginx "$route" 5)
    printf '| `GET %s` | %s | %s | %s | %s | %s |\n' "$route" "$(fmt_int "$k")" "$(fmt_int "$n")" \
      "$(fmt_2 "$r")" "$(fmt_2 "$kp")" "$(fmt_2 "$np")"
  done
  cat <<EOF

Server CPU during the measurements (utime + stime from \`/proc\`, medians over the rounds). Below ~95% the server was not
saturated (the machine or wrk was the limit that round). CPU time per request is less sensitive to a busy machine than
req/s; its ratio is nginx's µs ÷ kestrun's µs per round (> 1 means kestrun spends less CPU per request).
In a closed loop on two idle cores either the server or wrk keeps its core busy; a measurement where neither
reached $SAT_MIN% was disturbed by other work on the machine and was repeated (up to $RETRIES times, the most
saturated attempt kept). wrk's CPU is that of the load generator's core (a wrk near 100% with the server well
below means wrk was the limit).

| route | kestrun CPU % | nginx CPU % | kestrun CPU µs/request | nginx CPU µs/request | CPU ratio (median) | wrk CPU % vs kestrun / nginx |
|---|---:|---:|---:|---:|---:|---:|
EOF
  for route in "${ROUTES[@]}"; do
    kc=$(col_median kestrun "$route" 6); nc=$(col_median nginx "$route" 6)
    ku=$(col_median kestrun "$route" 10); nu=$(col_median nginx "$route" 10)
    r=$(ratios "$route" 10 1 | median)
    kw=$(col_median kestrun "$route" 11); nw=$(col_median nginx "$route" 11)
    printf '| `GET %s` | %s | %s | %s | %s | %s | %s / %s |\n' "$route" "$(fmt_int "$kc")" "$(fmt_int "$nc")" "$(fmt_2 "$ku")" "$(fmt_2 "$nu")" "$(fmt_2 "$r")" "$(fmt_int "$kw")" "$(fmt_int "$nw")"
  done
  echo
  echo "Per-round ratios (kestrun ÷ nginx, in round order; the spread is the noise on this machine):"
  echo
  for route in "${ROUTES[@]}"; do
    per=$(ratios "$route" | tr '\n' ' ' | sed 's/ $//')
    echo "- \`GET $route\`: ${per:-—}"
  done
  echo
  echo "Response sizes checked before the first measurement (header bytes + body bytes):"
  echo
  for route in "${ROUTES[@]}"; do
    echo "- \`GET $route\`: kestrun ${RESP_INFO["kestrun $route"]:-—}, nginx ${RESP_INFO["nginx $route"]:-—}"
  done
  echo
}

# --- scenario: fanout (SignalR broadcast; bench/fanout/) ------------------------------------
FANOUT_ROUNDS=${FANOUT_ROUNDS:-3}
FANOUT_N=${FANOUT_N:-100 1000}
RATES=${RATES:-10 50}
LAT_N=${LAT_N:-1000}
IDLE_N=${IDLE_N:-10000}
SLOW_N=${SLOW_N:-100}
SLOW_DURATION=${SLOW_DURATION:-30}
SLOW_SERVERS=${SLOW_SERVERS:-kestrun ws socketio}
FANOUT_RETRIES=${FANOUT_RETRIES:-1}
for v in FANOUT_ROUNDS LAT_N IDLE_N SLOW_N SLOW_DURATION FANOUT_RETRIES; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "run.sh: $v must be a whole number (got '${!v}')" >&2; exit 2; }
done
((FANOUT_ROUNDS >= 1 && FANOUT_ROUNDS <= 100)) || die "FANOUT_ROUNDS must be 1..100"
((SLOW_DURATION >= 1 && SLOW_DURATION <= 600)) || die "SLOW_DURATION must be 1..600 s"
((FANOUT_RETRIES <= 5)) || die "FANOUT_RETRIES must be 0..5"
for v in $FANOUT_N $RATES; do [[ $v =~ ^[0-9]+$ ]] && ((v >= 1 && v <= 19800)) || die "FANOUT_N / RATES: '$v' is not 1..19800"; done
FANOUT_SERVERS=(kestrun ws socketio)
FRESULTS="$rundir/fanout.jsonl"
FNOTES=()
fnote() { FNOTES+=("$*"); log "note: $*"; }

# One run_fanout.sh call; appends its JSON line (plus round and tag) to FRESULTS and sets
# FAN_SAT (the larger of the server's and the loadgen's CPU use, % of a core; -1 = failed).
fan_once() { # server scenario n round tag duration [VAR=value...]
  local server=$1 sc=$2 n=$3 round=$4 tag=$5 dur=$6 out limit
  shift 6
  FAN_SAT=-1 FAN_LINE=""
  limit=$((dur + WARMUP + 150)) # run_fanout.sh bounds its own waits; this is the backstop
  # KEEP_RUNDIR=1: run_fanout.sh keeps the server's output, read here (a slow consumer closed by
  # kestrun is logged at Warning) and removed right after.
  out=$(env "$@" DURATION="$dur" WARMUP="$WARMUP" KESTRUN="$KESTRUN" SERVER_CPU="$SERVER_CPU" CLIENT_CPU="$CLIENT_CPU" KEEP_RUNDIR=1 \
    timeout -k 5 "$limit" nice -n "$NICE" "$here/fanout/run_fanout.sh" "$server" "$sc" "$n" 2>"$rundir/fan_call.err" | tail -n 1) || true
  cat "$rundir/fan_call.err" >>"$rundir/fanout.log"
  local kept closes=-1
  kept=$(sed -n 's/^run_fanout: run directory kept: //p' "$rundir/fan_call.err" | tail -n 1)
  if [[ -n $kept && -d $kept && $kept == */fanout.* ]]; then
    closes=$(cat "$kept/server.out" "$kept/server.err" 2>/dev/null | grep -c 'slow consumer' || true)
    rm -rf "$kept"
  fi
  if [[ $out != '{'* ]]; then
    fnote "round $round $sc N=$n $server${tag:+ ($tag)}: run_fanout.sh gave no result (last log lines: $(tail -n 3 "$rundir/fanout.log" | tr '\n' ' ' | head -c 300))"
    return 0
  fi
  FAN_LINE=$(python3 -c 'import json,sys
d=json.loads(sys.argv[1]); d["round"]=int(sys.argv[2]); d["tag"]=sys.argv[3]
d["slow_consumer_closes"]=int(sys.argv[4]) if int(sys.argv[4]) >= 0 else None
lg=d.get("loadgen_cpu_s") or 0; s=d.get("seconds") or 0
d["loadgen_pct"]=round(100*lg/s,1) if s else 0
print(json.dumps(d,separators=(",",":")))' "$out" "$round" "$tag" "${closes:-0}") || { fnote "round $round $sc N=$n $server: unreadable result: ${out:0:200}"; return 0; }
  FAN_SAT=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(int(max(d.get("server_cpu_pct") or 0, d.get("loadgen_pct") or 0)))' "$FAN_LINE")
  log "round $round $sc N=$n $server${tag:+ ($tag)}: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1])
print("msgs/s %s, cpu s/M %s, server cpu %s%%, loadgen %s%%, p99 %s us, bytes/conn %s, connects/s %s, connected %s, errors %s" % tuple(d.get(k) for k in ("msgs_per_s","cpu_s_per_million","server_cpu_pct","loadgen_pct","p99_us","bytes_per_conn","connects_per_s","connected","errors")))' "$FAN_LINE")"
}

fan() { # as fan_once; fanout measurements that neither side saturated are repeated (FANOUT_RETRIES)
  local server=$1 sc=$2 n=$3 round=$4 attempt best="" best_sat=-1
  for ((attempt = 0; attempt <= FANOUT_RETRIES; attempt++)); do
    fan_once "$@"
    if ((FAN_SAT > best_sat)); then best_sat=$FAN_SAT; best=$FAN_LINE; fi
    [[ $sc == fanout && $server != raw* && $FAN_SAT -ge 0 && $FAN_SAT -lt $SAT_MIN ]] || break
    if ((attempt < FANOUT_RETRIES)); then
      log "round $round $sc N=$n $server: neither server nor loadgen was busy (${FAN_SAT}% < ${SAT_MIN}%): again in 5 s"
      sleep 5
    fi
  done
  if [[ $sc == fanout && $server != raw* ]] && ((best_sat >= 0 && best_sat < SAT_MIN)); then
    fnote "round $round fanout N=$n $server${5:+ ($5)}: disturbed (server or loadgen busy at most ${best_sat}% of its core) after $FANOUT_RETRIES retries"
  fi
  [[ -n $best ]] && echo "$best" >>"$FRESULTS"
  return 0
}

run_fanout() {
  : >"$FRESULTS"
  FANOUT_LOAD_START=$(uptime | sed 's/^ *//')
  log "fanout: building bench/fanout tools (make -C bench/fanout, node_modules)"
  make -s -C "$here/fanout" OUT="$repo/build/fanout" >&2 || die "make -C bench/fanout failed"
  [[ -d $here/fanout/node_modules/ws && -d $here/fanout/node_modules/socket.io ]] ||
    make -s -C "$here/fanout" node_modules >&2 || die "make -C bench/fanout node_modules failed"
  local round n s rate order
  log "fanout: $FANOUT_ROUNDS round(s) x N in {$FANOUT_N} x ${FANOUT_SERVERS[*]}, ${DURATION}s windows"
  for ((round = 1; round <= FANOUT_ROUNDS; round++)); do
    if ((round % 2)); then order=(kestrun ws socketio); else order=(socketio ws kestrun); fi
    for n in $FANOUT_N; do
      for s in "${order[@]}"; do fan "$s" fanout "$n" "$round" "" "$DURATION"; done
    done
  done
  for n in $FANOUT_N; do
    for s in raw raw-batch; do fan "$s" fanout "$n" 1 "" "$DURATION"; done
  done
  for s in "${FANOUT_SERVERS[@]}"; do fan "$s" idle "$IDLE_N" 1 "" "$DURATION"; done
  for s in "${FANOUT_SERVERS[@]}"; do fan "$s" connect "$IDLE_N" 1 "" "$DURATION"; done
  for ((round = 1; round <= FANOUT_ROUNDS; round++)); do
    if ((round % 2)); then order=(kestrun ws socketio); else order=(socketio ws kestrun); fi
    for rate in $RATES; do
      for s in "${order[@]}"; do fan "$s" latency "$LAT_N" "$round" "" "$DURATION" RATE="$rate"; done
    done
  done
  for s in $SLOW_SERVERS; do
    fan "$s" fanout "$SLOW_N" 1 slowbase "$SLOW_DURATION"
    fan "$s" slow "$SLOW_N" 1 "" "$SLOW_DURATION" SLOW=1
  done
  FANOUT_LOAD_END=$(uptime | sed 's/^ *//')
}

fanout_report() {
  FRESULTS="$FRESULTS" FANOUT_ROUNDS="$FANOUT_ROUNDS" DURATION="$DURATION" WARMUP="$WARMUP" FANOUT_N="$FANOUT_N" \
  RATES="$RATES" LAT_N="$LAT_N" IDLE_N="$IDLE_N" SLOW_N="$SLOW_N" SLOW_DURATION="$SLOW_DURATION" \
  SAT_MIN="$SAT_MIN" FANOUT_RETRIES="$FANOUT_RETRIES" SERVER_CPU="$SERVER_CPU" CLIENT_CPU="$CLIENT_CPU" \
  LOAD_A="$FANOUT_LOAD_START" LOAD_B="$FANOUT_LOAD_END" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
  BENCH_DIR="$here" python3 - "${FNOTES[@]}" <<'PY'
import json, os, statistics, sys
E = os.environ
sys.path.insert(0, E["BENCH_DIR"])
from report_common import selector, med, fi, f2, f3
rows = [json.loads(l) for l in open(E["FRESULTS"]) if l.strip()]
notes = list(dict.fromkeys(sys.argv[1:]))
R = int(E["FANOUT_ROUNDS"]); Ns = [int(x) for x in E["FANOUT_N"].split()]
rates = [int(x) for x in E["RATES"].split()]
SRV = ["kestrun", "ws", "socketio"]
NAME = {"kestrun": "kestrun", "ws": "Node ws", "socketio": "socket.io", "raw": "raw write()", "raw-batch": "raw writev()"}

sel = selector(rows)
def ratios(n, a, b):
    out = []
    for r in range(1, R + 1):
        x = sel(scenario="fanout", n=n, server=a, round=r, tag="")
        y = sel(scenario="fanout", n=n, server=b, round=r, tag="")
        if x and y and y[0].get("msgs_per_s"):
            out.append(x[0]["msgs_per_s"] / y[0]["msgs_per_s"])
    return out
def met(ok):
    return "—(not measured)" if ok is None else ("**met**" if ok else "**not met**")

P = print
P("## SignalR broadcast fan-out: kestrun vs Node `ws` and `socket.io`")
P()
P(f"Each measurement is one [`bench/fanout/run_fanout.sh`](../bench/fanout/README.md) call: a fresh server pinned to core "
  f"{E['SERVER_CPU']}, the C load generator (`bench/fanout/loadgen.c`, libuv) on core {E['CLIENT_CPU']}, loopback only. "
  f"Fan-out and latency ran {R} round(s), the three servers alternating (kestrun, ws, socket.io, then the reverse order "
  f"the next round); the tables give medians over the rounds and the median of the per-round ratios. Windows of "
  f"{E['DURATION']} s after a {E['WARMUP']} s warm-up; idle memory, connect rate, the raw ceiling and the slow consumer "
  f"ran once per server. Every server broadcasts the same ~150-byte SignalR record (socket.io: its own 119-byte "
  f"framing) as fast as its event loop allows (one broadcast per loop turn); msgs/s counts deliveries received by "
  f"the clients.")
P()
P(f"The machine is shared and noisy (2 cores, other work runs on them): load (`uptime`) at the start: `{E['LOAD_A']}`; "
  f"at the end: `{E['LOAD_B']}`. Absolute numbers belong to this machine at that time; the ratios travel better.")
P()

# --- targets ---
tgt = []
n1k = 1000 if 1000 in Ns else None
r_ws = med(ratios(1000, "kestrun", "ws")) if n1k else None
r_sio = med(ratios(1000, "kestrun", "socketio")) if n1k else None
idle_k = sel(scenario="idle", server="kestrun")
bpc_k = idle_k[0].get("bytes_per_conn") if idle_k else None
sb = sel(scenario="fanout", server="kestrun", tag="slowbase"); sl = sel(scenario="slow", server="kestrun")
slow_ratio = (sl[0]["msgs_per_s"] / sb[0]["msgs_per_s"]) if sb and sl and sb[0].get("msgs_per_s") else None
P("### Targets (from the issue)")
P()
P("| target | measured (median) | |")
P("|---|---:|---|")
P(f"| N = 1,000: kestrun ≥ 2× ws deliveries/s | {f2(r_ws)}× | {met(None if r_ws is None else r_ws >= 2)} |")
P(f"| N = 1,000: kestrun ≥ 3× socket.io deliveries/s | {f2(r_sio)}× | {met(None if r_sio is None else r_sio >= 3)} |")
P(f"| idle memory ≤ 4 KiB (4,096 B) per connection at N = {int(E['IDLE_N']):,} (kestrun) | {fi(bpc_k)} B | {met(None if bpc_k is None else bpc_k <= 4096)} |")
P(f"| slow consumer: kestrun's deliveries/s to the other clients within 10% of the run without it (N = {E['SLOW_N']}) | {f2(slow_ratio)} of it | {met(None if slow_ratio is None else slow_ratio >= 0.9)} |")
P()
P("Met / not met is read from the medians of this run only; with 3 rounds on a busy shared machine a figure near its "
  "target can land on either side of it from one run to the next (see the per-round ratios below).")
P()

# --- fan-out ---
P(f"### Fan-out at max rate (N = {', '.join(f'{n:,}' for n in Ns)})")
P()
P("msgs/s = deliveries counted by the clients in the window; CPU s/M = server CPU seconds (utime + stime, all threads) "
  "per million deliveries (the figure least disturbed by a busy machine); server CPU % of its core. "
  f"\"loadgen-bound\" counts the rounds in which the load generator used ≥ 90% of its core (then the clients, not the "
  f"server, were the limit, and the server's msgs/s is understated). A fan-out measurement in which neither side used "
  f"{E['SAT_MIN']}% of its core was repeated (at most {E['FANOUT_RETRIES']} time(s), the busier attempt kept). "
  "The raw rows are the syscall ceiling (`bench/fanout/raw_ceiling.c`: the same frames written to the same sockets, one "
  "`write()` per frame, or `writev()` of 16 frames), one round each, for reference.")
P()
P("| N | server | msgs/s | CPU s per million | server CPU % | loadgen CPU % | loadgen-bound rounds | rounds |")
P("|---:|---|---:|---:|---:|---:|---:|---:|")
for n in Ns:
    for s in SRV + ["raw", "raw-batch"]:
        xs = sel(scenario="fanout", n=n, server=s, tag="")
        if not xs:
            P(f"| {n:,} | {NAME[s]} | — | — | — | — | — | 0 |"); continue
        lb = sum(1 for x in xs if (x.get("loadgen_pct") or 0) >= 90)
        P(f"| {n:,} | {NAME[s]} | {fi(med([x.get('msgs_per_s') for x in xs]))} | {f3(med([x.get('cpu_s_per_million') for x in xs]))} | "
          f"{fi(med([x.get('server_cpu_pct') for x in xs]))} | {fi(med([x.get('loadgen_pct') for x in xs]))} | {lb}/{len(xs)} | {len(xs)} |")
P()
P("Ratios of deliveries/s, computed per round, median over the rounds (> 1: kestrun delivers more), and of CPU per "
  "delivery (peer's CPU s/M ÷ kestrun's, > 1: kestrun spends less CPU per delivery); kestrun as a fraction of the raw ceiling:")
P()
P("| N | kestrun ÷ ws | kestrun ÷ socket.io | CPU/delivery ws ÷ kestrun | CPU/delivery socket.io ÷ kestrun | kestrun ÷ raw write() | kestrun ÷ raw writev() | per-round kestrun ÷ ws | per-round kestrun ÷ socket.io |")
P("|---:|---:|---:|---:|---:|---:|---:|---|---|")
for n in Ns:
    a = ratios(n, "kestrun", "ws"); b = ratios(n, "kestrun", "socketio")
    def cpu_ratio(peer):
        out = []
        for r in range(1, R + 1):
            x = sel(scenario="fanout", n=n, server="kestrun", round=r, tag=""); y = sel(scenario="fanout", n=n, server=peer, round=r, tag="")
            if x and y and x[0].get("cpu_s_per_million") and y[0].get("cpu_s_per_million"):
                out.append(y[0]["cpu_s_per_million"] / x[0]["cpu_s_per_million"])
        return med(out)
    k = med([x.get("msgs_per_s") for x in sel(scenario="fanout", n=n, server="kestrun", tag="")])
    def raw(s):
        x = sel(scenario="fanout", n=n, server=s, tag="")
        return (k / x[0]["msgs_per_s"]) if k and x and x[0].get("msgs_per_s") else None
    P(f"| {n:,} | {f2(med(a))} | {f2(med(b))} | {f2(cpu_ratio('ws'))} | {f2(cpu_ratio('socketio'))} | {f2(raw('raw'))} | {f2(raw('raw-batch'))} | "
      f"{' '.join(f'{x:.2f}' for x in a) or '—'} | {' '.join(f'{x:.2f}' for x in b) or '—'} |")
P()

# --- idle memory, connect ---
P(f"### Idle memory and connect rate (N = {int(E['IDLE_N']):,}, one round)")
P()
P("Idle: N clients connected and handshaken, no traffic; bytes per connection = (server RSS at the end of the window − RSS "
  "before the clients connected) ÷ N. Connect: N connects (negotiate where the protocol has it, WebSocket upgrade, "
  "handshake; at most 200 in setup at once) from start to all ready; server CPU µs per connection over that span.")
P()
P("| server | idle: connected | bytes/conn | RSS before → after (KiB) | connect: connected | connects/s | server CPU µs/conn |")
P("|---|---:|---:|---|---:|---:|---:|")
for s in SRV:
    i = sel(scenario="idle", server=s); c = sel(scenario="connect", server=s)
    i = i[0] if i else {}; c = c[0] if c else {}
    P(f"| {NAME[s]} | {fi(i.get('connected'))} | {fi(i.get('bytes_per_conn'))} | "
      f"{fi(i.get('rss_base_kb'))} → {fi(i.get('rss_kb'))} | {fi(c.get('connected'))} | {fi(c.get('connects_per_s'))} | {fi(c.get('cpu_us_per_conn'))} |")
P()

# --- latency ---
P(f"### Latency at a fixed rate (N = {int(E['LAT_N']):,}, open loop)")
P()
P("The server broadcasts R times a second on a schedule; every message carries its *scheduled* send time, the clients "
  "subtract it from the receive time (coordinated-omission-safe; 1 ms timers everywhere, so p50 includes up to ~1 ms of "
  f"timer granularity on every server alike). Percentiles over all deliveries of the window, median over {R} round(s), in µs.")
P()
P("| broadcasts/s | deliveries/s | server | p50 µs | p99 µs | p99.9 µs | server CPU % | rounds |")
P("|---:|---:|---|---:|---:|---:|---:|---:|")
for rate in rates:
    for s in SRV:
        xs = sel(scenario="latency", server=s, rate=rate)
        P(f"| {rate:,} | {rate * int(E['LAT_N']):,} | {NAME[s]} | {fi(med([x.get('p50_us') for x in xs]))} | {fi(med([x.get('p99_us') for x in xs]))} | "
          f"{fi(med([x.get('p999_us') for x in xs]))} | {fi(med([x.get('server_cpu_pct') for x in xs]))} | {len(xs)} |")
P()

# --- slow consumer ---
P(f"### Slow consumer (N = {E['SLOW_N']} + 1 client that never reads, {E['SLOW_DURATION']} s windows, one round)")
P()
P("The same max-rate fan-out twice per server, back to back: without and with one extra client that handshakes and then "
  "never reads (4 KiB receive buffer). Ratio = msgs/s of the N normal clients with the slow one ÷ without it. "
  "\"slow client closed\": for kestrun, whether its log (at Warning) says it closed a connection as a slow consumer "
  "(its per-connection outbound limit); the Node peers do not close it: they skip sends to a client whose backlog is "
  "≥ 64 KiB (`skipped`, from their `GET /stats`; `failed`: kestrun's failed sends).")
P()
P("| server | msgs/s without | msgs/s with slow client | ratio | slow client closed | RSS peak KiB (with) | skipped / failed sends |")
P("|---|---:|---:|---:|---|---:|---|")
for s in SRV:
    b = sel(scenario="fanout", server=s, tag="slowbase"); w = sel(scenario="slow", server=s)
    if not (b or w):
        continue
    b = b[0] if b else {}; w = w[0] if w else {}
    st = w.get("server_stats") or {}
    cl = st.get("clients")
    k = w.get("slow_consumer_closes")
    if s != "kestrun":
        closed = "no (skips sends instead)"
    elif k is None:
        closed = "unknown (no server log)"
    else:
        closed = f"yes ({k} close(s) logged)" if k > 0 else "no (none logged)"
    ratio = (w["msgs_per_s"] / b["msgs_per_s"]) if w.get("msgs_per_s") and b.get("msgs_per_s") else None
    sk = f"{st.get('skipped', '—')} / {st.get('failed', '—')}"
    P(f"| {NAME[s]} | {fi(b.get('msgs_per_s'))} | {fi(w.get('msgs_per_s'))} | {f2(ratio)} | {closed} | {fi(w.get('rss_hwm_kb'))} | {sk} |")
P()

vers = {}
for r in rows:
    vers.setdefault(r["server"], r.get("version"))
P("Servers: " + "; ".join(f"{NAME[s]}: `{v}`" for s, v in vers.items() if v) + f". Measured {E['DATE']}.")
P()
bad = []
for r in rows:
    what = f"round {r.get('round')} {r.get('scenario')} N={r.get('n')} {r.get('server')}" + (f" ({r['tag']})" if r.get("tag") else "")
    if r.get("errors"):
        bad.append(f"{what}: {r['errors']} client error(s) {json.dumps(r.get('error_detail'))}")
    if r.get("server_alive") is False:
        bad.append(f"{what}: the server was not running at the end")
    if r.get("timed_out"):
        bad.append(f"{what}: the load generator timed out")
    if (r.get("connected") or 0) < r.get("n", 0):
        bad.append(f"{what}: only {r.get('connected')} of {r.get('n')} clients connected")
notes += bad
if notes:
    P("### Problems seen during the fan-out run")
    P()
    for x in dict.fromkeys(notes):
        P(f"- {x}")
    P()
PY
}

# --- scenario: fanout-wire (kestrun's fan-out per SignalR wire format) -------------------------
WIRE_N=${WIRE_N:-1000}
WIRE_RATE=${WIRE_RATE:-50}
[[ $WIRE_N =~ ^[0-9]+$ ]] && ((WIRE_N >= 1 && WIRE_N <= 19800)) || die "WIRE_N must be 1..19800"
[[ $WIRE_RATE =~ ^[0-9]+$ ]] && ((WIRE_RATE <= 100000)) || die "WIRE_RATE must be 0..100000"
# tag -> PROTOCOL TRANSPORT of run_fanout.sh (the order of the report's rows)
WIRES=(ws-json ws-msgpack lp-json lp-msgpack)
declare -A WIRE_ENV=([ws-json]="PROTOCOL=json TRANSPORT=websockets" [ws-msgpack]="PROTOCOL=messagepack TRANSPORT=websockets"
  [lp-json]="PROTOCOL=json TRANSPORT=longpolling" [lp-msgpack]="PROTOCOL=messagepack TRANSPORT=longpolling")
WRESULTS="$rundir/fanout-wire.jsonl"
WNOTES=()

run_fanout_wire() {
  : >"$WRESULTS"
  WIRE_LOAD_START=$(uptime | sed 's/^ *//')
  make -s -C "$here/fanout" OUT="$repo/build/fanout" >&2 || die "make -C bench/fanout failed"
  # fan() appends to FRESULTS and FNOTES: point it at this scenario's own (bash's dynamic scope)
  local FRESULTS=$WRESULTS n0=${#FNOTES[@]} round w order
  log "fanout-wire: $FANOUT_ROUNDS round(s) x ${WIRES[*]}, N=$WIRE_N, ${DURATION}s windows, latency at $WIRE_RATE broadcasts/s"
  for ((round = 1; round <= FANOUT_ROUNDS; round++)); do
    order=("${WIRES[@]}")
    ((round % 2)) || order=(lp-msgpack lp-json ws-msgpack ws-json)
    # shellcheck disable=SC2086 # WIRE_ENV holds VAR=value words
    for w in "${order[@]}"; do fan kestrun fanout "$WIRE_N" "$round" "$w" "$DURATION" ${WIRE_ENV[$w]}; done
    if ((WIRE_RATE > 0)); then
      # shellcheck disable=SC2086
      for w in "${order[@]}"; do fan kestrun latency "$WIRE_N" "$round" "$w" "$DURATION" RATE="$WIRE_RATE" ${WIRE_ENV[$w]}; done
    fi
  done
  WNOTES=("${FNOTES[@]:n0}")
  FNOTES=("${FNOTES[@]:0:n0}")
  WIRE_LOAD_END=$(uptime | sed 's/^ *//')
}

fanout_wire_report() {
  WRESULTS="$WRESULTS" FANOUT_ROUNDS="$FANOUT_ROUNDS" DURATION="$DURATION" WARMUP="$WARMUP" WIRE_N="$WIRE_N" \
  WIRE_RATE="$WIRE_RATE" SERVER_CPU="$SERVER_CPU" CLIENT_CPU="$CLIENT_CPU" SAT_MIN="$SAT_MIN" \
  FANOUT_RETRIES="$FANOUT_RETRIES" LOAD_A="$WIRE_LOAD_START" LOAD_B="$WIRE_LOAD_END" \
  VERSION="$("$KESTRUN" --version 2>&1 | head -n 1)" COMMIT="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')" \
  DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" BENCH_DIR="$here" python3 - "${WNOTES[@]}" <<'PY'
import json, os, statistics, sys
E = os.environ
sys.path.insert(0, E["BENCH_DIR"])
from report_common import selector, med, fi, f2, f3
rows = [json.loads(l) for l in open(E["WRESULTS"]) if l.strip()]
notes = list(dict.fromkeys(sys.argv[1:]))
R = int(E["FANOUT_ROUNDS"]); N = int(E["WIRE_N"]); RATE = int(E["WIRE_RATE"])
WIRES = ["ws-json", "ws-msgpack", "lp-json", "lp-msgpack"]
NAME = {"ws-json": "WebSockets + JSON", "ws-msgpack": "WebSockets + MessagePack",
        "lp-json": "long polling + JSON", "lp-msgpack": "long polling + MessagePack"}

sel = selector(rows)
def ms(x):
    return "—" if x is None else f"{x / 1000:,.1f}"
def ratios(w):  # per round: this wire format's msgs/s ÷ WebSockets + JSON's
    out = []
    for r in range(1, R + 1):
        x = sel(scenario="fanout", tag=w, round=r); y = sel(scenario="fanout", tag="ws-json", round=r)
        if x and y and y[0].get("msgs_per_s"):
            out.append(x[0]["msgs_per_s"] / y[0]["msgs_per_s"])
    return out

P = print
P("## SignalR wire formats: kestrun's fan-out over WebSockets and long polling, JSON and MessagePack")
P()
P(f"kestrun's max-rate fan-out at N = {N:,} over each SignalR wire format it speaks: the same broadcast "
  "(`kr.send_event(\"tick\", {n, t})`, [`bench/fanout/kestrun_fanout.lua`](../bench/fanout/kestrun_fanout.lua)) "
  "and the same C load generator, which connects its N clients with negotiate and then a WebSocket (JSON in text frames, "
  "or MessagePack: VarInt-framed records in binary frames) or long polling (a first GET answered empty at once, the "
  "handshake POST, then a loop of held GETs on one keep-alive connection per client; each answer holds whole records). "
  "Deliveries = Invocation records counted by the clients in the window. kestrun only: the Node `ws` and `socket.io` "
  "peers have no equivalent of these formats. Server-Sent Events is not measured (the load generator does not speak it). "
  f"{R} round(s), the four formats alternating (the order reversed every other round), a fresh server for every "
  f"measurement, {E['DURATION']} s windows after a {E['WARMUP']} s warm-up, server on core {E['SERVER_CPU']}, load "
  f"generator on core {E['CLIENT_CPU']}; medians over the rounds.")
P()
P(f"Reproduce: `FANOUT_ROUNDS={R} WIRE_N={N} WIRE_RATE={RATE} bench/run.sh fanout-wire`; one measurement: "
  "`PROTOCOL=messagepack TRANSPORT=longpolling bench/fanout/run_fanout.sh kestrun fanout 1000`.")
P()
P(f"Load (`uptime`) at the start: `{E['LOAD_A']}`; at the end: `{E['LOAD_B']}` (a shared 2-core machine: absolute "
  "numbers belong to it at that time).")
P()
P(f"### Max rate (N = {N:,})")
P()
P("msgs/s = deliveries per second; ÷ WS JSON = per-round ratio to WebSockets + JSON, median; CPU s/M = server CPU seconds "
  "per million deliveries; per-round msgs/s in round order (the spread is this machine's noise). "
  "p50 / p99 at max rate are queueing delays (full socket buffers, or the time a record waits for the next poll), "
  "not the latency of an unloaded server: see the fixed-rate table below.")
P()
P("| wire format | msgs/s | ÷ WS JSON | CPU s per million | server CPU % | loadgen CPU % | p50 ms | p99 ms | per-round msgs/s | rounds |")
P("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for w in WIRES:
    xs = sel(scenario="fanout", tag=w)
    if not xs:
        P(f"| {NAME[w]} | — | — | — | — | — | — | — | — | 0 |"); continue
    xs.sort(key=lambda x: x.get("round", 0))
    P(f"| {NAME[w]} | {fi(med([x.get('msgs_per_s') for x in xs]))} | {f2(med(ratios(w)))} | "
      f"{f3(med([x.get('cpu_s_per_million') for x in xs]))} | {fi(med([x.get('server_cpu_pct') for x in xs]))} | "
      f"{fi(med([x.get('loadgen_pct') for x in xs]))} | {ms(med([x.get('p50_us') for x in xs]))} | "
      f"{ms(med([x.get('p99_us') for x in xs]))} | {' '.join(fi(x.get('msgs_per_s')) for x in xs)} | {len(xs)} |")
P()
if RATE > 0:
    P(f"### Latency at {RATE} broadcasts/s (N = {N:,}: {RATE * N:,} deliveries/s, open loop)")
    P()
    P("Publish-to-receive: every message carries its scheduled send time (coordinated-omission-safe); percentiles over "
      "all deliveries of the window, median over the rounds, in ms (1 ms timers: p50 includes up to ~1 ms of timer "
      "granularity on every row alike).")
    P()
    P("| wire format | msgs/s | p50 ms | p99 ms | p99.9 ms | server CPU % | rounds |")
    P("|---|---:|---:|---:|---:|---:|---:|")
    for w in WIRES:
        xs = sel(scenario="latency", tag=w)
        P(f"| {NAME[w]} | {fi(med([x.get('msgs_per_s') for x in xs]))} | {ms(med([x.get('p50_us') for x in xs]))} | "
          f"{ms(med([x.get('p99_us') for x in xs]))} | {ms(med([x.get('p999_us') for x in xs]))} | "
          f"{fi(med([x.get('server_cpu_pct') for x in xs]))} | {len(xs)} |")
    P()
P("What differs between the rows:")
P()
P("- **Bytes.** The JSON record is 150 bytes + 0x1E (plus a 4-byte WebSocket header); the MessagePack record is 75 bytes "
  "+ a 1-byte VarInt (2-byte WebSocket header), with the event's timestamp as a timestamp extension instead of an ISO "
  "string. Both are built once per broadcast and shared by all recipients of the same format.")
P("- **Long polling delivers in batches.** Each held GET is answered with everything queued for that client (whole "
  "records) and the client must send the next GET before anything else reaches it, so records wait in kestrun's "
  "per-connection queue for one HTTP round trip; every answer costs an HTTP request parse and a response head "
  "(~130 bytes) per client. The clients do not ping over long polling (neither side does).")
P("- **WebSockets** write every broadcast to every socket as it happens (corked into batches by kestrun while the "
  "broadcast loop keeps the server busy; see the fan-out section above).")
P("- The load generator's work differs too: it walks every MessagePack record (a small decoder) where the JSON path scans "
  "for `\"t\":` from the end; a loadgen CPU % near 100 means the clients, not the server, were the limit.")
P()
P(f"Server: `{E['VERSION']}` (repository at commit {E['COMMIT']}). Measured {E['DATE']}.")
P()
bad = []
for r in rows:
    what = f"round {r.get('round')} {r.get('scenario')} {NAME.get(r.get('tag'), r.get('tag'))}"
    if r.get("errors"):
        bad.append(f"{what}: {r['errors']} client error(s) {json.dumps(r.get('error_detail'))}")
    if r.get("server_alive") is False:
        bad.append(f"{what}: the server was not running at the end")
    if r.get("timed_out"):
        bad.append(f"{what}: the load generator timed out")
    if (r.get("connected") or 0) < r.get("n", 0):
        bad.append(f"{what}: only {r.get('connected')} of {r.get('n')} clients connected")
    if (r.get("alive_at_end") or 0) < (r.get("connected") or 0):
        bad.append(f"{what}: {r.get('connected') - r.get('alive_at_end')} client(s) dropped before the end")
notes += bad
if notes:
    P("### Problems seen during the wire-format run")
    P()
    for x in dict.fromkeys(notes):
        P(f"- {x}")
    P()
PY
}

# --- report ----------------------------------------------------------------------------------
versions_report() {
  local kv nv wv lv cv jv cpu
  kv=$("$KESTRUN" --version 2>&1 | head -n 1 || true)
  local commit
  commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
  if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null) ]]; then commit+=", working tree modified"; fi
  nv=$(nginx -v 2>&1 | head -n 1 || true)
  wv=$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }' || true) # wrk -v exits 1
  lv=$(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null || echo '?')
  cv=$(dpkg-query -W -f='${Version}' lua-cjson 2>/dev/null || echo '?')
  jv=$(dpkg-query -W -f='${Version}' libluajit2-5.1-2 2>/dev/null || dpkg-query -W -f='${Version}' libluajit-5.1-2 2>/dev/null || echo '?')
  cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  cat <<EOF
## Machine and versions

- Machine: $(nproc) cores, ${cpu:-unknown CPU}, Linux $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM
- kestrun: \`$kv\` (commit $commit; binary \`${KESTRUN_ORIG#"$repo"/}\`)
- nginx: \`$nv\`, libnginx-mod-http-lua $lv (LuaJIT $jv, lua-cjson $cv)
- wrk: \`$wv\`
- node: \`$(node --version 2>/dev/null || echo '?')\` (the fan-out peers; \`ws\` and \`socket.io\` versions in that section)
- Load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)
- Date: $(date -u '+%Y-%m-%d %H:%M UTC')

EOF
}

RESULTS_DIR=${RESULTS_DIR:-$repo/bench/results}

# The text of one section: written now when its scenario ran (and kept in RESULTS_DIR/<name>.md),
# else the kept fragment, else that section of the previous report, else a placeholder.
section() { # name heading placeholder
  local name=$1 heading=$2 placeholder=$3 frag="$RESULTS_DIR/$1.md" text
  if want "$name"; then
    case "$name" in
      routes)
        routes_report
        if ((${#NOTES[@]})); then
          echo "### Problems seen during the run"
          echo
          printf -- '- %s\n' "${NOTES[@]}" | awk '!seen[$0]++'
          echo
        fi ;;
      fanout) fanout_report ;;
      fanout-wire) fanout_wire_report ;;
    esac >"$rundir/$name.md"
    mkdir -p "$RESULTS_DIR"
    cp "$rundir/$name.md" "$frag"
    cat "$rundir/$name.md"
    return 0
  fi
  if [[ -s $frag ]]; then cat "$frag"; return 0; fi
  if [[ -f $OUT ]]; then
    text=$(awk -v h="$heading" 'index($0, h) == 1 { p = 1; print; next } p && /^## / { exit } p { print }' "$OUT")
    if [[ -n $text ]]; then printf '%s\n\n' "$text"; return 0; fi
  fi
  printf '%s\n\n%s\n\n' "$heading" "$placeholder"
}

write_report() {
  local tmp="$rundir/report.md"
  {
    cat <<EOF
# Benchmarks

Written by \`bench/run.sh\` (\`make bench\`); do not edit by hand. How it measures:
[bench/README.md](../bench/README.md). In short: the server is pinned to core $SERVER_CPU and the load generator to
core $CLIENT_CPU (\`taskset\`), loopback only; kestrun and its peers alternate (A B, then B A the next round) with a
fresh server process and a warm-up for every measurement; the tables give medians over the rounds and the median of
the per-round ratios. This is a shared, noisy virtual machine: absolute numbers belong to it, the ratios travel.
Each section below says when and how it was measured; \`bench/run.sh routes\`, \`bench/run.sh fanout\` or \`bench/run.sh fanout-wire\`
rewrites only its own.

EOF
    section routes "## HTTP routes" "Not measured yet: run \`bench/run.sh routes\`."
    section fanout "## SignalR broadcast fan-out" "Not measured yet: run \`bench/run.sh fanout\`."
    section fanout-wire "## SignalR wire formats" "Not measured yet: run \`bench/run.sh fanout-wire\`."
    # measured by bench/fanout/run_backplane.sh (not a run.sh scenario yet): kept as written
    section backplane "## Fan-out through the Redis backplane" "Not measured yet: see \`bench/fanout/run_backplane.sh\`."
    versions_report
  } >"$tmp"
  mkdir -p "$(dirname "$OUT")"
  mv "$tmp" "$OUT"
  log "wrote $OUT"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for s in "${scenarios[@]}"; do
  case "$s" in
    routes) run_routes ;;
    fanout) run_fanout ;;
    fanout-wire) run_fanout_wire ;;
  esac
done
write_report
