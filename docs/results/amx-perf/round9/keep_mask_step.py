"""The bench's bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"), after xmodlm.tune_allocator())
with round 8's dropout mask (native.c, native.py and dropout.py of 3cfeab4) and now's, alternating step by step in one
process, 15 steps each after 4 untimed; also the time spent in keep_draws per step (its 17 calls). One thread.
Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/keep_mask_step.py"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from train_breakdown import build  # noqa: E402
from variants import load, use  # noqa: E402
from xmodlm.kernels import dropout  # noqa: E402

torch.set_num_threads(1)
xmodlm.tune_allocator()
variants = load()
phases, _, _ = build("bf16")
spent = []


def timed(keep_draws):
    def call(*args):
        start = time.perf_counter()
        try:
            return keep_draws(*args)
        finally:
            spent[-1] += time.perf_counter() - start
    return call


steps, masks = {name: [] for name in variants}, {name: [] for name in variants}
for i in range(4 + 2 * 15):
    name = list(variants)[i % 2]
    dropout.keep_draws = timed(use(variants, name))
    spent.append(0.0)
    step = sum(phases())
    if i >= 4:
        steps[name].append(step)
        masks[name].append(spent[-1])
print(f"{torch.get_num_threads()} thread(s); bf16 MLM step, ms (median of 15, min), and keep_draws within it:")
for name in variants:
    print(f"  {name:8s} step {statistics.median(steps[name]) * 1e3:.1f}  {min(steps[name]) * 1e3:.1f}   "
          f"keep_draws {statistics.median(masks[name]) * 1e3:.2f}  {min(masks[name]) * 1e3:.2f}")
old, new = (statistics.median(steps[k]) for k in variants)
print(f"  step round 8 - now: {(old - new) * 1e3:.2f} ms ({old / new:.3f}x)")
