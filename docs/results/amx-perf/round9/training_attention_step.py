"""The bench's bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"), after xmodlm.tune_allocator())
with round 8's training attention kernels and now's, alternating step by step in one process, 15 steps each after 4
untimed; also the time spent in the attention calls per step (4 forwards, 4 backwards). "Round 8" is today's
native.c with its training attention section (from "Training: softmax attention" to the vocabulary projection's
section) as of 3cfeab4: every other kernel of the step the same code in both. One thread. Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/training_attention_step.py"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from attention_harness import build as build_libraries, old_source  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

HEAD, TAIL = "/* Training: softmax attention in bf16 autocast training", "/* Training: the vocabulary projection"


def section_of(text: str) -> tuple[int, int]:
    return text.index(HEAD), text.index(TAIL)


torch.set_num_threads(1)
xmodlm.tune_allocator()
now = native.SOURCE.read_text()
old = old_source("3cfeab4")
(a, b), (c, d) = section_of(now), section_of(old)
libraries = build_libraries({"round 8": now[:a] + old[c:d] + now[b:], "now": now})
phases, _, _ = build("bf16")
spent = []


def timed(fn):
    def call(*args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            spent[-1] += time.perf_counter() - start
    return call


native.training_attention = timed(native.training_attention)
native.training_attention_backward = timed(native.training_attention_backward)
steps, inside = {name: [] for name in libraries}, {name: [] for name in libraries}
for i in range(4 + 2 * 15):
    name = list(libraries)[i % 2]
    native._STATE["lib"] = libraries[name]
    spent.append(0.0)
    step = sum(phases())
    if i >= 4:
        steps[name].append(step)
        inside[name].append(spent[-1])
print(f"{torch.get_num_threads()} thread(s); bf16 MLM step, ms (median of 15, min), and the attention calls within it:")
for name in libraries:
    print(f"  {name:8s} step {statistics.median(steps[name]) * 1e3:.1f}  {min(steps[name]) * 1e3:.1f}   "
          f"attention {statistics.median(inside[name]) * 1e3:.2f}  {min(inside[name]) * 1e3:.2f}")
o, n = (statistics.median(steps[k]) for k in libraries)
print(f"  step round 8 - now: {(o - n) * 1e3:.2f} ms ({o / n:.3f}x)")
