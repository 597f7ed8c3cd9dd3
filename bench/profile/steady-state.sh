#!/usr/bin/env bash
# A long broker row from a fresh broker, to see what changes as the retained log grows (checkpoints, memory, rate).
# usage: bench/profile/steady-state.sh OUT [inflight=256] [transactions=3000000]
#   HALFMSG_BROKER_DLL=<dll> picks the broker build (the bench's default otherwise).
# Every 5 s (HALFMSG_SAMPLE_SECONDS): the broker's CPU ticks, its /proc/<pid>/io write_bytes and its /api/stats (OUT.ts); at the end
# bench/profile/steady_state.py OUT.ts prints the run in fifths: tx/s, broker CPU ms/tx, bytes the broker wrote to
# disk per transaction, checkpoints written and the last one's size, and the engine lock's longest hold of each
# checkpoint it caught (one that finished between two samples; HALFMSG_SAMPLE_SECONDS=1 catches nearly all at
# 256 in flight, the default 5 catches some), and likewise each retention cut's hold (set a retention below what the run
# writes, e.g. HALFMSG_BROKER_ENV_Broker__RetentionSize=2GiB). Needs nothing beyond the bench.
# Everything binds 127.0.0.1; the bench stops the broker.
set -uo pipefail
OUT=${1:?out prefix}; N=${2:-256}; MSGS=${3:-3000000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HALFMSG_BENCH_WARMUP=1000 HALFMSG_BENCH_FLOWS="broker tx (flush sync) @" dotnet "$ROOT/bench/bin/Release/net10.0/HalfMsg.Bench.dll" \
  e2e --inflight "$N" --messages "$MSGS" --warmup 0 --no-rabbitmq --out "$OUT.res" > "$OUT.log" 2>&1 &
B=$!
BR=""
for i in $(seq 1 600); do BR=$(pgrep -P $B -f HalfMsg.Broker.dll | head -1); [ -n "$BR" ] && break; sleep 0.2; done
[ -z "$BR" ] && { echo "no broker"; wait $B; exit 1; }
HTTP=$(tr '\0' ' ' < /proc/$BR/cmdline | sed -n 's/.*--http-port \([0-9]*\).*/\1/p')
: > "$OUT.ts"
while kill -0 "$BR" 2>/dev/null; do
  t=$(date +%s.%N)
  s=$(cat /proc/$BR/stat 2>/dev/null) || break
  rest=${s##*) }; set -- $rest; cpu=$(( ${12} + ${13} ))
  wb=$(awk '/^write_bytes/ {print $2}' /proc/$BR/io 2>/dev/null) || break
  # Not listening yet at the start: just try again.
  st=$(curl -s --max-time 2 "http://127.0.0.1:$HTTP/api/stats") && [ -n "$st" ] && echo "$t $cpu $wb $st" >> "$OUT.ts"
  sleep "${HALFMSG_SAMPLE_SECONDS:-5}"
done
wait $B
python3 "$ROOT/bench/profile/steady_state.py" "$OUT.ts"
