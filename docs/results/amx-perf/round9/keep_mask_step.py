"""The bench's bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"), after xmodlm.tune_allocator())
with round 8's dropout mask (native.c, native.py and dropout.py of 3cfeab4) and now's, alternating step by step in one
process, 15 steps each after 4 untimed; also the time spent in keep_draws per step (its 17 calls). One thread.
Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/keep_mask_step.py"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import Inside, alternate, print_steps  # noqa: E402
from train_breakdown import build  # noqa: E402
from variants import load, use  # noqa: E402
from xmodlm.kernels import dropout  # noqa: E402

torch.set_num_threads(1)
xmodlm.tune_allocator()
variants = load()
phases, _, _ = build("bf16")
inside = Inside()


def choose(name):
    dropout.keep_draws = inside.wrap(use(variants, name))


steps, masks = alternate(list(variants), choose, phases, 15, inside=inside)
print_steps(steps, masks, "keep_draws")
