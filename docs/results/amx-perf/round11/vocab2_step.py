"""The vocabulary projection of this tree against BASE's (default d35d535) in the bench's bf16 training step
(benchmarks/train_breakdown.py's build("bf16"), after xmodlm.tune_allocator(), the fused loss on as by default):
three libraries, base, new (native.c now) and "base again" (a second library from BASE's source: the method's
spread). In one process, alternating. Two measurements:

* alone: the step's own calls (captured from a step: 303 scored rows x 256, the float32 tied weight 32,000 x 256
  and its bias, the targets, W16's buffer), the forward with the statistics writing W16 then the backward forming
  the loss's gradient and reading W16 (dX, dW, db), CALLS pairs per round, ROUNDS rounds, the libraries taking
  turns in a rotating order;
* in the step: STEPS whole steps of each after 3 untimed, the libraries taking turns step by step (rotating order),
  and the time inside native.vocab_forward and native.vocab_backward within each step.

One thread. Usage, pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/vocab2_step.py \
        [STEPS] [ROUNDS] [CALLS] [BASE]
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
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
CALLS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
BASE = sys.argv[4] if len(sys.argv) > 4 else "d35d535"
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
libraries = build_libraries({"base": old_source(BASE), "new": native.SOURCE.read_text(),
                             "base again": old_source(BASE)})
names = list(libraries)
phases, _, _ = build("bf16")
step = lambda: sum(phases())  # noqa: E731
native._STATE["lib"] = libraries["base"]
captured = {}


def capturing(name):
    original = getattr(native, name)

    def call(*args, **kwargs):
        captured[name] = ([a.clone() if isinstance(a, torch.Tensor) else a for a in args],
                          {k: tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in a) if isinstance(a, tuple)
                           else a.clone() if isinstance(a, torch.Tensor) else a for k, a in kwargs.items()})
        return original(*args, **kwargs)
    setattr(native, name, call)
    return original


originals = {name: capturing(name) for name in ("vocab_forward", "vocab_backward")}
for _ in range(2):
    step()
for name, original in originals.items():
    setattr(native, name, original)
(x, w, b), forward_kw = captured["vocab_forward"]
(_, _, _, *flags), backward_kw = captured["vocab_backward"]
targets, _, _, scale = backward_kw["loss"]
pairs = native.vocab_pairs(w)
print(f"the step's calls: x {tuple(x.shape)} {x.dtype}, W {tuple(w.shape)} {w.dtype}, b {tuple(b.shape)}, "
      f"statistics {forward_kw.get('statistics')}, W16 {forward_kw.get('pairs') is not None}; backward "
      f"dX/dW/db {flags}, the loss's gradient formed {backward_kw.get('loss') is not None}, scale 1/{round(1 / scale)}")


def alone_pair():
    logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True, pairs=pairs)
    native.vocab_backward(logits, x, w, *flags, loss=(targets, row_max, row_total, scale), pairs=pairs)


alone = {name: [] for name in names}
for r in range(ROUNDS + 1):
    for name in names[r % 3:] + names[:r % 3]:
        native._STATE["lib"] = libraries[name]
        start = time.perf_counter()
        for _ in range(CALLS):
            alone_pair()
        if r:  # the first round warms up
            alone[name].append((time.perf_counter() - start) / CALLS)
print(f"alone: forward + backward on the step's inputs, ms a pair (median and min of {ROUNDS} rounds of {CALLS}); "
      f"every round:")
for name in names:
    print(f"  {name:10s} {statistics.median(alone[name]) * 1e3:7.2f} {min(alone[name]) * 1e3:7.2f}   "
          + " ".join(f"{t * 1e3:.2f}" for t in alone[name]))
base = statistics.median(alone["base"])
print(f"  base / new {base / statistics.median(alone['new']):.3f}x, "
      f"base / base again {base / statistics.median(alone['base again']):.3f}x")

spent = [[0.0, 0.0]]


def timed(call, which):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            spent[-1][which] += time.perf_counter() - start
    return wrapper


native.vocab_forward = timed(native.vocab_forward, 0)
native.vocab_backward = timed(native.vocab_backward, 1)
steps, inside = {name: [] for name in names}, {name: [] for name in names}
for i in range(3 + 3 * STEPS):
    rotation = i // 3
    order = names[rotation % 3:] + names[:rotation % 3]
    name = order[i % 3]
    native._STATE["lib"] = libraries[name]
    spent.append([0.0, 0.0])
    took = step()
    if i >= 3:
        steps[name].append(took)
        inside[name].append(spent[-1])
print(f"in the step (4 x 256, 8 languages, 16 x 128, bf16 autocast, fused AdamW), ms: median and min of {STEPS}; "
      f"inside vocab_forward, vocab_backward (median) and their sum (median, min)")
for name in names:
    parts = [[t[k] for t in inside[name]] for k in range(2)]
    total = [sum(t) for t in inside[name]]
    print(f"  {name:10s} step {statistics.median(steps[name]) * 1e3:7.2f} {min(steps[name]) * 1e3:7.2f}   inside "
          + " ".join(f"{statistics.median(p) * 1e3:6.2f}" for p in parts)
          + f"   sum {statistics.median(total) * 1e3:6.2f} {min(total) * 1e3:6.2f}")
for name in names:
    print(f"  {name:10s} steps: " + " ".join(f"{t * 1e3:.1f}" for t in steps[name]))
for other in ("new", "base again"):
    paired = statistics.median(a - c for a, c in zip(steps["base"], steps[other]))
    paired_in = statistics.median(sum(a) - sum(c) for a, c in zip(inside["base"], inside[other]))
    paired_bw = statistics.median(a[1] - c[1] for a, c in zip(inside["base"], inside[other]))
    print(f"  base - {other}, median of the {STEPS} paired differences: step {paired * 1e3:.2f} ms, inside the calls "
          f"{paired_in * 1e3:.2f} ms (backward {paired_bw * 1e3:.2f}); step ratio "
          f"{statistics.median(steps['base']) / statistics.median(steps[other]):.3f}x")
