"""The bf16 training step's linear backward products timed inside the step, then replayed alone on the same tensors."""
import collections, statistics, sys, time, torch
sys.path.insert(0, "benchmarks"); sys.path.insert(0, "src")  # run from the repository root
import xmodlm; xmodlm.tune_allocator()
import xmodlm.kernels.amp as amp
from train_breakdown import build
phases, flops, tokens = build("bf16")
spent = collections.defaultdict(list); saved = {}
orig_fwd, orig_bwd = amp._BiasInProduct.forward, amp._BiasInProduct.backward
def bwd(ctx, grad):
    x16, w16 = ctx.saved_tensors
    g2 = grad.reshape(-1, grad.shape[-1]); x2 = x16.reshape(-1, x16.shape[-1])
    key = (tuple(g2.shape), tuple(w16.shape))
    s = time.perf_counter(); gx = g2.mm(w16); t1 = time.perf_counter(); gw = g2.t().mm(x2); t2 = time.perf_counter()
    spent[key + ("grad_x",)].append(t1 - s); spent[key + ("grad_w",)].append(t2 - t1)
    saved[key] = (g2.clone(), w16.clone(), x2.clone())
    return orig_bwd(ctx, grad)
amp._BiasInProduct.backward = staticmethod(bwd)
for _ in range(3): phases()
spent.clear()
for _ in range(5): phases()
def t(f, n=15):
    for _ in range(3): f()
    ts = []
    for _ in range(n):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts)
for key, (g2, w16, x2) in saved.items():
    a = statistics.median(spent[key + ("grad_x",)]); b = statistics.median(spent[key + ("grad_w",)])
    ra = t(lambda: g2.mm(w16)); rb = t(lambda: g2.t().mm(x2))
    print(key, f"grad_x in step {a*1e3:.3f} replay {ra*1e3:.3f} | grad_w in step {b*1e3:.3f} replay {rb*1e3:.3f} ms")
