"""GELU and its backward alone on bf16 activations of the bench's feed-forward shape (2,048 x 1,024, and the
modules' 2,048 x 128): the own kernel's tables (native.gelu_table*) against torch's gelu / gelu_backward (erf), the
two alternating, on this processor.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round12/gelu_alone.py [threads]
"""
import statistics, subprocess, sys, time
import torch, xmodlm
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(threads); xmodlm.tune_allocator()
from xmodlm.kernels import native
print(f"# {' '.join(sys.argv)}; threads {threads}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')))
for shape in ((2048, 1024), (2048, 128)):
    h = (torch.randn(*shape) * 2).bfloat16()
    dg = torch.randn(*shape).bfloat16()
    variants = {
        "table forward": lambda: native.gelu_table(h),
        "torch forward": lambda: torch.nn.functional.gelu(h),
        "table backward": lambda: native.gelu_table_backward(dg, h),
        "torch backward": lambda: torch.ops.aten.gelu_backward(dg, h),
    }
    times = {k: [] for k in variants}
    for r in range(60):
        for k, f in variants.items():
            t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
    print(f"{shape}: " + ", ".join(f"{k} {statistics.median(v[10:]) * 1e3:.3f} ms" for k, v in times.items()))
