"""The GELU epilogue's cost in the own kernel: the feed-forward input product of xmod-base (1,024 x 768 -> 3,072,
bf16, rows split, six packed weights in rotation) without an activation and with GELU, alternating, medians of 15.

Run against two kernel sources (the GELU before commit ab1ba2b, and after), alternately, from the repository root:
  git show ab1ba2b~1:src/xmodlm/kernels/native.c > /tmp/before.c   # then put its gelu_erf into today's native.c
  for i in 1 2 3; do for v in before after; do cp /tmp/$v.c src/xmodlm/kernels/native.c; \
      PYTHONPATH=src python3 docs/results/amx-perf/round6/gelu_epilogue.py; done; done
(each source builds its own cached library, named by its hash)."""

import statistics
import time

import torch

from xmodlm.kernels import native

torch.manual_seed(0)
x = torch.randn(1024, 768).bfloat16()
weights = [native.pack((torch.randn(3072, 768) / 30).bfloat16()) for _ in range(6)]
bias = torch.randn(3072)


def run(act):
    for w in weights:
        native.segments_linear(x, (1024,), (w,), (bias,), 3072, act, None, True)


times = {None: [], "gelu": []}
for _ in range(3):
    run(None)
    run("gelu")
for _ in range(15):
    for act in times:
        start = time.perf_counter()
        run(act)
        times[act].append((time.perf_counter() - start) / len(weights) * 1e3)
plain, gelu = statistics.median(times[None]), statistics.median(times["gelu"])
print(f"no activation {plain:.3f} ms, GELU {gelu:.3f} ms: the epilogue's GELU {gelu - plain:.3f} ms "
      f"({2 * 1024 * 768 * 3072 / gelu / 1e6:.0f} GFLOP/s with it)")
