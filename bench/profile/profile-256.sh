#!/usr/bin/env bash
# Profiles the broker (and the bench client) under the e2e transactional flow at N transactions in flight.
# usage: bench/profile/profile-256.sh OUTDIR [inflight=256] [messages=200000]
# Needs: dotnet-counters and dotnet-trace as global tools (dotnet tool install -g ...), perf (Debian linux-perf).
# Runs the bench's "broker tx (flush sync)" flow alone (the raw-log ceiling runs first, briefly), finds the broker as
# the bench process's child, and while the measured phase runs collects, one after another:
#   per-thread CPU of both processes (/proc/<pid>/task/*/stat over 10 s), dotnet-counters (System.Runtime, 15 s,
#   both processes), perf (cpu-clock 999 Hz with call graphs, 15 s, both processes; DOTNET_PerfMapEnabled=1 for
#   JIT symbols), dotnet-trace on the broker (sampled thread time + contention/threading events, 12 s).
# Everything binds 127.0.0.1; processes are stopped by pid.
set -uo pipefail
OUT=${1:?outdir}; N=${2:-256}; MSGS=${3:-200000}
export PATH="$PATH:$HOME/.dotnet/tools"
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DLL=${BENCH_DLL:-$ROOT/bench/bin/Release/net10.0/HalfMsg.Bench.dll}
export HALFMSG_BROKER_DLL=${HALFMSG_BROKER_DLL:-$ROOT/src/Broker/HalfMsg.Broker/bin/Release/net10.0/HalfMsg.Broker.dll}
export DOTNET_PerfMapEnabled=1
# JIT code in plain anonymous memory (not the W^X double mapping, which perf cannot attribute to the perf map).
export DOTNET_EnableWriteXorExecute=0
export HALFMSG_BENCH_FLOWS="flush sync"
cd "$OUT"
uptime > uptime-start.txt
dotnet "$BENCH_DLL" e2e --inflight "$N" --producers "$N" --messages "$MSGS" --no-rabbitmq --out "$OUT/results" > bench.log 2>&1 &
BENCH=$!
echo "bench pid $BENCH" | tee pids.txt
BROKER=""
for i in $(seq 1 600); do
  BROKER=$(pgrep -P "$BENCH" -f HalfMsg.Broker.dll | head -1)
  [ -n "$BROKER" ] && break
  sleep 0.5
done
[ -z "$BROKER" ] && { echo "no broker"; wait $BENCH; exit 1; }
echo "broker pid $BROKER" | tee -a pids.txt
# Wait for the measured phase: producers have connected and the broker burns CPU steadily.
for i in $(seq 1 120); do grep -q "broker tx" bench.log && break; sleep 1; done
sleep 20
threads() { # pid -> "tid comm utime stime" lines
  for t in /proc/$1/task/*; do
    s=$(cat "$t/stat" 2>/dev/null) || continue
    comm=$(cat "$t/comm" 2>/dev/null | tr ' ' '_')
    rest=${s##*) }; set -- $rest
    echo "${t##*/} $comm ${12} ${13}"
  done
}
HTTP=$(tr '\0' ' ' < /proc/$BROKER/cmdline | sed -n 's/.*--http-port \([0-9]*\).*/\1/p')
DATA=$(tr '\0' ' ' < /proc/$BROKER/cmdline | sed -n 's/.*--data-dir \([^ ]*\).*/\1/p')
curl -s http://127.0.0.1:$HTTP/api/stats > stats-0.json; date +%s.%N > stats-t0.txt
find "$DATA" -type f | sort > datadir-0.txt
threads $BROKER > broker-threads-0.txt; threads $BENCH > bench-threads-0.txt; date +%s.%N > threads-t0.txt
# EventCounters: gauges (thread pool queue length, lock contention count per interval, time in GC, alloc rate).
dotnet-counters collect -p $BROKER --counters 'EventCounters\System.Runtime' --format csv -o broker-counters.csv --duration 00:00:00:15 > /dev/null 2>&1 &
C1=$!
dotnet-counters collect -p $BENCH --counters 'EventCounters\System.Runtime' --format csv -o bench-counters.csv --duration 00:00:00:15 > /dev/null 2>&1 &
C2=$!
# System calls of the broker over 10 s: fsync/fdatasync = log commits, openat/unlink = commit-file churn, network.
perf stat -p $BROKER -o broker-syscalls.txt -e 'syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_openat,syscalls:sys_enter_unlink,syscalls:sys_enter_unlinkat,syscalls:sys_enter_pwrite64,syscalls:sys_enter_write,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmsg,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,context-switches,task-clock' -- sleep 10 > /dev/null 2>&1 &
S1=$!
perf stat -p $BENCH -o bench-syscalls.txt -e 'syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmsg,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,context-switches,task-clock' -- sleep 10 > /dev/null 2>&1 &
S2=$!
sleep 10
threads $BROKER > broker-threads-1.txt; threads $BENCH > bench-threads-1.txt; date +%s.%N > threads-t1.txt
curl -s http://127.0.0.1:$HTTP/api/stats > stats-1.json; date +%s.%N > stats-t1.txt
find "$DATA" -type f | sort > datadir-1.txt
wait $C1 $C2 $S1 $S2
# How long each fsync/fdatasync takes (enter/exit pairs), 5 s.
perf record -p $BROKER -o perf-fsync.data -e 'syscalls:sys_enter_fsync,syscalls:sys_exit_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync' -- sleep 5 > /dev/null 2>&1
perf script -i perf-fsync.data -F tid,time,event > fsync-events.txt 2>/dev/null
uptime > uptime-mid.txt
perf record -e cpu-clock -F 999 -g -p $BROKER -o perf-broker.data -- sleep 15 > perf-broker.log 2>&1 &
P1=$!
perf record -e cpu-clock -F 999 -g -p $BENCH -o perf-bench.data -- sleep 15 > perf-bench.log 2>&1 &
P2=$!
wait $P1 $P2
cp /tmp/perf-$BROKER.map . 2>/dev/null; cp /tmp/perf-$BENCH.map . 2>/dev/null
dotnet-trace collect -p $BROKER --profile dotnet-sampled-thread-time --clrevents contention+threading --clreventlevel 5 \
  --duration 00:00:00:12 -o broker.nettrace > trace-broker.log 2>&1
uptime > uptime-end.txt
wait $BENCH
echo "bench exit $?"
