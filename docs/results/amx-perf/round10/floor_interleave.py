"""oneDNN's linear, mm and the own weight_grad at one small-batch linear's shape (128 x 256 -> 768), alone and interleaved
(per call or pair, best of 5 x 500), then a few more pairings. One thread.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_interleave.py
"""
import timeit, torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.kernels import native
def t(f, n=500): return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6
rows, d, out = 128, 256, 768
xd = torch.randn(rows, d).bfloat16(); w16 = torch.randn(out, d).bfloat16(); b16 = torch.randn(out).bfloat16(); g = torch.randn(rows, out).bfloat16()
lp = lambda: torch.ops.mkldnn._linear_pointwise(xd, w16, b16, 'none', [None], '')
wg = lambda: native.weight_grad(g, xd)
mm = lambda: g.mm(w16)
a, b_, c = t(lp), t(wg), t(mm)
print(f"alone: linear_pointwise {a:.1f}, weight_grad {b_:.1f}, mm {c:.1f} us")
print(f"lp+wg interleaved {t(lambda: (lp(), wg())):.1f} (sum alone {a + b_:.1f})")
print(f"mm+wg interleaved {t(lambda: (mm(), wg())):.1f} (sum alone {c + b_:.1f})")
print(f"lp+mm interleaved {t(lambda: (lp(), mm())):.1f} (sum alone {a + c:.1f})")
h = torch.randn(128, 256).bfloat16(); res = torch.randn(128, 256); nw = torch.ones(256); nb = torch.zeros(256)
rn = lambda: native.residual_norm(h, None, 1.0, res, nw, nb, 1e-5)
e = lambda: torch.empty(128, 768, dtype=torch.bfloat16)
r_, e_ = t(rn), t(e)
print(f"alone: residual_norm {r_:.1f}, empty {e_:.1f}")
print(f"lp+residual_norm {t(lambda: (lp(), rn())):.1f} (sum alone {a + r_:.1f})")
print(f"wg+empty(128x768 bf16) {t(lambda: (wg(), e())):.1f} (sum alone {b_ + e_:.1f})")
keep = []
def lp_keep():
    keep.append(lp())
    if len(keep) > 1000: keep.clear()
print(f"lp kept alive + wg {t(lambda: (lp_keep(), wg())):.1f}")
print(f"lp + wg + lp + wg (2 pairs) {t(lambda: (lp(), wg(), lp(), wg())) / 2:.1f} per pair")
dw, db = torch.empty(768, 256), torch.empty(768)
bare = lambda: native._library().xm_weight_grad(g.data_ptr(), g.stride(0), xd.data_ptr(), xd.stride(0), 128, 768, 256,
                                                dw.data_ptr(), db.data_ptr())
print(f"bare xm_weight_grad alone {t(bare):.1f}; lp + bare xm_weight_grad {t(lambda: (lp(), bare())):.1f}")
