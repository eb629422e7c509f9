"""Each own-kernel product call of the bf16 forward timed inside the forward, then the same calls replayed alone
(warm): python3 docs/results/amx-perf/round5/native_calls_in_forward.py from the repository root, src on PYTHONPATH.
On 3e32de2 the modules' two products were separate calls; since a100b6f they are one (native.modules, not timed here)."""
import collections, statistics, time, torch
import xmodlm, xmodlm.model as model_mod
from xmodlm.kernels import native
import sys
sys.path.insert(0, 'docs/results/amx-perf/round5')
from forward_setup import xmod_base_forward  # run from the repository root
model, ids, lang = xmod_base_forward()
spent = collections.defaultdict(float); count=collections.Counter()
orig = native.segments_linear
calls=[]
def wrapped(x, rows, weights, biases, n, act=None, residual=None, split_rows=False, norm=None):
    s=time.perf_counter(); y=orig(x, rows, weights, biases, n, act, residual, split_rows, norm); e=time.perf_counter()-s
    key=(x.shape[0], x.shape[1], n, act, residual is not None, len(rows))
    spent[key]+=e; count[key]+=1
    if len(calls)<200: calls.append((key,(x, rows, weights, biases, n, act, residual, split_rows, norm)))
    return y
native.segments_linear = wrapped
orig_lin = model_mod.linear
def tl(*a, **kw):
    s=time.perf_counter(); y=orig_lin(*a, **kw); spent['linear()']+=time.perf_counter()-s; return y
model_mod.linear = tl
with torch.no_grad():
    for _ in range(3): model(ids, lang_ids=lang)
    spent.clear(); count.clear(); calls.clear()
    N=10; ts=[]
    for _ in range(N):
        s=time.perf_counter(); model(ids, lang_ids=lang); ts.append(time.perf_counter()-s)
print("forward median ms", statistics.median(ts)*1e3)
iso={}
native.segments_linear = orig
seen=set()
for key,args in calls:
    if key in seen: continue
    seen.add(key)
    for _ in range(3): orig(*args)
    t=[]
    for _ in range(20):
        s=time.perf_counter(); orig(*args); t.append(time.perf_counter()-s)
    iso[key]=statistics.median(t)
for key in spent:
    if key=='linear()': print(key, f"{spent[key]/N*1e3:.1f} ms/forward"); continue
    per=spent[key]/count[key]
    r,k,n=key[0],key[1],key[2]; fl=2*r*k*n
    print(key, f"{spent[key]/N*1e3:.1f} ms/fwd; per call in-model {per*1e3:.3f} ms ({fl/per/1e9:.0f} GF/s) isolated {iso[key]*1e3:.3f} ({fl/iso[key]/1e9:.0f})")
