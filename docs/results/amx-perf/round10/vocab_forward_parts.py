"""What the vocabulary forward's row statistics cost: variants of native.c (the statistics' sums without their exps,
with one exp per line instead of two, without the lanes' max: the results wrong, the time of the rest) against now's
forward with and without the statistics, on inputs of the step's shape (303 x 256, V 32,000, the float32 weight and
bias), the variants taking turns, ROUNDS rounds of 2 calls. One thread. Usage, pinned:

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/vocab_forward_parts.py [ROUNDS]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build, replaced  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 12
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
now = native.SOURCE.read_text()
sums = """    sum = _mm512_add_ps(sum, _mm512_add_ps(exp_nonpositive(_mm512_sub_ps(a, base)),
                                           exp_nonpositive(_mm512_sub_ps(b, base))));"""
libs = build({"now": now,
              "no exps": replaced(now, sums, "    sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_sub_ps(a, base), "
                                             "_mm512_sub_ps(b, base)));"),
              "one exp": replaced(now, sums, "    sum = _mm512_add_ps(sum, exp_nonpositive(_mm512_sub_ps("
                                             "_mm512_add_ps(a, b), base)));"),
              "no max": replaced(now, "    _mm512_store_ps(lane_max, _mm512_max_ps(_mm512_load_ps(lane_max), top));\n",
                                 "")})
torch.manual_seed(0)
n, v, d = 303, 32000, 256
x = torch.randn(n, d).bfloat16()
w, b = torch.randn(v, d) * 0.05, torch.randn(v) * 0.1
res = {}
for r in range(ROUNDS + 1):
    for name, lib in libs.items():
        native._STATE["lib"] = lib
        for statistics_asked in ((False, True) if name == "now" else (True,)):
            start = time.perf_counter()
            native.vocab_forward(x, w, b, statistics=statistics_asked)
            native.vocab_forward(x, w, b, statistics=statistics_asked)
            if r:
                res.setdefault(f"{name}{', statistics' if statistics_asked else ', plain'}", []).append(
                    (time.perf_counter() - start) / 2)
print(f"ms a call, median and min of {ROUNDS} rounds of 2; all rounds")
for name, t in res.items():
    print(f"  {name:22s} {statistics.median(t) * 1e3:6.2f} {min(t) * 1e3:6.2f}   " + " ".join(f"{s * 1e3:.2f}" for s in t))
