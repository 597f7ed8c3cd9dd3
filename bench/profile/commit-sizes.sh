#!/usr/bin/env bash
# The log's commits as the disk sees them: one server row of the e2e bench at N in flight, and 4 s of its disk system
# calls (data writes to the log segments, the commit-meta slot's write and fsync) taken with `perf trace` during the
# measured phase, then summed by commit_sizes.py (commits/s, bytes per commit, how many are small, how busy the disk
# calls keep the log).
# usage: bench/profile/commit-sizes.sh OUT [inflight=256] [flows="broker tx (flush sync) @"] [server-pattern=HalfMsg.Broker.dll]
#   the floor + log server: bench/profile/commit-sizes.sh OUT 256 "floor + log" halfmsg-floor-log
# Needs perf (Debian linux-perf) and a Release build. perf trace slows the traced process: compare rows, not rates.
set -uo pipefail
OUT=${1:?out prefix}; N=${2:-256}; FLOWS=${3:-"broker tx (flush sync) @"}; PAT=${4:-HalfMsg.Broker.dll}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
mkdir -p "$(dirname "$OUT")"
(HALFMSG_BENCH_FLOWS="$FLOWS" timeout 900 dotnet run -c Release --no-build --project bench -- e2e --inflight "$N" \
   --no-rabbitmq --messages 400000 --out "$OUT.results" > "$OUT.bench.log" 2>&1) &
BENCH=$!
PID=""
for i in $(seq 1 240); do PID=$(pgrep -x dotnet -a | grep -F -- "$PAT" | head -1 | cut -d" " -f1); [ -n "$PID" ] && break; sleep 0.5; done
[ -z "$PID" ] && { echo "no server process matching $PAT"; wait $BENCH; exit 1; }
echo "server pid $PID"
sleep 36 # past the row's 30 s warm-up
timeout 4 perf trace -p "$PID" -e fsync,fdatasync,pwrite64,pwritev,pwritev2 -o "$OUT.trace" > /dev/null 2>&1
wait $BENCH
python3 "$ROOT/bench/profile/commit_sizes.py" "$OUT.trace" | tee "$OUT.summary"
