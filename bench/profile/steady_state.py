#!/usr/bin/env python3
"""Summary of a bench/profile/steady-state.sh time series (OUT.ts): the run in fifths, by committed transactions.

Each line of OUT.ts: unix time, broker CPU ticks (1/100 s), broker write_bytes, /api/stats JSON.
"""
import json, sys

rows = []
for line in open(sys.argv[1]):
    parts = line.split(' ', 3)
    if len(parts) < 4:
        continue
    try:
        stats = json.loads(parts[3])
    except ValueError:
        continue
    rows.append((float(parts[0]), int(parts[1]), int(parts[2]), stats))
rows = [r for r in rows if r[3].get('commits', 0) > 0]
if len(rows) < 6:
    sys.exit('too few samples')
print('| part | committed (end) | tx/s | broker CPU ms/tx | disk bytes written per tx | checkpoints whole / delta | last checkpoint bytes | queue entries | GC heap MB |')
print('|---|---:|---:|---:|---:|---|---:|---:|---:|')
parts = 5
for p in range(parts):
    a = rows[len(rows) * p // parts]
    b = rows[min(len(rows) - 1, len(rows) * (p + 1) // parts)]
    tx = b[3]['commits'] - a[3]['commits']
    if tx <= 0:
        continue
    dt = b[0] - a[0]
    cpu_ms = (b[1] - a[1]) * 10.0
    wb = b[2] - a[2]
    s = b[3]
    print(f"| {p + 1}/{parts} | {s['commits']:,} | {tx / dt:,.0f} | {cpu_ms / tx:.3f} | {wb / tx:,.0f} | "
          f"{s.get('checkpointsWhole', '–')} / {s.get('checkpointsDelta', '–')} | {s.get('lastCheckpointBytes', 0):,} | "
          f"{s['indexes']['queue_entries']:,} | {s['gcHeapBytes'] / 1e6:,.0f} |")
a, b = rows[0], rows[-1]
tx = b[3]['commits'] - a[3]['commits']
print(f"\nwhole run: {tx:,} tx in {b[0] - a[0]:.0f} s, {tx / (b[0] - a[0]):,.0f} tx/s, broker CPU {(b[1] - a[1]) * 10.0 / tx:.3f} ms/tx, "
      f"{(b[2] - a[2]) / tx:,.0f} bytes written per tx")

# Checkpoints caught alone between two samples: the engine lock's longest hold while each was written.
whole, delta = [], []
for a, b in zip(rows, rows[1:]):
    sa, sb = a[3], b[3]
    dw = sb.get('checkpointsWhole', 0) - sa.get('checkpointsWhole', 0)
    dd = sb.get('checkpointsDelta', 0) - sa.get('checkpointsDelta', 0)
    if dw + dd == 1:
        (whole if dw else delta).append((sb['lastCheckpointPauseMicros'], sb['indexes']['decisions_remembered']))
if whole or delta:
    d = sorted(h for h, _ in delta)
    if d:
        print(f"longest engine lock hold per checkpoint: deltas median {d[len(d) // 2] / 1000:.1f} ms, max {d[-1] / 1000:.1f} ms ({len(d)} caught)")
    if whole:
        print("whole checkpoints (hold ms at decided ids remembered): " + ", ".join(f"{h / 1000:.1f} at {n:,}" for h, n in whole))

# Retention cuts caught alone between two samples: how long each held the engine lock (truncation and expiring every
# queue's prefix), beside the queue entries the broker held then.
cuts = []
for a, b in zip(rows, rows[1:]):
    sa, sb = a[3], b[3]
    if sb.get('retentionCuts', 0) - sa.get('retentionCuts', 0) == 1 and 'lastRetentionCutPauseMicros' in sb:
        cuts.append((sb['lastRetentionCutPauseMicros'], sb['indexes']['queue_entries']))
if cuts:
    c = sorted(h for h, _ in cuts)
    print(f"engine lock hold per retention cut: median {c[len(c) // 2] / 1000:.1f} ms, max {c[-1] / 1000:.1f} ms "
          f"({len(cuts)} caught, at {min(n for _, n in cuts):,}-{max(n for _, n in cuts):,} queue entries)")
    # Where each cut's hold went (brokers since the split was added): the last search for live bodies, the expiry, and
    # the garbage collector's pauses that fell within the hold.
    parts = [(b[3]['lastRetentionCutPauseMicros'], b[3]['lastRetentionCutSearchMicros'], b[3]['lastRetentionCutExpiryMicros'],
              b[3]['lastRetentionCutGcPauseMicros'])
             for a, b in zip(rows, rows[1:])
             if b[3].get('retentionCuts', 0) - a[3].get('retentionCuts', 0) == 1 and 'lastRetentionCutGcPauseMicros' in b[3]]
    if parts:
        print("each cut caught, hold = search + expiry + rest, GC pauses within (ms): " + ", ".join(
            f"{h / 1000:.1f} = {s_ / 1000:.1f} + {e / 1000:.1f} + {(h - s_ - e) / 1000:.1f}, GC {g / 1000:.1f}" for h, s_, e, g in parts))
