import collections, os, statistics, time, torch
import xmodlm, xmodlm.model as model_mod
from forward_setup import xmod_base_forward  # run with this folder on sys.path (python3 <this folder>/<script>)
model, ids, lang = xmod_base_forward()
spent = collections.defaultdict(list)
orig = model_mod.linear
def w(linears, x, act=None, residual=None, **kw):
    s = time.perf_counter(); y = orig(linears, x, act=act, residual=residual, **kw)
    spent[(x.shape[-1], y.shape[-1], act, residual is not None, kw.get("norm") is not None)].append(time.perf_counter() - s); return y
model_mod.linear = w
res = {}
with torch.no_grad():
    for force in ["fused", "AMX kernel, rows split", "AMX kernel", "fused", "AMX kernel, rows split", "AMX kernel"]:
        xmodlm.kernels.use_autotune(True, force=force)
        for _ in range(2): model(ids, lang_ids=lang)
        spent.clear()
        for _ in range(8): model(ids, lang_ids=lang)
        for k, v in spent.items(): res.setdefault((k, force), []).append(statistics.median(v) * 1e3)
for (k, f), v in sorted(res.items()):
    fl = 2 * 1024 * k[0] * k[1]
    print(k, f, " ".join(f"{t:.3f}" for t in v), f"{fl / min(v) / 1e6:.0f} GFLOP/s best")
