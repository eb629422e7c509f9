"""The feed-forward input's product + GELU alone in bf16 autocast training: today's two autograd functions
(amp._BiasInProduct with oneDNN's product, then gelu._TableGelu) against the one function of the own kernel
(gelu._ProductTableGelu: "fused", GELU from the table in the product's epilogue; "fused, sweep": the
table's pass over each 128-row chunk after its products, inside the call), the forward alone and forward + backward, at the bench's shape (2048 x 256 -> 1024) and a
bigger model's (2048 x 768 -> 3072). The variants take turns call by call ("old" twice: a control), medians of
--reps calls each, every call listed; also the weight's cast and pack (native.pack) alone, paid in each fused call.
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/ffgelu_alone.py"""

import argparse
import functools
import statistics
import time

import torch

import xmodlm

parser = argparse.ArgumentParser()
parser.add_argument("--reps", type=int, default=40)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
xmodlm.tune_allocator()
from xmodlm.kernels import amp, gelu, native  # noqa: E402


def old(x, w, b):
    return gelu.table_gelu(amp.autocast_linear(x, w, b))


def swept(x, w, b):
    kernel = native.linear_gelu_table
    native.linear_gelu_table = functools.partial(kernel, sweep=1)
    try:
        return gelu.product_gelu(x, w, b)
    finally:
        native.linear_gelu_table = kernel


VARIANTS = {"old": old, "fused": gelu.product_gelu, "fused, sweep": swept, "old again": old}
print(f"{torch.get_num_threads()} thread(s); ms per call, median (min) of {args.reps} calls each, alternated")
for (t, k, n) in ((2048, 256, 1024), (2048, 768, 3072)):
    torch.manual_seed(0)
    x = torch.randn(t, k).bfloat16().requires_grad_()
    w = (torch.randn(n, k) * k ** -0.5).requires_grad_()
    b = torch.randn(n).requires_grad_()
    dg = torch.randn(t, n).bfloat16()
    for what in ("forward", "forward + backward"):
        times = {name: [] for name in VARIANTS}
        for i in range(4 + args.reps * len(VARIANTS)):
            name = list(VARIANTS)[i % len(VARIANTS)]
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                g = VARIANTS[name](x, w, b)
            if what != "forward":
                g.backward(dg)
            took = time.perf_counter() - start
            del g
            x.grad = w.grad = b.grad = None
            if i >= 4:
                times[name].append(took)
        print(f"{t} x {k} -> {n}, {what}:")
        for name, runs in times.items():
            print(f"  {name:12s} {statistics.median(runs) * 1e3:7.3f} ({min(runs) * 1e3:.3f})   "
                  + " ".join(f"{r * 1e3:.2f}" for r in runs))
        diffs = [a - c for a, c in zip(times["old"], times["fused"])]
        control = [a - c for a, c in zip(times["old"], times["old again"])]
        print(f"  old - fused, call by call: median {statistics.median(diffs) * 1e3:+.3f} ms; old - old again "
              f"{statistics.median(control) * 1e3:+.3f} ms")
    parts = {"weight.to(bf16)": lambda: w.detach().to(torch.bfloat16),
             "native.pack(w16)": lambda w16=w.detach().bfloat16(): native.pack(w16)}
    took = {name: [] for name in parts}
    for i in range(args.reps * len(parts)):
        name = list(parts)[i % len(parts)]
        start = time.perf_counter()
        parts[name]()
        took[name].append(time.perf_counter() - start)
    print("  " + "; ".join(f"{name} {statistics.median(r) * 1e3:.3f} ms ({min(r) * 1e3:.3f})" for name, r in took.items()))
