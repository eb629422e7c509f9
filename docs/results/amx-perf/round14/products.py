"""The fp32 training linear's three products per shape of the bench's masked-LM step (4 x 256, 16 x 128 tokens,
V = 32k, ~15% scored), each as OneDNNLinear forms it (oneDNN's inner product on the plain weight; the copies its
operands and AccumulateGrad's layout then need included) and as BLAS's gemm (torch.mm / addmm on the operands as
they lie, transposes as flags). Alternated, best of 3 per round, min over rounds.
Usage: PYTHONPATH=src python docs/results/amx-perf/round14/products.py [rounds]"""
import sys
import time

import torch

from xmodlm.kernels.linear import _mm

torch.manual_seed(0)
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
# (tokens, in, out, per step): QKV, attention output, FFN in, FFN out (x4 layers), LM-head transform, decoder
SHAPES = [(2048, 256, 768, 4), (2048, 256, 256, 4), (2048, 256, 1024, 4), (2048, 1024, 256, 4), (307, 256, 256, 1),
          (307, 256, 32000, 1)]

FORMS = {
    "forward": (lambda x, w, b, g: _mm(x, w, b), lambda x, w, b, g: torch.addmm(b, x, w.t())),
    "grad x": (lambda x, w, b, g: _mm(g, w.t()), lambda x, w, b, g: torch.mm(g, w)),
    "grad W": (lambda x, w, b, g: (_mm(x.t(), g.t()).t() if w.shape[0] >= w.shape[1] else _mm(g.t(), x.t())).contiguous(),
               lambda x, w, b, g: torch.mm(g.t(), x)),
}


def timed(fn, args, n):
    fn(*args)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn(*args)
        best = min(best, (time.perf_counter() - t) / n)
    return best


print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
print("| product | tokens x in -> out | x per step | oneDNN ms | BLAS ms | oneDNN / BLAS | max |diff| / max |ref| |")
print("|---|---|---:|---:|---:|---:|---:|")
total = {"oneDNN": 0.0, "BLAS": 0.0}
for tokens, inp, out, count in SHAPES:
    args = (torch.randn(tokens, inp), torch.randn(out, inp) * inp ** -0.5, torch.randn(out), torch.randn(tokens, out))
    n = max(3, int(2e9 / (2 * tokens * inp * out)))
    for kind, (onednn, blas) in FORMS.items():
        a, b = onednn(*args), blas(*args)
        err = ((a - b).abs().max() / a.abs().max()).item()
        t = {"oneDNN": [], "BLAS": []}
        for _ in range(ROUNDS):
            t["oneDNN"].append(timed(onednn, args, n))
            t["BLAS"].append(timed(blas, args, n))
        o, m = min(t["oneDNN"]) * 1e3, min(t["BLAS"]) * 1e3
        total["oneDNN"] += o * count
        total["BLAS"] += m * count
        print(f"| {kind} | {tokens} x {inp} -> {out} | {count} | {o:.3f} | {m:.3f} | {o / m:.2f}x | {err:.1e} |", flush=True)
print(f"per step: oneDNN {total['oneDNN']:.1f} ms, BLAS {total['BLAS']:.1f} ms")
