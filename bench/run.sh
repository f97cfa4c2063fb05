#!/usr/bin/env bash
# bench/run.sh: run the benchmarks side by side with their peers and write docs/benchmarks.md.
#
#   bench/run.sh            every scenario (routes, then fanout)
#   bench/run.sh routes     only the HTTP route scenario (kestrun vs nginx + lua-nginx-module)
#   bench/run.sh fanout     only the SignalR broadcast scenarios (kestrun vs Node ws and socket.io):
#                           fan-out, idle memory, connect rate, latency, slow consumer
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

all_scenarios=(routes fanout)
scenarios=()
if (($# == 0)); then
  scenarios=("${all_scenarios[@]}")
else
  for s in "$@"; do
    case "$s" in
      routes | fanout) scenarios+=("$s") ;;
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
- Load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)
- Date: $(date -u '+%Y-%m-%d %H:%M UTC')

EOF
}

write_report() {
  local tmp="$rundir/report.md"
  {
    cat <<EOF
# Benchmarks

Written by \`bench/run.sh\` (\`make bench\`); do not edit by hand. How it measures:
[bench/README.md](../bench/README.md). In short: the server is pinned to core $SERVER_CPU and the load generator to
core $CLIENT_CPU (\`taskset\`), loopback only; kestrun and its peer alternate (A B, then B A the next round) with a
fresh server process and a warm-up for every measurement, over $ROUNDS round(s); the tables give medians and the median of
the per-round ratios. Server and wrk ran at nice $NICE. This is a shared, noisy virtual machine: absolute numbers belong to it, the ratios travel.

EOF
    for s in "${scenarios[@]}"; do
      case "$s" in
        routes) routes_report ;;
      esac
    done
    if ((${#NOTES[@]})); then
      echo "### Problems seen during the run"
      echo
      printf -- '- %s\n' "${NOTES[@]}" | awk '!seen[$0]++' 
      echo
    fi
    cat <<EOF
## SignalR broadcast fan-out

Not measured yet: comes with the hub issues.

EOF
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
  esac
done
write_report
