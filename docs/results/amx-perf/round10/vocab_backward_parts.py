"""What the vocabulary backward with the loss's gradient formed inside (native.vocab_backward(logits, ..., loss=...))
spends its time on: variants of native.c with one part removed (the results wrong, the time of the rest), on inputs
of the step's shape (303 x 256, V 32,000, the float32 weight and bias, targets drawn), the variants taking turns,
ROUNDS rounds of CALLS calls each; and the forward with and without the row statistics, and main's loss pass
(native.cross_entropy) for scale. One thread. Usage, pinned:

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/vocab_backward_parts.py \
        [ROUNDS] [CALLS]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, replaced  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
now = native.SOURCE.read_text()
variants = {
    "now": now,
    "no W pack": replaced(now, "            vocab_pack_rows(w + vs * d, d, len, s->w);\n", ""),
    "no dX products": replaced(now, "            vocab_input_step(s->g, s->w, padded_n, d, len, vs == v0, acc, &ahead, "
                                    "(ahead.total + steps - 1) / steps);\n", ""),
    "no dW step": replaced(now, "        if (dw)\n            vocab_weight_step(", "        if (0)\n            vocab_weight_step("),
    "gradient copied, not formed": replaced(now, "            if (loss) {\n                loss_gradient_line(",
                                            "            if (0) {\n                loss_gradient_line("),
    "no gather": replaced(now, "        vocab_gather(g, n, padded_n, v, vs, len, s->g, db ? db + vs : NULL, loss);\n", ""),
}
libraries = build_libraries(variants)
torch.manual_seed(0)
n, v, d = 303, 32000, 256
x = torch.randn(n, d).bfloat16()
w, b = torch.randn(v, d) * 0.05, torch.randn(v) * 0.1
targets = torch.randint(0, v, (n,))
native._STATE["lib"] = libraries["now"]
logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True)
loss = (targets, row_max, row_total, 1.0 / n)
calls = {name: (lambda: native.vocab_backward(logits, x, w, loss=loss)) for name in variants}
calls["forward"] = lambda: native.vocab_forward(x, w, b)
calls["forward with statistics"] = lambda: native.vocab_forward(x, w, b, statistics=True)
calls["main's loss pass"] = lambda: native.cross_entropy(logits, targets, 1.0 / n)
times = {name: [] for name in calls}
for r in range(ROUNDS + 1):
    for name, call in calls.items():
        native._STATE["lib"] = libraries.get(name, libraries["now"])
        start = time.perf_counter()
        for _ in range(CALLS):
            call()
        if r:
            times[name].append((time.perf_counter() - start) / CALLS)
print(f"ms a call, median and min of {ROUNDS} rounds of {CALLS}; all rounds")
for name, t in times.items():
    print(f"  {name:30s} {statistics.median(t) * 1e3:7.2f} {min(t) * 1e3:7.2f}   " + " ".join(f"{x * 1e3:.2f}" for x in t))
