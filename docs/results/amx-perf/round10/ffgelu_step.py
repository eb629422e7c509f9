"""The bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"): the bench's train shape, 4 x 256,
vocab 32k, 8 languages, batch 16 x 128, fused AdamW) with the feed-forward input as today's two autograd functions
(oneDNN's product, then the GELU table's pass: "old", twice, the second a control) and as the one function of the own
kernel (gelu._ProductTableGelu: "fused", GELU from the table in the product's epilogue; "fused, sweep": the table's
pass over each chunk of 128 rows inside the same call, after its products; "fused, pairs": the table's pass over each
32-column pair of a chunk after its blocks), the variants taking turns step by step.
Medians of --rounds steps each (after 4 untimed), every step listed, the time inside XmodIntermediate.forward (the
product + GELU's forward) per step, and the medians of the round-by-round differences against "old".
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/ffgelu_step.py
       [--rounds 24] [--threads 1]"""

import argparse
import functools
import statistics
import sys
from pathlib import Path

import torch

import xmodlm

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=24)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
xmodlm.tune_allocator()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round9"))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
from harness import Inside, alternate  # noqa: E402
from train_breakdown import build  # noqa: E402
import xmodlm.model as model_mod  # noqa: E402
from xmodlm.kernels import gelu, native  # noqa: E402

kernel = native.linear_gelu_table
VARIANTS = {"old": (False, 0), "fused": (True, 0), "fused, sweep": (True, 1), "fused, pairs": (True, 2),
            "old again": (False, False)}


def choose(name):
    on, sweep = VARIANTS[name]
    gelu.use_product_gelu(on)
    native.linear_gelu_table = functools.partial(kernel, sweep=sweep)


inside = Inside()
model_mod.XmodIntermediate.forward = inside.wrap(model_mod.XmodIntermediate.forward)
step, _, _ = build("bf16")
phases = {}


def timed():
    took = step()
    phases.setdefault(current[0], []).append(took)
    return took


current = [None]


def pick(name):
    current[0] = name
    choose(name)


steps, within = alternate(list(VARIANTS), pick, timed, args.rounds, warm=4, inside=inside)
print(f"{torch.get_num_threads()} thread(s); bf16 MLM training step, ms: median (min) of {args.rounds} steps each, "
      "alternated step by step; forward and backward medians; inside XmodIntermediate.forward (4 calls) median")
for name in VARIANTS:
    runs = phases[name][-args.rounds:]
    fwd, bwd = (statistics.median(r[i] for r in runs) * 1e3 for i in (0, 1))
    print(f"  {name:13s} step {statistics.median(steps[name]) * 1e3:6.1f} ({min(steps[name]) * 1e3:6.1f})  forward "
          f"{fwd:5.1f}  backward {bwd:5.1f}  ff input forward {statistics.median(within[name]) * 1e3:5.2f}")
    print(f"  {'':13s} steps: " + " ".join(f"{t * 1e3:.1f}" for t in steps[name]))
for name in list(VARIANTS)[1:]:
    d = [(a - b) * 1e3 for a, b in zip(steps["old"], steps[name])]
    w = [(a - b) * 1e3 for a, b in zip(within["old"], within[name])]
    q = sorted(d)
    print(f"  old - {name:13s} step by step: median {statistics.median(d):+.2f} ms (quartiles {q[len(q) // 4]:+.2f} / "
          f"{q[3 * len(q) // 4]:+.2f}); ff input forward {statistics.median(w):+.2f} ms")
