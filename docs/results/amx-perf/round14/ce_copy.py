"""The fused cross-entropy's loss and gradient on float32 logits (303 x 32k, the bench step's scored rows), before
(each slice copied to float32, then its gradient copied into the output) and after (the copy made in the output's
memory) this round, alternated. Usage: PYTHONPATH=src python docs/results/amx-perf/round14/ce_copy.py OLD_TREE [rounds]"""
import importlib.util
import statistics
import sys
import time

import torch

from xmodlm.kernels import loss as new

spec = importlib.util.spec_from_file_location("xmodlm.kernels.old_loss", f"{sys.argv[1]}/src/xmodlm/kernels/loss.py")
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
g = torch.Generator().manual_seed(0)
logits, targets = 4 * torch.randn(303, 32000, generator=g), torch.randint(0, 32000, (303,), generator=g)
a, b = new._loss_and_gradient(logits, targets), old._loss_and_gradient(logits, targets)
print(f"same loss and gradient bits: {torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])}")
times = {"before": [], "after": []}
for i in range(rounds):
    for name, mod in ((("before", old), ("after", new)) if i % 2 == 0 else (("after", new), ("before", old))):
        start = time.perf_counter()
        mod._loss_and_gradient(logits, targets)
        times[name].append(time.perf_counter() - start)
for name, t in times.items():
    print(f"{name}: median {1e3 * statistics.median(t):.1f} ms, min {1e3 * min(t):.1f}")
print(f"before / after, medians: {statistics.median(times['before']) / statistics.median(times['after']):.3f}")
