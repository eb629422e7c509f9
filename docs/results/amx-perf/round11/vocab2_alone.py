"""This tree's vocabulary projection against BASE's (default d35d535) alone, at the bench step's shape as the step
calls it (303 x 256, V 32,000, drawn inputs; the forward with the row statistics writing W16, the backward forming
the loss's gradient from the logits, reading W16, dX, dW and db): three libraries, base, new (native.c now) and
"base again" (a second library from BASE's source: the method's spread), the calls alternating call by call in a
rotating order, ROUNDS rounds of CALLS calls each; VARIANT="old|||new" (environment, optional): "new" is native.c
now with that text replaced (a trial). One thread. Usage, pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/vocab2_alone.py \
        [ROUNDS] [CALLS] [BASE]
"""

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, old_source, replaced  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 15
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BASE = sys.argv[3] if len(sys.argv) > 3 else "d35d535"
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
new = native.SOURCE.read_text()
if os.environ.get("VARIANT"):
    new = replaced(new, *os.environ["VARIANT"].split("|||"))
    print("new: native.c with", os.environ["VARIANT"].split("|||"))
libraries = build_libraries({"base": old_source(BASE), "new": new,
                             "base again": old_source(BASE)})
torch.manual_seed(0)
n, v, d = 303, 32000, 256
x = torch.randn(n, d).bfloat16()
w, b = torch.randn(v, d) * 0.05, torch.randn(v) * 0.1
targets = torch.randint(0, v, (n,))
native._STATE["lib"] = libraries["base"]
pairs = native.vocab_pairs(w)
logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True, pairs=pairs)
loss = (targets, row_max, row_total, 1.0 / n)
calls = {"backward": lambda: native.vocab_backward(logits, x, w, loss=loss, pairs=pairs),
         "forward": lambda: native.vocab_forward(x, w, b, statistics=True, pairs=pairs)}
names = list(libraries)
times = {(c, name): [] for c in calls for name in names}
for r in range(ROUNDS + 1):
    order = names[r % 3:] + names[:r % 3]
    for c, call in calls.items():
        for name in order:
            native._STATE["lib"] = libraries[name]
            start = time.perf_counter()
            for _ in range(CALLS):
                call()
            if r:
                times[(c, name)].append((time.perf_counter() - start) / CALLS)
print(f"ms a call, median and min of {ROUNDS} rounds of {CALLS}; all rounds")
for (c, name), t in times.items():
    print(f"  {c:8s} {name:10s} {statistics.median(t) * 1e3:7.2f} {min(t) * 1e3:7.2f}   "
          + " ".join(f"{x * 1e3:.2f}" for x in t))
for c in calls:
    base = statistics.median(times[(c, "base")])
    print(f"  {c}: base / new {base / statistics.median(times[(c, 'new')]):.3f}x, "
          f"base / base again {base / statistics.median(times[(c, 'base again')]):.3f}x")
