"""One feed-forward's GELU forward and backward at the bench's training step's shape (16 x 128 tokens, FF 1024, hidden
256), alone: "base" (today: the forward native.gelu_table; the backward dg = dY W by aten::mm, then
native.gelu_table_backward), "fused" (the forward native.gelu_table_pair, writing the slopes s too; the backward
dh = (dY W) * s in one oneDNN call, the binary "mul" post-op, W read transposed in place) and "base again" (the
control), taking turns call by call; the weight's and bias's gradients (the same in both) left out.
Per variant: the forward's and the backward's medians and minimums (ms) over --rounds rounds.
Usage: taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/gelufuse_alone.py
       [--rounds 60]"""

import argparse
import statistics
import time

import torch

import xmodlm
from xmodlm.kernels import native

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=60)
args = parser.parse_args()
torch.set_num_threads(1)
xmodlm.tune_allocator()
gen = torch.Generator().manual_seed(0)
h = (torch.randn(2048, 1024, generator=gen) * 0.5).bfloat16()
dy = (torch.randn(2048, 256, generator=gen) * 1e-3).bfloat16()
w16 = (torch.randn(256, 1024, generator=gen) * 0.02).bfloat16()  # the FF output's weight (out 256, in 1024)


def base_forward():
    return native.gelu_table(h), None


def base_backward(s):
    return native.gelu_table_backward(dy.mm(w16), h)


def fused_forward():
    return native.gelu_table_pair(h)


def fused_backward(s):
    return torch.ops.mkldnn._linear_pointwise.binary(dy, s, w16.t(), None, "mul")


VARIANTS = {"base": (base_forward, base_backward), "fused": (fused_forward, fused_backward),
            "base again": (base_forward, base_backward)}
times = {name: ([], []) for name in VARIANTS}
for r in range(args.rounds + 2):
    for name, (forward, backward) in VARIANTS.items():
        start = time.perf_counter()
        _, s = forward()
        mid = time.perf_counter()
        backward(s)
        end = time.perf_counter()
        if r >= 2:
            times[name][0].append((mid - start) * 1e3)
            times[name][1].append((end - mid) * 1e3)
print(f"1 thread; ms a call (median, min) over {args.rounds} rounds, the variants taking turns")
print(f"{'variant':12s} {'forward':>8s} {'(min)':>7s}   {'backward':>8s} {'(min)':>7s}   {'both':>6s}")
for name, (f, b) in times.items():
    print(f"{name:12s} {statistics.median(f):8.3f} {min(f):7.3f}   {statistics.median(b):8.3f} {min(b):7.3f}   "
          f"{statistics.median(f) + statistics.median(b):6.3f}")
