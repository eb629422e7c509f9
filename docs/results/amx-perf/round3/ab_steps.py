import sys, torch, time, statistics
sys.path.insert(0, "benchmarks")
import xmodlm
from xmodlm import kernels
from train_breakdown import build
xmodlm.tune_allocator()
step, flops, tokens = build(sys.argv[3] if len(sys.argv) > 3 else "bf16")
switch = eval(sys.argv[1]); n = int(sys.argv[2])
for _ in range(3): step()
res = {False: [], True: []}
for i in range(2 * n):
    on = bool(i % 2); switch(on)
    res[on].append(step())
switch(True)
for on in (False, True):
    print(sys.argv[1], on, "fwd/bwd/opt/total", [round(statistics.median(p[i] for p in res[on]) * 1e3, 1) for i in range(3)] + [round(statistics.median(sum(p) for p in res[on]) * 1e3, 1)])
