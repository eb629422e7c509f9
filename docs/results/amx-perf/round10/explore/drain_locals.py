"""Exploratory (one run): drain() with the pending block's fields copied to locals first (the vector stores may alias
them, so the compiler reloads each after every store), in the base kernel and the K-blocked one (kblock-v2.diff);
bits compared, GFLOP/s and ratio to base, medians of 60 calls alternating. Usage: taskset -c 0 env OMP_NUM_THREADS=1
PYTHONPATH=src python3 docs/results/amx-perf/round10/explore/drain_locals.py"""
import statistics, sys, time
import torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent))
import xmodlm
from variants import Product, build, old_source, patched, replaced
torch.set_num_threads(1); xmodlm.tune_allocator()
base, kb = old_source("0973d6e"), patched("0973d6e", "kblock-v2.diff")
OLD = """    int64_t end = p->next + units < p->units ? p->next + units : p->units;
    for (int64_t u = p->next; u < end; u++) {
        int64_t i = u >> 1, col = p->col + 16 * (u & 1);
        __m512 v = _mm512_load_ps(p->acc + i * 32 + 16 * (u & 1));
        if (p->bias) v = _mm512_add_ps(v, _mm512_loadu_ps(p->bias + col));
        if (p->act == 1) v = gelu_erf(v);
        if (p->residual) v = _mm512_add_ps(v, load_bf16(p->residual + (p->row + i) * p->ldr + col));
        _mm256_storeu_si256((__m256i *)(p->out + (p->row + i) * p->ldo + col), (__m256i)_mm512_cvtneps_pbh(v));
    }
    p->next = end;
"""
NEW = """    int64_t end = p->next + units < p->units ? p->next + units : p->units;
    const float *acc = p->acc, *bias = p->bias;
    const uint16_t *residual = p->residual ? p->residual + p->row * p->ldr + p->col : NULL;
    uint16_t *out = p->out + p->row * p->ldo + p->col;
    int64_t ldr = p->ldr, ldo = p->ldo, col0 = p->col;
    int act = p->act;
    for (int64_t u = p->next; u < end; u++) {
        int64_t i = u >> 1, half = 16 * (u & 1);
        __m512 v = _mm512_load_ps(acc + i * 32 + half);
        if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + col0 + half));
        if (act == 1) v = gelu_erf(v);
        if (residual) v = _mm512_add_ps(v, load_bf16(residual + i * ldr + half));
        _mm256_storeu_si256((__m256i *)(out + i * ldo + half), (__m256i)_mm512_cvtneps_pbh(v));
    }
    p->next = end;
"""
libs = build({
 "base": base,
 "base again": base + "\n",
 "base locals": replaced(base, OLD, NEW),
 "kb": kb,
 "kb locals": replaced(kb, OLD, NEW),
})
g = torch.Generator().manual_seed(0)
work = {f"{k}->{n} {act} {res}": Product(1024, k, n, act, res, g) for k, n, act, res in [(768, 2304, None, False), (768, 768, None, True), (768, 3072, "gelu", False), (3072, 768, None, True)]}
names = list(libs)
outs = {}
for n in names:
    outs[n] = [p(libs[n]).clone() for p in work.values()]
print("bit-identical:", {n: all(torch.equal(a, b) for a, b in zip(outs[n], outs["base"])) for n in names})
print("".join(f"{n:>14s}" for n in ["shape"] + names))
for label, p in work.items():
    times = {n: [] for n in names}
    for r in range(63):
        for n in names:
            s = time.perf_counter(); p(libs[n])
            if r >= 3: times[n].append(time.perf_counter() - s)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"{label:>14s}" + "".join(f"{p.flops/med[n]/1e9:8.0f} {med['base']/med[n]:5.3f}" + " " for n in names))
