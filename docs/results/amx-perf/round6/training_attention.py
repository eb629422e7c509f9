"""Attention in bf16 autocast training alone, forward and backward, at the train suite's shape (B=16, H=4, T=128,
D=64, dropout 0.1): the own kernel (kernels.attention.native_training_attention) against dropout_attention, the two
alternating call by call in one process. q, k, v are views of one (B, T, 3 * H * D) tensor requiring grad, as the
model's fused projection makes them; the kernel is given that tensor, as the model gives it, so that its gradient
is the kernel's buffer (without it, autograd stacks and copies the three head gradients).

    PYTHONPATH=src python3 docs/results/amx-perf/round6/training_attention.py [--reps 30]"""
import argparse
import statistics
import subprocess
import time

import torch

from xmodlm import kernels
from xmodlm.kernels.attention import dropout_attention, native_training_attention

parser = argparse.ArgumentParser()
parser.add_argument("--reps", type=int, default=30)
args = parser.parse_args()
B, H, T, D = 16, 4, 128, 64
torch.manual_seed(0)
x = torch.randn(B, T, 3 * H * D).bfloat16().requires_grad_()
dropout = kernels.Dropout(0.1).train()
grad = torch.randn(B, H, T, D).bfloat16()


def step(fn, projection=False):
    def call():
        extra = (x,) if projection else ()  # the model gives the projection: its gradient taken directly
        q, k, v = x.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(q, k, v, None, dropout, *extra)
        out.backward(grad)
        x.grad = None
    return call


calls = {"dropout_attention": step(dropout_attention), "own kernel": step(native_training_attention, True),
         "own kernel, heads' own gradients": step(native_training_attention)}
for call in calls.values():
    for _ in range(3):
        call()
times = {name: [] for name in calls}
for _ in range(args.reps):
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        times[name].append(time.perf_counter() - start)
cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
            .stdout.splitlines() if line.startswith("Model name")), "?")
print(f"{cpu}, {torch.get_num_threads()} threads, B={B} H={H} T={T} D={D}, dropout 0.1, {args.reps} reps each, "
      "forward + backward of one layer's attention")
medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
for name, ms in medians.items():
    print(f"  {name}: median {ms:.3f} ms (min {min(times[name]) * 1e3:.3f})")
for name in list(calls)[1:]:
    print(f"  dropout_attention / {name}: {medians['dropout_attention'] / medians[name]:.2f}x")
