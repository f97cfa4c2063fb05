#!/usr/bin/env bash
# deps.sh: installs whatever kestrun needs that is missing on a Debian 12 machine, and
# nothing when all is present (so `make demo` and `make test` stay fast on the second run).
#
#   scripts/deps.sh            build + test dependencies (Debian packages, npm ci for tests)
#   scripts/deps.sh bench      also the benchmark peers (nginx + lua module, wrk)
#
# Debian packages come from apt-get; Node packages from `npm ci` against the lock files that
# are committed next to each package.json. Idempotent: safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

want=(build-essential cmake pkg-config clang lld llvm
      liblua5.4-dev lua5.4 libuv1-dev libcjson-dev libssl-dev node-llhttp
      libmsgpack-dev libhiredis-dev nodejs npm curl
      redis-server  # tests/e2e/backplane starts its own on a free loopback port
      chromium)  # headless browser for tests/e2e/browser (driven by playwright-core)
for group in "$@"; do
  case "$group" in
    bench) want+=(nginx libnginx-mod-http-lua lua-cjson wrk) ;;
    *) echo "deps.sh: unknown group '$group'" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${want[@]}"; do
  # nodejs/npm may come from elsewhere on a developer machine: accept the commands.
  case "$pkg" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "deps.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node packages for the end-to-end tests and the demo dashboard: npm ci only when the
# lock file changed since the last install.
npm_dirs=(tests/e2e scripts/examples/dashboard)
for group in "$@"; do
  [ "$group" = bench ] && npm_dirs+=(bench/fanout)
done
for dir in "${npm_dirs[@]}"; do
  [ -f "$dir/package-lock.json" ] || continue
  stamp="$dir/node_modules/.kr-lock-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
    echo "deps.sh: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    mkdir -p "$dir/node_modules"
    cp "$dir/package-lock.json" "$stamp"
  fi
done
