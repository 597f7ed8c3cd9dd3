#!/usr/bin/env python3
"""Summarise a speedscope JSON written by `dotnet-trace convert --format Speedscope` (sampled thread time).

usage: speedscope_stacks.py FILE [--focus SUBSTRING ...] [--depth N] [--top N] [--exclude-idle]

Prints per-thread sample counts, the top frames by inclusive/exclusive share, and for each --focus frame the most
common caller chains (the N frames above it), so "who blocks in ManualResetEventSlim.Wait" has an answer.
A sample is ~10 ms of one thread's wall time (dotnet-sampled-thread-time samples at ~100 Hz per managed thread).
"""
import json, sys, collections, argparse

ap = argparse.ArgumentParser()
ap.add_argument('file')
ap.add_argument('--focus', action='append', default=[])
ap.add_argument('--depth', type=int, default=8)
ap.add_argument('--top', type=int, default=30)
ap.add_argument('--callees', action='append', default=[], help='frames below (called by) this frame, by share')
ap.add_argument('--exclude-idle', action='store_true', help='drop samples whose leaf is a known idle wait of the thread pool / timers')
a = ap.parse_args()

d = json.load(open(a.file))
frames = [f['name'] for f in d['shared']['frames']]
IDLE = ('LowLevelLifoSemaphore.WaitForSignal', 'SocketAsyncEngine.EventLoop', 'TimerQueue.TimerThread', 'GateThreadStart',
        'Interop+Sys.Read', 'WaitForSocketEvents', 'Heartbeat.TimerLoop')
stacks = []  # (thread, [frame names root..leaf], weight)
for p in d['profiles']:
    name = p.get('name', '?')
    if p['type'] == 'sampled':
        for s, w in zip(p['samples'], p['weights']):
            stacks.append((name, [frames[i] for i in s], w))
    else:  # evented: reconstruct
        st = []
        last = p['startValue']
        for e in p['events']:
            if st:
                stacks.append((name, [frames[i] for i in st], e['at'] - last))
            last = e['at']
            if e['type'] == 'O': st.append(e['frame'])
            else:
                if st: st.pop()
total = sum(w for _, _, w in stacks)
if a.exclude_idle:
    stacks = [x for x in stacks if not any(i in f for f in x[1][-3:] for i in IDLE)]
sub = sum(w for _, _, w in stacks)
print(f'total weight {total:.1f} ({len(stacks)} stacks kept, weight {sub:.1f})')
incl = collections.Counter(); excl = collections.Counter()
for _, fr, w in stacks:
    for f in set(fr): incl[f] += w
    if fr: excl[fr[-1]] += w
print('\n== top inclusive (share of kept weight)')
for f, w in incl.most_common(a.top): print(f'{100*w/sub:6.2f}%  {f[:150]}')
print('\n== top exclusive')
for f, w in excl.most_common(a.top): print(f'{100*w/sub:6.2f}%  {f[:150]}')
for focus in a.focus:
    chains = collections.Counter(); tw = 0
    for _, fr, w in stacks:
        idx = [i for i, f in enumerate(fr) if focus in f]
        if not idx: continue
        i = idx[0]
        tw += w
        chains[' <- '.join(x[:90] for x in reversed(fr[max(0, i - a.depth):i + 1]))] += w
    print(f'\n== callers of "{focus}": {100*tw/sub:.2f}% of kept weight')
    for c, w in chains.most_common(8): print(f'{100*w/sub:6.2f}%  {c}\n')
for focus in a.callees:
    below = collections.Counter(); tw = 0
    for _, fr, w in stacks:
        idx = [i for i, f in enumerate(fr) if focus in f]
        if not idx: continue
        i = idx[0]; tw += w
        below[' -> '.join(x[:80] for x in fr[i + 1:i + 1 + a.depth]) or '(self)'] += w
    print(f'\n== callees of "{focus}": {100*tw/sub:.2f}% of kept weight')
    for c, w in below.most_common(10): print(f'{100*w/sub:6.2f}%  {c}\n')
