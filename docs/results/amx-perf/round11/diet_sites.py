"""The bench's bf16 training step (benchmarks/train_breakdown.py's build("bf16")), one thread, under a
TorchDispatchMode that times every aten op (perf_counter around the call: the mode's own cost not included) and
names where it comes from: the innermost src/xmodlm frame (file:line) for ops called from Python, the autograd node
for the backward's ops (the engine runs them with no Python frame). Ops on tensors of >= `big` elements are listed
apart from the small ones; per step, over `steps` steps after 3 untimed.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/diet_sites.py [steps] [rows]
"""
import collections, sys, time, traceback
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
sys.path.insert(0, "benchmarks")
from train_breakdown import build
from torch.utils._python_dispatch import TorchDispatchMode

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 60
big = 100_000


def site() -> str:
    for frame in reversed(traceback.extract_stack()):
        if "/xmodlm/" in frame.filename and "_python_dispatch" not in frame.filename:
            return frame.filename.split("/xmodlm/")[-1] + f":{frame.lineno}"
    node = torch._C._current_autograd_node()
    return f"backward: {type(node).__name__}" if node is not None else "(optimizer / engine)"


class Timed(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.table = collections.defaultdict(lambda: [0.0, 0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        took = time.perf_counter() - start
        size = max([a.numel() for a in list(args) + list((kwargs or {}).values()) if isinstance(a, torch.Tensor)]
                   + [o.numel() for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor)]
                   + [0])
        entry = self.table[(str(func.overloadpacket.__name__), site() if size >= big else "(small tensors)")]
        entry[0] += took
        entry[1] += 1
        return out


step, _, _ = build("bf16")
for _ in range(3):
    step()
mode = Timed()
with mode:
    for _ in range(steps):
        step()
total = sum(v[0] for v in mode.table.values()) / steps
print(f"one thread; {steps} steps under the mode; the ops' own time {total * 1e3:.1f} ms a step (own kernels' "
      f"calls are not aten ops: not here)")
print("| op | where | calls a step | ms a step |\n|---|---|---:|---:|")
for (name, where), (s, n) in sorted(mode.table.items(), key=lambda kv: -kv[1][0])[:rows]:
    print(f"| {name} | {where} | {n / steps:.0f} | {s / steps * 1e3:.3f} |")
