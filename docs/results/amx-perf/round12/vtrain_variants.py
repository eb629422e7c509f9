"""The vector kernels of several builds of native.c in one process, alternating call by call: forward and backward
of training attention at the bench's shape (16 x 4 heads, T 128, D 64, a dropout mask, no key mask), one thread,
medians of 60 calls after 5 in ms. Each argument NAME=PATH: a shared library built from a variant of native.c with
the package's FLAGS.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vtrain_variants.py A=a.so B=b.so ...
"""
import ctypes, os, statistics, subprocess, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.kernels import native

print(f"# taskset -c {','.join(map(str, sorted(os.sched_getaffinity(0))))} env OMP_NUM_THREADS="
      f"{os.environ.get('OMP_NUM_THREADS')} PYTHONPATH=src {sys.executable} {' '.join(sys.argv)}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
      + f" (family {next(l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('cpu family'))})")
b, h, t, d = 16, 4, 128, 64
g = torch.Generator().manual_seed(0)
x = torch.randn(b, t, 3 * h * d, generator=g).bfloat16()
q, k, v = x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
keep = (torch.rand(b, h, t, t, generator=g) > 0.1).to(torch.uint8)
dout = torch.randn(b, h, t, d, generator=g).bfloat16()
libs = {}
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    lib = ctypes.CDLL(path)
    for kernel in ("xm_attention_train", "xm_attention_train_backward"):
        getattr(lib, kernel + "_vector").argtypes = getattr(native._library(), kernel).argtypes
    libs[name] = lib
times = {name: ([], []) for name in libs}
results = {}
for r in range(65):
    for name, lib in libs.items():
        native._training_kernel = lambda kernel: getattr(lib, kernel + "_vector")
        s = time.perf_counter()
        out, stats = native.training_attention(q, k, v, None, keep, 1 / 0.9)
        m = time.perf_counter()
        grads = native.training_attention_backward(dout, q, k, v, None, keep, 1 / 0.9, stats)
        e = time.perf_counter()
        results[name] = (out, grads)
        if r >= 5:
            times[name][0].append(m - s)
            times[name][1].append(e - m)
first = next(iter(results.values()))
for name, (f, bw) in times.items():
    same = all(torch.equal(a, c) for a, c in zip(results[name], first))
    print(f"{name:8s} forward {statistics.median(f) * 1e3:.3f}  backward {statistics.median(bw) * 1e3:.3f}  "
          f"the first's bits: {same}")
