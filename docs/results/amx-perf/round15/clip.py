"""The trainer's gradient clipping against torch's clip_grad_norm_, on the gradients of `xmodlm bench`'s train model
(4 x 256, 32k vocabulary, 8 languages: 13.6M parameters), alternated in one process.

    PYTHONPATH=src python docs/results/amx-perf/round15/clip.py [ROUNDS]

torch: clip_grad_norm_(params, max_norm): the norm, then every gradient times min(1, max_norm / (norm + 1e-6)).
norm only: what the trainer does where that coefficient is 1 (max_grad_norm 0, or a norm under it): no multiply.
fused AdamW: the step that follows, for scale. Medians of ROUNDS (default 41) calls each, in ms.
"""
import platform
import statistics
import sys
import time

import torch

from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import make_config

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 41
torch.manual_seed(0)
params = list(XmodForMaskedLM(make_config(4, 256, 32000, 8, 128)).parameters())
for p in params:
    p.grad = torch.randn_like(p) * 1e-4  # a norm well under 1: torch multiplies by 1.0
opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
grads = [p.grad for p in params]
fns = {
    "torch clip_grad_norm_(max_norm=1)": lambda: torch.nn.utils.clip_grad_norm_(params, 1.0),
    "norm only (no multiply)": lambda: torch.nn.utils.get_total_norm(grads),
    "fused AdamW step": opt.step,
}
times = {k: [] for k in fns}
for f in fns.values():
    f()
for _ in range(rounds):
    for name, f in fns.items():
        start = time.perf_counter()
        f()
        times[name].append((time.perf_counter() - start) * 1e3)
print(f"{sum(p.numel() for p in params) / 1e6:.1f}M parameters, {torch.get_num_threads()} threads, "
      f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
for name, t in times.items():
    q = statistics.quantiles(t, n=4)
    print(f"{name:36s} median {statistics.median(t):7.2f} ms  (quartiles {q[0]:.2f}-{q[2]:.2f})")
saved = statistics.median(times["torch clip_grad_norm_(max_norm=1)"]) - statistics.median(times["norm only (no multiply)"])
print(f"saved per step where nothing is clipped: {saved:.2f} ms")
