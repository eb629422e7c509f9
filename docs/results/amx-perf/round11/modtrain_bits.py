"""This tree's language-module training kernels against BASE's (a library built from native.c at BASE, default
743cd67, main when this round began), bit for bit: y, S, G and pairs of the forward, dx, dW1, db1, dW2, db2 of the
backward, at 1, 2 and 3 threads, on the bench step's shape (8 x 256 rows, d 256, r 128) and odd ones: segments of
1-300 rows (not multiples of 32), segments of 0 rows, d 256 and 768, r 128 and 384, one segment. Prints every case and
the count that differ. Usage:

    taskset -c 0 env PYTHONPATH=src python3 docs/results/amx-perf/round11/modtrain_bits.py [BASE]
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, old_source  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

BASE = sys.argv[1] if len(sys.argv) > 1 else "743cd67"
xmodlm.tune_allocator()
libraries = build_libraries({"base": old_source(BASE), "new": native.SOURCE.read_text()})


def run(name, threads, counts, x, dy, w1s, b1s, w2s, b2s):
    native._STATE["lib"] = libraries[name]
    torch.set_num_threads(threads)
    y, slope, g, pairs = native.modules_train(x, counts, w1s, b1s, w2s, b2s)
    return [y, slope, g, pairs] + list(native.modules_train_backward(dy, x, slope, g, pairs, counts))


NAMES = ["y", "S", "G", "pairs", "dx", "dW1", "db1", "dW2", "db2"]
differ = cases = 0
for counts, d, r in [([256] * 8, 256, 128), ([1, 300, 37, 64, 0, 95], 256, 128), ([128] * 8, 768, 384),
                     ([33, 0, 1, 250, 17], 768, 384), ([200], 256, 384), ([0, 5, 0], 256, 128),
                     ([31, 32, 33, 63, 65, 2], 768, 128), ([299, 1], 256, 384)]:
    gen = torch.Generator().manual_seed(sum(counts) * 7 + d + r)
    n = sum(counts)
    x = torch.randn(n, d, generator=gen).bfloat16()
    dy = (torch.randn(n, d, generator=gen) * 0.1).bfloat16()
    w1s = [torch.randn(r, d, generator=gen) / d ** 0.5 for _ in counts]
    b1s = [torch.randn(r, generator=gen) * 0.1 for _ in counts]
    w2s = [torch.randn(d, r, generator=gen) / r ** 0.5 for _ in counts]
    b2s = [torch.randn(d, generator=gen) * 0.1 for _ in counts]
    for threads in (1, 2, 3):
        a = run("base", threads, counts, x, dy, w1s, b1s, w2s, b2s)
        c = run("new", threads, counts, x, dy, w1s, b1s, w2s, b2s)
        wrong = [k for k, p, q in zip(NAMES, a, c) if not torch.equal(p, q)]
        cases += 1
        differ += bool(wrong)
        print(f"segments {counts} d {d} r {r} threads {threads}: "
              f"{'same bits' if not wrong else 'DIFFER in ' + ', '.join(wrong)} ({len(c)} tensors)")
print(f"{cases} cases, {differ} differ from {BASE}'s")
