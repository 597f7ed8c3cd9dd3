#!/usr/bin/env python3
"""CPU profile summary from `perf script` output (perf record -g on a .NET process with DOTNET_PerfMapEnabled=1).

usage: perf script -i perf.data -F comm,tid,ip,sym,dso | perf_categories.py [--top N] [--focus REGEX ...]

Prints (1) inclusive share of samples per component (a sample counts for every component whose frames appear in its
stack), (2) an exclusive split where each sample goes to the first component found walking from the leaf towards
the root (kernel and runtime leaf frames are charged to the managed code that called them), (3) the top leaf
symbols, and (4) for each --focus regex the most common managed call chains through it.
"""
import sys, re, collections, argparse

ap = argparse.ArgumentParser()
ap.add_argument('--top', type=int, default=25)
ap.add_argument('--focus', action='append', default=[])
a = ap.parse_args()

COMPONENTS = [  # (name, regex on the symbol), most specific first
    ('engine: BrokerEngine (core)', r'HalfMsg\.Broker\.Core\.BrokerEngine'),
    ('engine: RecordLog / RecordCodec', r'HalfMsg\.Broker\.Core\.Storage'),
    ('FASTER (FasterLog, device, commit manager)', r'FASTER\.core'),
    ('broker gRPC front-end (GrpcV5: framing, handlers, converters)', r'HalfMsg\.Broker\.FrontEnds'),
    ('protobuf (parse/serialize)', r'Google\.Protobuf|Apache\.Rocketmq'),
    ('client library (ProducerClient/ConsumerClient)', r'HalfMsg\.(ProducerClient|ConsumerClient)'),
    ('bench harness', r'HalfMsg\.Bench'),
    ('Kestrel HTTP/2 + hosting', r'AspNetCore'),
    ('SocketsHttpHandler HTTP/2 (client)', r'System\.Net\.Http'),
    ('sockets (managed)', r'System\.Net\.Sockets'),
    ('pipelines', r'System\.IO\.Pipelines'),
    ('MD5/crypto', r'MD5|libcrypto|HashAlgorithm|Cryptography'),
    ('thread pool / tasks / async machinery', r'System\.Threading|AsyncTaskMethodBuilder|AsyncValueTaskMethodBuilder|ExecutionContext'),
    ('GC', r'WKS::gc|SVR::gc|gc_heap|GCHeap|GarbageCollect|JIT_New|Alloc'),
]
comp_re = [(n, re.compile(r)) for n, r in COMPONENTS]

samples = []
cur = None
for line in sys.stdin:
    line = line.rstrip('\n')
    if not line.strip():
        if cur: samples.append(cur)
        cur = None
        continue
    if not line.startswith((' ', '\t')):
        if cur: samples.append(cur)
        cur = {'head': line.strip(), 'frames': []}
        continue
    if cur is None: continue
    parts = line.strip().split(' ', 1)
    rest = parts[1] if len(parts) > 1 else ''
    m = re.match(r'(.*) \((.*)\)$', rest)
    sym, dso = (m.group(1), m.group(2)) if m else (rest, '')
    cur['frames'].append((sym, dso))  # leaf first
if cur: samples.append(cur)
n = len(samples)
if n == 0:
    print('no samples'); sys.exit(1)
print(f'{n} samples')

def kind(sym, dso):
    if '[kernel' in dso: return 'kernel'
    if 'libcoreclr' in dso or 'libclrjit' in dso: return 'runtime (libcoreclr: GC, JIT helpers, thread pool native)'
    if 'libc.so' in dso or 'ld-linux' in dso: return 'libc'
    return 'managed/other'

leafk = collections.Counter(kind(*s['frames'][0]) if s['frames'] else 'none' for s in samples)
print('\n== leaf frame kind (where the CPU was when sampled)')
for k, c in leafk.most_common(): print(f'{100*c/n:6.1f}%  {k}')

incl = collections.Counter(); excl = collections.Counter()
for s in samples:
    seen = set(); first = None
    for sym, dso in s['frames']:
        for name, r in comp_re:
            if r.search(sym) or r.search(dso):
                seen.add(name)
                if first is None: first = name
                break
    for name in seen: incl[name] += 1
    if first is None:
        k = kind(*s['frames'][0]) if s['frames'] else 'none'
        first = 'unattributed ' + k
    excl[first] += 1
print('\n== inclusive share by component (stack contains it)')
for name, _ in COMPONENTS: print(f'{100*incl[name]/n:6.1f}%  {name}')
print('\n== exclusive share (first component from the leaf up; kernel/runtime leaves charged to their managed caller)')
for name, c in excl.most_common(): print(f'{100*c/n:6.1f}%  {name}')

leaf = collections.Counter(s['frames'][0][0][:140] for s in samples if s['frames'])
print(f'\n== top {a.top} leaf symbols')
for sym, c in leaf.most_common(a.top): print(f'{100*c/n:6.1f}%  {sym}')

def short(sym):
    sym = re.sub(r'\[OptimizedTier1\]|\[Optimized\]|\[QuickJitted\]|\[PreJIT\]|\[Tier0\]|\[Tier1\]|\[Instrumented\w*\]', '', sym)
    m = re.search(r'\] ([\w.`<>+|,]+::[\w.<>`|]+)', sym) or re.search(r'([\w.`<>+]+::[\w.<>`|]+)', sym)
    return (m.group(1) if m else sym)[:110]

for f in a.focus:
    r = re.compile(f); chains = collections.Counter(); tot = 0
    for s in samples:
        idx = [i for i, (sym, dso) in enumerate(s['frames']) if r.search(sym)]
        if not idx: continue
        tot += 1
        i = idx[-1]  # outermost match
        managed = [short(sym) for sym, dso in s['frames'][i:i + 6]]
        chains[' <- '.join(managed)] += 1
    print(f'\n== "{f}": {100*tot/n:.1f}% of samples; outermost frame and its callers')
    for c, k in chains.most_common(8): print(f'{100*k/n:6.1f}%  {c}')
