"""Which kernel's fetching ahead counts in the bench's bf16 MLM step (benchmarks/train_breakdown.py's build("bf16")):
native.c of d600a39 (both kernels fetch the next (example, head)'s rows) against copies with the forward's or the
backward's fetches turned off (per_step 0) and against round 8's training attention section (3cfeab4) in the same
file; the time in the attention calls per step (4 forwards, 4 backwards), medians and minima of 12 steps each, the
four alternating step by step after 4 untimed. One thread. Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/training_attention_fetch_step.py"""

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import (build as build_libraries, old_source, replaced, steps_inside,  # noqa: E402
                     with_attention_of)
from train_breakdown import build  # noqa: E402

torch.set_num_threads(1)
xmodlm.tune_allocator()
both, old = old_source("d600a39"), old_source("3cfeab4")
per_step = "            int64_t per_step = (ahead.matrices * t * (d / 32) + steps - 1) / steps;\n"
forward = per_step + "            for (int64_t q0 = 0; q0 < t; q0 += 32) {"
backward = per_step + "            pack_transposed(kh"
sources = {"round 8": with_attention_of(both, old),
           "d600a39: fetches in both": both,
           "fetches in the forward only": replaced(both, backward, backward.replace("/ steps;", "/ steps * 0;")),
           "fetches in the backward only": replaced(both, forward, forward.replace("/ steps;", "/ steps * 0;"))}
libraries = build_libraries(sources)
phases, _, _ = build("bf16")
names = list(libraries)
_, within = steps_inside(libraries, phases, ("training_attention", "training_attention_backward"), 12)
print(f"{torch.get_num_threads()} thread(s); bf16 MLM step's attention calls, ms a step (median of 12, min):")
for name in names:
    print(f"  {name:30s} {statistics.median(within[name]) * 1e3:6.2f}  {min(within[name]) * 1e3:6.2f}")
