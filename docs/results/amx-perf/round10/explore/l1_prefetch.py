"""Exploratory (one run): software prefetches into L1 of the next step's A and/or B tile lines (pfA1, pfB1, pfAB1: one step
ahead; pfA2, pfAB2: two) in the base kernel and the K-blocked one (kblock-v2.diff); GFLOP/s and ratio to base, medians
of 40 calls alternating. Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3
docs/results/amx-perf/round10/explore/l1_prefetch.py"""
import statistics, sys, time
import torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent))
import xmodlm
from variants import Product, build, old_source, patched, replaced
torch.set_num_threads(1); xmodlm.tune_allocator()
base, kb = old_source("0973d6e"), patched("0973d6e", "kblock-v2.diff")
BASE_LOOP = "        block_step(a + kt * 32, a1 + kt * 32, lda, w0 + kt * 512, w1 + kt * 512);\n"
def pf(text, a_dist, b_dist, hint="_MM_HINT_T0"):
    code = BASE_LOOP
    if b_dist:
        code += f"""        for (int64_t j = 0; j < 1024; j += 32) {{
            _mm_prefetch((const char *)(w0 + (kt + {b_dist}) * 512 + j), {hint});
            _mm_prefetch((const char *)(w1 + (kt + {b_dist}) * 512 + j), {hint});
        }}
"""
    if a_dist:
        code += f"""        for (int64_t r = 0; r < 16; r++) {{
            _mm_prefetch((const char *)(a + (kt + {a_dist}) * 32 + r * lda), {hint});
            _mm_prefetch((const char *)(a1 + (kt + {a_dist}) * 32 + r * lda), {hint});
        }}
"""
    return replaced(text, BASE_LOOP, code)
libs = build({
 "base": base,
 "base pfB1": pf(base, 0, 1),
 "base pfA1": pf(base, 1, 0),
 "base pfAB1": pf(base, 1, 1),
 "base pfA2": pf(base, 2, 0),
 "base pfAB2": pf(base, 2, 2),
 "kb": kb,
 "kb pfA1": pf(kb, 1, 0),
 "kb pfAB1": pf(kb, 1, 1),
})
g = torch.Generator().manual_seed(0)
work = {f"{k}->{n} {act} {res}": Product(1024, k, n, act, res, g) for k, n, act, res in [(768, 2304, None, False), (768, 768, None, True), (768, 3072, "gelu", False), (3072, 768, None, True)]}
names = list(libs)
print("".join(f"{n:>14s}" for n in ["shape"] + names))
for label, p in work.items():
    times = {n: [] for n in names}
    for r in range(43):
        for n in names:
            s = time.perf_counter(); p(libs[n])
            if r >= 3: times[n].append(time.perf_counter() - s)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"{label:>14s}" + "".join(f"{p.flops/med[n]/1e9:8.0f} {med['base']/med[n]:4.2f}" + " " for n in names))
