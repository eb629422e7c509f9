"""keep_draws(seed, n, threshold) alone, round 8's (native.c, native.py and dropout.py of 3cfeab4: 262,144 draws a
stream, one scalar chain each) and now's (32,768 draws a stream, 8 at once in vector lanes), alternating call by
call in one process, for the bench's two mask sizes (the residual dropouts' 524,288, the attention dropout's
1,048,576); then both versions' numpy paths (the library off, as where it is not built) for the 1M mask. Medians
and minima of 60 calls each (numpy's: 20), one thread. Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/keep_mask_alone.py"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from variants import load, use  # noqa: E402

torch.set_num_threads(1)
variants = load()
threshold = round(0.1 * 65536) - 32768
print(f"{torch.get_num_threads()} thread(s); keep_draws per call, ms (median, min):")


def measure(n: int, calls: int, kernel: bool = True) -> dict:
    times = {name: [] for name in variants}
    for i in range(calls + 4):
        for name in variants:
            keep_draws = use(variants, name, kernel)
            start = time.perf_counter()
            keep_draws(1000 + i, n, threshold)
            if i >= 4:
                times[name].append(time.perf_counter() - start)
    return times


for n in (524_288, 1_048_576):
    times = measure(n, 60)
    old, new = (statistics.median(times[k]) for k in ("round 8", "now"))
    for name, t in times.items():
        print(f"  n = {n:9,d}  {name:8s} kernel {statistics.median(t) * 1e3:.3f}  {min(t) * 1e3:.3f}")
    print(f"  n = {n:9,d}  round 8 / now: {old / new:.2f}x")
times = measure(1_048_576, 20, kernel=False)  # the numpy paths
old, new = (statistics.median(times[k]) for k in ("round 8", "now"))
for name, t in times.items():
    print(f"  n = 1,048,576  {name:8s} numpy  {statistics.median(t) * 1e3:.3f}  {min(t) * 1e3:.3f}")
print(f"  n = 1,048,576  numpy path now / round 8: {new / old:.2f}x")
