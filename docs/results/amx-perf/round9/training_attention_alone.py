"""The training attention kernels alone, round 8's (native.c of 3cfeab4) against native.c as it is, at the bench's
training step's shape (attention_harness.py: batch 16, 4 heads, T 128, d 64, q k v heads of one fused projection,
the dropout's keep mask, no key mask), one thread, alternating round by round in one process: each round 10
forwards, then 10 backwards per library; medians (and minima) of 25 rounds, ms per call. Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/training_attention_alone.py"""

import statistics
import sys
from pathlib import Path

import torch

import xmodlm
from xmodlm.kernels import native

sys.path.insert(0, str(Path(__file__).parent))
from harness import build, inputs, old_source, report, time_calls  # noqa: E402

xmodlm.tune_allocator()
torch.set_num_threads(1)
libraries = build({"round 8 (3cfeab4)": old_source("3cfeab4"), "now": native.SOURCE.read_text()})
times = time_calls(libraries, rounds=25, calls=10, args=inputs(libraries["now"]))
print(f"{torch.get_num_threads()} thread(s); batch 16, 4 heads, T 128, d 64, dropout keep mask, no key mask; "
      "ms per call (medians of 25 rounds of 10 calls, minima), alternating:")
report(times, "round 8 (3cfeab4)")
(f0, b0), (f1, b1) = ([statistics.median(x) for x in t] for t in times.values())
print(f"now / round 8: forward {f1 / f0:.3f}, backward {b1 / b0:.3f}, both {(f1 + b1) / (f0 + b0):.3f}")
