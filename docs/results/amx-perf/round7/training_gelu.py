"""The training GELU alone, at the MLM step's feed-forward shape (16 x 128 rows x 1,024, bf16): torch's F.gelu, then
gelu_backward and the bias's gradient as a sum over the rows (what autograd runs with ``use_native_gelu(False)``),
against the own kernel's two calls (``native.gelu_forward``; ``native.gelu_backward`` with the bias's gradient),
alternating call by call, each on several rotating inputs (not all in cache), medians of 25 per round, 5 rounds;
the minimum of the 25 too, the figure least disturbed by other processes on a shared host.

  PYTHONPATH=src python3 docs/results/amx-perf/round7/training_gelu.py  (on main with training-gelu-attempt.diff applied:
  the attempt was measured and not merged)"""

import statistics
import time

import torch
import torch.nn.functional as F

from xmodlm.kernels import native

torch.manual_seed(0)
ROWS, COLS, COPIES = 2048, 1024, 4
xs = [(torch.randn(ROWS, COLS) * 2).bfloat16() for _ in range(COPIES)]
gs = [torch.randn(ROWS, COLS).bfloat16() for _ in range(COPIES)]


def torch_forward():
    for x in xs:
        F.gelu(x)


def torch_backward():
    for g, x in zip(gs, xs):
        torch.ops.aten.gelu_backward(g, x).sum(0)


def native_forward():
    for x in xs:
        native.gelu_forward(x)


def native_backward():
    for g, x in zip(gs, xs):
        native.gelu_backward(g, x, True)


calls = {"torch F.gelu": torch_forward, "native gelu_forward": native_forward,
         "torch gelu_backward + sum(0)": torch_backward, "native gelu_backward (dbias)": native_backward}
print(f"{ROWS} x {COLS} bf16, {torch.get_num_threads()} threads, ms per call: median (minimum) of 25")
for fn in calls.values():
    fn()
for round_ in range(1, 6):
    times = {name: [] for name in calls}
    for _ in range(25):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / COPIES * 1e3)
    med = {name: statistics.median(t) for name, t in times.items()}
    least = {name: min(t) for name, t in times.items()}

    def ratios(m):
        return (f"forward {m['torch F.gelu'] / m['native gelu_forward']:.2f}x, backward "
                f"{m['torch gelu_backward + sum(0)'] / m['native gelu_backward (dbias)']:.2f}x")
    print(f"round {round_}: " + ", ".join(f"{name} {med[name]:.3f} ({least[name]:.3f})" for name in calls)
          + f"; medians: {ratios(med)}; minima: {ratios(least)}")
