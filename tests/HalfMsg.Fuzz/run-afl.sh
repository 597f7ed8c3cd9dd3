#!/usr/bin/env bash
# Coverage-guided fuzzing of one parser with afl++ and SharpFuzz (issue 13, item 2).
#   tests/HalfMsg.Fuzz/run-afl.sh <target> <seconds>
# Builds HalfMsg.Fuzz, instruments the project's assemblies with SharpFuzz (the `sharpfuzz` dotnet tool, installed
# into a tool path under the work dir if missing), and runs afl-fuzz on tests/HalfMsg.Fuzz/corpus/<target>/ for the given
# time. Crashing and hanging inputs are copied into the corpus as finding-<target>-<n>; the default test run replays
# every corpus file (HalfMsg.Reliability.Tests FuzzCorpusTests). Needs afl++ (apt-get install -y afl++).
# Work dir: $HALFMSG_AFL_DIR or /tmp/halfmsg-afl.
set -euo pipefail
target="${1:?usage: run-afl.sh <target> <seconds>}"
seconds="${2:?usage: run-afl.sh <target> <seconds>}"
here="$(cd "$(dirname "$0")" && pwd)"
work="${HALFMSG_AFL_DIR:-/tmp/halfmsg-afl}"
out="$work/bin"
tools="$work/tools"
corpus="$here/corpus/$target"
findings="$work/findings-$target"

command -v afl-fuzz >/dev/null || { echo "afl-fuzz not found: apt-get install -y afl++" >&2; exit 2; }
[ -d "$corpus" ] || { echo "no corpus at $corpus" >&2; exit 2; }
if [ ! -x "$tools/sharpfuzz" ]; then
  dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$tools" >/dev/null
fi

# Build and instrument once per work dir (delete $out to rebuild after a source change).
if [ ! -f "$out/.instrumented" ]; then
  rm -rf "$out"
  dotnet publish "$here/HalfMsg.Fuzz.csproj" -c Release -o "$out" --nologo -v q
  for dll in HalfMsg.Protocol.dll HalfMsg.Broker.Core.dll HalfMsg.Broker.dll; do
    "$tools/sharpfuzz" "$out/$dll"
  done
  touch "$out/.instrumented"
fi

# Seeds: afl wants small inputs; the replay and checkpoint targets run a whole engine open per input.
timeout_ms=2000
case "$target" in
  # These open a whole engine (FasterLog) per input: a RAM-backed temp dir saves the disk round trips.
  replay|checkpoint) timeout_ms=10000; [ -d /dev/shm ] && export TMPDIR=/dev/shm ;;
esac
resume="-i $corpus"
[ -d "$findings/default/queue" ] && [ "${HALFMSG_AFL_FRESH:-0}" != 1 ] && resume="-i -"
mkdir -p "$findings"

export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_AUTORESUME=1 AFL_SKIP_CRASHES=1 DOTNET_gcServer=0 DOTNET_TieredPGO=0
set +e
afl-fuzz $resume -o "$findings" -t "$timeout_ms" -m none -V "$seconds" -- dotnet "$out/HalfMsg.Fuzz.dll" "$target" \
  > "$work/afl-$target.log" 2>&1
rc=$?
set -e

stats="$findings/default/fuzzer_stats"
[ -f "$stats" ] || { echo "afl-fuzz did not start (exit $rc); see $work/afl-$target.log" >&2; tail -30 "$work/afl-$target.log" >&2; exit 1; }
get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
crashes=$(get saved_crashes); hangs=$(get saved_hangs)
echo "$(date -u +%FT%TZ) target=$target seconds=$seconds execs_done=$(get execs_done) execs_per_sec=$(get execs_per_sec) saved_crashes=${crashes:-0} saved_hangs=${hangs:-0}" >> "$work/summary.txt"
echo "target=$target seconds=$seconds execs_done=$(get execs_done) execs_per_sec=$(get execs_per_sec) corpus_count=$(get corpus_count) edges_found=$(get edges_found) saved_crashes=${crashes:-0} saved_hangs=${hangs:-0}"

n=0
for f in "$findings"/default/crashes/id:* "$findings"/default/hangs/id:*; do
  [ -f "$f" ] || continue
  n=$((n+1))
  kind=$(basename "$(dirname "$f")")
  cp "$f" "$corpus/finding-$target-$kind-$(sha1sum "$f" | cut -c1-12)"
done
[ "$n" -eq 0 ] || echo "copied $n finding(s) into $corpus"
