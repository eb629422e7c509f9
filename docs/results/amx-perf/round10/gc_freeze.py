"""The bench training step (train_breakdown.build) 60 steps with the garbage collector as is, then 60 after gc.collect(); gc.freeze(),
twice, one thread: mean, median and max step (a full collection walks ~170,000 objects: does it show?).

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/gc_freeze.py
"""
import gc, sys, time, statistics, torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
sys.path.insert(0, "benchmarks")
from train_breakdown import build
phases, _, _ = build("bf16")
for _ in range(3): phases()
res = {}
for mode in ("plain", "frozen", "plain", "frozen"):
    if mode == "frozen": gc.collect(); gc.freeze()
    ts = []
    for _ in range(60):
        s = time.perf_counter(); phases(); ts.append(time.perf_counter() - s)
    if mode == "frozen": gc.unfreeze()
    res.setdefault(mode, []).extend(ts)
    print(mode, "mean %.1f median %.1f max %.1f ms" % (statistics.mean(ts)*1e3, statistics.median(ts)*1e3, max(ts)*1e3), "gc counts", gc.get_count(), flush=True)
