import torch, time, statistics
import xmodlm.kernels.modules as km
from _shapes import encoder_bf16
config, m, ids, lang = encoder_bf16()
T = {True: [], False: []}; outs = {}
with torch.no_grad():
    for i in range(20):
        on = bool(i % 2)
        km.add_residual_on_return(on)
        s = time.perf_counter(); outs[on] = m(ids, lang_ids=lang).last_hidden_state; t = time.perf_counter() - s
        if i >= 4: T[on].append(t)
print("equal outputs:", torch.equal(outs[True], outs[False]))
for on in (False, True): print("on return" if on else "binary conv", "%.1f ms" % (statistics.median(T[on]) * 1e3))
