"""The vocabulary projection's backward alone: today's two calls (xm_vocab_input_grad, then xm_vocab_weight_grad,
each a pass over the gradient; native.c as of the commit given by --before, built here into a temporary folder)
against the one-pass xm_vocab_backward of the working tree (``native.vocab_backward``), alternating A, B, A, B ...,
medians of the wall time and of the process's CPU time (both threads; on a shared host whose CPU quota throttles
the process, the CPU time is the steadier figure); a plain copy of the weight's size (read + write) for the
machine's bandwidth. Bytes: the gradient G
(n x v bf16) read, the weight W (v x d float32) read, dW (v x d float32) written; today's two calls read G twice.
The allocator tuned (``xmodlm.tune_allocator``) as in round 6's vocab_projection.py.

    PYTHONPATH=src python3 docs/results/amx-perf/round7/vocab_backward.py [--reps 30] [--n 303] [--d 256]
"""

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import xmodlm
from xmodlm.kernels import native
from xmodlm.runtime import machine_info


def old_library(commit: str, folder: Path) -> ctypes.CDLL:
    source = folder / "native.c"
    source.write_text(subprocess.run(["git", "show", f"{commit}:src/xmodlm/kernels/native.c"], check=True,
                                     capture_output=True, text=True).stdout)
    subprocess.run(["gcc", *native.FLAGS, str(source), "-o", str(folder / "old.so")], check=True)
    lib = ctypes.CDLL(str(folder / "old.so"))
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    lib.xm_vocab_input_grad.argtypes = [pointer, pointer, size, size, size, pointer]
    lib.xm_vocab_weight_grad.argtypes = [pointer, pointer, size, size, size, pointer, pointer]
    assert lib.xm_request_amx()
    return lib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--n", type=int, default=303)
    parser.add_argument("--v", type=int, default=32000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--before", default="5fb9a3a")
    args = parser.parse_args()
    tuned = xmodlm.tune_allocator()
    assert native.available(), native.reason()
    n, v, d = args.n, args.v, args.d
    torch.manual_seed(0)
    x = torch.randn(n, d).bfloat16()
    w = torch.randn(v, d) * 0.05
    g = (torch.randn(n, v) * 1e-3).bfloat16()
    src, dst = torch.randn(v, d), torch.empty(v, d)
    with tempfile.TemporaryDirectory() as folder:
        old = old_library(args.before, Path(folder))

        def before():
            dx = torch.empty(n, d, dtype=torch.bfloat16)
            dw, db = torch.empty(v, d), torch.empty(v)
            assert old.xm_vocab_input_grad(g.data_ptr(), w.data_ptr(), n, v, d, dx.data_ptr()) == 0
            assert old.xm_vocab_weight_grad(g.data_ptr(), x.data_ptr(), n, v, d, dw.data_ptr(), db.data_ptr()) == 0
            return dx, dw, db

        calls = {f"today ({args.before}: input_grad + weight_grad)": before,
                 "one pass (xm_vocab_backward)": lambda: native.vocab_backward(g, x, w),
                 "copy of a v x d float32 tensor": lambda: dst.copy_(src)}
        a, b = before(), native.vocab_backward(g, x, w)
        times = {name: [] for name in calls}
        cpu = {name: [] for name in calls}
        for _ in range(3):
            for call in calls.values():
                call()
        for _ in range(args.reps):
            for name, call in calls.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                call()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    gb, wb = n * v * 2, v * d * 4
    moved = [2 * gb + 2 * wb, gb + 2 * wb, 2 * wb]
    print(f"CPU: {machine_info()['cpu']}; {torch.get_num_threads()} thread(s); torch {torch.__version__}; "
          f"allocator {'tuned' if tuned else 'glibc defaults'}")
    print(f"N={n}, V={v}, D={d}: G {gb / 1e6:.1f} MB, W and dW {wb / 1e6:.1f} MB each; {args.reps} alternating "
          f"repetitions, medians (min); GB/s = the bytes each moves at least / median")
    for (name, t), m in zip(times.items(), moved):
        med = statistics.median(t)
        print(f"  {name}: {med * 1e3:.2f} ms (min {min(t) * 1e3:.2f}), {m / 1e6:.0f} MB, {m / med / 1e9:.1f} GB/s; "
              f"CPU time {statistics.median(cpu[name]) * 1e3:.2f} ms")
    first, second = (statistics.median(t) for t in list(times.values())[:2])
    first_cpu, second_cpu = (statistics.median(t) for t in list(cpu.values())[:2])
    print(f"  ratio today / one pass: {first / second:.2f}x (CPU time {first_cpu / second_cpu:.2f}x)")
    for name, p, q in zip(("dX", "dW", "db"), a, b):
        difference = (p.float() - q.float()).abs().max().item()
        print(f"  {name}: same bits as today: {torch.equal(p, q)} (max |difference| {difference:.3g})")


if __name__ == "__main__":
    main()
