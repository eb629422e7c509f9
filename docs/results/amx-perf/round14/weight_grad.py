"""The fp32 weight gradient's formulations, per shape of the bench's masked-LM step (4 x 256, 16 x 128 tokens,
V = 32k, ~15% scored): oneDNN's product as OneDNNLinear.backward forms it (the copies it and AccumulateGrad then make
included) against BLAS's gemm on the transposed operands (torch.mm, no copies, the result in the parameter's layout).
Usage: PYTHONPATH=src python docs/results/amx-perf/round14/weight_grad.py [repeats]"""
import sys
import time

import torch

from xmodlm.kernels.linear import _mm

torch.manual_seed(0)
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
# (tokens, in, out): QKV, attention output, FFN in, FFN out (each x4 layers), LM-head transform, decoder
SHAPES = [(2048, 256, 768), (2048, 256, 256), (2048, 256, 1024), (2048, 1024, 256), (307, 256, 256), (307, 256, 32000)]


def onednn(grad2, x2, out, inp):  # as OneDNNLinear.backward, then AccumulateGrad's layout (param's: contiguous)
    w = _mm(x2.t(), grad2.t()).t() if out >= inp else _mm(grad2.t(), x2.t())
    return w.contiguous()


def blas(grad2, x2, out, inp):
    return torch.mm(grad2.t(), x2)


def timed(fn, *args, n=20):
    fn(*args)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn(*args)
        best = min(best, (time.perf_counter() - t) / n)
    return best


print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
print("| tokens x in -> out | oneDNN + copies ms | BLAS mm ms | ratio | max |diff| / max |ref| |")
print("|---|---:|---:|---:|---:|")
for tokens, inp, out in SHAPES:
    x2, grad2 = torch.randn(tokens, inp), torch.randn(tokens, out)
    a, b = onednn(grad2, x2, out, inp), blas(grad2, x2, out, inp)
    err = ((a - b).abs().max() / a.abs().max()).item()
    n = max(3, int(2e9 / (2 * tokens * inp * out) ))
    times = {"onednn": [], "blas": []}
    for _ in range(REPEATS):  # alternated
        times["onednn"].append(timed(onednn, grad2, x2, out, inp, n=n))
        times["blas"].append(timed(blas, grad2, x2, out, inp, n=n))
    o, m = min(times["onednn"]) * 1e3, min(times["blas"]) * 1e3
    print(f"| {tokens} x {inp} -> {out} | {o:.3f} | {m:.3f} | {o / m:.2f}x | {err:.1e} |")
