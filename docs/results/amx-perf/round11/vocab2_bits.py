"""This tree's vocabulary projection against BASE's (a library built from native.c at BASE, default d35d535), bit
for bit: the logits, the row statistics and W16 of the forward, dX, dW and db of the backward (dlogits given, or the
loss's gradient formed from the logits; W16 read or W packed; each of dX, dW, db alone and all three), at 1, 2 and
3 threads, on the bench step's shape and odd ones (rows not a multiple of 32, V a multiple of 32 but not of
VOCAB_STEP (256), d 256 and 768, a single row). Prints every case and the count that differ. Usage:

    taskset -c 0 env PYTHONPATH=src python3 docs/results/amx-perf/round11/vocab2_bits.py [BASE]
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, old_source  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

BASE = sys.argv[1] if len(sys.argv) > 1 else "d35d535"
xmodlm.tune_allocator()
libraries = build_libraries({"base": old_source(BASE), "new": native.SOURCE.read_text()})


def run(name, threads, x, w, b, t, g, loss, use_pairs, which):
    native._STATE["lib"] = libraries[name]
    torch.set_num_threads(threads)
    pairs = native.vocab_pairs(w) if use_pairs else None
    logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True, pairs=pairs)
    out = [logits, row_max, row_total] + ([pairs.clone()] if use_pairs else [])
    if loss:
        grads = native.vocab_backward(logits, x, w, *which, loss=(t, row_max, row_total, 1.0 / x.shape[0]),
                                      pairs=pairs)
    else:
        grads = native.vocab_backward(g, x, w, *which, pairs=pairs)
    return out + [r for r in grads if r is not None]


differ = cases = 0
for n, v, d in [(303, 32000, 256), (64, 512, 256), (37, 800, 768), (1, 320, 256), (96, 288, 256), (33, 1056, 768)]:
    gen = torch.Generator().manual_seed(n * 7 + v + d)
    x = torch.randn(n, d, generator=gen).bfloat16()
    w, b = torch.randn(v, d, generator=gen) * 0.05, torch.randn(v, generator=gen) * 0.1
    t = torch.randint(0, v, (n,), generator=gen)
    g = (torch.randn(n, v, generator=gen) * 0.01).bfloat16()
    for loss in (False, True):
        for use_pairs in (True, False):
            for which in ((True, True, True), (True, False, False), (False, True, False), (False, False, True),
                          (False, True, True)):
                for threads in (1, 2, 3):
                    a = run("base", threads, x, w, b, t, g, loss, use_pairs, which)
                    c = run("new", threads, x, w, b, t, g, loss, use_pairs, which)
                    same = len(a) == len(c) and all(torch.equal(p, q) for p, q in zip(a, c))
                    cases += 1
                    differ += not same
                    print(f"n {n:3d} v {v:5d} d {d} loss {loss:d} pairs {use_pairs:d} dx/dw/db {''.join(str(int(k)) for k in which)} "
                          f"threads {threads}: {'same bits' if same else 'DIFFER'} ({len(c)} tensors)")
print(f"{cases} cases, {differ} differ from {BASE}'s")
