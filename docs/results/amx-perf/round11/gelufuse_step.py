"""The bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"): the bench's train shape, 4 x 256, FF 1024,
vocab 32k, 8 languages, batch 16 x 128, fused AdamW) with GELU's backward as its own pass ("base": main's path,
use_fused_gelu_grad(False), twice, the second the control "base again") and inside the FF output's backward product
("fused"), the variants taking turns step by step. Per variant: the step's median and minimum (ms) over --rounds steps
(after 4 untimed), and the time inside the calls the change touches: GELU's forward (gelu._TableGelu /
_TableGeluPair), its backward where it runs (_TableGelu(Pair).backward) and the FF output product's backward
(amp._BiasInProduct.backward on a 1,024-wide input, or gelu._GeluProduct.backward).
Usage: taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/gelufuse_step.py
       [--rounds 20]"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

import xmodlm

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=20)
args = parser.parse_args()
torch.set_num_threads(1)
xmodlm.tune_allocator()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round9"))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
from harness import Inside, alternate  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import amp, gelu  # noqa: E402

inside = Inside()


def wrap_static(cls, name, only=None):
    fn = getattr(cls, name)

    def call(ctx, *a):
        if only is not None and not only(ctx):
            return fn(ctx, *a)
        return inside.wrap(fn)(ctx, *a)
    setattr(cls, name, staticmethod(call))


for cls in (gelu._TableGelu, gelu._TableGeluPair, gelu._GeluProduct):
    wrap_static(cls, "forward" if cls is not gelu._GeluProduct else "backward")
    if cls is not gelu._GeluProduct:
        wrap_static(cls, "backward")
wrap_static(amp._BiasInProduct, "backward", only=lambda ctx: ctx.saved_tensors[0].shape[-1] == 1024)

VARIANTS = {"base": False, "fused": True, "base again": False}
step, _, _ = build("bf16")
steps, within = alternate(list(VARIANTS), lambda name: gelu.use_fused_gelu_grad(VARIANTS[name]), step, args.rounds,
                          inside=inside)
gelu.use_fused_gelu_grad(True)
print(f"1 thread; bf16 MLM step, ms (median, min of {args.rounds} steps each, the variants taking turns), and the time "
      "inside GELU's forward, its backward and the FF output product's backward:")
for name in VARIANTS:
    print(f"  {name:10s} step {statistics.median(steps[name]) * 1e3:7.1f} {min(steps[name]) * 1e3:7.1f}   "
          f"inside {statistics.median(within[name]) * 1e3:6.2f} {min(within[name]) * 1e3:6.2f}")
for a, b in (("base", "fused"), ("base", "base again")):
    d = [(x - y) * 1e3 for x, y in zip(steps[a], steps[b])]
    di = [(x - y) * 1e3 for x, y in zip(within[a], within[b])]
    print(f"  {a} - {b}: step, median of the round-by-round differences {statistics.median(d):+.2f} ms; "
          f"inside {statistics.median(di):+.2f} ms")
