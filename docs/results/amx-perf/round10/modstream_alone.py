"""The language modules of the xmod-base bf16 forward alone (one xm_modules call: 8 segments of 128 rows, 768 ->
384 GELU -> 768, residual and norm in the call), with the base commit's kernel (twice: two identical libraries, the
spread of the method) and with the weight stream (modstream.diff applied to base's native.c: each thread's module
weights fetched into L2 STREAM_AHEAD bytes before they are read, every STREAM_STRIDE-th line, at their reading
rate) at several distances, the libraries alternating call by call in one process: cold (12 layers' weights in
turn, 8 languages each, 113 MB, as in the forward: each library's turn is one pass over the 12 layers), warm (one
layer's weights, 9 MB, again and again) and hot (one language's weights, 1.2 MB, for all 8 segments: they stay in
L2, the bound with the weights' fetch gone), warm and hot alternating call by call. Outputs first compared bit for
bit. Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/modstream_alone.py
[--base REV] [--ahead 48 96 192 384] [--strides 1] [--rounds 30]; "ahead 96K/4": STREAM_AHEAD 96 KB, STREAM_STRIDE 4"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xmodlm  # noqa: E402
from variants import build, patched, check_bits, old_source, replaced  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="HEAD")
parser.add_argument("--ahead", type=int, nargs="+", default=[48, 96, 192, 384], help="STREAM_AHEAD, KB")
parser.add_argument("--strides", type=int, nargs="+", default=[1], help="STREAM_STRIDE: every n-th line fetched")
parser.add_argument("--rounds", type=int, default=30)
args = parser.parse_args()
torch.set_num_threads(1)
xmodlm.tune_allocator()
today = patched(args.base, "modstream.diff")  # the weight stream, kept as a diff (not taken)
sources = {"base": old_source(args.base)}
sources["base again"] = sources["base"] + "\n"
for kb in args.ahead:
    for stride in args.strides:
        sources[f"ahead {kb}K/{stride}"] = replaced(replaced(today, "#define STREAM_AHEAD (96 * 1024)\n",
                                                             f"#define STREAM_AHEAD ({kb} * 1024)\n"),
                                                    "#define STREAM_STRIDE 1\n", f"#define STREAM_STRIDE {stride}\n")
libs = build(sources)
print("\n".join(check_bits(libs)))

g = torch.Generator().manual_seed(0)
segs, d, rr, layers = [128] * 8, 768, 384, 12
x = torch.randn(sum(segs), d, generator=g).bfloat16()
res = torch.randn(sum(segs), d, generator=g).bfloat16()
nm = (torch.randn(d, generator=g).bfloat16(), torch.randn(d, generator=g).bfloat16(), 1e-5)
weights = [([(native.pack((torch.randn(rr, d, generator=g) / d ** 0.5).bfloat16()), torch.randn(rr, generator=g))
             for _ in segs],
            [(native.pack((torch.randn(d, rr, generator=g) / rr ** 0.5).bfloat16()), torch.randn(d, generator=g))
             for _ in segs]) for _ in range(layers)]
names = list(libs)


def call(name, layer):
    native._STATE["lib"] = libs[name]
    return native.modules(x, segs, weights[layer][0], weights[layer][1], res, nm)


same = {name: all(torch.equal(call(name, i), call(names[0], i)) for i in range(layers)) for name in names}
print("cold outputs (12 layers) bit-identical to base: " + ", ".join(f"{n}: {s}" for n, s in same.items()))
flops = 2 * 2 * sum(segs) * d * rr
cold, warm, hot = {n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names}
weights.append(([weights[0][0][0]] * len(segs), [weights[0][1][0]] * len(segs)))
for r in range(args.rounds + 1):
    for name in names:  # cold: one pass over the 12 layers a turn
        for layer in range(layers):
            start = time.perf_counter()
            call(name, layer)
            if r:
                cold[name].append(time.perf_counter() - start)
    for _ in range(3):  # warm: layer 0 again and again, call by call
        for name in names:
            start = time.perf_counter()
            call(name, 0)
            if r:
                warm[name].append(time.perf_counter() - start)
    for _ in range(3):  # hot: one language's weights (1.2 MB, in L2) for all 8 segments: the weights' fetch gone
        for name in names:
            start = time.perf_counter()
            call(name, 12)
            if r:
                hot[name].append(time.perf_counter() - start)
print(f"\n{torch.get_num_threads()} thread(s); xm_modules 8 x 128 x 768 -> 384 -> 768 (+residual, norm), ms a "
      f"call (median; min) and GFLOP/s of the median; cold {args.rounds} x 12 calls, warm {args.rounds} x 3; "
      f"hot: one language's weights for all segments")
cb, wb = statistics.median(cold["base"]), statistics.median(warm["base"])
for name in names:
    c, w = statistics.median(cold[name]), statistics.median(warm[name])
    print(f"  {name:16s} cold {c * 1e3:6.3f} {min(cold[name]) * 1e3:6.3f} ({flops / c / 1e9:5.0f})  "
          f"base/this {cb / c:.3f}"
          f"   warm {w * 1e3:6.3f} {min(warm[name]) * 1e3:6.3f} ({flops / w / 1e9:5.0f})  base/this {wb / w:.3f}"
          f"   hot {statistics.median(hot[name]) * 1e3:6.3f}  "
          f"base/this {statistics.median(hot['base']) / statistics.median(hot[name]):.3f}")
print("all cold calls, ms (per round, the median of its 12 layers): " + "; ".join(
    f"{n}: " + " ".join(f"{statistics.median(cold[n][i:i + layers]) * 1e3:.3f}" for i in range(0, len(cold[n]), layers))
    for n in names))
print("all hot calls, ms: " + "; ".join(f"{n}: " + " ".join(f"{t * 1e3:.3f}" for t in hot[n]) for n in names))
print("all warm calls, ms: " + "; ".join(f"{n}: " + " ".join(f"{t * 1e3:.3f}" for t in warm[n]) for n in names))
