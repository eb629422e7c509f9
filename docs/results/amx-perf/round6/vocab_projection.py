"""The vocabulary projection in bf16 autocast training alone: forward + backward of the own kernel on the float32
weight (``native_vocab_projection``) against today's ``autocast_linear`` (autocast's cast of the weight, oneDNN's
product with the bias inside, aten's backward products, autograd's cast of the bf16 weight gradient back),
the weight and bias requiring grad, alternating A, B, A, B ..., medians. The allocator tuned as in
benchmarks/levers.py (``xmodlm.tune_allocator``: without it glibc serves some of the 16-33 MB buffers by fresh mmaps,
whose page faults cost either path 10-20 ms in some processes and not others); ``--plain-allocator`` leaves glibc's
defaults.

    PYTHONPATH=src python3 docs/results/amx-perf/round6/vocab_projection.py [--reps 30] [--n 303]
"""

import argparse
import statistics
import time

import torch

import xmodlm
from xmodlm.kernels import native
from xmodlm.runtime import machine_info
from xmodlm.kernels.amp import autocast_linear, native_vocab_projection


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--n", type=int, default=303)
    parser.add_argument("--v", type=int, default=32000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--plain-allocator", action="store_true")
    args = parser.parse_args()
    tuned = not args.plain_allocator and xmodlm.tune_allocator()
    assert native.available(), native.reason()
    torch.manual_seed(0)
    x = torch.randn(args.n, args.d, requires_grad=True)
    w = (torch.randn(args.v, args.d) * 0.05).requires_grad_()
    b = torch.randn(args.v).requires_grad_()
    g = (torch.randn(args.n, args.v) * 1e-3).bfloat16()

    def step(fn):
        x.grad = w.grad = b.grad = None
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(x, w, b)
        y.backward(g)
        return time.perf_counter() - start

    calls = {"today (autocast_linear: casts, oneDNN, aten mm)": lambda: step(autocast_linear),
             "own kernel on the float32 weight": lambda: step(native_vocab_projection)}
    times = {name: [] for name in calls}
    for _ in range(3):
        for call in calls.values():
            call()
    for _ in range(args.reps):
        for name, call in calls.items():
            times[name].append(call())
    print(f"CPU: {machine_info()['cpu']}; {torch.get_num_threads()} thread(s); torch {torch.__version__}; "
          f"allocator {'tuned' if tuned else 'glibc defaults'}")
    print(f"N={args.n}, V={args.v}, D={args.d}, bf16 autocast, forward + backward (x, W, b requiring grad), "
          f"{args.reps} alternating repetitions, medians")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, m in medians.items():
        print(f"  {name}: {m * 1e3:.2f} ms (min {min(times[name]) * 1e3:.2f})")
    before, after = medians.values()
    print(f"  ratio today / own kernel: {before / after:.2f}x")


if __name__ == "__main__":
    main()
