"""Measured and not taken (round 9): the residual norm's forward keeping a row of d <= 256 in registers (no second and
third read of t) and, on top, writing t (read only by the backward) with streaming stores that bypass the caches;
the bench's bf16 MLM step with today's kernel and both variants alternating in one process, with the time inside the
norm calls (forward and backward). Usage, pinned to one core:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/residual_norm_stream.py 1"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, print_steps, steps_inside  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
xmodlm.tune_allocator()
now = native.SOURCE.read_text()
old_body = now[now.index("void xm_residual_norm(const uint16_t *h"):now.index("/* The backward of xm_residual_norm")]
plain = old_body.replace("void xm_residual_norm(", "static void residual_norm_plain(", 1)
new_body = plain + '''void xm_residual_norm(const uint16_t *h, const uint8_t *keep, float scale, const float *residual,
                      const float *weight, const float *bias, float eps, int64_t rows, int64_t d, float *t,
                      float *y, uint16_t *y16, float *mean, float *rstd) {
    if (d > 256 || ((uintptr_t)t & 63)) { /* rows not held in 16 registers, or t not aligned for streaming */
        residual_norm_plain(h, keep, scale, residual, weight, bias, eps, rows, d, t, y, y16, mean, rstd);
        return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *hr = h + r * d;
        float *tr = t + r * d, *yr = y + r * d;
        __m512 vals[16];
        __m512 sum = _mm512_setzero_ps();
        int n = (int)(d / 16);
        for (int q = 0; q < n; q++) {
            int64_t j = 16 * q;
            __m512 s = load_bf16(hr + j);
            if (keep) {
                __mmask16 kept = _mm_test_epi8_mask(_mm_loadu_si128((const __m128i *)(keep + r * d + j)),
                                                    _mm_set1_epi8((char)0xff));
                s = load_bf16_vector(_mm512_cvtneps_pbh(_mm512_maskz_mul_ps(kept, s, _mm512_set1_ps(scale))));
            }
            __m512 v = _mm512_add_ps(s, _mm512_loadu_ps(residual + r * d + j));
            _mm512_stream_ps(tr + j, v);
            vals[q] = v;
            sum = _mm512_add_ps(sum, v);
        }
        float m = _mm512_reduce_add_ps(sum) / (float)d;
        __m512 mv = _mm512_set1_ps(m), squares = _mm512_setzero_ps();
        for (int q = 0; q < n; q++) {
            __m512 c = _mm512_sub_ps(vals[q], mv);
            squares = _mm512_fmadd_ps(c, c, squares);
        }
        float inv = 1.0f / sqrtf(_mm512_reduce_add_ps(squares) / (float)d + eps);
        mean[r] = m;
        rstd[r] = inv;
        __m512 iv = _mm512_set1_ps(inv);
        for (int q = 0; q < n; q++) {
            int64_t j = 16 * q;
            __m512 v = _mm512_mul_ps(_mm512_sub_ps(vals[q], mv), iv);
            if (weight) v = _mm512_mul_ps(v, _mm512_loadu_ps(weight + j));
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + j));
            _mm512_storeu_ps(yr + j, v);
            if (y16) _mm256_storeu_si256((__m256i *)(y16 + r * d + j), (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
    _mm_sfence();
    }
}

'''
regs = new_body.replace("_mm512_stream_ps(tr + j, v);", "_mm512_storeu_ps(tr + j, v);")
libraries = build_libraries({"now": now, "registers": now.replace(old_body, regs),
                             "registers+stream t": now.replace(old_body, new_body)})
phases, _, _ = build("bf16")
steps, within = steps_inside(libraries, phases, ("residual_norm", "residual_norm_backward"), 15, warm=6)
print_steps(steps, within, "the norms")
