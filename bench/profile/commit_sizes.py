#!/usr/bin/env python3
"""Sums a `perf trace` of a log server's disk calls (bench/profile/commit-sizes.sh): the files that get fsync'd are
the commit-meta slot; every other pwrite64 is one commit's data write (the log device writes each commit's pages with
one call, write-through; a commit that crosses a page boundary may take two)."""
import re
import statistics as st
import sys

events = []
for line in open(sys.argv[1]):
    m = re.match(r'\s*([\d.]+) \(\s*([\d.]+) ms\): .+?/\d+ (\w+)\(fd: (\d+)(?:, buf: \S+, count: (\d+))?', line)
    if m:
        events.append((float(m[1]), float(m[2]), m[3], int(m[4]), int(m[5] or 0)))
if not events:
    sys.exit("no events in " + sys.argv[1])
# The slot is fsync'd once per commit; a segment gets one fsync when the log moves past it, so it is not the slot.
fsyncs = {}
for _, _, call, fd, _ in events:
    if call in ('fsync', 'fdatasync'):
        fsyncs[fd] = fsyncs.get(fd, 0) + 1
slot_fds = {max(fsyncs, key=fsyncs.get)} if fsyncs else set()
data = [e for e in events if e[2].startswith('pwrite') and e[3] not in slot_fds]
syncs = [e for e in events if e[2] in ('fsync', 'fdatasync') and e[3] in slot_fds]
span_ms = events[-1][0] - events[0][0]
sizes = sorted(e[4] for e in data)
durs = sorted(e[1] for e in data)
busy = sum(e[1] for e in events)
print(f"span {span_ms:.0f} ms; commits (data writes) {len(data)}, {len(data) / span_ms * 1000:.0f}/s")
print(f"bytes per commit p10/p50/p90 {sizes[len(sizes) // 10]:,}/{int(st.median(sizes)):,}/{sizes[len(sizes) * 9 // 10]:,}, mean {int(st.mean(sizes)):,}")
print(f"commits of 8 KiB or less: {sum(1 for s in sizes if s <= 8192)} of {len(sizes)} ({sum(1 for s in sizes if s <= 8192) / len(sizes):.0%})")
print(f"data write ms p50/mean/p90 {st.median(durs):.3f}/{st.mean(durs):.3f}/{durs[len(durs) * 9 // 10]:.3f}; slot fsync ms p50/mean {st.median(e[1] for e in syncs):.3f}/{st.mean(e[1] for e in syncs):.3f}")
print(f"share of the span inside these calls: {busy / span_ms:.0%}")
