"""Where the fused call's time goes, alone, one process, the variants taking turns call by call (medians of --reps):
oneDNN's bf16 product with the bf16 bias (today's forward), the same then the GELU table's pass (today's two
functions' forward, no autograd), the own AMX kernel's product alone (act 0: h only), and the fused kernel with the
GELU from the table in the epilogue ("epilogue"), in a pass over each 128-row chunk after its products ("sweep"), or
after each 32-column pair's blocks ("pairs"); each with the threads sharing the rows or the columns (one thread: the
same work in another order). The packed weight is made once, outside the timing.
Usage (with round10/ffgelu.diff applied): taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3
docs/results/amx-perf/round10/ffgelu_parts.py [--reps 30] [--threads 1]"""

import argparse
import statistics
import time

import torch

import xmodlm

parser = argparse.ArgumentParser()
parser.add_argument("--reps", type=int, default=30)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
xmodlm.tune_allocator()
from xmodlm.kernels import native  # noqa: E402

print(f"{torch.get_num_threads()} thread(s); ms per call, median of {args.reps} calls each, alternated")
for (t, k, n) in ((2048, 256, 1024), (2048, 768, 3072)):
    torch.manual_seed(0)
    x = torch.randn(t, k).bfloat16()
    w16 = (torch.randn(n, k) * k ** -0.5).bfloat16()
    b16 = torch.randn(n).bfloat16()
    packed, b32 = native.pack(w16), b16.float()

    def onednn():
        return torch.ops.mkldnn._linear_pointwise(x, w16, b16, "none", [None], "")

    variants = {"oneDNN product": onednn, "oneDNN + table pass": lambda: native.gelu_table(onednn()),
                "own product, rows": lambda: native.segments_linear(x, (t,), (packed,), (b32,), n, None, None, True),
                "own product, cols": lambda: native.segments_linear(x, (t,), (packed,), (b32,), n, None, None, False)}
    for mode, sweep in (("epilogue", 0), ("sweep", 1), ("pairs", 2)):
        for split, rows in (("rows", True), ("cols", False)):
            variants[f"fused {mode}, {split}"] = (lambda rows=rows, sweep=sweep:
                                                   native.linear_gelu_table(x, packed, b32, n, rows, sweep))
    times = {name: [] for name in variants}
    for i in range(len(variants) * (args.reps + 2)):
        name = list(variants)[i % len(variants)]
        start = time.perf_counter()
        variants[name]()
        if i >= 2 * len(variants):
            times[name].append(time.perf_counter() - start)
    print(f"{t} x {k} -> {n}:")
    for name, runs in times.items():
        print(f"  {name:22s} {statistics.median(runs) * 1e3:7.3f}  (min {min(runs) * 1e3:.3f})")
