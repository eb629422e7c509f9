"""The bench's bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"), after xmodlm.tune_allocator())
with round 8's training attention kernels and now's, alternating step by step in one process, 15 steps each after 4
untimed; also the time spent in the attention calls per step (4 forwards, 4 backwards). "Round 8" is today's
native.c with its training attention section (from "Training: softmax attention" to the vocabulary projection's
section) as of 3cfeab4: every other kernel of the step the same code in both. One thread. Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/training_attention_step.py"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import (build as build_libraries, old_source, print_steps, steps_inside,  # noqa: E402
                     with_attention_of)
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

torch.set_num_threads(1)
xmodlm.tune_allocator()
now = native.SOURCE.read_text()
libraries = build_libraries({"round 8": with_attention_of(now, old_source("3cfeab4")), "now": now})
phases, _, _ = build("bf16")
steps, within = steps_inside(libraries, phases, ("training_attention", "training_attention_backward"), 15)
print_steps(steps, within, "attention")
