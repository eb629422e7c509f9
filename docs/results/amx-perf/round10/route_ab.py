"""A/B in one process: XmodModel.forward as on main (the embedded rows regrouped by language) and as in
route-integer-inputs-attempt.diff (the integer inputs regrouped instead), the bench's bf16 training step, alternating step by
step, one thread.

    cp src/xmodlm/model.py /tmp/model_route.py && patch /tmp/model_route.py docs/results/amx-perf/round10/route-integer-inputs-attempt.diff
    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/route_ab.py 24 /tmp/model_route.py
"""
import importlib.util, statistics, sys, time, contextlib
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
import xmodlm.model as main_model
spec = importlib.util.spec_from_file_location("xmodlm.model_route", sys.argv[2],
                                              submodule_search_locations=None)
route = importlib.util.module_from_spec(spec); route.__package__ = "xmodlm"; sys.modules[spec.name] = route; spec.loader.exec_module(route)
forwards = {"main": main_model.XmodModel.forward, "route": route.XmodModel.forward}
from xmodlm.recipes.bench import batch_for, make_config
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = main_model.XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
times = {k: [] for k in forwards}
for r in range(int(sys.argv[1])):
    for name, f in forwards.items():
        main_model.XmodModel.forward = f
        s = time.perf_counter(); step(); t = time.perf_counter() - s
        if r >= 2: times[name].append(t)
for k, v in times.items(): print(k, "median %.2f ms" % (statistics.median(v) * 1e3), " ".join("%.1f" % (x * 1e3) for x in v))
d = [a - b for a, b in zip(times["main"], times["route"])]
print("pair differences main - route: median %.2f ms" % (statistics.median(d) * 1e3))
