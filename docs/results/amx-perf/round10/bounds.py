"""Where the own product kernel's time goes, one thread, each xmod-base shape alone and warm (xm_linear called
directly on buffers made once), the libraries alternating call by call in one process; GFLOP/s and the ratio to the
base. Most variants give WRONG results on purpose, each removing one cost.
Of the base commit's kernel: "B in L1" (every step reads the column pair's first K step of the packed weights: no
weight traffic from L2), "A in L1" (every step reads the block's first 32 columns of the rows), "A,B in L1" (both:
the tile unit's rate with its loads from L1), "no epilogue" (the pending blocks never written), "scratch out" (the
epilogue's stores all to the first line of the output), "fetch out" (right: the output and residual rows 8 on
fetched while the epilogue runs, prefetchw and prefetcht0).
Of the K-blocked kernel (kblock-v2.diff, K_BLOCK 256): "kb" (right), "kb no epilogue", "kb no partials" (the
accumulators not stored and reloaded between K-blocks), "kb epilogue at end" (a column pair's epilogues all at its
end, none between the steps), "kb 4x rate" (right: the epilogues 4x faster, in the next pair's first quarter),
"kb split" (right: half the step's epilogue units between its second and third tile products), "kb all hot" (the
epilogue's loads and stores all from and to one line each), "kb chunk 64" (right: ROW_CHUNK 64).
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/bounds.py
[--base REV] [--rounds 40]"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xmodlm  # noqa: E402
from variants import Product, build, old_source, patched, replaced  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="0973d6e")
parser.add_argument("--rounds", type=int, default=40)
args = parser.parse_args()
torch.set_num_threads(1)
xmodlm.tune_allocator()
base, kb = old_source(args.base), patched(args.base, "kblock-v2.diff")
STEP = "        block_step(a + kt * 32, a1 + kt * 32, lda, w0 + kt * 512, w1 + kt * 512);\n"
DRAIN = "static inline void drain(pending_block *p, int64_t units) {\n"
NO_DRAIN = DRAIN + "    p->next = p->units;\n"
LOAD = "        __m512 v = _mm512_load_ps(p->acc + i * 32 + 16 * (u & 1));\n"
RESIDUAL = "        if (p->residual) v = _mm512_add_ps(v, load_bf16(p->residual + (p->row + i) * p->ldr + col));\n"
STORE = ("        _mm256_storeu_si256((__m256i *)(p->out + (p->row + i) * p->ldo + col), "
         "(__m256i)_mm512_cvtneps_pbh(v));\n")
SCRATCH = "        _mm256_storeu_si256((__m256i *)(p->out + (col & 16)), (__m256i)_mm512_cvtneps_pbh(v));\n"
FETCH = LOAD + """        if (!(u & 1)) {
            __asm__ volatile("prefetchw %0" : : "m"(p->out[(p->row + i + 8) * p->ldo + p->col]));
            if (p->residual) _mm_prefetch((const char *)(p->residual + (p->row + i + 8) * p->ldr + p->col), _MM_HINT_T0);
        }
"""
KB_LOOP = """        block_step(a + kt * 32, a1 + kt * 32, lda, w0 + kt * 512, w1 + kt * 512);
        drain_group(previous, per_step, streaming); /* streaming a constant at each call: folded away */
"""
KB_SPLIT = """        _tile_loadd(4, a + kt * 32, lda * 2);
        _tile_loadd(6, w0 + kt * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, w1 + kt * 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        drain_group(previous, (per_step + 1) / 2, streaming);
        _tile_loadd(5, a1 + kt * 32, lda * 2);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        drain_group(previous, per_step / 2, streaming);
"""
RATE = "int64_t k_tiles = k / 32, per_step = (64 + k_tiles - 1) / k_tiles, blocks"


def all_hot(text):
    text = replaced(text, LOAD, "        __m512 v = _mm512_load_ps(p->acc + 16 * (u & 1));\n")
    text = replaced(text, RESIDUAL, "        if (p->residual) v = _mm512_add_ps(v, load_bf16(p->residual + col));\n")
    return replaced(text, STORE, SCRATCH)


libs = build({
    "base": base,
    "B in L1": replaced(base, STEP, "        block_step(a + kt * 32, a1 + kt * 32, lda, w0, w1);\n"),
    "A in L1": replaced(base, STEP, "        block_step(a, a1, lda, w0 + kt * 512, w1 + kt * 512);\n"),
    "A,B in L1": replaced(base, STEP, "        block_step(a, a1, lda, w0, w1);\n"),
    "no epilogue": replaced(base, DRAIN, NO_DRAIN),
    "scratch out": replaced(base, STORE, SCRATCH),
    "fetch out": replaced(base, LOAD, FETCH),
    "kb": kb,
    "kb no epilogue": replaced(kb, DRAIN, NO_DRAIN),
    "kb no partials": replaced(kb, "    if (from) {\n        _tile_loadd(0, from, 128);",
                               "    if (0) {\n        _tile_loadd(0, from, 128);"),
    "kb epilogue at end": replaced(kb, KB_LOOP, STEP),
    "kb 4x rate": replaced(kb, RATE, RATE.replace("per_step = (64", "per_step = 4 * ((64").replace(
        "/ k_tiles, blocks", "/ k_tiles), blocks")),
    "kb split": replaced(kb, KB_LOOP, KB_SPLIT),
    "kb all hot": all_hot(kb),
    "kb chunk 64": replaced(kb, "#define ROW_CHUNK 128\n", "#define ROW_CHUNK 64\n"),
})
g = torch.Generator().manual_seed(0)
work = {f"1024x{k}->{n}" + (" gelu" if act else "") + (" +residual" if res else ""): Product(1024, k, n, act, res, g)
        for k, n, act, res in [(768, 2304, None, False), (768, 768, None, True), (768, 3072, "gelu", False),
                               (3072, 768, None, True)]}
names = list(libs)
times = {label: {name: [] for name in names} for label in work}
for label, p in work.items():
    for r in range(args.rounds + 3):
        for name in names:
            start = time.perf_counter()
            p(libs[name])
            if r >= 3:
                times[label][name].append(time.perf_counter() - start)
print(f"{torch.get_num_threads()} thread(s); GFLOP/s (median of {args.rounds} calls, alternating call by call), and "
      f"the ratio of the medians to base")
print(f"{'variant':20s}" + "".join(f"{label:>30s}" for label in work))
for name in names:
    cells = []
    for label, p in work.items():
        med, med0 = statistics.median(times[label][name]), statistics.median(times[label]["base"])
        cells.append(f"{p.flops / med / 1e9:22.0f} {med0 / med:6.3f} ")
    print(f"{name:20s}" + "".join(cells))
