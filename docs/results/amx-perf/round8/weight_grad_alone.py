"""The linears' weight and bias gradients at the MLM step's shapes (2,048 tokens; QKV 768 x 256, attention output
256 x 256, feed-forward input 1024 x 256 and output 256 x 1024): the own kernel (native.weight_grad: dW and db in
float32) against what the backward ran before (oneDNN's bf16 product dY^T X, the bias's sum, both cast to float32),
warm (the same call again) and after 64 MB of other writes; medians of 15, one thread or the process's.
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round8/weight_grad_alone.py"""

import statistics
import time

import torch

from xmodlm.kernels import native
from xmodlm.runtime import machine_info

torch.manual_seed(0)
junk = torch.zeros(64 * 1024 * 1024 // 4)


def median(f, cold: bool, n: int = 15) -> float:
    times = []
    for _ in range(n + 2):
        if cold:
            junk.add_(1.0)
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


print(f"{machine_info().get('cpu', '?')}, {torch.get_num_threads()} thread(s); ms (torch / own = speed-up)")
for name, n, k in [("QKV", 768, 256), ("attention output", 256, 256), ("feed-forward input", 1024, 256),
                   ("feed-forward output", 256, 1024)]:
    dy, x = torch.randn(2048, n).bfloat16(), torch.randn(2048, k).bfloat16()
    own = lambda: native.weight_grad(dy, x)  # noqa: E731
    before = lambda: (dy.t().mm(x).float(), dy.sum(0).float())  # noqa: E731
    cells = []
    for cold in (False, True):
        a, b = median(own, cold), median(before, cold)
        cells.append(f"{'cold' if cold else 'warm'}: torch {b * 1e3:.2f} / own {a * 1e3:.2f} = {b / a:.2f}x")
    print(f"{name:20s} " + " | ".join(cells))
