"""The vector weight-gradient kernel (native.weight_grad on a processor without AMX: xm_weight_grad_vector, float32
dW and db) against what autocast's backward runs without it (kernels/amp.py's parameter_grads, off): the bf16
product grad^T x, its cast to float32 (what autograd does for the float32 parameter) and the bias's sum over the
rows, at the bench's MLM shapes (T = 2048 tokens; the tied decoder's 303 scored rows x 32k). Alternating, one call
each per round, a control copy of the baseline; medians over the rounds.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vwgrad_alone.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import xmodlm
from xmodlm.kernels import native

SHAPES = [("QKV", 2048, 768, 256), ("attention out", 2048, 256, 256), ("FF in", 2048, 1024, 256),
          ("FF out", 2048, 256, 1024), ("decoder", 303, 32000, 256)]


def baseline(grad, x):
    return grad.t().mm(x).float(), grad.sum(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    assert native.vector_available() and not native.available()
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds}; ms per call, median (min)")
    for name, t, n, k in SHAPES:
        torch.manual_seed(0)
        grad, x = torch.randn(t, n).bfloat16(), torch.randn(t, k).bfloat16()
        variants = {"kernel": lambda: native.weight_grad(grad, x),
                    "mm+cast+sum": lambda: baseline(grad, x),
                    "mm+cast+sum (control)": lambda: baseline(grad, x)}
        times = {v: [] for v in variants}
        for fn in variants.values():
            fn()
        order = random.Random(0)
        for _ in range(args.rounds):
            for v in order.sample(list(variants), len(variants)):
                fn = variants[v]
                start = time.perf_counter()
                fn()
                times[v].append(time.perf_counter() - start)
        med = {v: statistics.median(s) * 1e3 for v, s in times.items()}
        flops = 2 * t * n * k
        cells = "  ".join(f"{v} {med[v]:.3f} ({min(times[v]) * 1e3:.3f})" for v in variants)
        print(f"{name:14s} T {t:5d} N {n:5d} K {k:5d}: {cells}; kernel {flops / med['kernel'] / 1e6:.0f} GFLOP/s; "
              f"baseline / kernel {med['mm+cast+sum'] / med['kernel']:.2f}x, "
              f"control / baseline {med['mm+cast+sum (control)'] / med['mm+cast+sum']:.2f}x")


if __name__ == "__main__":
    main()
