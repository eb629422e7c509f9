"""Two of round 5's profile figures, on this tree: (1) the forward with every LayerNorm skipped against with them (own
kernels forced, alternating forwards in one process): what the norms cost before they moved into the products; run it
on 3e32de2's tree for the "before" (on this tree the post-norms are inside the products, so they cost less to skip);
(2) native.pack of a 32,000 x 256 matrix. Run from the repository root: python3 docs/results/amx-perf/round5/pack_and_norm_costs.py"""
import statistics, sys, time
import torch

sys.path.insert(0, "src")
import xmodlm  # noqa: E402
from xmodlm.kernels import native, norm  # noqa: E402
sys.path.insert(0, "docs/results/amx-perf/round5")
from forward_setup import xmod_base_forward  # noqa: E402

xmodlm.kernels.use_autotune(True, force="AMX kernel, rows split")
model, ids, lang = xmod_base_forward()
original, flag = norm.LayerNorm.forward, {"skip": False}
norm.LayerNorm.forward = lambda self, x: x if flag["skip"] else original(self, x)
times = {False: [], True: []}
with torch.no_grad():
    for _ in range(3):
        model(ids, lang_ids=lang)
    for _ in range(12):
        for skip in (False, True):
            flag["skip"] = skip
            start = time.perf_counter(); model(ids, lang_ids=lang); times[skip].append(time.perf_counter() - start)
print(f"forward with LayerNorm {statistics.median(times[False]) * 1e3:.1f} ms, skipped {statistics.median(times[True]) * 1e3:.1f} ms")
w = torch.randn(32000, 256).bfloat16()
native.pack(w)
start = time.perf_counter()
for _ in range(5):
    native.pack(w)
print(f"native.pack 32000 x 256: {(time.perf_counter() - start) / 5 * 1e3:.3f} ms")
