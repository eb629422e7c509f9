"""The language modules of one layer in bf16 autocast training, forward and backward, alone: autocast's batched path
(``modules.run_batched``: stacked weights, baddbmm, GELU; autograd's backward) against the own kernel
(``module_training.native_training_modules``: one call each way), and the kernel's two C calls alone (no autograd),
alternating call by call in one process, one thread; both read h's bf16 copy as in the step (the fused norm's ``bf16_twin``), the parameters' gradients set to
None before each call (stolen by autograd, as after ``zero_grad``). Run pinned to one core:

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round8/modules_training_alone.py
"""

from __future__ import annotations

import statistics
import time

import torch

import xmodlm
from xmodlm.kernels import native
from xmodlm.kernels.modules import run_batched
from xmodlm.kernels.module_training import native_modules_apply, native_training_modules
from xmodlm.runtime import machine_info


class Module(torch.nn.Module):
    def __init__(self, d, r):
        super().__init__()
        self.dense1, self.dense2 = torch.nn.Linear(d, r), torch.nn.Linear(r, d)
        self.act, self.act_name = torch.nn.GELU(), "gelu"


def case(segments, examples, positions, d, r, repeats=25):
    torch.manual_seed(0)
    modules = [Module(d, r) for _ in range(segments)]
    params = [p for m in modules for p in m.parameters()]
    rows = tuple([examples] * segments)
    h = torch.randn(segments * examples, positions, d, requires_grad=True)
    # h's bf16 copy as the fused norm before the modules writes it in the step (bf16_twin): both paths read it, so
    # neither casts h nor, in the backward, its gradient back (the norm's backward takes the bf16 gradient)
    twin = h.detach().bfloat16().requires_grad_()
    h._xmodlm_bf16 = (twin, h._version)
    dy = torch.randn(segments * examples, positions, d).bfloat16()
    owner = object()

    def old():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = run_batched(owner, h, rows, True, modules)
        y.backward(dy)

    def new():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert native_modules_apply(h, modules, True)
            y = native_training_modules(h, rows, modules, twin)
        y.backward(dy)
    x16, dy16 = twin.detach().view(-1, d), dy.view(-1, d)
    weights = [[getattr(m, lin).weight.detach() for m in modules] for lin in ("dense1", "dense2")]
    biases = [[getattr(m, lin).bias.detach() for m in modules] for lin in ("dense1", "dense2")]
    counts = [examples * positions] * segments

    def kernel():  # the two C calls alone, no autograd
        _, slope, g, pairs = native.modules_train(x16, counts, weights[0], biases[0], weights[1], biases[1])
        native.modules_train_backward(dy16, x16, slope, g, pairs, counts)
    times = {"old": [], "new": [], "kernel": []}
    for i in range(repeats + 3):
        order = (("old", old), ("new", new), ("kernel", kernel))
        for name, call in order if i % 2 == 0 else order[::-1]:
            for p in params:
                p.grad = None
            h.grad = twin.grad = None
            start = time.perf_counter()
            call()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    a, b, c = (statistics.median(times[k]) for k in ("old", "new", "kernel"))
    flops = 6 * 2 * segments * examples * positions * d * r
    print(f"{segments} segments x {examples * positions} rows, d {d}, r {r}: autocast batched {a * 1e3:.2f} ms, "
          f"own kernel's Function {b * 1e3:.2f} ms ({a / b:.1f}x), of which the two C calls {c * 1e3:.2f} ms "
          f"({flops / c / 1e9:.0f} GFLOP/s of the 6 products); forward + backward, medians of {repeats}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    xmodlm.tune_allocator()  # as the benchmarks run: large buffers from the heap, not fresh pages every call
    assert native.available(), native.reason()
    print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    case(8, 2, 128, 256, 128)   # the bench's MLM step: 8 languages x 2 examples x 128 tokens, hidden 256
    case(8, 1, 128, 768, 384)   # xmod-base's width, 8 x 128 rows
