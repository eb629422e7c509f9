"""Why the hidden-size products run slower inside the bf16 training step than alone: each backward product of
the linears (``amp._BiasInProduct``) timed as the step runs it, then run again at once on the same tensors (now in
cache, the threads awake), and later replayed alone in a loop. If the second call is as slow as the first, the
operands' place in the caches is not the cause; if it is as fast as the replay, it is.

    PYTHONPATH=src python3 docs/results/amx-perf/round7/products_in_step.py"""

import collections
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
from timing import median_time  # noqa: E402  (this folder's helper: the script's own folder is on the path)
import xmodlm  # noqa: E402
import xmodlm.kernels.amp as amp  # noqa: E402
from train_breakdown import build  # noqa: E402

xmodlm.tune_allocator()
phases, flops, tokens = build("bf16")
first, again, saved = collections.defaultdict(list), collections.defaultdict(list), {}
original = amp._BiasInProduct.backward


def timed_backward(ctx, grad):
    x16, w16 = ctx.saved_tensors
    g2, x2 = grad.reshape(-1, grad.shape[-1]), x16.reshape(-1, x16.shape[-1])
    key = (tuple(g2.shape), tuple(w16.shape))
    for name, call in (("grad_x", lambda: g2.mm(w16)), ("grad_w", lambda: g2.t().mm(x2))):
        start = time.perf_counter(); call(); middle = time.perf_counter(); call(); end = time.perf_counter()
        first[key + (name,)].append(middle - start)
        again[key + (name,)].append(end - middle)
    saved[key] = (g2.clone(), w16.clone(), x2.clone())
    return original(ctx, grad)


amp._BiasInProduct.backward = staticmethod(timed_backward)
for _ in range(3):
    phases()
first.clear(); again.clear()
for _ in range(7):
    phases()


print(f"{torch.get_num_threads()} threads; medians in ms: in the step, the same call at once after it, replayed alone")
for key, (g2, w16, x2) in saved.items():
    calls = {"grad_x": lambda: g2.mm(w16), "grad_w": lambda: g2.t().mm(x2)}
    for name, call in calls.items():
        k = key + (name,)
        print(f"{key[0]} x {key[1]} {name}: {1e3 * statistics.median(first[k]):.3f} | "
              f"{1e3 * statistics.median(again[k]):.3f} | {1e3 * median_time(call):.3f}")
