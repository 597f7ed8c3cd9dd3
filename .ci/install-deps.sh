#!/usr/bin/env bash
# Installs what the test suites and benchmarks need on a fresh CI machine
# (.NET SDK + Node.js + package registries, running as root).
# Idempotent: safe to run again; it only installs what is missing.
#
#  - postgresql       : tests start their own throwaway cluster (PostgresServer.cs) on a free port
#  - rabbitmq-server  : the bench starts its own throwaway node (bench/Peers/RabbitMqServer.cs)
#  - tests/compat/node: the official RocketMQ 5 Node.js client used by the compat scripts
#  - chromium         : the dashboard tests (tests/HalfMsg.Ops.Tests) drive Debian's chromium through Playwright's
#                       ExecutablePath; Playwright's own browser download is not used
#
# System-wide services that the Debian postinst scripts start are stopped again:
# nothing here should keep listening on 5432 / 5672 / 4369 when we are done.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "[install-deps] $*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "not root and no sudo: skipping apt packages"; SKIP_APT=1
  fi
fi

is_installed() { dpkg -s "$1" >/dev/null 2>&1 && dpkg -s "$1" | grep -q '^Status: install ok installed'; }

# ---------------------------------------------------------------- apt packages
wanted=(postgresql rabbitmq-server chromium)
missing=()
for p in "${wanted[@]}"; do
  if is_installed "$p"; then log "apt: $p already installed"; else missing+=("$p"); fi
done

if [ "${SKIP_APT:-0}" != "1" ] && [ "${#missing[@]}" -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d exit 101 keeps invoke-rc.d from starting services during postinst
  # (works with and without systemd). Only installed if nobody else put one there.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
  fi
  set +e
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rc=$?
  set -e
  if [ "$own_policy" = "1" ]; then $SUDO rm -f "$policy"; fi
  if [ "$rc" -ne 0 ]; then log "apt-get install failed with $rc"; exit "$rc"; fi
  log "apt: installed ${missing[*]}"
fi

# ------------------------------------------- stop services the packages started
if command -v pg_lsclusters >/dev/null 2>&1; then
  # columns: Ver Cluster Port Status Owner Datadir Logfile
  while read -r ver name _port status _rest; do
    case "$status" in
      online*)
        log "postgresql: stopping system cluster $ver/$name (tests start their own)"
        $SUDO pg_ctlcluster "$ver" "$name" stop -m fast || log "warning: could not stop cluster $ver/$name"
        ;;
    esac
  done < <(pg_lsclusters -h 2>/dev/null || true)
fi

if is_installed rabbitmq-server; then
  if pgrep -u rabbitmq -f 'beam.*rabbit' >/dev/null 2>&1; then
    log "rabbitmq-server: stopping system service (the bench starts its own node)"
    $SUDO service rabbitmq-server stop >/dev/null 2>&1 || true
    # If the init script could not stop it (no systemd, etc.), stop the node ourselves.
    for pid in $(pgrep -u rabbitmq -f 'beam.*rabbit' || true); do
      log "rabbitmq-server: killing leftover beam pid $pid"
      $SUDO kill "$pid" 2>/dev/null || true
    done
  fi
  # An epmd the rabbitmq user left behind would listen on 0.0.0.0:4369.
  for pid in $(pgrep -u rabbitmq -x epmd 2>/dev/null || true); do
    log "rabbitmq-server: stopping leftover epmd pid $pid"
    $SUDO kill "$pid" 2>/dev/null || true
  done
fi

# ------------------------------------------------------------------ node deps
node_dir="$repo_root/tests/compat/node"
if [ -f "$node_dir/package.json" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    log "npm: not found, skipping $node_dir"
  else
    cd "$node_dir"
    if [ -f node_modules/.package-lock.json ] && npm ls --depth=0 >/dev/null 2>&1; then
      log "npm: tests/compat/node/node_modules already up to date"
    elif [ -f package-lock.json ]; then
      log "npm: npm ci in tests/compat/node"
      npm ci --no-audit --no-fund --loglevel=error \
        || { log "npm ci failed, falling back to npm install"; npm install --no-audit --no-fund --loglevel=error; }
    else
      log "npm: npm install in tests/compat/node"
      npm install --no-audit --no-fund --loglevel=error
    fi
    cd "$repo_root"
  fi
fi

log "done"
