"""The bench's bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"), after xmodlm.tune_allocator())
with three libraries: native.c of BASE (default 743cd67, main when this round began), the working tree's, and BASE's
again (the control: a second library from the same source), alternating step by step in one process (the order
rotated every round), STEPS each after 6 untimed; also the time inside native.modules_train (forward) and
modules_train_backward (backward) per step (4 layers, each one call forward and one backward). One thread; medians,
mins, and the medians of the paired differences against base. Usage, pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/modtrain_step.py [STEPS] [BASE]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, old_source  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
BASE = sys.argv[2] if len(sys.argv) > 2 else "743cd67"
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread; base {BASE}")
base = old_source(BASE)
libraries = build_libraries({"base": base, "new": native.SOURCE.read_text(), "base again": base + "\n/* again */\n"})
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
for i in range(6 + len(names) * STEPS):
    k = i // len(names)
    order = names[k % len(names):] + names[:k % len(names)]
    name = order[i % len(names)]
    native._STATE["lib"] = libraries[name]
    spent.append([0.0, 0.0])
    step = sum(phases())
    if i >= 6:
        steps[name].append(step)
        inside[name].append(spent[-1])
print(f"bf16 MLM step (4 x 256, 8 languages, 16 x 128), ms: median and min of {min(map(len, steps.values()))}; the "
      f"modules' calls within it (forward, backward: 4 calls each)")
for name in names:
    fwd, bwd = [t[0] for t in inside[name]], [t[1] for t in inside[name]]
    print(f"  {name:10s} step {statistics.median(steps[name]) * 1e3:.2f}  {min(steps[name]) * 1e3:.2f}   modules forward "
          f"{statistics.median(fwd) * 1e3:.3f}  {min(fwd) * 1e3:.3f}   backward {statistics.median(bwd) * 1e3:.3f}  "
          f"{min(bwd) * 1e3:.3f}")
for name in names[1:]:
    n = min(len(steps["base"]), len(steps[name]))
    paired = statistics.median(a - b for a, b in zip(steps["base"][:n], steps[name][:n]))
    pf = statistics.median(a[0] - b[0] for a, b in zip(inside["base"][:n], inside[name][:n]))
    pb = statistics.median(a[1] - b[1] for a, b in zip(inside["base"][:n], inside[name][:n]))
    print(f"  base - {name}, median of {n} paired differences: step {paired * 1e3:+.2f} ms; modules' forward "
          f"{pf * 1e3:+.3f} ms, backward {pb * 1e3:+.3f} ms")
