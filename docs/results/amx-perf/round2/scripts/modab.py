import torch, time, statistics
import xmodlm.kernels.modules as km
from _shapes import encoder_bf16
config, m, ids, lang = encoder_bf16()
orig = km._grouped
modes = {"grouped": orig, "loop": lambda *a: 0}
T = {k: [] for k in modes}
with torch.no_grad():
    for i in range(14):
        for k, f in modes.items():
            km._grouped = f
            s = time.perf_counter(); m(ids, lang_ids=lang); t = time.perf_counter() - s
            if i >= 2: T[k].append(t)
for k in T: print(k, "%.1f ms" % (statistics.median(T[k]) * 1e3))
