"""The own AMX products of the xmod-base bf16 forward (1,024 rows: the fused q/k/v projection 768 -> 2304, the
attention output 768 -> 768 with residual, the feed-forward 768 -> 3072 with GELU and 3072 -> 768 with residual;
and the language modules 128 x 768 -> 384 -> 768 of 8 segments in one xm_modules call) alone, warm, with the base
commit's kernel (twice: two identical libraries, the spread of the method) and today's with K blocked at several
sizes, the libraries alternating call by call in one process (xm_linear called directly on buffers made once);
oneDNN's packed bf16 product (torch.ops.mkldnn._linear_pointwise) alongside. Outputs first compared bit for bit.
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/kblock_alone.py
[--base REV] [--blocks 128 256 384] [--rounds 60]"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xmodlm  # noqa: E402
from variants import Product, check_bits, libraries, patched  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="0973d6e")
parser.add_argument("--blocks", type=int, nargs="+", default=[128, 256, 384])
parser.add_argument("--rounds", type=int, default=60)
parser.add_argument("--v1", action="store_true", help="also the first K-blocked variant (kblock-v1-*.diff: each "
                    "block's epilogue during the next block's last K-block)")
args = parser.parse_args()
torch.set_num_threads(1)
xmodlm.tune_allocator()
extra = {"v1 kb256": patched(args.base, "kblock-v1-epilogue-in-last-kblock.diff")} if args.v1 else {}
libs = libraries(args.base, tuple(args.blocks), control=True, extra=extra)
print("\n".join(check_bits(libs)))

g = torch.Generator().manual_seed(0)
work = {}
for k, n, act, res in [(768, 2304, None, False), (768, 768, None, True), (768, 3072, "gelu", False),
                       (3072, 768, None, True)]:
    p = Product(1024, k, n, act, res, g)
    onednn_w, onednn_b = torch.ops.mkldnn._reorder_linear_weight(p.plain), p.b.bfloat16()

    def theirs(p=p, w=onednn_w, b=onednn_b, act=act):
        if p.r is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(p.x, p.r, w, b, "add")
        return torch.ops.mkldnn._linear_pointwise(p.x, w, b, "gelu" if act else "none", [None], "none" if act else "")
    work[f"1024x{k}->{n}" + (" gelu" if act else "") + (" +residual" if res else "")] = (p, theirs, p.flops)

segs, d, rr = [128] * 8, 768, 384
xm = torch.randn(sum(segs), d, generator=g).bfloat16()
first = [(native.pack((torch.randn(rr, d, generator=g) / d ** 0.5).bfloat16()), torch.randn(rr, generator=g))
         for _ in segs]
second = [(native.pack((torch.randn(d, rr, generator=g) / rr ** 0.5).bfloat16()), torch.randn(d, generator=g))
          for _ in segs]
resm = torch.randn(sum(segs), d, generator=g).bfloat16()


def modules(lib):
    native._STATE["lib"] = lib
    return native.modules(xm, segs, first, second, resm, None)


work["modules 8x128x768->384->768"] = (modules, None, 2 * 2 * sum(segs) * d * rr)

print(f"\n{torch.get_num_threads()} thread(s); each shape alone, warm: GFLOP/s, median of {args.rounds} calls "
      f"(the variants alternating call by call), best call's in brackets; then the medians' ratios to base")
names = list(libs) + ["oneDNN"]
print(f"{'shape':30s}" + "".join(f"{name:>16s}" for name in names) + "  " +
      " ".join(f"{name + '/base':>14s}" for name in names[1:]))
for label, (ours, theirs, flops) in work.items():
    times = {name: [] for name in names}
    for r in range(args.rounds + 3):
        for name in names:
            if name == "oneDNN" and theirs is None:
                continue
            start = time.perf_counter()
            theirs() if name == "oneDNN" else ours(libs[name])
            if r >= 3:
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items() if t}
    print(f"{label:30s}" + "".join(f"{flops / med[nm] / 1e9:7.0f} ({flops / min(times[nm]) / 1e9:5.0f})" if nm in med
                                   else f"{'':>16s}" for nm in names) + "  " +
          " ".join(f"{med['base'] / med[nm]:14.3f}" for nm in names[1:] if nm in med))
