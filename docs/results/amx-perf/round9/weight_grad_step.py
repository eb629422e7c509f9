"""The bf16 masked-LM training step (benchmarks/train_breakdown.py's build("bf16"): the bench's train shape) with
round 8's weight-gradient kernel (native.c at 3cfeab4, built from git) and with the kernel as built, alternated
step by step in one process, which one first alternating (the two libraries differ in xm_weight_grad alone).
Medians of --steps steps each (after 2 untimed), all steps listed, and the median of the pairs' differences; one
thread or the process's; the allocator tuned as the training recipes do.
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round9/weight_grad_step.py [--steps 30] (from the repository
root, in a git checkout that has 3cfeab4)"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
import xmodlm
xmodlm.tune_allocator()

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
from harness import WEIGHT_GRAD, build as build_libraries, old_source, with_section_of  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

ROUND8 = "3cfeab4"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=30)
args = parser.parse_args()

now = native.SOURCE.read_text()
sources = {f"round 8 ({ROUND8})": with_section_of(now, old_source(ROUND8), WEIGHT_GRAD), "as built": now}
libraries = build_libraries(sources)
step, _, _ = build("bf16")
for lib in libraries.values():
    native._STATE["lib"] = lib
    for _ in range(2):
        step()
times = {name: [] for name in libraries}
names = list(libraries)
for i in range(args.steps):  # which kernel goes first alternates: the second step of a pair fares differently
    for name in names if i % 2 == 0 else names[::-1]:
        native._STATE["lib"] = libraries[name]
        times[name].append(step())
print(f"{torch.get_num_threads()} thread(s); bf16 MLM training step (4 x 256, batch 16 x 128), medians of "
      f"{args.steps} steps each, alternated; ms")
for name, runs in times.items():
    total = [sum(r) for r in runs]
    backward, forward, optimizer = (statistics.median(r[i] for r in runs) * 1e3 for i in (1, 0, 2))
    print(f"{name:20s} step {statistics.median(total) * 1e3:6.1f}   backward {backward:6.1f}   forward {forward:5.1f}"
          f"   optimizer {optimizer:4.1f}")
    print(f"{'':20s} steps: " + " ".join(f"{t * 1e3:.1f}" for t in total))
first, second = ([sum(r) for r in runs] for runs in times.values())
differences = sorted((b - a) * 1e3 for a, b in zip(first, second))
quartiles = differences[len(differences) // 4], differences[3 * len(differences) // 4]
print(f"as built - round 8, step by step (each pair run back to back): median {statistics.median(differences):+.1f} "
      f"ms, quartiles {quartiles[0]:+.1f} / {quartiles[1]:+.1f} ms")
