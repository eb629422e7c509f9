"""The vocabulary backward reading W16 as the forward wrote it (native.vocab_forward's ``pairs``, native.vocab_backward's
``pairs``) against main's (the backward rounding and packing W's float32 rows itself), in one process:

* bits: logits, row statistics, dX, dW, db of this branch's library (with pairs) against main's library (without),
  the loss's gradient formed and dlogits given, on the step's shape (303 x 256, V 32,000) and odd shapes;
* time: the backward alone (loss formed, dX, dW, db) and forward + backward, the step's shape, drawn inputs,
  ROUNDS rounds of CALLS calls, main / branch / main again (a control copy of main's library) taking turns.

One thread. Usage, pinned:

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/wpack_alone.py \\
        [ROUNDS] [CALLS] [MAIN] ["VARIANT;VARIANT..."]

(VARIANT: branch plain-stores, branch no-prefetch, branch ring; see `extra` below.)
"""

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

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
MAIN = sys.argv[3] if len(sys.argv) > 3 else "main"
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
# main's library takes one argument less in each call: the trailing pointer is ignored (x86-64 calling convention)
now = native.SOURCE.read_text()
VARIANTS = sys.argv[4].split(";") if len(sys.argv) > 4 else []
extra = {
    # W16's lines written with plain stores (kept in the caches) instead of non-temporal ones
    "branch plain-stores": lambda: replaced(now, "_mm512_stream_si512((__m512i *)(pairs + ",
                                            "_mm512_store_si512((__m512i *)(pairs + ", 2),
    # the backward's W16 tiles not fetched ahead (the hardware's prefetcher alone)
    "branch no-prefetch": lambda: replaced(now, "                fetch_ahead(w_ahead, w_per);\n", ""),
    # the forward's W16 lines all written to the same two tile rows (the work kept, the 16 MB of traffic not): a timing
    # probe, its dX wrong (left out of the bits check)
    "branch ring": lambda: replaced(replaced(now, "w16 ? w16 + (2 * (kt % k_tiles)", "w16 ? w16 + 0 * (2 * (kt % k_tiles)"),
                                    "_mm512_stream_si512((__m512i *)(pairs + ", "_mm512_store_si512((__m512i *)(pairs + ", 2),
}
libraries = build_libraries({"main": old_source(MAIN), "branch": now,
                             **{name: extra[name]() for name in VARIANTS},
                             "main (control)": old_source(MAIN) + "\n/* control copy */\n"})
PAIRED = [name for name in libraries if name.startswith("branch")]


def run(name, x, w, b, targets, with_loss, grads=(True, True, True)):
    native._STATE["lib"] = libraries[name]
    pairs = native.vocab_pairs(w) if name in PAIRED else None
    logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True, pairs=pairs)
    if with_loss:
        back = native.vocab_backward(logits, x, w, *grads, loss=(targets, row_max, row_total, 1.0 / x.shape[0]),
                                     pairs=pairs)
    else:
        back = native.vocab_backward(logits, x, w, *grads, pairs=pairs)  # the logits as dlogits
    return (logits, row_max, row_total) + tuple(back)


def same(a, b):
    return all((p is None and q is None) or torch.equal(p.view(torch.int16) if p.dtype == torch.bfloat16 else p,
                                                        q.view(torch.int16) if q.dtype == torch.bfloat16 else q)
               for p, q in zip(a, b))


print("bits, branch (pairs) against main: logits, row_max, row_total, dX, dW, db")
torch.manual_seed(1)
shapes = [(303, 32000, 256), (1, 32, 64), (17, 96, 64), (33, 320, 128), (50, 1024, 96), (129, 512, 768),
          (200, 4096, 256), (31, 2048, 384), (77, 640, 512)]
for n, v, d in shapes:
    x = torch.randn(n, d).bfloat16()
    w, b = torch.randn(v, d) * 0.05, torch.randn(v) * 0.1
    targets = torch.randint(0, v, (n,))
    for with_loss in (True, False):
        for grads in ((True, True, True), (True, False, False)):
            ok = all(same(run("main", x, w, b, targets, with_loss, grads), run(name, x, w, b, targets, with_loss, grads))
                     for name in PAIRED if "ring" not in name)
            print(f"  n {n:4d} V {v:6d} d {d:4d} {'loss formed' if with_loss else 'dlogits given'}, "
                  f"{'dX dW db' if grads[1] else 'dX only '}: {'identical' if ok else 'DIFFERENT'}")
            if not ok:
                raise SystemExit("bits differ")

torch.manual_seed(0)
n, v, d = 303, 32000, 256
x = torch.randn(n, d).bfloat16()
w, b = torch.randn(v, d) * 0.05, torch.randn(v) * 0.1
targets = torch.randint(0, v, (n,))
native._STATE["lib"] = libraries["main"]
logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True)
loss = (targets, row_max, row_total, 1.0 / n)
native._STATE["lib"] = libraries["branch"]
filled = native.vocab_pairs(w)
native.vocab_forward(x, w, b, statistics=True, pairs=filled)


def backward(name):
    return lambda: native.vocab_backward(logits, x, w, loss=loss, pairs=filled if name in PAIRED else None)


def both(name):
    def call():
        pairs = native.vocab_pairs(w) if name in PAIRED else None
        lg, mx, tot = native.vocab_forward(x, w, b, statistics=True, pairs=pairs)
        native.vocab_backward(lg, x, w, loss=(targets, mx, tot, 1.0 / n), pairs=pairs)
    return call


def forward(name):
    return lambda: native.vocab_forward(x, w, b, statistics=True,
                                        pairs=native.vocab_pairs(w) if name in PAIRED else None)


calls = {}
for label, make in (("backward", backward), ("forward", forward), ("forward + backward", both)):
    for name in libraries:
        calls[(label, name)] = make(name)
times = {key: [] for key in calls}
keys = list(calls)
for r in range(ROUNDS + 1):
    for key in (keys if r % 2 == 0 else keys[::-1]):
        native._STATE["lib"] = libraries[key[1]]
        start = time.perf_counter()
        for _ in range(CALLS):
            calls[key]()
        if r:  # the first round warms up
            times[key].append((time.perf_counter() - start) / CALLS)
print(f"ms a call (303 x 256, V 32,000, loss formed), median and min of {ROUNDS} rounds of {CALLS}; all rounds")
for key, t in times.items():
    print(f"  {key[0]:19s} {key[1]:15s} {statistics.median(t) * 1e3:7.2f} {min(t) * 1e3:7.2f}   "
          + " ".join(f"{s * 1e3:.2f}" for s in t))
for label in ("backward", "forward", "forward + backward"):
    m = times[(label, "main")]
    for name in list(libraries)[1:]:
        print(f"  {label}: main - {name}, median of paired round differences "
              f"{statistics.median(a - q for a, q in zip(m, times[(label, name)])) * 1e3:.2f} ms")
