"""One MLM training step's 17 weight-gradient calls (the bench's train shape), collected from a real step, replayed
from cold caches (600 MB written between replays) through round 8's kernel (native.c at 3cfeab4, built from git),
the kernel as built, and copies of it with one part removed (wrong results; only their times count): no dY layout
(the row-tile pass and its db partial sums skipped: the products read the previous call's stale layout), no X
layout (the chunks' row pairs not written: stale), no products. All alternated in one process, the order rotated
at each of 7 rounds, medians of 7, one thread or the process's; the allocator tuned as the training recipes do
(xmodlm.tune_allocator).
--warm: no cache flush between replays (the operands, 65 MB, then come from the last-level cache, as far as other
processes leave them there).
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round9/weight_grad_replay.py [--warm] (from the repository root,
in a git checkout that has 3cfeab4)"""

import statistics
import sys
import time
from pathlib import Path

import torch
import xmodlm
if "--no-tune" not in sys.argv: xmodlm.tune_allocator()

from xmodlm.kernels import native

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
from harness import (WEIGHT_GRAD, build as build_libraries, calls_of, old_source, replaced,  # noqa: E402
                     with_section_of)
from train_breakdown import build as build_step  # noqa: E402

ROUND8 = "3cfeab4"
warm = "--warm" in sys.argv
text = native.SOURCE.read_text()


def without(old_text: str, new_text: str) -> str:
    return replaced(text, old_text, new_text)


variants = {f"round 8 ({ROUND8})": with_section_of(text, old_source(ROUND8), WEIGHT_GRAD), "as built": text}
rows = "            weight_grad_rows(dy, ldy, t, t_tiles, n, tt, a, sums ? sums + tt * n : NULL);"
variants["no dY layout"] = without(rows, "            ;")
variants["no X layout"] = without("                weight_grad_pairs(x + k0, ldx, t, t_tiles, w, tt, xp);",
                                  "                ;")
variants["no products"] = without("for (int64_t c = 0; c < w / 32; c++) {", "for (int64_t c = 0; c < 0; c++) {")

phases, _, _ = build_step("bf16")
calls = [(g, x) for g, x, *_ in calls_of(native, "weight_grad", phases)]
original = native.weight_grad
junk = torch.zeros(600 * 1024 * 1024 // 4)  # more than the last-level cache: each replay starts cold
libraries = build_libraries(variants)
reference = None
for name in (f"round 8 ({ROUND8})", "as built"):  # the two real kernels agree (db's order differs: close)
    native._STATE["lib"] = libraries[name]
    got = [original(g, x) for g, x in calls[:4]]
    if reference is None:
        reference = got
    else:
        assert all(torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
                   for a, b in zip(got, reference))
times = {name: [] for name in libraries}
names = list(libraries)
for i in range(7):  # each variant in each place of the order in turn: the one after another fares differently
    for name in names[i % len(names):] + names[:i % len(names)]:
        native._STATE["lib"] = libraries[name]
        if not warm:
            junk.add_(1.0)
        start = time.perf_counter()
        for g, x in calls:
            original(g, x)
        times[name].append(time.perf_counter() - start)
print(f"{torch.get_num_threads()} thread(s); a step's {len(calls)} weight-gradient calls "
      f"{'without flushing the caches' if warm else 'from cold caches'} "
      f"(median of 7; all runs in ms):")
for name, t in times.items():
    print(f"{name:24s} {statistics.median(t) * 1e3:5.1f} ms   " + " ".join(f"{v * 1e3:.1f}" for v in t))
