"""xm_weight_grad alone, one thread, on the bf16 MLM step's shapes (T x N x K: 2048 x 768/256/1024 x 256,
2048 x 256 x 1024, 303 x 256 x 256), warm (the same operands call after call), the variants of wgblock_variants.py
alternating call by call in one process; medians of --rounds, GFLOP/s and the ratio to main (native.c as in the
working tree; "main again" a second library from the same text: the method's spread). The right variants' dW and db
are checked bit for bit against main's first (step's shapes and odd T, K not a multiple of the chunk width).
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/wgblock_alone.py
[--rounds 40] [--only NAME ...]
[--groups | --buffer | --bounds G T | --parts | --churn | --chunks | --overlap] [--specs 8x8 4x8 ...]"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import xmodlm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round9"))
from harness import build  # noqa: E402
from wgblock_variants import (buffer_variants, chunk_variants, churn_variants, group_variants,  # noqa: E402
                              grouped_bounds, overlap, part_variants, variants)
from xmodlm.kernels import native  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=40)
parser.add_argument("--only", nargs="*")
parser.add_argument("--specs", nargs="*", help="T-tiles x group (tb<T>c<C>), or with --groups group x T-tiles")
parser.add_argument("--bounds", nargs=2, type=int, metavar=("G", "T"), help="g<G>tb<T> and its bounds")
parser.add_argument("--parts", action="store_true", help="main less one part each")
parser.add_argument("--overlap", action="store_true", help="main against wgblock-overlap-layout.diff applied to it")
parser.add_argument("--chunks", action="store_true", help="main with other WGRAD_CHUNK_BYTES")
parser.add_argument("--churn", action="store_true", help="the bounds with and without the dY layout")
parser.add_argument("--buffer", action="store_true", help="the g<G>tb<T>buf variants")
parser.add_argument("--groups", action="store_true", help="the g<G>tb<T> variants (X's pairs reused across blocks)")
args = parser.parse_args()
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
xmodlm.tune_allocator()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print("taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 " + " ".join(sys.argv), f"| commit {commit} |",
      datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

make = buffer_variants if args.buffer else group_variants if args.groups else variants
specs = tuple(tuple(int(v) for v in s.split("x")) for s in args.specs) if args.specs else None
sources = make(native.SOURCE.read_text(), *([specs] if specs else []))
if args.overlap:
    head = sources["main"]
    tree = overlap(head)
    sources = {"main": head, "main again": head, "overlap": tree}
    for ahead in (32, 64):  # dY's rows fetched further ahead (a whole T-tile, two)
        sources[f"overlap fetch{ahead}"] = tree.replace("(r + 16) * ldy", f"(r + {ahead}) * ldy").replace(
            "(r + 17) * ldy", f"(r + {ahead + 1}) * ldy")
if args.chunks:
    sources = chunk_variants(sources["main"])
if args.churn:
    sources = churn_variants(sources["main"])
if args.parts:
    sources = part_variants(sources["main"])
if args.bounds:
    sources = {"main": sources["main"], "main again": sources["main again"], "B in L1": sources["B in L1"],
               **grouped_bounds(sources["main"], *args.bounds)}
if args.only:
    sources = {name: text for name, text in sources.items() if name in ("main", "main again") or name in args.only}
libraries = build(sources)
original = native.weight_grad


def operands(t, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, n, generator=g).bfloat16(), torch.randn(t, k, generator=g).bfloat16()


BITS = [(2048, 768, 256), (2048, 256, 256), (2048, 1024, 256), (2048, 256, 1024), (303, 256, 256), (77, 64, 96),
        (31, 32, 32), (303, 96, 800), (2048, 64, 288), (4000, 64, 320), (1, 32, 64), (1031, 128, 1056)]
right = [name for name in libraries  # (names with a space after the first 5 characters are wrong bounds)
         if name.startswith(("tb", "g", "main", "chunk", "overlap"))
         and (" " not in name[5:] or name.startswith("overlap"))]
for threads in (1, 2, 3):
    torch.set_num_threads(threads)
    for t, n, k in BITS:
        dy, x = operands(t, n, k, seed=t + n + k)
        native._STATE["lib"] = libraries["main"]
        ref = original(dy, x)
        for name in right:
            native._STATE["lib"] = libraries[name]
            got = original(dy, x)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), (name, t, n, k, threads)
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
print(f"bits: {', '.join(right)} equal to main's dW and db for T x N x K in {BITS} at 1, 2 and 3 threads")

SHAPES = [(2048, 768, 256), (2048, 256, 256), (2048, 1024, 256), (2048, 256, 1024), (303, 256, 256)]
names = list(libraries)
print(f"{torch.get_num_threads()} thread(s); GFLOP/s, median of {args.rounds} (ratio to main); warm, alternating")
print(f"{'T x N x K':18s} " + " ".join(f"{n:>16s}" for n in names))
for t, n, k in SHAPES:
    dy, x = operands(t, n, k)
    times = {name: [] for name in names}
    for r in range(args.rounds + 3):
        for name in names if r % 2 else names[::-1]:
            native._STATE["lib"] = libraries[name]
            start = time.perf_counter()
            original(dy, x)
            took = time.perf_counter() - start
            if r >= 3:
                times[name].append(took)
    med = {name: statistics.median(v) for name, v in times.items()}
    flops = 2 * t * n * k
    print(f"{t}x{n}x{k}".ljust(18) + " " + " ".join(
        f"{flops / med[name] / 1e9:7.0f} ({med['main'] / med[name]:5.3f})" for name in names))
