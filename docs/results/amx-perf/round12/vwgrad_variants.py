"""Variants of xm_weight_grad_vector: native.c (or another source, "file:PATH") compiled with -D overrides, one
shared library each, called through ctypes on the same operands at the bench's shapes, with the bf16 product + cast +
bias sum, the order shuffled every round, 40 rounds; medians in ms. Every variant's dW is checked equal to the first's
(the variants change the layout and the blocking, not the order of the sums), except where "SKIP" is in the defines
(the phase hooks of vwgrad-phase-hooks.diff).

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vwgrad_variants.py \
        src/xmodlm/kernels/native.c - "-DNAME=VALUE ..." "file:/path/to/other.c" ...
"""
import ctypes, subprocess, sys, statistics, time, torch, xmodlm
from xmodlm.kernels import native
torch.set_num_threads(1); xmodlm.tune_allocator()
src = sys.argv[1]; defs = sys.argv[2:]
flags = list(native.FLAGS)
libs = {}
for i, d in enumerate(defs):
    out = f"/tmp/vw_{i}.so"
    parts = d.split() if d != "-" else []
    source = next((q[5:] for q in parts if q.startswith("file:")), src)
    parts = [q for q in parts if not q.startswith("file:")]
    subprocess.run(["gcc", *flags, *parts, source, "-o", out, "-lm"], check=True)
    lib = ctypes.CDLL(out); f = lib.xm_weight_grad_vector
    f.argtypes = [ctypes.c_void_p, ctypes.c_int64] * 2 + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2
    libs[d] = f
names = list(libs) + ["mm+cast+sum"]
for t, n, k in [(2048, 768, 256), (2048, 256, 256), (2048, 1024, 256), (2048, 256, 1024), (303, 32000, 256)]:
    torch.manual_seed(0); g = torch.randn(t, n).bfloat16(); x = torch.randn(t, k).bfloat16()
    dw = torch.empty(n, k); db = torch.empty(n)
    ref = None
    fns = {d: (lambda f=f: f(g.data_ptr(), n, x.data_ptr(), k, t, n, k, dw.data_ptr(), db.data_ptr())) for d, f in libs.items()}
    fns["mm+cast+sum"] = lambda: (g.t().mm(x).float(), g.sum(0))
    times = {d: [] for d in fns}
    import random
    order = random.Random(0)
    for r in range(int(40)):
        for d in order.sample(list(fns), len(fns)):
            fn = fns[d]
            s = time.perf_counter(); fn(); times[d].append(time.perf_counter() - s)
            if d != "mm+cast+sum":
                if ref is None: ref = dw.clone()
                assert "SKIP" in d or torch.equal(ref, dw), d
    print(t, n, k, "  ".join(f"[{d}] {statistics.median(v)*1e3:.3f}" for d, v in times.items()), flush=True)
