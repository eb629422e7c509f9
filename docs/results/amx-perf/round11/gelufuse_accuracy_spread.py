"""GELU's input gradient, today's (round_bf16(round_bf16(dY W) * slope_f32)) and the fused one
(round_bf16((dY W) * round_bf16(slope))), against float64 (as gelufuse_accuracy.py) on synthetic inputs at the step's
shape (dY 2048 x 256, W 256 x 1024 of std 0.02 as the model's init, h 2048 x 1024): h ~ N(0, sigma) for several sigma,
since the slope's bf16 rounding costs most where GELU' lies just above 1 (h above about 0.75: bf16's
relative step is largest just above a power of two) and least where it is exactly 0, 1/2 or 1. Printed: the fraction
equal to float64's nearest bf16 (nonzero ones), the mean and max relative error, the mean absolute error's ratio
fused / today.
Usage: taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/gelufuse_accuracy_spread.py"""

import math

import torch

from xmodlm.kernels import native

torch.set_num_threads(1)


def nearest_bf16(v):
    b = v.bfloat16()
    bits = b.float().view(torch.int32)
    candidates = torch.stack([b.double(), (bits + 0x10000).view(torch.float32).double(),
                              (bits - 0x10000).view(torch.float32).double()])
    best = (candidates - v).abs().nan_to_num(math.inf).argmin(0)
    return torch.where(v == 0, b, candidates.gather(0, best[None])[0].bfloat16())


gen = torch.Generator().manual_seed(0)
dy = (torch.randn(2048, 256, generator=gen) * 1e-3).bfloat16()
w = (torch.randn(256, 1024, generator=gen) * 0.02).bfloat16()
z = torch.randn(2048, 1024, generator=gen)
print(f"{'sigma':>5s} {'path':6s} {'= f64 bf16':>10s} {'mean rel':>9s} {'max rel':>9s} {'abs err fused/today':>20s}")
for sigma in (0.05, 0.25, 0.5, 1.0, 2.0, 4.0):
    h = (z * sigma).bfloat16()
    x = h.double()
    ref = (dy.double() @ w.double()) * (0.5 * torch.special.erfc(-x / 2 ** 0.5)
                                        + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi))
    ref16, nz = nearest_bf16(ref), ref != 0
    _, s = native.gelu_table_pair(h)
    paths = {"today": native.gelu_table_backward(dy.mm(w), h),
             "fused": torch.ops.mkldnn._linear_pointwise.binary(dy, s, w.t(), None, "mul")}
    absolute = {}
    for name, dh in paths.items():
        rel = ((dh.double() - ref).abs() / ref.abs())[nz]
        absolute[name] = (dh.double() - ref).abs().mean().item()
        ratio = f"{absolute['fused'] / absolute['today']:20.3f}" if name == "fused" else ""
        print(f"{sigma:5.2f} {name:6s} {(dh == ref16)[nz].double().mean().item() * 100:9.3f}% {rel.mean().item():9.2e} "
              f"{rel.max().item():9.2e} {ratio}")
