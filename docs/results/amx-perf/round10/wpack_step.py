"""The masked-LM head's end in the bench's bf16 training step (benchmarks/train_breakdown.py's build("bf16"), after
xmodlm.tune_allocator()), the fused loss on in both: main's path (the library of native.c at MAIN; no W16 kept: the
backward rounds and packs W's float32 rows itself) against this branch's (the forward also writes W16 in the
backward's row-pair tiles, kept for the backward, which reads them). In one process, alternating; main's library
takes one argument less in each vocabulary call (the trailing pointer, None for main, is ignored). Two measurements:

* alone: the step's own inputs of the projection and the loss (captured from a step), forward + loss + backward
  (dX, dW, db) as the step makes them, CALLS per round, ROUNDS rounds, the variants taking turns;
* in the step: STEPS whole steps each after 4 untimed, taking turns step by step (the order swapped every pair), and
  the time inside native.vocab_forward and native.vocab_backward within each step.

One thread. Usage, pinned:

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/wpack_step.py \\
        [STEPS] [ROUNDS] [CALLS] [MAIN] [no-prefetch | plain-stores]

(no-prefetch: the branch's arm built without the backward's fetches of the next step's W16 tiles; plain-stores: the
forward's W16 lines written with plain stores, kept in the caches, instead of non-temporal ones.)
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
from harness import build as build_libraries, calls_of, old_source, replaced  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
CALLS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
MAIN = sys.argv[4] if len(sys.argv) > 4 else "main"
VARIANT = sys.argv[5] if len(sys.argv) > 5 else None
torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # THREADS=2: both cores (nothing else running)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
branch = native.SOURCE.read_text()
if VARIANT == "no-prefetch":
    branch = replaced(branch, "                fetch_ahead(w_ahead, w_per);\n", "")
    print("the wpack arm without the backward's fetches of W16 ahead")
elif VARIANT == "plain-stores":
    branch = replaced(branch, "_mm512_stream_si512((__m512i *)(pairs + ", "_mm512_store_si512((__m512i *)(pairs + ", 2)
    print("the wpack arm writing W16 with plain stores")
elif VARIANT:
    raise SystemExit(f"unknown variant {VARIANT}")
libraries = build_libraries({"main": old_source(MAIN), "wpack": branch})
vocab_pairs = native.vocab_pairs
PAIRS = {"main": lambda weight: None, "wpack": vocab_pairs}


def choose(name):
    native._STATE["lib"] = libraries[name]
    native.vocab_pairs = PAIRS[name]


phases, _, _ = build("bf16")
step = lambda: sum(phases())  # noqa: E731
choose("main")
(x, w, b), = calls_of(native, "vocab_forward", step)
n = x.shape[0]
targets = torch.randint(0, w.shape[0], (n,), generator=torch.Generator().manual_seed(0))
print(f"the step's vocabulary projection: x {tuple(x.shape)} {x.dtype}, W {tuple(w.shape)} {w.dtype}, "
      f"b {tuple(b.shape)}; targets drawn ({n})")


def alone(name):
    def call():
        pairs = native.vocab_pairs(w)
        logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True, pairs=pairs)
        (row_total.log() + row_max - logits.gather(1, targets[:, None]).squeeze(1).float()).mean()
        return native.vocab_backward(logits, x, w, loss=(targets, row_max, row_total, 1.0 / n), pairs=pairs)
    return call


names = list(libraries)
results = {}
for name in names:
    choose(name)
    results[name] = alone(name)()
print("alone, dX dW db bits: " + ("identical" if all(torch.equal(p, q) for p, q in zip(*results.values()))
                                  else "DIFFERENT"))
times = {name: [] for name in names}
for r in range(ROUNDS + 1):
    for name in (names if r % 2 == 0 else names[::-1]):
        choose(name)
        start = time.perf_counter()
        for _ in range(CALLS):
            alone(name)()
        if r:  # the first round warms up
            times[name].append((time.perf_counter() - start) / CALLS)
print(f"alone: forward + loss + backward on the step's inputs, ms a call (median and min of {ROUNDS} rounds of "
      f"{CALLS}); every round:")
for name in names:
    print(f"  {name:6s} {statistics.median(times[name]) * 1e3:7.2f} {min(times[name]) * 1e3:7.2f}   "
          + " ".join(f"{t * 1e3:.2f}" for t in times[name]))
print(f"  main - wpack, median of paired rounds: "
      f"{statistics.median(a - q for a, q in zip(times['main'], times['wpack'])) * 1e3:.2f} ms")

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
for i in range(4 + 2 * STEPS):
    pair = names if (i // 2) % 2 == 0 else names[::-1]
    name = pair[i % 2]
    choose(name)
    spent.append([0.0, 0.0])
    took = step()
    if i >= 4:
        steps[name].append(took)
        inside[name].append(spent[-1])
print(f"in the step (4 x 256, 8 languages, 16 x 128, bf16 autocast, fused AdamW), ms: median and min of {STEPS}; "
      f"inside vocab_forward, vocab_backward (median) and their sum (median, min)")
for name in names:
    parts = [[t[k] for t in inside[name]] for k in range(2)]
    total = [sum(t) for t in inside[name]]
    print(f"  {name:6s} step {statistics.median(steps[name]) * 1e3:7.2f} {min(steps[name]) * 1e3:7.2f}   inside "
          + " ".join(f"{statistics.median(p) * 1e3:6.2f}" for p in parts)
          + f"   sum {statistics.median(total) * 1e3:6.2f} {min(total) * 1e3:6.2f}")
for name in names:
    print(f"  {name:6s} steps: " + " ".join(f"{t * 1e3:.1f}" for t in steps[name]))
paired = statistics.median(a - q for a, q in zip(steps["main"], steps["wpack"]))
paired_in = statistics.median(sum(a) - sum(q) for a, q in zip(inside["main"], inside["wpack"]))
print(f"  main - wpack, median of the {STEPS} paired differences: step {paired * 1e3:.2f} ms, inside the calls "
      f"{paired_in * 1e3:.2f} ms; step ratio {statistics.median(steps['main']) / statistics.median(steps['wpack']):.3f}x")
