import torch, time, statistics, sys
from xmodlm import kernels
from _shapes import mlm_small
config, model, ids, lang, labels, opt = mlm_small()
amp = sys.argv[1] == "bf16"
T = {True: [], False: []}
for i in range(24):
    on = bool(i % 2)
    if sys.argv[2] == "tied": kernels.use_tied_row_gradient(on)
    else: kernels.use_onednn_autocast("vocabulary" if on else "none")
    s0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    f = time.perf_counter() - s0
    s = time.perf_counter(); loss.backward(); b = time.perf_counter() - s
    s = time.perf_counter(); opt.step(); opt.zero_grad(set_to_none=True); o = time.perf_counter() - s
    if i >= 4: T[on].append((f, b, o))
for on in (False, True):
    print(sys.argv[1:], "on" if on else "off", "forward %.1f ms, backward %.1f ms, optimizer %.1f ms" % tuple(statistics.median(x[j] for x in T[on]) * 1e3 for j in (0, 1, 2)))
