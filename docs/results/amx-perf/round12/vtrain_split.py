"""Training attention alone at the bench's shape (16 x 4 heads, T 128, D 64, Dropout(0.1), no key mask), one thread:
forward and backward timed apart, the own vector kernel (native_training_attention, the projection's gradient given
directly) and dropout_attention alternating call by call; medians of 35 calls after 5 in ms. Both forwards draw the
same (B, H, T, T) keep mask (Dropout.keep_mask).

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vtrain_split.py
"""
import os, statistics, subprocess, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
import xmodlm.kernels as kernels
from xmodlm.kernels.attention import dropout_attention, native_training_attention

print(f"# taskset -c {','.join(map(str, sorted(os.sched_getaffinity(0))))} env OMP_NUM_THREADS="
      f"{os.environ.get('OMP_NUM_THREADS')} PYTHONPATH=src {sys.executable} {' '.join(sys.argv)}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
      + f" (family {next(l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('cpu family'))})")
b, h, t, d = 16, 4, 128, 64
dropout = kernels.Dropout(0.1).train()
g = torch.Generator().manual_seed(0)
x = torch.randn(b, t, 3 * h * d, generator=g).bfloat16().requires_grad_()
dout = torch.randn(b, h, t, d, generator=g).bfloat16()
res = {n: ([], []) for n in ("vector", "torch")}
for i in range(40):
    for n, fn in (("vector", native_training_attention), ("torch", dropout_attention)):
        q, k, v = x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        s = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(q, k, v, None, dropout, x) if n == "vector" else fn(q, k, v, None, dropout)
        m = time.perf_counter()
        out.backward(dout)
        e = time.perf_counter()
        x.grad = None
        if i >= 5:
            res[n][0].append(m - s)
            res[n][1].append(e - m)
for n, (f, bw) in res.items():
    print(f"{n:7s} forward {statistics.median(f) * 1e3:.3f}  backward {statistics.median(bw) * 1e3:.3f}")
