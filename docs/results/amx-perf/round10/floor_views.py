"""The modules' 32 gradient views a layer (8 modules): by indexing (main) and by unbind (this branch), checked to be the same
views; torch.empty and a no-op .to for scale (best of 7 x 2000). One thread.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_views.py
"""
import timeit, torch, xmodlm
torch.set_num_threads(1)
from xmodlm.kernels import native
c, r, d = 8, 128, 256
dw1, db1, dw2, db2 = torch.empty(c, r, d), torch.empty(c, r), torch.empty(c, d, r), torch.empty(c, d)
a = lambda: [t for i in range(c) for t in (dw1[i], db1[i], dw2[i], db2[i])]
b = lambda: [t for ts in zip(dw1.unbind(), db1.unbind(), dw2.unbind(), db2.unbind()) for t in ts]
assert all(x.data_ptr() == y.data_ptr() and x.shape == y.shape and x.stride() == y.stride() for x, y in zip(a(), b()))
for n, f in (("index", a), ("unbind", b)):
    print(n, "%.1f us" % (min(timeit.repeat(f, number=2000, repeat=7)) / 2000 * 1e6))
x = torch.empty(8, 256)
print("empty", "%.2f us" % (min(timeit.repeat(lambda: torch.empty(128, 256, dtype=torch.bfloat16), number=20000, repeat=5)) / 20000 * 1e6))
print("to noop", "%.2f us" % (min(timeit.repeat(lambda: x.to(torch.float32), number=20000, repeat=5)) / 20000 * 1e6))
