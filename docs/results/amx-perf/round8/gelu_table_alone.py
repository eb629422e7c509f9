"""GELU and its backward at the feed-forward's shape (2,048 x 1,024 bf16 values) through the own kernel's tables
(native.gelu_table, native.gelu_table_backward) against torch's bf16 gelu and gelu_backward, alternating call by call,
medians of 30; and how often each result is float64's value rounded to bf16.
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round8/gelu_table_alone.py"""

import statistics
import time

import torch

from xmodlm.kernels import native
from xmodlm.runtime import machine_info

torch.manual_seed(0)
h = (torch.randn(2048, 1024) * 2).bfloat16()
dg = (torch.randn(2048, 1024) * 1e-3).bfloat16()
calls = {"torch gelu": lambda: torch.nn.functional.gelu(h), "table gelu": lambda: native.gelu_table(h),
         "torch gelu_backward": lambda: torch.ops.aten.gelu_backward(dg, h),
         "table gelu backward": lambda: native.gelu_table_backward(dg, h)}
times = {name: [] for name in calls}
for f in calls.values():
    f()
for _ in range(30):
    for name, f in calls.items():
        start = time.perf_counter()
        f()
        times[name].append(time.perf_counter() - start)
print(f"{machine_info().get('cpu', '?')}, {torch.get_num_threads()} threads; 2,048 x 1,024 bf16 values")
for name, t in times.items():
    print(f"{name:22s} {statistics.median(t) * 1e3:.3f} ms")
x = h.double()
exact = (0.5 * x * torch.special.erfc(-x / 2 ** 0.5)).bfloat16()
slope = 0.5 * torch.special.erfc(-x / 2 ** 0.5) + x * torch.exp(-x * x / 2) / (2 * torch.pi) ** 0.5
exact_b = (dg.double() * slope).bfloat16()
for name, got, want in (("torch gelu", calls["torch gelu"](), exact), ("table gelu", calls["table gelu"](), exact),
                        ("torch gelu_backward", calls["torch gelu_backward"](), exact_b),
                        ("table gelu backward", calls["table gelu backward"](), exact_b)):
    print(f"{name:22s} float64's value rounded to bf16 for {(got == want).double().mean().item():.2%} of the values")
