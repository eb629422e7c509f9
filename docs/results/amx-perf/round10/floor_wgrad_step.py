"""The bf16 MLM step at the bench's batch (16 x 128; the bench's model, fused AdamW) with the own kernels' library
built from main's native.c ("base") and from this branch's ("new": xm_weight_grad's dW written with non-temporal
stores), swapped step by step, one thread: per step the forward, the backward, the optimizer (step and zero_grad),
and the time inside the 17 xm_weight_grad calls (timers around the ctypes calls): where the streamed dW saves
time, and whether the optimizer, which reads dW next, pays for it.

    git show main:src/xmodlm/kernels/native.c > /tmp/native_main.c
    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_wgrad_step.py /tmp/native_main.c [rounds] [batch seq]
"""
import statistics, sys, time
from pathlib import Path
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.kernels import native
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
batch, seq = (int(a) for a in sys.argv[3:5]) if len(sys.argv) > 4 else (16, 128)
new_lib = native._library()
source, native.SOURCE = native.SOURCE, Path(sys.argv[1])
main_lib, why = native._load()
native.SOURCE = source
assert main_lib is not None and main_lib._name != new_lib._name, why
inside = [0.0]


def timed(fn):
    def call(*args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            inside[0] += time.perf_counter() - start
    return call


for lib in (main_lib, new_lib):
    lib.xm_weight_grad = timed(lib.xm_weight_grad)
libs = {"base": main_lib, "new": new_lib}
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
ids, lang, labels = batch_for(config, batch, seq, 8)
rows = {name: [] for name in libs}
for r in range(rounds + 3):
    for name, lib in libs.items():
        native._STATE["lib"] = lib
        inside[0] = 0.0
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step(); opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if r >= 3:
            rows[name].append((t1 - t0, t2 - t1, t3 - t2, t3 - t0, inside[0]))
print(f"batch {batch} x {seq}, {rounds} rounds (after 3), base and new alternating; medians (ms) and median of pair differences")
parts = ("forward", "backward", "optimizer", "step", "in xm_weight_grad")
for i, part in enumerate(parts):
    b = [x[i] for x in rows["base"]]; n = [x[i] for x in rows["new"]]
    print(f"  {part:18s} base {statistics.median(b) * 1e3:8.2f}  new {statistics.median(n) * 1e3:8.2f}  "
          f"base - new {statistics.median(x - y for x, y in zip(b, n)) * 1e3:+.3f}")
for name, v in rows.items():
    print(f"  {name} steps:", " ".join(f"{x[3] * 1e3:.1f}" for x in v))
    print(f"  {name} in xm_weight_grad:", " ".join(f"{x[4] * 1e3:.2f}" for x in v))
