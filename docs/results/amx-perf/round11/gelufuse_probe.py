"""What oneDNN's binary "mul" post-op takes for the fused GELU gradient, at the step's shape (dY 2048 x 256, the FF
output's weight W 256 x 1024 in bf16, s 2048 x 1024): a float32 `other` with bf16 operands (refused?), W^T passed as
the transposed view (strides) or copied contiguous (the same bits? the time with and without the copy), alternated
call by call with today's two calls (aten::mm, then native.gelu_table_backward) as the reference.
Usage: taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/gelufuse_probe.py"""

import statistics
import time

import torch

import xmodlm
from xmodlm.kernels import native

torch.set_num_threads(1)
xmodlm.tune_allocator()
gen = torch.Generator().manual_seed(0)
dy = (torch.randn(2048, 256, generator=gen) * 1e-3).bfloat16()
w = (torch.randn(256, 1024, generator=gen) * 0.02).bfloat16()
h = (torch.randn(2048, 1024, generator=gen) * 0.5).bfloat16()
_, s = native.gelu_table_pair(h)
binary = torch.ops.mkldnn._linear_pointwise.binary
try:
    binary(dy, s.float(), w.t(), None, "mul")
    print("float32 other with bf16 operands: accepted")
except RuntimeError as e:
    print(f"float32 other with bf16 operands: refused ({str(e).splitlines()[0]})")
wt = w.t().contiguous()
print("W^T as a view and copied contiguous give the same bits:",
      torch.equal(binary(dy, s, w.t(), None, "mul"), binary(dy, s, wt, None, "mul")))
calls = {"today: mm + gelu_table_backward": lambda: native.gelu_table_backward(dy.mm(w), h),
         "binary mul, W^T a view": lambda: binary(dy, s, w.t(), None, "mul"),
         "binary mul, W^T copied before": lambda: binary(dy, s, wt, None, "mul"),
         "binary mul, W^T copied in the call": lambda: binary(dy, s, w.t().contiguous(), None, "mul"),
         "the product alone (no post-op)": lambda: torch.ops.mkldnn._linear_pointwise(dy, w.t(), None, "none",
                                                                                      [None], ""),
         "today again (control)": lambda: native.gelu_table_backward(dy.mm(w), h)}
times = {name: [] for name in calls}
for r in range(62):
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        if r >= 2:
            times[name].append((time.perf_counter() - start) * 1e3)
print("1 thread; ms a call, median (min) of 60, the calls taking turns")
for name, t in times.items():
    print(f"  {name:38s} {statistics.median(t):6.3f} ({min(t):.3f})")
