"""The masked-LM head's end in the bench's bf16 training step (benchmarks/train_breakdown.py's build("bf16"), after
xmodlm.tune_allocator()): main's path (the library of native.c at MAIN, the fused loss off: the projection, the
loss's own pass writing dlogits, the backward reading them) against this branch's (the library of native.c now,
kernels.use_fused_vocab_loss on: the projection gives the row statistics, the backward forms dlogits from the
logits). In one process, alternating. Two measurements:

* alone: the step's own inputs of the projection and the loss (captured from a step: 303 scored rows x 256, the
  float32 tied weight 32,000 x 256 and its bias, the targets), the three calls replayed as the step makes them
  (forward, loss, backward, with dX, dW and db), CALLS per round, ROUNDS rounds, the variants taking turns;
* in the step: STEPS whole steps each after 4 untimed, taking turns step by step (the order swapped every pair), and
  the time inside native.vocab_forward, native.cross_entropy and native.vocab_backward within each step.

One thread. Usage, pinned:

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/vocab_ce_step.py \
        [STEPS] [ROUNDS] [CALLS] [MAIN]
"""

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, calls_of, old_source  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import amp, native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
CALLS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
MAIN = sys.argv[4] if len(sys.argv) > 4 else "0973d6e"
torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # THREADS=2: both cores (nothing else running)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
libraries = build_libraries({"main": old_source(MAIN), "fused": native.SOURCE.read_text()})
FUSED = {"main": False, "fused": True}


def choose(name):
    native._STATE["lib"] = libraries[name]
    amp.use_fused_vocab_loss(FUSED[name])


phases, _, _ = build("bf16")
step = lambda: sum(phases())  # noqa: E731
choose("main")
(x, w, b), = calls_of(native, "vocab_forward", step)
(_, targets, scale), = calls_of(native, "cross_entropy", step)
n = x.shape[0]
print(f"the step's vocabulary projection: x {tuple(x.shape)} {x.dtype}, W {tuple(w.shape)} {w.dtype}, "
      f"b {tuple(b.shape)}, {targets.numel()} targets, scale 1/{round(1 / scale)}")


def alone_main():
    logits = native.vocab_forward(x, w, b)
    losses, grad = native.cross_entropy(logits, targets, scale)
    losses.mean()
    native.vocab_backward(grad, x, w)


def alone_fused():
    logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True)
    (row_total.log() + row_max - logits.gather(1, targets[:, None]).squeeze(1).float()).mean()
    native.vocab_backward(logits, x, w, loss=(targets, row_max, row_total, scale))


ALONE = {"main": alone_main, "fused": alone_fused}
names = list(libraries)
alone = {name: [] for name in names}
for r in range(ROUNDS + 1):
    for name in (names if r % 2 == 0 else names[::-1]):
        choose(name)
        start = time.perf_counter()
        for _ in range(CALLS):
            ALONE[name]()
        if r:  # the first round warms up
            alone[name].append((time.perf_counter() - start) / CALLS)
print(f"alone: forward + loss + backward on the step's inputs, ms a call (median and min of {ROUNDS} rounds of "
      f"{CALLS}); every round:")
for name in names:
    print(f"  {name:6s} {statistics.median(alone[name]) * 1e3:7.2f} {min(alone[name]) * 1e3:7.2f}   "
          + " ".join(f"{t * 1e3:.2f}" for t in alone[name]))
print(f"  main / fused: {statistics.median(alone['main']) / statistics.median(alone['fused']):.3f}x")

spent = [[0.0, 0.0, 0.0]]


def timed(call, which):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            spent[-1][which] += time.perf_counter() - start
    return wrapper


native.vocab_forward = timed(native.vocab_forward, 0)
native.cross_entropy = timed(native.cross_entropy, 1)
native.vocab_backward = timed(native.vocab_backward, 2)
steps, inside = {name: [] for name in names}, {name: [] for name in names}
for i in range(4 + 2 * STEPS):
    pair = names if (i // 2) % 2 == 0 else names[::-1]
    name = pair[i % 2]
    choose(name)
    spent.append([0.0, 0.0, 0.0])
    took = step()
    if i >= 4:
        steps[name].append(took)
        inside[name].append(spent[-1])
print(f"in the step (4 x 256, 8 languages, 16 x 128, bf16 autocast, fused AdamW), ms: median and min of {STEPS}; "
      f"inside vocab_forward, cross_entropy, vocab_backward (median) and their sum (median, min)")
for name in names:
    parts = [[t[k] for t in inside[name]] for k in range(3)]
    total = [sum(t) for t in inside[name]]
    print(f"  {name:6s} step {statistics.median(steps[name]) * 1e3:7.2f} {min(steps[name]) * 1e3:7.2f}   inside "
          + " ".join(f"{statistics.median(p) * 1e3:6.2f}" for p in parts)
          + f"   sum {statistics.median(total) * 1e3:6.2f} {min(total) * 1e3:6.2f}")
for name in names:
    print(f"  {name:6s} steps: " + " ".join(f"{t * 1e3:.1f}" for t in steps[name]))
paired = statistics.median(a - b for a, b in zip(steps["main"], steps["fused"]))
paired_in = statistics.median(sum(a) - sum(b) for a, b in zip(inside["main"], inside["fused"]))
print(f"  main - fused, median of the {STEPS} paired differences: step {paired * 1e3:.2f} ms, inside the calls "
      f"{paired_in * 1e3:.2f} ms; step ratio {statistics.median(steps['main']) / statistics.median(steps['fused']):.3f}x")
