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
T = {True: [], False: []}; outs = {}
with torch.no_grad():
    for i in range(20):
        on = bool(i % 2)
        km.add_residual_on_return(on)
        s = time.perf_counter(); outs[on] = m(ids, lang_ids=lang).last_hidden_state; t = time.perf_counter() - s
        if i >= 4: T[on].append(t)
print("equal outputs:", torch.equal(outs[True], outs[False]))
for on in (False, True): print("on return" if on else "binary conv", "%.1f ms" % (statistics.median(T[on]) * 1e3))
