"""(Needs round8/training-gelu-fused-attempt.diff applied: the attempt was not kept.) The feed-forward alone at the MLM step's shape (16 x 128 = 2,048 rows, 256 -> 1,024 -> 256, bf16 autocast
training, fp32 parameters): ``linear(act="gelu")`` then ``linear`` on its output, forward and backward, with the
feed-forward GELU between oneDNN's products (``use_fused_training_gelu(False)``: today's path) and inside the own
kernel's products (True), alternating call by call in one process; per call the forward, the backward and both
timed; medians (and minima, the figures least disturbed by other processes) of ROUNDS x CALLS calls each way.

  taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round8/ffn_gelu_alone.py"""

import statistics
import sys
import time

import torch

import xmodlm
import xmodlm.kernels as kernels
from xmodlm.kernels.linear import linear

CALLS, ROUNDS = 10, 3
xmodlm.tune_allocator()  # as the benchmarks: freed buffers reused, not returned to the system and faulted in again
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.manual_seed(0)
first, second = torch.nn.Linear(256, 1024), torch.nn.Linear(1024, 256)
x = torch.randn(16, 128, 256).bfloat16().requires_grad_()  # the fused norm's bf16 copy the products read
dy = torch.randn(16, 128, 256).bfloat16()


def step():
    """One forward and backward: (forward, backward) seconds."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = linear((second,), linear((first,), x, act="gelu"))
    middle = time.perf_counter()
    y.backward(dy)
    return middle - start, time.perf_counter() - middle


def main():
    times = {False: [], True: []}
    for enabled in (False, True, False, True):  # warm-up, both ways
        kernels.use_fused_training_gelu(enabled)
        step()
    for _ in range(ROUNDS):
        for _ in range(CALLS):
            for enabled in (False, True):
                kernels.use_fused_training_gelu(enabled)
                first.zero_grad(set_to_none=True), second.zero_grad(set_to_none=True)
                x.grad = None
                times[enabled].append(step())
    kernels.use_fused_training_gelu(True)
    print(f"{torch.get_num_threads()} thread(s), {ROUNDS * CALLS} calls each way, alternating; ms")
    print(f"{'path':52s} {'forward':>16s} {'backward':>16s} {'both':>16s}")
    print(f"{'':52s} {'median   min':>16s} {'median   min':>16s} {'median   min':>16s}")
    medians = {}
    for enabled, name in ((False, "GELU between oneDNN's products (switch off)"),
                          (True, "GELU inside the own kernel's products (switch on)")):
        cols = []
        for part in (lambda t: t[0], lambda t: t[1], lambda t: t[0] + t[1]):
            values = [1e3 * part(t) for t in times[enabled]]
            cols.append(f"{statistics.median(values):7.3f} {min(values):7.3f}")
        medians[enabled] = statistics.median([1e3 * (t[0] + t[1]) for t in times[enabled]])
        print(f"{name:52s} {cols[0]:>16s} {cols[1]:>16s} {cols[2]:>16s}")
    print(f"speed-up of the feed-forward (median, forward + backward): {medians[False] / medians[True]:.2f}x")


if __name__ == "__main__":
    main()
