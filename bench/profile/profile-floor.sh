#!/usr/bin/env bash
# Profiles a gRPC floor server (bench/Floor/GrpcFloorServer.cs) under its row's flow at N transactions in flight.
# usage: bench/profile/profile-floor.sh OUTDIR [inflight=64] [rows="floor + log"] [messages=900000]
#   rows: a HALFMSG_BENCH_FLOWS key, "floor + log" for the floor with the broker's log, "floor (empty" for the empty one.
# Needs perf (Debian linux-perf). Finds the floor server as the bench's child, waits out the 15 s warm-up and 10 s of the
# measured phase, then records cpu-clock at 999 Hz with call graphs for 12 s (DOTNET_PerfMapEnabled=1 for JIT symbols)
# and writes categories.txt with perf_categories.py. Everything binds 127.0.0.1; processes are stopped by pid.
set -uo pipefail
OUT=${1:?outdir}; N=${2:-64}; ROWS=${3:-floor + log}; MSGS=${4:-900000}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DLL=${BENCH_DLL:-$ROOT/bench/bin/Release/net10.0/HalfMsg.Bench.dll}
export DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0
cd "$OUT"
HALFMSG_BENCH_FLOWS="$ROWS" dotnet "$BENCH_DLL" e2e --inflight "$N" --messages "$MSGS" --warmup 15 --no-rabbitmq --out "$OUT/results" > bench.log 2>&1 &
BENCH=$!
SRV=""
for i in $(seq 1 300); do SRV=$(pgrep -P "$BENCH" -f internal-grpc-floor | head -1); [ -n "$SRV" ] && break; sleep 0.5; done
[ -z "$SRV" ] && { echo "no floor server"; kill "$BENCH" 2>/dev/null; wait "$BENCH"; exit 1; }
echo "bench $BENCH floor server $SRV" | tee pids.txt
sleep 25
perf record -e cpu-clock -F 999 -g -p "$SRV" -o perf-server.data -- sleep 12 > perf.log 2>&1
perf script -i perf-server.data -F comm,tid,ip,sym,dso 2>/dev/null > perf-script.txt
python3 "$ROOT/bench/profile/perf_categories.py" --top 30 < perf-script.txt > categories.txt
wait "$BENCH"
echo "categories: $OUT/categories.txt"
