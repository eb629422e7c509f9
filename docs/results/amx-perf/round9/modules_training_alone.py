"""The language modules' training kernels alone, round 8's (native.c of 3cfeab4) against the working tree's: the
forward (native.modules_train) and the backward (native.modules_train_backward, on the same forward outputs), one
layer of the bench step's shape (8 segments x 256 rows, d 256, r 128) and xmod-base's width (8 x 128 rows, d 768,
r 384), alternating call by call (the order swapped every round), one thread; medians, and the median of the paired
differences (round 8 - now). Run pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/modules_training_alone.py
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xmodlm  # noqa: E402
from harness import build, old_source  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402


def case(libraries, segments, rows, d, r, rounds=60):
    torch.manual_seed(0)
    counts = [rows] * segments
    x = torch.randn(segments * rows, d).bfloat16()
    dy = torch.randn(segments * rows, d).bfloat16()
    w1s = [torch.randn(r, d) / d ** 0.5 for _ in counts]
    b1s = [torch.randn(r) * 0.1 for _ in counts]
    w2s = [torch.randn(d, r) / r ** 0.5 for _ in counts]
    b2s = [torch.randn(d) * 0.1 for _ in counts]
    times = {name: {"forward": [], "backward": []} for name in libraries}
    for i in range(rounds + 3):
        for name in list(libraries)[:: 1 if i % 2 else -1]:
            native._STATE["lib"] = libraries[name]
            start = time.perf_counter()
            _, slope, g, pairs = native.modules_train(x, counts, w1s, b1s, w2s, b2s)
            mid = time.perf_counter()
            native.modules_train_backward(dy, x, slope, g, pairs, counts)
            if i >= 3:
                times[name]["forward"].append(mid - start)
                times[name]["backward"].append(time.perf_counter() - mid)
    flops = 2 * segments * rows * d * r
    print(f"{segments} segments x {rows} rows, d {d}, r {r}: medians of {rounds}, ms")
    for part, products in (("forward", 2), ("backward", 4)):
        old, new = times["round 8"][part], times["now"][part]
        paired = statistics.median(a - b for a, b in zip(old, new))
        print(f"  {part:8s} round 8 {statistics.median(old) * 1e3:.3f} ({products * flops / statistics.median(old) / 1e9:.0f}"
              f" GFLOP/s)  now {statistics.median(new) * 1e3:.3f} ({products * flops / statistics.median(new) / 1e9:.0f}"
              f" GFLOP/s)  round 8 - now, paired: {paired * 1e3:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    libraries = build({"round 8": old_source("3cfeab4"), "now": native.SOURCE.read_text()})
    case(libraries, 8, 256, 256, 128)
    case(libraries, 8, 128, 768, 384)
