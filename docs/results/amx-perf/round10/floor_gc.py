"""Garbage collections during small-batch steps (forward, backward, zero_grad; 30 steps after 5): how many, of which
generation, how long (gc.callbacks). One thread.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_gc.py 32000
"""
import gc, statistics, time, sys
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config
config = make_config(4, 256, int(sys.argv[1]), 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 8, 16, 8)
spent = []; start = [0.0]; gens = []
def cb(phase, info):
    if phase == "start": start[0] = time.perf_counter()
    else: spent.append(time.perf_counter() - start[0]); gens.append(info["generation"])
gc.callbacks.append(cb)
def step():
    s = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - s
for _ in range(5): step()
spent.clear(); gens.clear()
t = [step() for _ in range(30)]
print("step median %.2f ms; gc runs per step %.1f, gc ms per step %.3f, by generation %s, objects %d" % (
    statistics.median(t) * 1e3, len(spent) / 30, sum(spent) / 30 * 1e3,
    {g: gens.count(g) for g in set(gens)}, len(gc.get_objects())))
print("max gc pause %.3f ms" % (max(spent) * 1e3))
