"""The bench's bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"), after xmodlm.tune_allocator())
with the library of native.c before this round's modules work (06517db: its modules section is round 8's, 3cfeab4's;
every other kernel the same as now) and now's, alternating step by step in one process (the order swapped every
pair), STEPS each after 4 untimed; also the time inside native.modules_train (forward) and modules_train_backward
(backward) per step (4 layers, each one call forward and one backward). One thread. Usage, pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/modules_training_step.py [STEPS]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, old_source  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
OLD = sys.argv[2] if len(sys.argv) > 2 else "06517db"
libraries = build_libraries({OLD: old_source(OLD), "now": native.SOURCE.read_text()})
phases, _, _ = build("bf16")
spent = [[0.0, 0.0]]


def timed(call, which):
    def wrapper(*args):
        start = time.perf_counter()
        try:
            return call(*args)
        finally:
            spent[-1][which] += time.perf_counter() - start
    return wrapper


native.modules_train = timed(native.modules_train, 0)
native.modules_train_backward = timed(native.modules_train_backward, 1)
names = list(libraries)
steps, inside = {name: [] for name in names}, {name: [] for name in names}
for i in range(4 + 2 * STEPS):
    pair = names if (i // 2) % 2 == 0 else names[::-1]
    name = pair[i % 2]
    native._STATE["lib"] = libraries[name]
    spent.append([0.0, 0.0])
    step = sum(phases())
    if i >= 4:
        steps[name].append(step)
        inside[name].append(spent[-1])
print(f"bf16 MLM step (4 x 256, 8 languages, 16 x 128), ms: median and min of {STEPS}; the modules' calls within it "
      f"(forward, backward: 4 calls each)")
for name in names:
    fwd, bwd = [t[0] for t in inside[name]], [t[1] for t in inside[name]]
    print(f"  {name:8s} step {statistics.median(steps[name]) * 1e3:.2f}  {min(steps[name]) * 1e3:.2f}   modules forward "
          f"{statistics.median(fwd) * 1e3:.3f}  {min(fwd) * 1e3:.3f}   backward {statistics.median(bwd) * 1e3:.3f}  "
          f"{min(bwd) * 1e3:.3f}")
old, new = steps[names[0]], steps[names[1]]
paired = statistics.median(a - b for a, b in zip(old, new))
paired_f = statistics.median(a[0] - b[0] for a, b in zip(inside[names[0]], inside[names[1]]))
paired_b = statistics.median(a[1] - b[1] for a, b in zip(inside[names[0]], inside[names[1]]))
print(f"  {OLD} - now, median of the {STEPS} paired differences: step {paired * 1e3:.2f} ms; modules' forward "
      f"{paired_f * 1e3:.3f} ms, backward {paired_b * 1e3:.3f} ms")
