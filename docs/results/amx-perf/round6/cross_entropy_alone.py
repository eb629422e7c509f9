"""The masked-LM loss and its gradient at the training bench's shape (303 scored rows x 32,000, bf16 logits): the
16-row float32 slices (kernels.loss before round 6) against the own kernel, alternating, medians of 20, three times.
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round6/cross_entropy_alone.py"""

import statistics
import subprocess
import time

import torch

from xmodlm.kernels import loss, native

torch.manual_seed(0)
logits = (2 * torch.randn(303, 32000)).bfloat16()
targets = torch.randint(0, 32000, (303,))


class NoKernel:
    @staticmethod
    def available():
        return False


def sliced():
    loss.native = NoKernel
    try:
        return loss._loss_and_gradient(logits, targets)
    finally:
        loss.native = native


def kernel():
    return loss._loss_and_gradient(logits, targets)


cpu = [line for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
       if line.startswith("Model name")]
print(cpu[0] if cpu else "cpu unknown", f"| {torch.get_num_threads()} thread(s)")
for _ in range(3):
    times = {"16-row slices": [], "own kernel": []}
    for i in range(23):
        for name, fn in (("16-row slices", sliced), ("own kernel", kernel)):
            start = time.perf_counter()
            fn()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    a, b = (statistics.median(times[k]) * 1e3 for k in ("16-row slices", "own kernel"))
    print(f"16-row slices {a:.2f} ms, own kernel {b:.2f} ms: {a / b:.2f}x")
