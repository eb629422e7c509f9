/* bf16 products on Intel AMX for CPU inference, built by kernels/native.py (plain C, no torch headers).

   out[rows, N] = act(A[rows, K] @ W^T + bias) + residual, rounded once to bf16, for one or several
   segments of consecutive rows, each with its own W and bias (the per-language modules): one call, both
   threads busy however small the segments. W is packed once (xm_pack) into AMX tiles: for each 16
   outputs and 32 inputs, 16 rows of 16 (input pair) x 2 values. Each thread computes its share of the
   output columns (a split oneDNN's heuristics do not always make: see native.py), 32 x 32 outputs at a
   time in four accumulator tiles over the whole K, rows in chunks of ROW_CHUNK so that they stay in L2
   while the thread's weights stream by. The epilogue runs on the float32 accumulator: bias, GELU (erf),
   residual, then one rounding to bf16 (round to nearest even).

   Requires N % 32 == 0 and K % 32 == 0 (checked by the caller); any row count (a block of fewer than
   32 rows is copied into a zero-padded buffer first). */

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ROW_CHUNK 128
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Linux hands out AMX's tile state only on request (once per process); 1 if granted. */
int xm_request_amx(void) { return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0; }

/* W (N x K, bf16, row-major) -> tiles [N / 16][K / 32][16 input pairs][16 outputs][2]. */
void xm_pack(const uint16_t *w, uint16_t *out, int64_t n, int64_t k) {
    int64_t k_tiles = k / 32;
#pragma omp parallel for
    for (int64_t nt = 0; nt < n / 16; nt++)
        for (int64_t kt = 0; kt < k_tiles; kt++) {
            uint16_t *tile = out + (nt * k_tiles + kt) * 512;
            for (int pair = 0; pair < 16; pair++)
                for (int j = 0; j < 16; j++) {
                    const uint16_t *src = w + (nt * 16 + j) * k + kt * 32 + 2 * pair;
                    tile[pair * 32 + 2 * j] = src[0];
                    tile[pair * 32 + 2 * j + 1] = src[1];
                }
        }
}

static inline __m512 load_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/* exp(v), |v| < 87: 2^n * p(r), r = v - n ln2 in [-ln2/2, ln2/2], p of degree 6 (relative error < 2e-7). */
static inline __m512 exp_ps(__m512 v) {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* GELU with erf: x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2, with erfc(z) for z >= 0 from the Chebyshev fit
   of Numerical Recipes (erfcc: relative error below 1.2e-7 everywhere, the far negative tail included)
   and erfc(-z) = 2 - erfc(z). */
static inline __m512 gelu_erf(__m512 x) {
    static const float c[10] = {-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f, -0.18628806f,
                                0.27886807f,  -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};
    __m512 z = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678f)));
    /* t = 1 / (1 + z / 2): the 14-bit reciprocal and one Newton step (a division is several times slower) */
    __m512 d = _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)), t = _mm512_rcp14_ps(d);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
    __m512 q = _mm512_set1_ps(c[9]);
    for (int i = 8; i >= 0; i--) q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(c[i]));
    __m512 erfc = _mm512_mul_ps(t, exp_ps(_mm512_fnmadd_ps(z, z, q)));
    __m512 half = _mm512_mul_ps(erfc, _mm512_set1_ps(0.5f));
    __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mul_ps(x, _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(1.0f), half), half));
}

/* One 32 x 32 block of outputs: rows [a, a + 32) (row stride lda), output columns [32 c, 32 c + 32). */
static inline void block(const uint16_t *a, int64_t lda, const uint16_t *w0, const uint16_t *w1, int64_t k_tiles,
                         float *acc) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t *a1 = a + 16 * lda;
    for (int64_t kt = 0; kt < k_tiles; kt++) {
        /* each load issued right before its first use, so that it overlaps the products before it */
        _tile_loadd(4, a + kt * 32, lda * 2);
        _tile_loadd(6, w0 + kt * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, w1 + kt * 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a1 + kt * 32, lda * 2);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, acc, 128);
    _tile_stored(1, acc + 16, 128);
    _tile_stored(2, acc + 512, 128);
    _tile_stored(3, acc + 528, 128);
}

/* The segments' products. rows[s]: segment s's row count (segments are consecutive rows of a, residual
   and out); weights[s], biases[s]: its packed W and float32 bias (0: none); residual: bf16 or NULL;
   act: 0 none, 1 GELU (erf). Returns 0, or -1 if a buffer could not be allocated. */
int xm_linear(int64_t segments, const int64_t *rows, const uint64_t *weights, const uint64_t *biases,
              const uint16_t *a, int64_t lda, const uint16_t *residual, int64_t ldr, uint16_t *out, int64_t ldo,
              int64_t n, int64_t k, int act) {
    int64_t k_tiles = k / 32, col_blocks = n / 32;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        tile_config config;
        memset(&config, 0, sizeof config);
        config.palette = 1;
        for (int i = 0; i < 8; i++) {
            config.rows[i] = 16;
            config.colsb[i] = 64;
        }
        _tile_loadconfig(&config);
        int threads = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t first = col_blocks * me / threads, last = col_blocks * (me + 1) / threads;
        float acc[32 * 32] __attribute__((aligned(64)));
        uint16_t *padded = NULL; /* a block of fewer than 32 rows, zero-padded */
        int64_t start = 0;
        for (int64_t s = 0; s < segments && !failed; start += rows[s], s++) {
            const uint16_t *w = (const uint16_t *)weights[s];
            const float *bias = (const float *)biases[s];
            for (int64_t chunk = 0; chunk < rows[s] && !failed; chunk += ROW_CHUNK) {
                int64_t chunk_end = chunk + ROW_CHUNK < rows[s] ? chunk + ROW_CHUNK : rows[s];
                for (int64_t c = first; c < last && !failed; c++) {
                    const uint16_t *w0 = w + 2 * c * k_tiles * 512, *w1 = w0 + k_tiles * 512;
                    for (int64_t r0 = chunk; r0 < chunk_end; r0 += 32) {
                        int64_t valid = chunk_end - r0 < 32 ? chunk_end - r0 : 32, row = start + r0;
                        if (valid == 32) {
                            block(a + row * lda, lda, w0, w1, k_tiles, acc);
                        } else {
                            if (!padded && !(padded = calloc(32 * k, sizeof(uint16_t)))) {
                                failed = 1;
                                break;
                            }
                            for (int64_t i = 0; i < 32; i++) {
                                if (i < valid)
                                    memcpy(padded + i * k, a + (row + i) * lda, k * sizeof(uint16_t));
                                else
                                    memset(padded + i * k, 0, k * sizeof(uint16_t));
                            }
                            block(padded, k, w0, w1, k_tiles, acc);
                        }
                        for (int64_t i = 0; i < valid; i++)
                            for (int h = 0; h < 2; h++) {
                                int64_t col = 32 * c + 16 * h;
                                __m512 v = _mm512_load_ps(acc + i * 32 + 16 * h);
                                if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + col));
                                if (act == 1) v = gelu_erf(v);
                                if (residual) v = _mm512_add_ps(v, load_bf16(residual + (row + i) * ldr + col));
                                _mm256_storeu_si256((__m256i *)(out + (row + i) * ldo + col),
                                                    (__m256i)_mm512_cvtneps_pbh(v));
                            }
                    }
                }
            }
        }
        free(padded);
        _tile_release();
    }
    return failed ? -1 : 0;
}
