import torch, time, statistics, sys
import xmodlm
import xmodlm.kernels.modules as km
from xmodlm.model import XmodModel
from xmodlm.recipes.bench import batch_for, make_config
xmodlm.tune_allocator()
config = make_config(12, 768, 250002, 81, 128)
torch.manual_seed(0)
m = XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
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
