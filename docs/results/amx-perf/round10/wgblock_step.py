"""xm_weight_grad in the bf16 MLM training step (benchmarks/train_breakdown.py's build("bf16"), the bench's train
shape), one thread or THREADS: main's library (native.c as in the working tree) against variants of
wgblock_variants.py (which differ in the weight-gradient product loop alone) and "main again" (a control), in one
process. (1) replay: one step's 17 weight-gradient calls, collected from a real step, replayed warm (caches not
flushed) and cold (600 MB written before each replay), the libraries taking turns, the order rotated, --replays
each; (2) whole steps alternating step by step (harness.steps_inside), --steps each after 4 untimed, with the time
inside native.weight_grad; medians, all values printed, and the median of the pair differences to main.
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/wgblock_step.py
[--steps 24] [--replays 9] [--variants g4tb8buf g4tb64 overlap ...] [--base REV --variants tree]"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import xmodlm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round9"))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
from harness import build as build_libraries, steps_inside  # noqa: E402
from train_breakdown import build as build_step  # noqa: E402
from wgblock_variants import blocked, grouped, grouped_buffer, overlap  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=24)
parser.add_argument("--replays", type=int, default=9)
parser.add_argument("--variants", nargs="*", default=["g4tb8buf", "g4tb64"])
parser.add_argument("--base", help="main = native.c at this commit (from git); variant \"tree\" = the working tree's")
args = parser.parse_args()
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
xmodlm.tune_allocator()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print("taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 " + " ".join(sys.argv), f"| commit {commit} |",
      datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def variant(text: str, name: str) -> str:
    """g<G>tb<T>[buf], tb<T>c<C> or overlap"""
    if name == "overlap":
        return overlap(text)
    if name == "tree":
        return native.SOURCE.read_text()
    if name.startswith("g"):
        group, tb = name[1:].removesuffix("buf").split("tb")
        return (grouped_buffer if name.endswith("buf") else grouped)(text, int(group), int(tb))
    tb, group = name[2:].split("c")
    return blocked(text, int(tb), int(group))


text = native.SOURCE.read_text()
if args.base:
    text = subprocess.run(["git", "show", f"{args.base}:src/xmodlm/kernels/native.c"], capture_output=True,
                          text=True, check=True).stdout
sources = {"main": text, **{name: variant(text, name) for name in args.variants}, "main again": text}
libraries = build_libraries(sources)
names = list(libraries)
phases, _, _ = build_step("bf16")
original = native.weight_grad
calls = []


def keep(grad, x, bias_grad=True):  # the step's calls, operands cloned (bias_grad passed by keyword)
    calls.append((grad.clone(), x.clone(), bias_grad))
    return original(grad, x, bias_grad)


native.weight_grad = keep
for _ in range(2):
    calls.clear()
    phases()
native.weight_grad = original
print(f"{len(calls)} calls (T x N x K, db): " + ", ".join(f"{g.shape[0]}x{g.shape[1]}x{x.shape[1]} {b}" for g, x, b in calls))
reference = None
for name in names:  # bits: every variant's dW and db equal main's on the step's own calls
    native._STATE["lib"] = libraries[name]
    got = [original(g, x, b) for g, x, b in calls]
    if reference is None:
        reference = got
    assert all(torch.equal(a[0], r[0]) and (a[1] is None and r[1] is None or torch.equal(a[1], r[1]))
               for a, r in zip(got, reference)), name
print(f"bits: {', '.join(names)} equal to main's dW and db on the step's {len(calls)} calls")

junk = torch.zeros(600 * 1024 * 1024 // 4)
for warm in (True, False):
    times = {name: [] for name in names}
    for i in range(args.replays):
        for name in names[i % len(names):] + names[:i % len(names)]:
            native._STATE["lib"] = libraries[name]
            if not warm:
                junk.add_(1.0)
            start = time.perf_counter()
            for g, x, b in calls:
                original(g, x, b)
            times[name].append(time.perf_counter() - start)
    print(f"{torch.get_num_threads()} thread(s); replay of the step's calls, {'warm' if warm else 'cold'}, ms "
          f"(median of {args.replays}; all):")
    for name, t in times.items():
        print(f"  {name:12s} {statistics.median(t) * 1e3:6.2f}   " + " ".join(f"{v * 1e3:.2f}" for v in t))
del junk

steps, within = steps_inside(libraries, lambda: sum(phases()), ("weight_grad",), args.steps)
print(f"{torch.get_num_threads()} thread(s); bf16 MLM steps alternating, {args.steps} each: step ms and ms inside "
      "native.weight_grad (median, min; all steps' inside listed), median of pair differences to main")
for name in names:
    diffs = [(s - m) * 1e3 for s, m in zip(steps[name], steps["main"])]
    idiffs = [(s - m) * 1e3 for s, m in zip(within[name], within["main"])]
    print(f"  {name:12s} step {statistics.median(steps[name]) * 1e3:6.1f} {min(steps[name]) * 1e3:6.1f}  inside "
          f"{statistics.median(within[name]) * 1e3:6.2f} {min(within[name]) * 1e3:6.2f}  pair diff step "
          f"{statistics.median(diffs):+6.2f} inside {statistics.median(idiffs):+6.2f}")
for name in names:
    print(f"  {name:12s} steps  " + " ".join(f"{v * 1e3:.1f}" for v in steps[name]))
    print(f"  {name:12s} inside " + " ".join(f"{v * 1e3:.2f}" for v in within[name]))
