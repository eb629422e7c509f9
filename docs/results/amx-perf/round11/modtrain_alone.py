"""The language modules' training kernels alone: BASE's native.c (default 743cd67, main when this round began), the
working tree's, and BASE's again (a second library from the same source: the control, the method's spread), the
forward (native.modules_train) and the backward (native.modules_train_backward, on the same forward outputs), at the
bench step's shape (8 segments x 256 rows, d 256, r 128) and xmod-base's width (8 x 128 rows, d 768, r 384),
alternating call by call (the order rotated every round), each timed forward and backward after an untimed pair of
the same library (so that no variant's forward starts from another's backward's caches), one thread; medians, and
the medians of the paired differences against base. Run pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/modtrain_alone.py [BASE]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build, old_source  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

BASE = sys.argv[1] if len(sys.argv) > 1 else "743cd67"


def case(libraries, segments, rows, d, r, rounds=80):
    torch.manual_seed(0)
    counts = [rows] * segments
    x = torch.randn(segments * rows, d).bfloat16()
    dy = torch.randn(segments * rows, d).bfloat16()
    w1s = [torch.randn(r, d) / d ** 0.5 for _ in counts]
    b1s = [torch.randn(r) * 0.1 for _ in counts]
    w2s = [torch.randn(d, r) / r ** 0.5 for _ in counts]
    b2s = [torch.randn(d) * 0.1 for _ in counts]
    names = list(libraries)
    times = {name: {"forward": [], "backward": []} for name in names}
    for i in range(rounds + 3):
        for name in names[i % len(names):] + names[:i % len(names)]:
            native._STATE["lib"] = libraries[name]
            _, slope, g, pairs = native.modules_train(x, counts, w1s, b1s, w2s, b2s)
            native.modules_train_backward(dy, x, slope, g, pairs, counts)
            start = time.perf_counter()
            _, slope, g, pairs = native.modules_train(x, counts, w1s, b1s, w2s, b2s)
            mid = time.perf_counter()
            native.modules_train_backward(dy, x, slope, g, pairs, counts)
            if i >= 3:
                times[name]["forward"].append(mid - start)
                times[name]["backward"].append(time.perf_counter() - mid)
    flops = 2 * segments * rows * d * r
    print(f"{segments} segments x {rows} rows, d {d}, r {r}: medians of {rounds}, ms (GFLOP/s); base - variant, "
          f"median of the paired differences")
    for name in names:
        times[name]["both"] = [a + b for a, b in zip(times[name]["forward"], times[name]["backward"])]
    for part, products in (("forward", 2), ("backward", 4), ("both", 6)):
        line = f"  {part:8s}"
        for name in names:
            t = times[name][part]
            line += f"  {name} {statistics.median(t) * 1e3:.3f} ({products * flops / statistics.median(t) / 1e9:.0f})"
        print(line)
        for name in names[1:]:
            paired = statistics.median(a - b for a, b in zip(times["base"][part], times[name][part]))
            print(f"      base - {name}: {paired * 1e3:+.3f} ms")


def main(variants: dict | None = None) -> None:
    """base, the working tree's native.c as "new" (or `variants`: {name: native.c text}), base again."""
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread; base {BASE}")
    base = old_source(BASE)
    libraries = build({"base": base, **(variants or {"new": native.SOURCE.read_text()}),
                       "base again": base + "\n/* again */\n"})
    case(libraries, 8, 256, 256, 128)
    case(libraries, 8, 128, 768, 384)


if __name__ == "__main__":
    main()
