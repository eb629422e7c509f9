"""Where the vector backward's time goes (times only, the results wrong): the backward of the bench's attention
shape (16 x 4 heads, T 128, D 64, dropout mask, no key mask), one thread, with one part at a time compiled out of
native.c (vtrain-skip-parts.diff applied to a copy, each variant built with -DSKIP_... into /tmp/skip_NAME.so
by the package's FLAGS), the variants alternating call by call, medians of 60 calls:

    git apply --directory=. vtrain-skip-parts.diff (to a copy); gcc FLAGS -DSKIP_X native.c -o /tmp/skip_SKIP_X.so
    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vtrain_skip_parts.py NONE SKIP_PACK ...
"""
import os, subprocess
import ctypes, statistics, sys, time, torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.kernels import native
b, h, t, d = 16, 4, 128, 64
g = torch.Generator().manual_seed(0)
x = torch.randn(b, t, 3 * h * d, generator=g).bfloat16()
q, k, v = x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
keep = (torch.rand(b, h, t, t, generator=g) > 0.1).to(torch.uint8)
dout = torch.randn(b, h, t, d, generator=g).bfloat16()
out, stats = native.training_attention(q, k, v, None, keep, 1 / 0.9)
print(f"# taskset -c {','.join(map(str, sorted(os.sched_getaffinity(0))))} env OMP_NUM_THREADS="
      f"{os.environ.get('OMP_NUM_THREADS')} PYTHONPATH=src {sys.executable} {' '.join(sys.argv)}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
      + f" (family {next(l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('cpu family'))})")
names = sys.argv[1:]
libs = {}
for n in names:
    lib = ctypes.CDLL(f"/tmp/skip_{n}.so")
    lib.xm_attention_train_backward_vector.argtypes = native._library().xm_attention_train_backward.argtypes
    libs[n] = lib.xm_attention_train_backward_vector
times = {n: [] for n in names}
orig = native._training_kernel
for r in range(60):
    for n in names:
        native._training_kernel = lambda name: libs[n]
        s = time.perf_counter()
        native.training_attention_backward(dout, q, k, v, None, keep, 1 / 0.9, stats)
        times[n].append(time.perf_counter() - s)
base = statistics.median(times["NONE"])
for n in names:
    m = statistics.median(times[n]); print(f"{n:12s} {m*1e3:.3f} ms  saves {1e3*(base-m):+.3f}")
