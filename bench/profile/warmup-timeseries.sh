#!/usr/bin/env bash
# usage: bench/profile/warmup-timeseries.sh OUT [VAR=value...]
# One long row at 64 in flight from a fresh broker (240,000 tx, 640 warm-up): every 2 s the broker's /api/stats and both
# processes' CPU (OUT.ts), dotnet-counters System.Runtime on the broker every 2 s (OUT.counters.csv). Needs dotnet-counters.
OUT=$1; shift
export PATH="$PATH:$HOME/.dotnet/tools"
env "$@" HALFMSG_BENCH_WARMUP=640 HALFMSG_BENCH_FLOWS="broker tx (flush sync) @" dotnet "$(cd "$(dirname "$0")/../.." && pwd)/bench/bin/Release/net10.0/HalfMsg.Bench.dll" e2e --inflight 64 --messages 240000 --warmup 0 --no-rabbitmq --out $OUT.res > $OUT.log 2>&1 &
B=$!
for i in $(seq 1 600); do BR=$(pgrep -P $B -f HalfMsg.Broker.dll | head -1); [ -n "$BR" ] && break; sleep 0.2; done
HTTP=$(tr '\0' ' ' < /proc/$BR/cmdline | sed -n 's/.*--http-port \([0-9]*\).*/\1/p')
dotnet-counters collect -p $BR --counters 'System.Runtime' --format csv -o $OUT.counters.csv --refresh-interval 2 > /dev/null 2>&1 &
prev=""; : > $OUT.ts
while kill -0 $BR 2>/dev/null; do
  t=$(date +%s.%N); s=$(cat /proc/$BR/stat 2>/dev/null) || break; rest=${s##*) }; set -- $rest; cpu=$(( ${12} + ${13} ))
  bs=$(cat /proc/$B/stat); r2=${bs##*) }; set -- $r2; bcpu=$(( ${12} + ${13} ))
  st=$(curl -s http://127.0.0.1:$HTTP/api/stats)
  echo "$t $cpu $bcpu $st" >> $OUT.ts
  sleep 2
done
wait $B
