/* Own CPU kernels for bf16 inference on processors with AMX, built by kernels/native.py (plain C, no torch
   headers): the products (xm_linear, with LayerNorm fused on request), LayerNorm (xm_layer_norm) and softmax
   attention (xm_attention); for bf16 autocast training, the masked-LM cross-entropy with its gradient
   (xm_cross_entropy), LayerNorm(dropout(h) + residual) and its backward (xm_residual_norm), softmax attention
   forward and backward (xm_attention_train), the tied vocabulary projection on the float32 weight, forward and
   its gradients in one pass (xm_vocab_forward, xm_vocab_backward; on request the masked-LM loss's row statistics
   and its gradient formed inside); Dropout's keep mask (xm_keep_mask) and its mask and scale on float32
   values (xm_mask_scale); without AMX, a linear's weight and bias gradients in bf16 autocast training
   (xm_weight_grad_vector, after xm_weight_grad), softmax attention for bf16 inference (xm_attention_vector) and the
   language modules for bf16 inference (xm_modules_vector, at the end of this file), all by AVX-512's bf16 products.

   The kernels with tile instructions (the products, both attentions, the weight gradients, the vocabulary
   projection, the training modules) run only on processors with AMX; the others use AVX-512 alone (F, DQ, BW, VL
   and the bf16 conversions) and native.py calls them on any processor that has it, AMX or not (AMD Zen 4 and 5).
   None of them may call begin() or any other tile code. The training attention also comes in a vector version
   (xm_attention_train_vector and its backward: AVX-512's bf16 pair products), which native.py calls without AMX.

   Products.

   out[rows, N] = act(A[rows, K] @ W^T + bias) + residual, rounded once to bf16, for one or several
   segments of consecutive rows, each with its own W and bias (the per-language modules): one call, both
   threads busy however small the segments. W is packed once (xm_pack) into AMX tiles: for each 16
   outputs and 32 inputs, 16 rows of 16 (input pair) x 2 values. Each thread computes its share of the
   output columns (a split oneDNN's heuristics do not always make: see native.py), 32 x 32 outputs at a
   time in four accumulator tiles over the whole K, rows in chunks of ROW_CHUNK so that they stay in L2
   while the thread's weights stream by. The epilogue runs on the float32 accumulator: bias, GELU (erf),
   residual, then one rounding to bf16 (round to nearest even); a block's epilogue runs in pieces between
   the next block's tile products, so that the vector work overlaps the tile unit's.

   Requires N % 32 == 0 and K % 32 == 0 (checked by the caller); any row count (a block of fewer than
   32 rows is copied into a zero-padded buffer first). */

#include <immintrin.h>
#include <math.h>
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

/* Every tile 16 rows of 64 bytes (16 float32 or 32 bf16): the thread's tile state, set before use. */
static void configure_tiles(void) {
    tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 8; i++) {
        config.rows[i] = 16;
        config.colsb[i] = 64;
    }
    _tile_loadconfig(&config);
}

/* dst (16 x 16 32-bit values, row-major) = the transpose of the 16 x 16 32-bit block at src (row stride
   `stride` 16-bit values), in registers (unpacks, then 128-bit lane shuffles); rows at or past `live` read as
   zero. */
static inline void transpose16(const uint16_t *src, int64_t stride, int64_t live, uint16_t *dst) {
    __m512i r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < live ? _mm512_loadu_si512((const void *)(src + i * stride)) : _mm512_setzero_si512();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
    }
    for (int i = 0; i < 16; i++) _mm512_store_si512((__m512i *)(dst + 32 * i), r[i]);
}

/* W (N x K, bf16, row-major) -> tiles [N / 16][K / 32][16 input pairs][16 outputs][2]: each tile the transpose
   of a 16 x 16 block of W's (input pair) 32-bit values. */
void xm_pack(const uint16_t *w, uint16_t *out, int64_t n, int64_t k) {
    int64_t k_tiles = k / 32;
#pragma omp parallel for
    for (int64_t nt = 0; nt < n / 16; nt++)
        for (int64_t kt = 0; kt < k_tiles; kt++)
            transpose16(w + nt * 16 * k + kt * 32, k, 16, out + (nt * k_tiles + kt) * 512);
}

static inline __m512 load_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

static inline __m512 load_bf16_vector(__m256bh v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)v), 16));
}

/* exp(v) = 2^n * p(r) for |v| < 87: n = round(v / ln2), r = v - n ln2 in [-ln2/2, ln2/2] (ln2 in two parts), p of
   degree 6 (relative error < 2e-7); returns p(r), n in *n. */
static inline __m512 exp_parts(__m512 v, __m512 *n) {
    *n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(*n, _mm512_set1_ps(0.693145752f), v);
    r = _mm512_fnmadd_ps(*n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
}

/* exp(v), v clamped to [-87, 87] (exp_parts). */
static inline __m512 exp_ps(__m512 v) {
    __m512 n, p = exp_parts(_mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(87.0f)), &n);
    return _mm512_scalef_ps(p, n);
}

/* 2^v for finite v <= 0: 2^floor(v) * p(f), f = v - floor(v) in [0, 1) in one instruction (VREDUCEPS), p of degree 5
   fitted to 2^f on [0, 1) for relative error (below 1.6e-7 in float32, as the degree-6 Taylor polynomial on
   [-1/2, 1/2] it replaces; exp2_fraction), the power of two applied by VSCALEFPS, which floors its exponent
   itself. For softmax, whose scaled scores are taken in base 2. */
static inline __m512 exp2_fraction(__m512 v) {
    __m512 f = _mm512_reduce_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = _mm512_set1_ps(1.8762329e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(8.9925844e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5823606e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4015453e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9315296e-1f));
    return _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.9999994e-1f));
}

/* 0 for v below -126: there 2^v would be a float32 denormal, and so would what it multiplies further on, which the
   processor handles in microcode (softmax rows with keys far below their maximum ran several times slower); each
   such term is below 2^-126 against the row's sum of at least 1. The masked power of two computes no lane below. */
static inline __m512 exp2_nonpositive(__m512 v) {
    __mmask16 normal = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
    return _mm512_maskz_scalef_ps(normal, exp2_fraction(v), v);
}

/* GELU with erf: x Phi(x), with Phi(-|x|) = erfc(z) / 2 (z = |x| / sqrt 2) = t 2^(q(t) - z^2 log2(e)),
   t = 1 / (1 + z / 2): the form of Numerical Recipes' erfcc, with q of degree 7 fitted here to log2(erfc(z) / (2t))
   + z^2 log2(e) on z in [0, 10.5] (error below 1e-6 in the exponent, so Phi's relative error stays near 1e-6 in
   the far negative tail as well), the power of two by VSCALEFPS (beyond the fit the tail is below float32's
   range), and Phi(|x|) = 1 - Phi(-|x|). From |x| of about 13 the tail is a float32 denormal: the product kernels
   run with denormals flushed (begin), where the processor would otherwise take them in microcode. normal_tail is
   Phi(-|x|) (the language modules' training kernel takes GELU's slope from it too). */
static inline __m512 normal_tail(__m512 x) {
    static const float c[8] = {-2.82574391e+00f, 1.44142103e+00f,  5.63391089e-01f, -4.05583344e-02f,
                               4.73118454e-01f,  -1.41001344e+00f, 1.06465852e+00f, -2.66274333e-01f};
    /* t = 1 / (1 + |x| / (2 sqrt 2)): the 14-bit reciprocal and one Newton step (a division is several times slower) */
    __m512 d = _mm512_fmadd_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.35355339f), _mm512_set1_ps(1.0f));
    __m512 t = _mm512_rcp14_ps(d);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
    __m512 q = _mm512_set1_ps(c[7]);
    for (int i = 6; i >= 0; i--) q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(c[i]));
    /* z^2 log2(e) = x^2 log2(e) / 2 */
    __m512 power = _mm512_fnmadd_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(0.72134752f), q);
    return _mm512_mul_ps(t, _mm512_scalef_ps(exp2_fraction(power), power));
}

static inline __m512 gelu_erf(__m512 x) {
    __m512 tail = normal_tail(x);
    __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mul_ps(x, _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(1.0f), tail), tail));
}

/* A finished block's epilogue, run piecewise while the next block's products run (the tile unit and the
   vector unit then work at once): 2 units (16 columns each) per row, `next` the first not yet written. */
typedef struct {
    const float *acc;                        /* its 32 x 32 float32 accumulators, 32 per row */
    int64_t row, col, units, next;           /* first output row and column; 2 x its rows; progress */
    const float *bias;                       /* float32, or NULL */
    const uint16_t *residual;                /* bf16, or NULL */
    int64_t ldr, ldo;
    uint16_t *out;
    int act;
    int streaming;                           /* 1: whole rows by non-temporal stores (drain_streaming) */
    float *lane_max, *lane_sum, *ref;        /* drain_streaming's softmax statistics (lane_statistics), or NULL */
} pending_block;

static inline void drain_streaming(pending_block *p, int64_t units);

static inline void drain(pending_block *p, int64_t units) {
    int64_t end = p->next + units < p->units ? p->next + units : p->units;
    for (int64_t u = p->next; u < end; u++) {
        int64_t i = u >> 1, col = p->col + 16 * (u & 1);
        __m512 v = _mm512_load_ps(p->acc + i * 32 + 16 * (u & 1));
        if (p->bias) v = _mm512_add_ps(v, _mm512_loadu_ps(p->bias + col));
        if (p->act == 1) v = gelu_erf(v);
        if (p->residual) v = _mm512_add_ps(v, load_bf16(p->residual + (p->row + i) * p->ldr + col));
        _mm256_storeu_si256((__m256i *)(p->out + (p->row + i) * p->ldo + col), (__m256i)_mm512_cvtneps_pbh(v));
    }
    p->next = end;
}

/* One step (32 of K) of a 32 x 32 block in the accumulator tiles 0-3: 16 rows at a and 16 at a1 (row stride lda
   values) times the packed columns b0 and b1; each load issued right before its first use, so that it overlaps
   the products before it. */
static inline void block_step(const uint16_t *a, const uint16_t *a1, int64_t lda, const uint16_t *b0,
                              const uint16_t *b1) {
    _tile_loadd(4, a, lda * 2);
    _tile_loadd(6, b0, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b1, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1, lda * 2);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
}

/* One 32 x 32 block of outputs: rows [a, a + 32) (row stride lda) against the packed columns w0, w1 over
   the whole K, into acc; `per_step` units of the previous block's epilogue between the steps over K. */
static inline void block(const uint16_t *a, int64_t lda, const uint16_t *w0, const uint16_t *w1, int64_t k_tiles,
                         float *acc, pending_block *previous, int64_t per_step, const char *ahead, int64_t lines,
                         int streaming) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t *a1 = a + 16 * lda;
    for (int64_t kt = 0; kt < k_tiles; kt++) {
        block_step(a + kt * 32, a1 + kt * 32, lda, w0 + kt * 512, w1 + kt * 512);
        if (streaming) drain_streaming(previous, per_step); /* a constant at each call: folded away */
        else drain(previous, per_step);
        for (int64_t i = 0; i < lines; i++) /* the next weights into L2, a few lines per step */
            _mm_prefetch(ahead + (kt * lines + i) * 64, _MM_HINT_T1);
    }
    _tile_stored(0, acc, 128);
    _tile_stored(1, acc + 16, 128);
    _tile_stored(2, acc + 512, 128);
    _tile_stored(3, acc + 528, 128);
}

/* LayerNorm of one bf16 row of d values (d % 16 == 0): y = (x - mean) / sqrt(var + eps) * weight + bias, the
   mean and the (biased) variance in float32 over the row (passes over it in L1), one rounding to bf16, as
   torch computes it for bf16 input; weight and bias bf16 (NULL: none). out may be x (in place). */
static inline void norm_row(const uint16_t *row, const uint16_t *weight, const uint16_t *bias, float eps,
                            uint16_t *out, int64_t d) {
    /* four independent sums: one chain of dependent additions would wait on each */
    __m512 sum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t j = 0; j < d; j += 16) sum[(j >> 4) & 3] = _mm512_add_ps(sum[(j >> 4) & 3], load_bf16(row + j));
    float mean = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sum[0], sum[1]), _mm512_add_ps(sum[2], sum[3])))
                 / (float)d;
    __m512 m = _mm512_set1_ps(mean);
    __m512 squares[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t j = 0; j < d; j += 16) {
        __m512 c = _mm512_sub_ps(load_bf16(row + j), m);
        squares[(j >> 4) & 3] = _mm512_fmadd_ps(c, c, squares[(j >> 4) & 3]);
    }
    __m512 total = _mm512_add_ps(_mm512_add_ps(squares[0], squares[1]), _mm512_add_ps(squares[2], squares[3]));
    __m512 scale = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(total) / (float)d + eps));
    for (int64_t j = 0; j < d; j += 16) {
        __m512 y = _mm512_mul_ps(_mm512_sub_ps(load_bf16(row + j), m), scale);
        if (weight) y = _mm512_mul_ps(y, load_bf16(weight + j));
        if (bias) y = _mm512_add_ps(y, load_bf16(bias + j));
        _mm256_storeu_si256((__m256i *)(out + j), (__m256i)_mm512_cvtneps_pbh(y));
    }
}

/* LayerNorm of bf16 rows (norm_row), the rows split between the threads. */
void xm_layer_norm(const uint16_t *x, int64_t ldx, const uint16_t *weight, const uint16_t *bias, float eps,
                   uint16_t *out, int64_t ldo, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) norm_row(x + r * ldx, weight, bias, eps, out + r * ldo, d);
}

/* One thread's state through a call: the block being computed and the one whose epilogue is pending, and a
   zero-padded copy of a block of fewer than 32 rows. */
typedef struct {
    float acc[2][32 * 32] __attribute__((aligned(64)));
    int current;
    pending_block pending;
    uint16_t *padded;
    int64_t padded_k;
    unsigned int csr;                        /* the thread's MXCSR before the call, restored at its end */
} thread_state;

/* out[row_from, row_to) x columns [32 first, 32 last) = act(a @ W^T + bias) + residual (W packed, K = k),
   32 x 32 blocks, each block's epilogue run during the next one's products; `after`: the packed weights whose
   first column pair to prefetch during the last pair. The last block's epilogue stays pending (drain).
   Returns -1 if the padded buffer could not be allocated. */
static int products(thread_state *st, const uint16_t *w, const float *bias, const uint16_t *after, const uint16_t *a,
                    int64_t lda, const uint16_t *residual, int64_t ldr, uint16_t *out, int64_t ldo, int64_t row_from,
                    int64_t row_to, int64_t first, int64_t last, int64_t k, int act) {
    int64_t k_tiles = k / 32, per_step = (64 + k_tiles - 1) / k_tiles, blocks = (row_to - row_from + 31) / 32;
    /* the next column pair's packed weights (2 x k_tiles x 1 KB), fetched over this pair's blocks */
    int64_t lines = (32 + blocks - 1) / blocks;
    for (int64_t c = first; c < last; c++) {
        const uint16_t *w0 = w + 2 * c * k_tiles * 512, *w1 = w0 + k_tiles * 512;
        const char *next = (const char *)(c + 1 < last ? w1 + k_tiles * 512 : after + 2 * first * k_tiles * 512);
        for (int64_t row = row_from; row < row_to; row += 32) {
            const char *ahead = next + (row - row_from) / 32 * k_tiles * lines * 64;
            int64_t valid = row_to - row < 32 ? row_to - row : 32;
            if (valid == 32) {
                block(a + row * lda, lda, w0, w1, k_tiles, st->acc[st->current], &st->pending, per_step, ahead, lines,
                      0);
            } else {
                if (st->padded_k < k) {
                    free(st->padded);
                    st->padded_k = (st->padded = malloc(32 * k * sizeof(uint16_t))) ? k : 0;
                    if (!st->padded) return -1;
                }
                for (int64_t i = 0; i < 32; i++) {
                    if (i < valid) memcpy(st->padded + i * k, a + (row + i) * lda, k * sizeof(uint16_t));
                    else memset(st->padded + i * k, 0, k * sizeof(uint16_t));
                }
                block(st->padded, k, w0, w1, k_tiles, st->acc[st->current], &st->pending, per_step, ahead, lines, 0);
            }
            drain(&st->pending, 64);
            st->pending = (pending_block){st->acc[st->current], row, 32 * c, 2 * valid, 0, bias, residual, ldr, ldo,
                                          out, act};
            st->current ^= 1;
        }
    }
    return 0;
}

/* A thread's start in a call: its tile configuration and its state (NULL if it could not be allocated), float32
   denormals flushed to zero (inputs and results: MXCSR's DAZ and FTZ) until end(). The epilogues' float32 values
   below 2^-126 (GELU's far tail) would otherwise go through the processor's microcode: products with GELU ran
   4-8x slower on pre-activations of 13 < |x| < 20. The outputs are bf16, whose conversion flushes denormals
   anyway; the tile products treat them as zero themselves. */
static thread_state *begin(void) {
    configure_tiles();
    thread_state *st = aligned_alloc(64, sizeof(thread_state));
    if (st) {
        *st = (thread_state){.current = 0, .pending = {.units = 0, .next = 0}, .padded = NULL, .padded_k = 0,
                             .csr = _mm_getcsr()};
        _mm_setcsr(st->csr | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON);
    }
    return st;
}

/* A thread's end: the pending epilogue written, MXCSR as it was (the thread is torch's), the state freed, the
   tiles released. */
static void end(thread_state *st) {
    if (st) {
        if (st->pending.streaming) drain_streaming(&st->pending, 64);
        else drain(&st->pending, 64);
        _mm_setcsr(st->csr);
        free(st->padded);
        free(st);
    }
    _tile_release();
}

/* LayerNorm (norm_row, in place) of the rows [from, to) of out (n values each), once their pending epilogue
   is written: rows a thread has just finished, still in its cache. */
static void normalise(thread_state *st, uint16_t *out, int64_t ldo, int64_t from, int64_t to, int64_t n,
                      const uint16_t *weight, const uint16_t *bias, float eps) {
    drain(&st->pending, 64);
    for (int64_t r = from; r < to; r++) norm_row(out + r * ldo, weight, bias, eps, out + r * ldo, n);
}

/* The rows [from, to) of each segment that a thread owns: the 32-row blocks of all segments, in order, split
   evenly between the threads (split 1), or all of them (split 0). */
static void own_rows(const int64_t *rows, int64_t segments, int64_t s, int split, int64_t *from, int64_t *to) {
    int threads = omp_get_num_threads(), me = omp_get_thread_num();
    int64_t row_blocks = 0, before = 0;
    for (int64_t i = 0; i < segments; i++) {
        if (i < s) before += (rows[i] + 31) / 32;
        row_blocks += (rows[i] + 31) / 32;
    }
    int64_t mine_from = split ? row_blocks * me / threads : 0;
    int64_t mine_to = split ? row_blocks * (me + 1) / threads : row_blocks;
    *from = (mine_from > before ? mine_from - before : 0) * 32;
    *to = (mine_to - before) * 32 < rows[s] ? (mine_to - before) * 32 : rows[s];
}

/* The segments' products. rows[s]: segment s's row count (segments are consecutive rows of a, residual
   and out); weights[s], biases[s]: its packed W and float32 bias (0: none); residual: bf16 or NULL;
   act: 0 none, 1 GELU (erf); split_rows: how the threads share the work: their share of the output columns
   of every row (0), or every column of their share of the rows (1: a thread's rows then stay in its cache).
   norm: LayerNorm each output row (norm_row, in place, with norm_weight, norm_bias, eps) once its thread has
   written all of it, while it is still in the thread's cache; only with split_rows (else the caller
   normalises after). Returns 0, or -1 if a buffer could not be allocated. */
int xm_linear(int64_t segments, const int64_t *rows, const uint64_t *weights, const uint64_t *biases,
              const uint16_t *a, int64_t lda, const uint16_t *residual, int64_t ldr, uint16_t *out, int64_t ldo,
              int64_t n, int64_t k, int act, int split_rows, int norm, const uint16_t *norm_weight,
              const uint16_t *norm_bias, float eps) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        int threads = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t col_blocks = n / 32, first = split_rows ? 0 : col_blocks * me / threads;
        int64_t last = split_rows ? col_blocks : col_blocks * (me + 1) / threads, start = 0;
        thread_state *st = begin();
        failed = !st;
        for (int64_t s = 0; s < segments && !failed; start += rows[s], s++) {
            const uint16_t *w = (const uint16_t *)weights[s];
            int64_t own_from, own_to;
            own_rows(rows, segments, s, split_rows, &own_from, &own_to);
            for (int64_t chunk = own_from; chunk < own_to && !failed; chunk += ROW_CHUNK) {
                int64_t chunk_end = chunk + ROW_CHUNK < own_to ? chunk + ROW_CHUNK : own_to;
                /* after the last pair: this segment's first again for the next chunk, else the next segment's */
                const uint16_t *after = chunk_end < own_to || s + 1 == segments ? w : (const uint16_t *)weights[s + 1];
                failed = products(st, w, (const float *)biases[s], after, a, lda, residual, ldr, out, ldo,
                                  start + chunk, start + chunk_end, first, last, k, act) != 0;
                if (!failed && norm && split_rows) /* every column of these rows is this thread's: normalise now */
                    normalise(st, out, ldo, start + chunk, start + chunk_end, n, norm_weight, norm_bias, eps);
            }
        }
        end(st);
    }
    return failed ? -1 : 0;
}

/* The language modules of a batch: out = norm(W2_s GELU(W1_s x + b1_s) + b2_s + residual) for each segment s,
   both products in one call, the rows split between the threads; each chunk of a thread's rows goes through
   the first product into `inner` (rows x r, bf16) and on through the second while it is in the thread's
   cache. x: rows x d (row stride ldx); residual: bf16 rows x d, or NULL; norm as in xm_linear. Returns 0, or -1
   if a buffer could not be allocated. */
int xm_modules(int64_t segments, const int64_t *rows, const uint64_t *first_weights, const uint64_t *first_biases,
               const uint64_t *second_weights, const uint64_t *second_biases, const uint16_t *x, int64_t ldx,
               uint16_t *inner, const uint16_t *residual, int64_t ldr, uint16_t *out, int64_t ldo, int64_t d,
               int64_t r, int norm, const uint16_t *norm_weight, const uint16_t *norm_bias, float eps) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        thread_state *st = begin();
        failed = !st;
        int64_t start = 0;
        for (int64_t s = 0; s < segments && !failed; start += rows[s], s++) {
            const uint16_t *w1 = (const uint16_t *)first_weights[s], *w2 = (const uint16_t *)second_weights[s];
            int64_t own_from, own_to;
            own_rows(rows, segments, s, 1, &own_from, &own_to);
            for (int64_t chunk = own_from; chunk < own_to && !failed; chunk += ROW_CHUNK) {
                int64_t from = start + chunk, to = start + (chunk + ROW_CHUNK < own_to ? chunk + ROW_CHUNK : own_to);
                const uint16_t *after =
                    to < start + own_to || s + 1 == segments ? w1 : (const uint16_t *)first_weights[s + 1];
                failed = products(st, w1, (const float *)first_biases[s], w2, x, ldx, NULL, 0, inner, r, from, to, 0,
                                  r / 32, d, 1) != 0;
                drain(&st->pending, 64); /* the chunk's inner rows all written before the second product reads */
                failed = failed || products(st, w2, (const float *)second_biases[s], after, inner, r, residual, ldr,
                                            out, ldo, from, to, 0, d / 32, r, 0) != 0;
                if (!failed && norm) normalise(st, out, ldo, from, to, d, norm_weight, norm_bias, eps);
            }
        }
        end(st);
    }
    return failed ? -1 : 0;
}

/* The first n of 16 lanes (all for n >= 16, none for n <= 0): the keys of a tile that exist. */
static inline __mmask16 lanes_before(int64_t n) {
    return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

/* n query rows (16 or 32) starting at q0 (row stride st), zero-padded through `pad` (n rows of d) where fewer than
   n remain. */
static inline const uint16_t *query_rows(const uint16_t *qh, int64_t st, int64_t t, int64_t q0, int64_t d,
                                         int64_t n, uint16_t *pad, int64_t *stride) {
    int64_t valid = t - q0 < n ? t - q0 : n;
    *stride = st;
    if (valid == n) return qh + q0 * st;
    for (int64_t i = 0; i < n; i++) {
        if (i < valid) memcpy(pad + i * d, qh + (q0 + i) * st, d * 2);
        else memset(pad + i * d, 0, d * 2);
    }
    *stride = d;
    return pad;
}

/* One thread's scratch in the attention kernels (forward): k and v in tiles, two blocks of 16 queries' float32
   scores (the next block's computed ahead), 16 rows of bf16 probabilities, 16 outputs, 16 padded queries, and
   the live keys' lane masks. */
typedef struct {
    uint16_t *kp, *vp, *probs, *qpad;
    float *scores, *o;
    __mmask16 *live;
} attention_scratch;

/* 1 if every buffer could be allocated (those that could are freed by scratch_free either way). */
static int scratch_alloc(attention_scratch *s, int64_t padded_t, int64_t d) {
    s->kp = aligned_alloc(64, padded_t * d * 2);
    s->vp = aligned_alloc(64, padded_t * d * 2);
    s->probs = aligned_alloc(64, 16 * padded_t * 2);
    s->qpad = aligned_alloc(64, 16 * d * 2);
    s->scores = aligned_alloc(64, 2 * 16 * padded_t * 4);
    s->o = aligned_alloc(64, 16 * d * 4);
    s->live = malloc((padded_t / 16) * sizeof(__mmask16));
    return s->kp && s->vp && s->probs && s->qpad && s->scores && s->o && s->live;
}

static void scratch_free(attention_scratch *s) {
    free(s->kp);
    free(s->vp);
    free(s->probs);
    free(s->qpad);
    free(s->scores);
    free(s->o);
    free(s->live);
}

/* c[16 x 32] (float32, row stride ldc) = a @ [b0 b1] over k_tiles steps of 32: a's step s at a + s * a_step (16 rows
   of 32 bf16, row stride lda values), b0 and b1 two columns of 16 packed tiles, one tile (512 values) a step. */
static inline void tile_pair(const uint16_t *a, int64_t lda, int64_t a_step, const uint16_t *b0, const uint16_t *b1,
                             int64_t k_tiles, float *c, int64_t ldc) {
    _tile_zero(0);
    _tile_zero(1);
    for (int64_t kt = 0; kt < k_tiles; kt++) {
        _tile_loadd(4, a + kt * a_step, lda * 2);
        _tile_loadd(6, b0 + kt * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b1 + kt * 512, 64);
        _tile_dpbf16ps(1, 4, 7);
    }
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c + 16, ldc * 4);
}

/* c (16 x d float32, row stride d) = a @ b over k_tiles steps of 32: a's step s at a + s * a_step (16 rows of
   32 bf16, row stride lda values), b packed by pack_pairs over k_tiles row tiles. */
static inline void rows_by_pairs(const uint16_t *a, int64_t lda, int64_t a_step, const uint16_t *b, int64_t k_tiles,
                                 int64_t d, float *c) {
    for (int64_t dt = 0; dt < d / 16; dt += 2)
        tile_pair(a, lda, a_step, b + dt * k_tiles * 512, b + (dt + 1) * k_tiles * 512, k_tiles, c + 16 * dt, d);
}

/* The float32 scores of 16 queries against the keys of tiles kt and kt + 1 (16 each), over d in tiles of 32,
   into scores (row stride ld floats). */
static inline void score_pair(const uint16_t *qrows, int64_t qstride, const uint16_t *kp, int64_t kt, int64_t d_tiles,
                              float *scores, int64_t ld) {
    tile_pair(qrows, qstride, 32, kp + kt * d_tiles * 512, kp + (kt + 1) * d_tiles * 512, d_tiles, scores + 16 * kt,
              ld);
}

/* Layouts shared by the attention kernels. */

/* x (t rows of d bf16, row stride st) as the right operand of products with x^T (x^T's 32-bit d-pairs per row):
   tiles [row tile of 16][d tile of 32][16 d-pairs][16 rows x 2]; rows past t zero. */
static void pack_transposed(const uint16_t *x, int64_t st, int64_t t, int64_t padded_t, int64_t d, uint16_t *out) {
    int64_t d_tiles = d / 32;
    for (int64_t rt = 0; rt < padded_t / 16; rt++)
        for (int64_t dt = 0; dt < d_tiles; dt++)
            transpose16(x + 16 * rt * st + 32 * dt, st, t - 16 * rt, out + (rt * d_tiles + dt) * 512);
}

/* Rows r0 and r1 (n bf16 values each, n % 32 == 0; NULL reads as zeros) interleaved: out[2 j + i] = r_i[j]. */
static inline void interleave_rows(const uint16_t *r0, const uint16_t *r1, int64_t n, uint16_t *out) {
    const __m512i low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                         39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
    for (int64_t j = 0; j < n; j += 32) {
        __m512i even = r0 ? _mm512_loadu_si512((const void *)(r0 + j)) : _mm512_setzero_si512();
        __m512i odd = r1 ? _mm512_loadu_si512((const void *)(r1 + j)) : _mm512_setzero_si512();
        _mm512_storeu_si512((void *)(out + 2 * j), _mm512_permutex2var_epi16(even, low, odd));
        _mm512_storeu_si512((void *)(out + 2 * j + 32), _mm512_permutex2var_epi16(even, high, odd));
    }
}

/* Rows r and r + 1 (r even), their 32 values from column j (r0, r1; NULL reads as zeros), into pack_pairs' tiles
   (row_tiles row tiles per column tile of 16): the one place that layout is written. */
static inline void put_row_pair(const uint16_t *r0, const uint16_t *r1, int64_t r, int64_t j, int64_t row_tiles,
                                uint16_t *out) {
    uint16_t pair[64] __attribute__((aligned(64)));
    interleave_rows(r0, r1, 32, pair);
    uint16_t *tile_row = out + ((r / 32) * 16 + (r % 32) / 2) * 32 + (j / 16) * row_tiles * 512;
    memcpy(tile_row, pair, 64);
    memcpy(tile_row + row_tiles * 512, pair + 32, 64);
}

/* Rows [from, to) (even bounds) of x (t rows of d bf16, row stride st) as the right operand of products summing over
   its rows: tiles [d tile of 16][row tile of 32][16 row pairs][16 d x 2] (row_tiles row tiles); rows past t zero. */
static void pack_pair_rows(const uint16_t *x, int64_t st, int64_t t, int64_t row_tiles, int64_t d, int64_t from,
                           int64_t to, uint16_t *out) {
    for (int64_t r = from; r < to; r += 2)
        for (int64_t j = 0; j < d; j += 32)
            put_row_pair(r < t ? x + r * st + j : NULL, r + 1 < t ? x + (r + 1) * st + j : NULL, r, j, row_tiles, out);
}

/* All padded_t rows of x (pack_pair_rows). */
static void pack_pairs(const uint16_t *x, int64_t st, int64_t t, int64_t padded_t, int64_t d, uint16_t *out) {
    pack_pair_rows(x, st, t, padded_t / 32, d, 0, padded_t, out);
}

/* For each 16 keys, those that exist and that the key mask (t bytes, or NULL) keeps. */
static inline void live_key_lanes(const uint8_t *keys, int64_t t, int64_t padded_t, __mmask16 *live) {
    for (int64_t j = 0; j < padded_t; j += 16) {
        __mmask16 lanes = lanes_before(t - j);
        if (keys) lanes = _mm_mask_test_epi8_mask(lanes, _mm_maskz_loadu_epi8(lanes, keys + j), _mm_set1_epi8(-1));
        live[j >> 4] = lanes;
    }
}

/* The rows of the next (example, head)'s inputs and outputs (t rows each, row_bytes a row, a multiple of 64),
   fetched a few lines at a time while this one is worked on: their rows lie hundreds of bytes apart, a 4 KB page
   holding a few, and the hardware's prefetchers do not cross pages. Inputs into L2; outputs for writing
   (PREFETCHW), as the processor reads a line before writing it. */
typedef struct {
    const char *base[7];
    int64_t stride[7]; /* bytes between rows */
    int matrices, reads; /* the first `reads` are inputs */
    int64_t rows, row_bytes;
    int m;               /* progress: matrix, row, byte in the row */
    int64_t row, at;
} heads_ahead;

static inline void ahead_add(heads_ahead *a, const void *base, int64_t stride_bytes) {
    a->base[a->matrices] = (const char *)base;
    a->stride[a->matrices++] = stride_bytes;
}

static inline void ahead_fetch(heads_ahead *a, int64_t count) {
    for (; count > 0 && a->m < a->matrices; count--) {
        const char *line = a->base[a->m] + a->row * a->stride[a->m] + a->at;
        if (a->m < a->reads) _mm_prefetch(line, _MM_HINT_T1);
        else __asm__ volatile("prefetchw %0" : : "m"(*line));
        if ((a->at += 64) == a->row_bytes) {
            a->at = 0;
            if (++a->row == a->rows) a->row = 0, a->m++;
        }
    }
}

/* Softmax attention for bf16 inference, one (example, head) at a time on each thread: scores
   q k^T in float32 on the tile unit, scaled, masked, softmax in float32 (in base 2), the unnormalised
   probabilities rounded to bf16 for the product with v, which is divided by the float32 row sum at the end
   (as torch's flash kernel). k is laid out for the tile unit by 16 x 16 transposes in registers; the scores
   of the next 16 queries are computed while the softmax of these runs. q, k, v: element (b, h, t, j) at
   ptr[b * sb + h * sh + t * st + j] (any strides, the d values contiguous); keep: (batch, t) bytes, 0 for keys
   no query may attend to, or NULL; out: (batch, t, heads, d) contiguous. d % 32 == 0. A row whose every key is masked comes out zero.
   Returns 0, or -1 if the scratch could not be allocated. */
int xm_attention(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t sb, int64_t sh, int64_t st,
                 int64_t batch, int64_t heads, int64_t t, int64_t d, const uint8_t *keep, float scale,
                 uint16_t *out) {
    int64_t padded_t = (t + 31) / 32 * 32, key_tiles = padded_t / 16, d_tiles = d / 32;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        configure_tiles();
        /* k^T as tiles [key tile of 16][d tile of 32][16 d-pairs][16 keys x 2]; v as tiles
           [d tile of 16][key tile of 32][16 key-pairs][16 d x 2]; scores and probabilities of 16 queries */
        attention_scratch scratch;
        if (!scratch_alloc(&scratch, padded_t, d)) failed = 1;
        uint16_t *kp = scratch.kp, *vp = scratch.vp, *probs = scratch.probs, *qpad = scratch.qpad;
        float *scores = scratch.scores, *o = scratch.o, sums[16];
        __mmask16 *live_keys = scratch.live;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < batch * heads; item++) {
            if (failed) continue;
            int64_t b = item / heads, h = item % heads;
            const uint16_t *qh = q + b * sb + h * sh, *kh = k + b * sb + h * sh, *vh = v + b * sb + h * sh;
            const uint8_t *keys_kept = keep ? keep + b * t : NULL;
            /* k^T and v in tiles (pack_transposed, pack_pairs); which keys of each 16 exist and are kept */
            pack_transposed(kh, st, t, padded_t, d, kp);
            pack_pairs(vh, st, t, padded_t, d, vp);
            live_key_lanes(keys_kept, t, padded_t, live_keys);
            heads_ahead ahead = {{0}, {0}, 0, 3, t, 2 * d, 0, 0, 0};
            if (item + 1 < batch * heads) { /* the next (example, head)'s q, k, v and output, one query row at a time */
                int64_t nb = (item + 1) / heads, nh = (item + 1) % heads, in = nb * sb + nh * sh;
                ahead_add(&ahead, q + in, st * 2);
                ahead_add(&ahead, k + in, st * 2);
                ahead_add(&ahead, v + in, st * 2);
                ahead_add(&ahead, out + (nb * t * heads + nh) * d, heads * d * 2);
            }
            int64_t per_row = (ahead.matrices * t * (d / 32) + t - 1) / t;
            /* the scores of the first 16 queries; those of the next 16 are computed while this block's softmax
               runs (the tile unit and the vector unit then work at once), in the other half of `scores` */
            int64_t pairs = key_tiles / 2, qstride;
            const uint16_t *qrows = query_rows(qh, st, t, 0, d, 16, qpad, &qstride);
            for (int64_t p = 0; p < pairs; p++) score_pair(qrows, qstride, kp, 2 * p, d_tiles, scores, padded_t);
            for (int64_t q0 = 0; q0 < t; q0 += 16) {
                int64_t valid = t - q0 < 16 ? t - q0 : 16;
                float *now = scores + (q0 / 16 % 2) * 16 * padded_t, *next = scores + (q0 / 16 % 2 ^ 1) * 16 * padded_t;
                int64_t done = 0, next_block = q0 + 16 < t;
                if (next_block) qrows = query_rows(qh, st, t, q0 + 16, d, 16, qpad, &qstride);
                /* softmax rows: float32, in base 2 (e^(scale s) = 2^(scale log2(e) s)): the row's largest
                   live score, then 2^(c s - c max) for the live keys, 0 for masked ones and keys past t */
                __m512 c = _mm512_set1_ps(scale * 1.44269504f);
                for (int64_t i = 0; i < 16; i++) {
                    ahead_fetch(&ahead, per_row);
                    for (; next_block && done < pairs && done * 16 <= i * pairs; done++)
                        score_pair(qrows, qstride, kp, 2 * done, d_tiles, next, padded_t);
                    float *row = now + i * padded_t;
                    __m512 top = _mm512_set1_ps(-INFINITY);
                    for (int64_t j = 0; j < padded_t; j += 16)
                        top = _mm512_mask_max_ps(top, live_keys[j >> 4], top, _mm512_load_ps(row + j));
                    float peak = _mm512_reduce_max_ps(top);
                    __m512 shift = _mm512_set1_ps(peak == -INFINITY ? 0.0f : -peak * scale * 1.44269504f);
                    __m512 total = _mm512_setzero_ps(), other = _mm512_setzero_ps();
                    for (int64_t j = 0; j < padded_t; j += 32) { /* 32 at a time: one rounding instruction for both */
                        __m512 x = _mm512_fmadd_ps(_mm512_load_ps(row + j), c, shift);
                        __m512 x2 = _mm512_fmadd_ps(_mm512_load_ps(row + j + 16), c, shift);
                        __m512 p = _mm512_maskz_mov_ps(live_keys[j >> 4], exp2_nonpositive(x));
                        __m512 p2 = _mm512_maskz_mov_ps(live_keys[(j >> 4) + 1], exp2_nonpositive(x2));
                        total = _mm512_add_ps(total, p);
                        other = _mm512_add_ps(other, p2);
                        _mm512_store_si512((__m512i *)(probs + i * padded_t + j), (__m512i)_mm512_cvtne2ps_pbh(p2, p));
                    }
                    sums[i] = _mm512_reduce_add_ps(_mm512_add_ps(total, other));
                }
                for (; next_block && done < pairs; done++) score_pair(qrows, qstride, kp, 2 * done, d_tiles, next, padded_t);
                /* probabilities @ v: 16 queries x d, over keys in tiles of 32 */
                rows_by_pairs(probs, padded_t, 32, vp, padded_t / 32, d, o);
                for (int64_t i = 0; i < valid; i++) {
                    __m512 inverse = _mm512_set1_ps(sums[i] > 0 ? 1.0f / sums[i] : 0.0f);
                    uint16_t *target = out + ((b * t + q0 + i) * heads + h) * d;
                    for (int64_t j = 0; j < d; j += 16)
                        _mm256_storeu_si256((__m256i *)(target + j),
                                            (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_load_ps(o + i * d + j), inverse)));
                }
            }
        }
        scratch_free(&scratch);
        _tile_release();
    }
    return failed ? -1 : 0;
}

/* Training: the masked-LM loss and its gradient over bf16 logits, float32 inside, the gradient rounded once
   (round to nearest even), the rows split between the threads. */

/* exp(v) for v <= 0 (and up to 87), 0 below -87 (where exp_ps would clamp): exp_ps's bits, without its clamps
   (which change no value from -87 to 87), the lanes below -87 zeroed by the masked VSCALEFPS. */
static inline __m512 exp_nonpositive(__m512 v) {
    __mmask16 live = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
    __m512 n, p = exp_parts(v, &n);
    return _mm512_maskz_scalef_ps(live, p, n);
}

static inline float scalar_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t round_bf16(float f) {
    __m256i rounded = (__m256i)_mm512_cvtneps_pbh(_mm512_set1_ps(f));
    return (uint16_t)_mm_extract_epi16(_mm256_castsi256_si128(rounded), 0);
}

/* The cross-entropy of each row r of bf16 logits (rows x v, row stride ld) against targets[r] (0 <= t < v),
   and its gradient scaled by `scale` (1 / N for a mean over N rows):
     losses[r] = log(sum_j exp(x_j - m)) + m - x_t,  m = max_j x_j                   (float32)
     grad[r]   = round_bf16(exp(x_j - m) * (scale / sum) - scale [j == t])          (row stride ldg)
   exp(x - m) kept in a float32 row buffer between the sum and the gradient. -1 if the buffer could not be
   allocated. */
int xm_cross_entropy(const uint16_t *logits, int64_t ld, const int64_t *targets, int64_t rows, int64_t v,
                     float scale, float *losses, uint16_t *grad, int64_t ldg) {
    int failed = 0;
    int64_t body = v / 16 * 16;
#pragma omp parallel
    {
        float *e = aligned_alloc(64, ((v + 15) / 16 * 16) * sizeof(float));
        if (!e) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!e) continue;
            const uint16_t *x = logits + r * ld;
            uint16_t *g = grad + r * ldg;
            __m512 top = _mm512_set1_ps(-INFINITY);
            for (int64_t j = 0; j < body; j += 16) top = _mm512_max_ps(top, load_bf16(x + j));
            float m = _mm512_reduce_max_ps(top);
            for (int64_t j = body; j < v; j++) {
                float f = scalar_bf16(x[j]);
                m = f > m ? f : m;
            }
            __m512 mv = _mm512_set1_ps(m);
            __m512 sum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int64_t j = 0; j < body; j += 16) {
                __m512 p = exp_nonpositive(_mm512_sub_ps(load_bf16(x + j), mv));
                _mm512_store_ps(e + j, p);
                sum[(j >> 4) & 3] = _mm512_add_ps(sum[(j >> 4) & 3], p);
            }
            float total =
                _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sum[0], sum[1]), _mm512_add_ps(sum[2], sum[3])));
            for (int64_t j = body; j < v; j++) {
                e[j] = expf(scalar_bf16(x[j]) - m);
                total += e[j];
            }
            int64_t t = targets[r];
            float picked = scalar_bf16(x[t]);
            losses[r] = logf(total) + m - picked;
            float factor = (1.0f / total) * scale;
            __m512 fv = _mm512_set1_ps(factor);
            for (int64_t j = 0; j < body; j += 16)
                _mm256_storeu_si256((__m256i *)(g + j),
                                    (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_load_ps(e + j), fv)));
            for (int64_t j = body; j < v; j++) g[j] = round_bf16(e[j] * factor);
            g[t] = round_bf16(e[t] * factor - scale);
        }
        free(e);
    }
    return failed ? -1 : 0;
}

/* Training: LayerNorm(dropout(h) + residual) and its backward, the element-wise chain after the residual linears
   in bf16 autocast training (h the product, bf16; the residual stream, the norm and its parameters float32):
     s = round_bf16(h * scale) where keep (0 where not; keep NULL: s = h),  t = s + residual  (float32),
     y = (t - mean) * rstd * weight + bias,  mean and the biased variance over the row, rstd = 1 / sqrt(var + eps),
   as torch computes dropout's addcmul on bf16, the bf16 + float32 sum and the float32 LayerNorm. t, mean and rstd
   are kept for the backward. weight and bias may be NULL (1 and 0). y16, unless NULL, gets y rounded to bf16 as
   well: the copy the next product reads, which autocast would otherwise cast from y in a pass of its own. */
void xm_residual_norm(const uint16_t *h, const uint8_t *keep, float scale, const float *residual,
                      const float *weight, const float *bias, float eps, int64_t rows, int64_t d, float *t,
                      float *y, uint16_t *y16, float *mean, float *rstd) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *hr = h + r * d;
        float *tr = t + r * d, *yr = y + r * d;
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < d; j += 16) {
            __m512 s = load_bf16(hr + j);
            if (keep) {
                __mmask16 kept = _mm_test_epi8_mask(_mm_loadu_si128((const __m128i *)(keep + r * d + j)),
                                                     _mm_set1_epi8((char)0xff));
                /* round the scaled value to bf16 and back: dropout's bf16 output */
                s = load_bf16_vector(_mm512_cvtneps_pbh(_mm512_maskz_mul_ps(kept, s, _mm512_set1_ps(scale))));
            }
            __m512 v = _mm512_add_ps(s, _mm512_loadu_ps(residual + r * d + j));
            _mm512_storeu_ps(tr + j, v);
            sum = _mm512_add_ps(sum, v);
        }
        float m = _mm512_reduce_add_ps(sum) / (float)d;
        __m512 mv = _mm512_set1_ps(m), squares = _mm512_setzero_ps();
        for (int64_t j = 0; j < d; j += 16) {
            __m512 c = _mm512_sub_ps(_mm512_loadu_ps(tr + j), mv);
            squares = _mm512_fmadd_ps(c, c, squares);
        }
        float inv = 1.0f / sqrtf(_mm512_reduce_add_ps(squares) / (float)d + eps);
        mean[r] = m;
        rstd[r] = inv;
        __m512 iv = _mm512_set1_ps(inv);
        for (int64_t j = 0; j < d; j += 16) {
            __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(tr + j), mv), iv);
            if (weight) v = _mm512_mul_ps(v, _mm512_loadu_ps(weight + j));
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + j));
            _mm512_storeu_ps(yr + j, v);
            if (y16) _mm256_storeu_si256((__m256i *)(y16 + r * d + j), (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
}

/* The backward of xm_residual_norm for the output gradient dy plus, unless NULL, the bf16 gradient dy16 of its bf16
   copy y16 (summed in float32 as autograd sums the two, dy + dy16): dt (the residual's gradient, float32), dh (the
   product's, bf16: dt rounded to bf16, then dropout's addcmul, rounded again, as torch's casts and addcmul do) and,
   where weight is not NULL, the weight's and bias's gradients, summed over rows in blocks of BLOCK rows and the
   blocks in order (the same bits for any thread count). -1 if the partial sums could not be allocated. */
#define BLOCK 64
int xm_residual_norm_backward(const float *dy, const uint16_t *dy16, const float *t, const float *mean,
                              const float *rstd, const float *weight, const uint8_t *keep, float scale, int64_t rows,
                              int64_t d, float *dt, uint16_t *dh, float *dweight, float *dbias) {
    int64_t blocks = (rows + BLOCK - 1) / BLOCK;
    float *partial = weight ? calloc((size_t)(blocks * 2 * d), sizeof(float)) : NULL;
    if (weight && !partial) return -1;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t end = (b + 1) * BLOCK < rows ? (b + 1) * BLOCK : rows;
        for (int64_t r = b * BLOCK; r < end; r++) {
            const float *gr = dy + r * d, *tr = t + r * d;
            __m512 mv = _mm512_set1_ps(mean[r]), iv = _mm512_set1_ps(rstd[r]);
            __m512 sum_g = _mm512_setzero_ps(), sum_gx = _mm512_setzero_ps();
            for (int64_t j = 0; j < d; j += 16) {
                __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(tr + j), mv), iv);
                __m512 gy = _mm512_loadu_ps(gr + j);
                if (dy16) gy = _mm512_add_ps(gy, load_bf16(dy16 + r * d + j));
                __m512 g = weight ? _mm512_mul_ps(gy, _mm512_loadu_ps(weight + j)) : gy;
                sum_g = _mm512_add_ps(sum_g, g);
                sum_gx = _mm512_fmadd_ps(g, xhat, sum_gx);
                if (weight) {
                    float *pw = partial + b * 2 * d + j, *pb = pw + d;
                    _mm512_storeu_ps(pw, _mm512_fmadd_ps(gy, xhat, _mm512_loadu_ps(pw)));
                    _mm512_storeu_ps(pb, _mm512_add_ps(gy, _mm512_loadu_ps(pb)));
                }
            }
            __m512 a = _mm512_set1_ps(_mm512_reduce_add_ps(sum_g) / (float)d);
            __m512 c = _mm512_set1_ps(_mm512_reduce_add_ps(sum_gx) / (float)d);
            for (int64_t j = 0; j < d; j += 16) {
                __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(tr + j), mv), iv);
                __m512 gy = _mm512_loadu_ps(gr + j);
                if (dy16) gy = _mm512_add_ps(gy, load_bf16(dy16 + r * d + j));
                __m512 g = weight ? _mm512_mul_ps(gy, _mm512_loadu_ps(weight + j)) : gy;
                __m512 v = _mm512_mul_ps(iv, _mm512_sub_ps(_mm512_sub_ps(g, a), _mm512_mul_ps(xhat, c)));
                _mm512_storeu_ps(dt + r * d + j, v);
                __m256bh rounded = _mm512_cvtneps_pbh(v);
                if (keep) {
                    __mmask16 kept = _mm_test_epi8_mask(_mm_loadu_si128((const __m128i *)(keep + r * d + j)),
                                                         _mm_set1_epi8((char)0xff));
                    rounded = _mm512_cvtneps_pbh(_mm512_maskz_mul_ps(kept, load_bf16_vector(rounded),
                                                                     _mm512_set1_ps(scale)));
                }
                _mm256_storeu_si256((__m256i *)(dh + r * d + j), (__m256i)rounded);
            }
        }
    }
    if (weight) {
        for (int64_t j = 0; j < d; j++) dweight[j] = dbias[j] = 0.0f;
        for (int64_t b = 0; b < blocks; b++)
            for (int64_t j = 0; j < d; j++) {
                dweight[j] += partial[b * 2 * d + j];
                dbias[j] += partial[b * 2 * d + d + j];
            }
        free(partial);
    }
    return 0;
}

/* Training: a linear's weight and bias gradients in bf16 autocast training (xm_weight_grad): dW = dY^T X (N x K) and
   db = dY's column sums, from bf16 dY (T x N) and X (T x K), summed in float32 over the T rows and left in float32.
   oneDNN's product for this shape (a sum over the 2,048 tokens of a batch, both operands read transposed) ran at
   about a third of the ceiling in the training step, its bf16 result then cast back to float32 and db summed by a
   separate pass. Here X's columns are taken in chunks of WGRAD_CHUNK_BYTES (a chunk stays in L2 while all of dY's
   columns pass it): each chunk laid out in row pairs (the right operand of the tile products, as pack_pairs) by
   all threads; then each thread takes whole blocks of 32 of dY's columns, lays the block out transposed (16 x 32
   tiles along T, by transpose16 of row-pair interleaved slices; summing db's 32 values on the way, at the first
   chunk) and runs it against the chunk's column pairs, each 32 x 32 block of dW stored with non-temporal stores
   (stream_block: dW goes to memory without being read first; the same values). Every value
   is summed in an order fixed by T alone: the same bits for any thread count. Requires N % 32 == 0, K % 32 == 0.
   Returns 0, or -1 if a buffer could not be allocated. */
#define WGRAD_CHUNK_BYTES (1 << 20)

/* The 32 x 32 float32 block in acc (rows of 32) to dW (row stride d) with non-temporal stores, where dW is aligned:
   dW goes to memory without being read first. */
static inline void stream_block(const float *acc, float *dw, int64_t d) {
    int aligned = ((uintptr_t)dw & 63) == 0;
    for (int i = 0; i < 32; i++) {
        if (aligned) {
            _mm512_stream_ps(dw + i * d, _mm512_load_ps(acc + 32 * i));
            _mm512_stream_ps(dw + i * d + 16, _mm512_load_ps(acc + 32 * i + 16));
        } else {
            memcpy(dw + i * d, acc + 32 * i, 32 * sizeof(float));
        }
    }
}

/* dY's columns [32 nb, 32 nb + 32) transposed into a ([2][t_tiles][16 columns][32 rows] bf16), rows past t zero; their
   sums over the rows into db[0, 32) unless db is NULL. Each row's 64 bytes lie in a page of their own, where the
   hardware's prefetcher does not follow: the rows 16 on are fetched ahead. */
static void weight_grad_columns(const uint16_t *dy, int64_t ldy, int64_t t, int64_t t_tiles, int64_t nb, uint16_t *a,
                                uint16_t *pairs, float *db) {
    const uint16_t *column = dy + nb * 32;
    __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
    for (int64_t tt = 0; tt < t_tiles; tt++) {
        for (int64_t p = 0; p < 16; p++) {
            int64_t r = tt * 32 + 2 * p;
            const uint16_t *r0 = r < t ? column + r * ldy : NULL, *r1 = r + 1 < t ? column + (r + 1) * ldy : NULL;
            _mm_prefetch((const char *)(column + (r + 16) * ldy), _MM_HINT_T0);
            _mm_prefetch((const char *)(column + (r + 17) * ldy), _MM_HINT_T0);
            interleave_rows(r0, r1, 32, pairs + p * 64);
            if (db && r0) {
                low = _mm512_add_ps(low, load_bf16(r0));
                high = _mm512_add_ps(high, load_bf16(r0 + 16));
            }
            if (db && r1) {
                low = _mm512_add_ps(low, load_bf16(r1));
                high = _mm512_add_ps(high, load_bf16(r1 + 16));
            }
        }
        transpose16(pairs, 64, 16, a + tt * 512);                 /* columns 0-15 of the block */
        transpose16(pairs + 32, 64, 16, a + (t_tiles + tt) * 512); /* columns 16-31 */
    }
    if (db) {
        _mm512_storeu_ps(db, low);
        _mm512_storeu_ps(db + 16, high);
    }
}

int xm_weight_grad(const uint16_t *dy, int64_t ldy, const uint16_t *x, int64_t ldx, int64_t t, int64_t n, int64_t k,
                   float *dw, float *db) {
    int64_t padded_t = (t + 31) / 32 * 32, t_tiles = padded_t / 32;
    int64_t width = WGRAD_CHUNK_BYTES / (padded_t * 2) / 32 * 32;
    width = width < 32 ? 32 : width > k ? k : width;
    uint16_t *xp = aligned_alloc(64, padded_t * width * sizeof(uint16_t)); /* [width / 16][t_tiles][16 pairs][16][2] */
    if (!xp) return -1;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        /* the thread's blocks of dY's columns, laid out at the first chunk and kept for the others (one block's
           room where there is one chunk); the static schedule gives a thread the same blocks at every chunk */
        int threads = omp_get_num_threads(), blocks = k > width ? (n / 32 + threads - 1) / threads : 1;
        thread_state *st = begin();
        uint16_t *a = aligned_alloc(64, blocks * 32 * padded_t * sizeof(uint16_t));
        uint16_t *pairs = aligned_alloc(64, 16 * 64 * sizeof(uint16_t)); /* 32 rows of 32 columns in row pairs */
        float acc[32 * 32] __attribute__((aligned(64)));                  /* a 32 x 32 block of dW on its way out */
        failed = !st || !a || !pairs;
        for (int64_t k0 = 0; k0 < k; k0 += width) {
            int64_t w = k - k0 < width ? k - k0 : width;
#pragma omp for schedule(static)
            for (int64_t tt = 0; tt < t_tiles; tt++)
                pack_pair_rows(x + k0, ldx, t, t_tiles, w, 32 * tt, 32 * tt + 32, xp);
            /* (the loop's barrier: the chunk's pairs complete before any product; the one below: all products
               done before the next chunk overwrites them) */
            int64_t mine = 0; /* the thread's blocks so far in this chunk */
#pragma omp for schedule(static)
            for (int64_t nb = 0; nb < n / 32; nb++) {
                if (failed) continue;
                uint16_t *ab = a + (blocks > 1 ? mine++ : 0) * 32 * padded_t;
                if (blocks == 1 || k0 == 0)
                    weight_grad_columns(dy, ldy, t, t_tiles, nb, ab, pairs, db && k0 == 0 ? db + nb * 32 : NULL);
                float *out = dw + nb * 32 * k + k0;
                for (int64_t c = 0; c < w / 32; c++) {
                    const uint16_t *b0 = xp + 2 * c * t_tiles * 512, *b1 = b0 + t_tiles * 512;
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    for (int64_t tt = 0; tt < t_tiles; tt++)
                        block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);
                    _tile_stored(0, acc, 128);
                    _tile_stored(1, acc + 16, 128);
                    _tile_stored(2, acc + 512, 128);
                    _tile_stored(3, acc + 528, 128);
                    stream_block(acc, out + 32 * c, k);
                }
            }
        }
        free(a);
        free(pairs);
        end(st);
        _mm_sfence();
    }
    free(xp);
    return failed ? -1 : 0;
}

/* Training: a linear's weight and bias gradients in bf16 autocast training on processors without AMX
   (xm_weight_grad_vector).

   xm_weight_grad's computation (dW = dY^T X, N x K, and db = dY's column sums, float32 sums over the T rows of the
   bf16 operands, left in float32) with AVX-512 alone: no tile instruction, no begin(). Where this runs (AMD's Zen 4
   and 5) the alternative is oneDNN's bf16 product rounded to bf16, cast back to float32 by autograd, and the bias
   summed by another pass. VDPBF16PS sums a pair of bf16 products into each float32 lane, so the pair runs along T:
   both operands are laid out in row pairs (rows 2p and 2p + 1 interleaved, so that each 32-bit element holds one
   column's pair; a zero row pads odd T), in blocks of columns whose pairs lie contiguous along T (dY by
   WGRAD_ROWS columns, X by 32), so that a block streams from L1 or L2 with the hardware prefetcher's help. A step
   broadcasts one of WGRAD_ROWS of dY's column pairs against two vectors of X's pairs (32 of dW's columns):
   WGRAD_ROWS x 2 accumulators held over the whole of T, then stored once. The layout is split between the threads
   by WGRAD_PACK_PAIRS row pairs, dW by blocks of WGRAD_ROWS of its rows; X is taken in chunks of
   WGRAD_VECTOR_CHUNK_BYTES, each laid out just before its products (it stays in L2 while the thread's dY blocks pass
   it; laid out all at once, X of 2048 x 1024 took 0.7-3.5% longer). With one chunk (K up to 128 columns at T = 2048,
   the tied decoder's 256 at T = 303) dY too is laid out 32 columns at a time by the thread that takes them: the
   decoder 11% faster alone. db comes from the packed dY
   block at the block's first chunk, one 8-lane VDPBF16PS against ones per pair. Each value is summed by one thread
   in the order of the pairs: the same bits for any thread count. Requires N % 32 == 0, K % 32 == 0; any T. Returns 0,
   or -1 if a buffer could not be allocated. On a 2-core Zen 5 at one thread it took 1.05-1.09x less time than the
   bf16 product + its cast + the bias's sum at the bench's layers, 1.44x at the tied decoder (303 x 32k x 256), the
   bf16 MLM step 1.03-1.05x (docs/results/amx-perf/round12/vwgrad.md, with the variants not kept). The sizes below
   may be set by -D for the variant measurements; WGRAD_ROWS is fixed at 8 (pair_blocks and the db sums assume it). */
#define WGRAD_ROWS 8
#ifndef WGRAD_PACK_PAIRS
#define WGRAD_PACK_PAIRS 16
#endif
#ifndef WGRAD_VECTOR_CHUNK_BYTES
#define WGRAD_VECTOR_CHUNK_BYTES (512 << 10)
#endif

static inline __m512bh pair_broadcast(const uint16_t *p); /* (with the vector attention kernel, at the end) */

/* Row pairs [p0, p1) (rows 2p and 2p + 1 of src, t rows of width bf16, row stride ld; past t zero) into the column
   blocks of out: block b (`block` columns, 8 or 32) holds its pairs at out + (b pairs + p) 2 block, contiguous along
   the pairs. 32 columns at a time interleaved in registers (as interleave_rows), each 16 columns' pairs (64 bytes)
   stored straight into their block(s); the pairs inner, so that the stores run along a few blocks at a time (pair
   by pair across all blocks, 96 blocks of 8 at N = 768, the layout took as long as half the products). */
static void pair_blocks(const uint16_t *src, int64_t ld, int64_t t, int64_t width, int64_t block, int64_t pairs,
                        int64_t p0, int64_t p1, uint16_t *out) {
    const __m512i low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                         39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
    for (int64_t j = 0; j < width; j += 32)
        for (int64_t p = p0; p < p1; p++) {
            const uint16_t *r0 = 2 * p < t ? src + 2 * p * ld + j : NULL;
            const uint16_t *r1 = 2 * p + 1 < t ? src + (2 * p + 1) * ld + j : NULL;
            __m512i even = r0 ? _mm512_loadu_si512((const void *)r0) : _mm512_setzero_si512();
            __m512i odd = r1 ? _mm512_loadu_si512((const void *)r1) : _mm512_setzero_si512();
            __m512i first = _mm512_permutex2var_epi16(even, low, odd);
            __m512i second = _mm512_permutex2var_epi16(even, high, odd);
            if (block == 32) {
                uint16_t *at = out + (j / 32 * pairs + p) * 64;
                _mm512_store_si512((__m512i *)at, first);
                _mm512_store_si512((__m512i *)(at + 32), second);
            } else { /* blocks of 8: each 64 bytes in two blocks */
                uint16_t *at = out + (j / 8 * pairs + p) * 16;
                int64_t next = pairs * 16; /* the next block's pair p */
                _mm256_store_si256((__m256i *)at, _mm512_castsi512_si256(first));
                _mm256_store_si256((__m256i *)(at + next), _mm512_extracti64x4_epi64(first, 1));
                _mm256_store_si256((__m256i *)(at + 2 * next), _mm512_castsi512_si256(second));
                _mm256_store_si256((__m256i *)(at + 3 * next), _mm512_extracti64x4_epi64(second, 1));
            }
        }
}

/* dW's WGRAD_ROWS x 32 block (rows of ldw floats) from a (one dY block: [pairs][WGRAD_ROWS][2]) and b (one X block:
   [pairs][32][2]) over all pairs; with db (WGRAD_ROWS floats) also dY's column sums, from a's pairs against ones. */
static inline __attribute__((always_inline)) void weight_grad_block(const uint16_t *a, const uint16_t *b,
                                                                     int64_t pairs, float *dw, int64_t ldw, float *db) {
    __m512 acc[WGRAD_ROWS][2];
    for (int r = 0; r < WGRAD_ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    __m256 sums = _mm256_setzero_ps();
    const __m256bh ones = (__m256bh)_mm256_set1_epi16(0x3f80); /* bf16 1.0 */
    for (int64_t p = 0; p < pairs; p++) {
        __m512bh low = (__m512bh)_mm512_load_si512((const void *)(b + 64 * p));
        __m512bh high = (__m512bh)_mm512_load_si512((const void *)(b + 64 * p + 32));
        const uint16_t *column_pairs = a + 2 * WGRAD_ROWS * p;
        for (int r = 0; r < WGRAD_ROWS; r++) {
            __m512bh y = pair_broadcast(column_pairs + 2 * r);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], y, low);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], y, high);
        }
        if (db) sums = _mm256_dpbf16_ps(sums, (__m256bh)_mm256_load_si256((const __m256i *)column_pairs), ones);
    }
    for (int r = 0; r < WGRAD_ROWS; r++) {
        _mm512_storeu_ps(dw + r * ldw, acc[r][0]);
        _mm512_storeu_ps(dw + r * ldw + 16, acc[r][1]);
    }
    if (db) _mm256_storeu_ps(db, sums);
}

/* dW's rows [8 nb, 8 nb + 8), columns [k0, k0 + w), from the dY block a ([pairs][8][2]) and X's chunk xp (from column
   k0); db's 8 values with the chunk at column 0 where db is not NULL. */
static void weight_grad_rows(const uint16_t *a, const uint16_t *xp, int64_t pairs, int64_t nb, int64_t k0, int64_t w,
                             int64_t k, float *dw, float *db) {
    float *out = dw + nb * WGRAD_ROWS * k;
    for (int64_t c = k0; c < k0 + w; c += 32) {
        const uint16_t *b = xp + (c - k0) / 32 * pairs * 64;
        if (db && c == 0)
            weight_grad_block(a, b, pairs, out + c, k, db + nb * WGRAD_ROWS);
        else
            weight_grad_block(a, b, pairs, out + c, k, NULL);
    }
}

int xm_weight_grad_vector(const uint16_t *dy, int64_t ldy, const uint16_t *x, int64_t ldx, int64_t t, int64_t n,
                          int64_t k, float *dw, float *db) {
    int64_t pairs = (t + 1) / 2;
    if (!pairs) { /* no rows: zero sums (and no buffer of zero bytes to allocate) */
        memset(dw, 0, n * k * sizeof(float));
        if (db) memset(db, 0, n * sizeof(float));
        return 0;
    }
    int64_t width = WGRAD_VECTOR_CHUNK_BYTES / (pairs * 128) * 32; /* X's columns a chunk: 4 bytes a pair each */
    width = width < 32 ? 32 : width > k ? k : width;
    /* One chunk: each thread lays out 32 of dY's columns (4 blocks) at a time into its own buffer just before their
       products, where it stays in L1/L2 (the tied decoder's 303 x 32k dY is not written to memory and read back).
       Several: dY laid out whole first, as each block is used once per chunk. */
    int single = width == k;
    /* dY: [n / WGRAD_ROWS][pairs][WGRAD_ROWS][2] (blocks of pairs x 32 bytes); X: [k / 32][pairs][32][2] (blocks of
       pairs x 128 bytes, 64-byte aligned); n, k % 32 == 0 */
    uint16_t *dyp = single ? NULL : aligned_alloc(64, pairs * n * 4), *xp = aligned_alloc(64, pairs * width * 4);
    if ((!single && !dyp) || !xp) {
        free(dyp);
        free(xp);
        return -1;
    }
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        uint16_t *group = single ? aligned_alloc(64, pairs * 128) : NULL; /* 32 columns of dY by pairs */
        failed = single && !group;
        if (!single) {
#pragma omp for schedule(static) nowait
            for (int64_t p0 = 0; p0 < pairs; p0 += WGRAD_PACK_PAIRS) {
                int64_t p1 = pairs - p0 < WGRAD_PACK_PAIRS ? pairs : p0 + WGRAD_PACK_PAIRS;
                pair_blocks(dy, ldy, t, n, WGRAD_ROWS, pairs, p0, p1, dyp);
            }
        }
        for (int64_t k0 = 0; k0 < k; k0 += width) {
            int64_t w = k - k0 < width ? k - k0 : width;
            /* the chunk laid out just before its products, so that it is written into L2 and read there */
#pragma omp for schedule(static)
            for (int64_t p0 = 0; p0 < pairs; p0 += WGRAD_PACK_PAIRS) {
                int64_t p1 = pairs - p0 < WGRAD_PACK_PAIRS ? pairs : p0 + WGRAD_PACK_PAIRS;
                pair_blocks(x + k0, ldx, t, w, 32, pairs, p0, p1, xp);
            }
            /* (the loop's barrier: the chunk, and dY where laid out whole, before any product; the one below: all
               products done before the next chunk overwrites this one) */
            if (single) {
#pragma omp for schedule(static)
                for (int64_t g = 0; g < n / 32; g++) {
                    if (failed) continue;
                    pair_blocks(dy + 32 * g, ldy, t, 32, WGRAD_ROWS, pairs, 0, pairs, group);
                    for (int64_t i = 0; i < 32 / WGRAD_ROWS; i++)
                        weight_grad_rows(group + i * pairs * 2 * WGRAD_ROWS, xp, pairs, 32 / WGRAD_ROWS * g + i, k0, w,
                                         k, dw, db);
                }
            } else {
#pragma omp for schedule(static)
                for (int64_t nb = 0; nb < n / WGRAD_ROWS; nb++)
                    weight_grad_rows(dyp + nb * pairs * 2 * WGRAD_ROWS, xp, pairs, nb, k0, w, k, dw, db);
            }
        }
        free(group);
    }
    free(dyp);
    free(xp);
    return failed ? -1 : 0;
}

/* Training: GELU and its backward on bf16 activations through tables (xm_gelu_table, xm_gelu_table_backward). Under
   bf16 autocast GELU's input H is bf16, so GELU and its derivative take one of 65,536 values each: the caller's
   tables hold them for every bf16 bit pattern (computed in float64, rounded once), and each pass is one gather per
   16 values, bound by memory alone, where torch's bf16 GELU and its backward compute an erf (and an exponential) per
   value. out = the table's value rounded to bf16 (the table's values are bf16 already: exact); the backward's
   dh = round_bf16(float32(dg) * slope[h]). Denormals flushed for the call (as begin(): GELU's far tail and its
   slope there are float32 denormals, which the processor would take in microcode), MXCSR restored after. */
static void gelu_table_rows(const uint16_t *h, const uint16_t *dg, int64_t n, const float *table, uint16_t *out) {
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n / 32 * 32; i += 32) {
        __m512i bits = _mm512_loadu_si512((const void *)(h + i));
        __m512 lo = _mm512_i32gather_ps(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(bits)), table, 4);
        __m512 hi = _mm512_i32gather_ps(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(bits, 1)), table, 4);
        if (dg) {
            lo = _mm512_mul_ps(lo, load_bf16(dg + i));
            hi = _mm512_mul_ps(hi, load_bf16(dg + i + 16));
        }
        _mm512_storeu_si512((void *)(out + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
#pragma omp single
    for (int64_t i = n / 32 * 32; i < n; i++) out[i] = round_bf16(dg ? scalar_bf16(dg[i]) * table[h[i]] : table[h[i]]);
    _mm_setcsr(csr);
}

void xm_gelu_table(const uint16_t *h, int64_t n, const float *values, uint16_t *out) {
#pragma omp parallel
    gelu_table_rows(h, NULL, n, values, out);
}

void xm_gelu_table_backward(const uint16_t *dg, const uint16_t *h, int64_t n, const float *slope, uint16_t *dh) {
#pragma omp parallel
    gelu_table_rows(h, dg, n, slope, dh);
}

/* Dropout's keep mask (kernels/dropout.py): numpy's SFC64 generator, one stream per chunk of `chunk` draws (a
   multiple of 4; dropout.py's MASK_CHUNK, 32,768) started from the three words states[3c..3c+2] of
   SeedSequence(seed).generate_state (seed_words) as numpy's SFC64 starts from its seed's words (counter 1, then 12
   outputs discarded); each 64-bit output gives four 16-bit draws, low half first, and a draw keeps its element
   when, read as a signed 16-bit value, it is >= threshold.

   Each stream is a serial recurrence: one scalar chain per thread took 0.45 ms for 1,048,576 draws on one thread
   (round 8, chunks of 262,144). Here 8 streams advance at once in the 64-bit lanes of a vector (sfc64_step8), for
   groups of 8 whole chunks (keep_lanes8): 0.06-0.07 ms for the same mask (docs/results/amx-perf/round9). The bound
   is the two vector ports, ~12 uops a step: the recurrence's 9, then each output compared as 16-bit values at once
   (a 32-bit mask), two steps' masks written as bytes to one vector (dword j < 8: lane j's 4 bytes of the first
   step, j >= 8 the second's), and 8 steps of those transposed with two rounds of two-source permutes, so that each
   lane's 32 bytes are stored to its own chunk. Measured and not kept: transposing the 64-bit outputs first (24
   shuffles per 8 steps, then a compare per lane), 3-7% longer; 16 streams interleaved in two vectors, ~30% longer;
   the counter as a broadcast scalar, no change; in a training step (the masks written to memory not in the
   caches), non-temporal stores 3.5 ms a step's masks against 1.6, write prefetches no change. Chunks that do not
   fill a group of 8, a short last chunk and chunk lengths not a multiple of 32 take the scalar chain
   (keep_chunk_scalar). Threads take the groups, then the leftover chunks, in static blocks; each byte depends on its
   own chunk's stream only, so the result does not depend on the thread count. */
static inline uint64_t sfc64_next(uint64_t s[4]) {
    uint64_t out = s[0] + s[1] + s[3]++;
    s[0] = s[1] ^ (s[1] >> 11);
    s[1] = s[2] + (s[2] << 3);
    s[2] = ((s[2] << 24) | (s[2] >> 40)) + out;
    return out;
}

static void keep_chunk_scalar(const uint64_t *states, int64_t n, int64_t chunk, int32_t threshold, int64_t c,
                              uint8_t *keep) {
    uint64_t s[4] = {states[3 * c], states[3 * c + 1], states[3 * c + 2], 1};
    for (int i = 0; i < 12; i++) sfc64_next(s);
    int64_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
    for (int64_t i = c * chunk; i < end; i += 4) {
        uint64_t r = sfc64_next(s);
        for (int64_t j = 0; j < 4 && i + j < end; j++)
            keep[i + j] = (int16_t)(uint16_t)(r >> (16 * j)) >= threshold;
    }
}

/* sfc64_next on 8 streams, one per 64-bit lane (a, b, c: the state words, counter the fourth); the 8 outputs. */
static inline __m512i sfc64_step8(__m512i *a, __m512i *b, __m512i *c, __m512i *counter) {
    __m512i out = _mm512_add_epi64(_mm512_add_epi64(*a, *counter), *b);
    *counter = _mm512_add_epi64(*counter, _mm512_set1_epi64(1));
    *a = _mm512_xor_si512(*b, _mm512_srli_epi64(*b, 11));
    *b = _mm512_add_epi64(*c, _mm512_slli_epi64(*c, 3));
    *c = _mm512_add_epi64(_mm512_rol_epi64(*c, 24), out);
    return out;
}

/* The keep bytes of chunks c0 .. c0 + 7, each `chunk` draws long (a multiple of 32), one stream per lane. */
static void keep_lanes8(const uint64_t *states, int64_t chunk, int32_t threshold, int64_t c0, uint8_t *keep) {
    const __m512i stride3 = _mm512_setr_epi64(0, 3, 6, 9, 12, 15, 18, 21);
    const uint64_t *words = states + 3 * c0;
    __m512i a = _mm512_i64gather_epi64(stride3, (const void *)words, 8);
    __m512i b = _mm512_i64gather_epi64(stride3, (const void *)(words + 1), 8);
    __m512i c = _mm512_i64gather_epi64(stride3, (const void *)(words + 2), 8);
    __m512i counter = _mm512_set1_epi64(1);
    for (int i = 0; i < 12; i++) sfc64_step8(&a, &b, &c, &counter);
    /* 8 steps' bytes: v[p] holds steps 2p, 2p + 1 (dword j < 8: step 2p of lane j, j >= 8: step 2p + 1 of lane
       j - 8); w[m][h] steps 4m .. 4m + 3 of lanes 4h .. 4h + 3 (dword 4 (lane - 4h) + step - 4m); the output of
       pair g steps 0 .. 7 of lane 2g (low half, dword = step) and of lane 2g + 1 (high half) */
    int32_t to_w[2][16], to_pair[2][16];
    for (int h = 0; h < 2; h++)
        for (int d = 0; d < 16; d++) {
            int step = d % 4;  /* of w: from v[2m + step / 2], second operand's dwords numbered from 16 */
            to_w[h][d] = step / 2 * 16 + step % 2 * 8 + 4 * h + d / 4;
            int lane = 2 * h + d / 8, s = d % 8;  /* h: g % 2, lane: lane - 4 (g / 2) */
            to_pair[h][d] = s / 4 * 16 + lane * 4 + s % 4;
        }
    const __m512i w_index[2] = {_mm512_loadu_si512(to_w[0]), _mm512_loadu_si512(to_w[1])};
    const __m512i pair_index[2] = {_mm512_loadu_si512(to_pair[0]), _mm512_loadu_si512(to_pair[1])};
    const __m512i limit = _mm512_set1_epi16((short)threshold), ones = _mm512_set1_epi8(1);
    uint8_t *dst = keep + c0 * chunk;
    for (int64_t i = 0; i < chunk; i += 32) {
        __m512i v[4], w[2][2];
        for (int p = 0; p < 4; p++) {
            __mmask32 k0 = _mm512_cmpge_epi16_mask(sfc64_step8(&a, &b, &c, &counter), limit);
            __mmask32 k1 = _mm512_cmpge_epi16_mask(sfc64_step8(&a, &b, &c, &counter), limit);
            v[p] = _mm512_maskz_mov_epi8(_mm512_kunpackd(k1, k0), ones);
        }
        for (int m = 0; m < 2; m++)
            for (int h = 0; h < 2; h++) w[m][h] = _mm512_permutex2var_epi32(v[2 * m], w_index[h], v[2 * m + 1]);
        for (int g = 0; g < 4; g++) {
            __m512i pair = _mm512_permutex2var_epi32(w[0][g / 2], pair_index[g % 2], w[1][g / 2]);
            _mm256_storeu_si256((__m256i *)(dst + 2 * g * chunk + i), _mm512_castsi512_si256(pair));
            _mm256_storeu_si256((__m256i *)(dst + (2 * g + 1) * chunk + i), _mm512_extracti64x4_epi64(pair, 1));
        }
    }
}

/* numpy's SeedSequence(seed).generate_state(count, np.uint64) for a seed below 2**64 (numpy/random/bit_generator.pyx;
   numpy's path in kernels/dropout.py calls it): the seed's 32-bit words (one, two from 2**32) hashed into a pool of
   4 (mix_entropy), the pool's words hashed out again, two a word, low half first. Here because numpy's took, in a
   training step (its data in the caches), ~45 us a call for the pool and more for the words (measured at 4,096
   draws a stream: 1.5 ms of a step's 17 masks, as much as the kernel's draws); this takes a few microseconds. */
static uint32_t seed_hashmix(uint32_t value, uint32_t *hash) {
    value ^= *hash;
    *hash *= 0x931e8875u;
    value *= *hash;
    return value ^ (value >> 16);
}

static void seed_words(uint64_t seed, int64_t count, uint64_t *words) {
    uint32_t entropy[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, pool[4], hash = 0x43b0d7e5u;
    int used = seed >> 32 ? 2 : 1;
    for (int i = 0; i < 4; i++) pool[i] = seed_hashmix(i < used ? entropy[i] : 0, &hash);
    for (int src = 0; src < 4; src++)
        for (int dst = 0; dst < 4; dst++)
            if (src != dst) {
                uint32_t mixed = 0xca01f9ddu * pool[dst] - 0x4973f715u * seed_hashmix(pool[src], &hash);
                pool[dst] = mixed ^ (mixed >> 16);
            }
    hash = 0x8b51f9ddu;
    for (int64_t i = 0; i < 2 * count; i++) {
        uint32_t value = pool[i % 4] ^ hash;
        hash *= 0x58f38dedu;
        value *= hash;
        value ^= value >> 16;
        words[i / 2] = i % 2 ? words[i / 2] | (uint64_t)value << 32 : value;
    }
}

/* 0: done; 1: no memory for the streams' words */
int xm_keep_mask(uint64_t seed, int64_t n, int64_t chunk, int32_t threshold, uint8_t *keep) {
    int64_t chunks = (n + chunk - 1) / chunk, groups = chunk % 32 ? 0 : n / chunk / 8;
    if (threshold > 32767) {  /* no draw reaches it (the vectors' 16-bit threshold would wrap to -32768) */
        memset(keep, 0, (size_t)n);
        return 0;
    }
    uint64_t *states = malloc((size_t)(3 * chunks) * sizeof(uint64_t));
    if (!states) return 1;
    seed_words(seed, 3 * chunks, states);
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int64_t g = 0; g < groups; g++) keep_lanes8(states, chunk, threshold, 8 * g, keep);
#pragma omp for schedule(static)
        for (int64_t c = 8 * groups; c < chunks; c++) keep_chunk_scalar(states, n, chunk, threshold, c, keep);
    }
    free(states);
    return 0;
}

/* Training: Dropout's mask and scale on float32 values, out = 0 + scale * x * keep as torch's addcmul computes it
   ((scale * x) * keep, then 0 + it: -0 becomes +0, a dropped inf or NaN stays NaN), the uint8 keep mask read as it
   is: torch's addcmul needs the mask in x's dtype, a float32 copy (4 bytes a value) written and read each way. */
void xm_mask_scale(const float *x, const uint8_t *keep, float scale, int64_t n, float *out) {
    int64_t body = n - n % 16;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < body; i += 16) {
        __m512 kept = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(keep + i))));
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(scale), _mm512_loadu_ps(x + i)), kept);
        _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_setzero_ps(), v));
    }
    for (int64_t i = body; i < n; i++) {
        volatile float v = scale * x[i] * (float)keep[i];  /* volatile: the two products rounded apart, as above */
        out[i] = 0.0f + v;
    }
}

/* Training: softmax attention in bf16 autocast training, forward (xm_attention_train) and backward
   (xm_attention_train_backward), one (example, head) at a time on each thread, every product on the tile unit:

     S = q k^T scale (float32, from bf16 products),  P = softmax(S) over the live keys (float32, in base 2),
     Pd = P keep drop_scale (keep: the dropout's bytes, or none),  out = round_bf16(Pd) @ v, rounded once;
     dPd = dOut v^T,  dP = dPd keep drop_scale,  delta_i = sum_j Pd_ij dPd_ij (float32),  dS = P (dP - delta),
     dV = round_bf16(Pd)^T dOut,  dQ = round_bf16(dS) k scale,  dK = round_bf16(dS)^T q scale  (float32 sums, one
     rounding to bf16 each).

   The forward keeps each row's shift (-max c) and 1 / sum; the backward recomputes P from them bit for bit (the
   same products, the same exponential), so no (B, H, T, T) float32 array is stored or read. Products with a
   transposed operand (dV, dK) read Pd and dS transposed: their rows interleaved in pairs, then 16 x 16 blocks of
   32-bit pairs transposed (transpose16).

   Round 9 (docs/results/amx-perf/round9, the bench step's shape: batch 16, 4 heads, T 128, d 64, dropout, one
   thread): removing one part at a time (wrong results, times only) the forward's 0.91 ms a call lost 0.43 ms
   without the exponentials, 0.25 without dropped_row, 0.16 without the Pd v products, 0.05-0.07 each without the
   layouts or the stores; the backward's 1.63 ms lost 0.14-0.29 ms for each of the layouts, the probabilities,
   score_gradient_row, the Pd and dS transposes, the dK and dV products, the stores: no one part dominates. The
   forward now takes 32 queries a pass (block_pair: four accumulator tiles, each A and B tile loaded once for two
   products) and their softmax two rows at a time held in registers (softmax_two_rows), the same bits: 0.91-0.92
   of round 8's time a call alone, 0.93-0.94 with the fetches ahead below. Alone the kernels' inputs and outputs
   stay in the caches from call to call; in a training step they do not (the 4 forwards and 4 backwards of a step
   took ~15 ms against ~10 alone): both kernels now fetch the next (example, head)'s rows while working on this one
   (heads_ahead), which took the step's attention calls from 15.9 and 16.0 ms a step to 13.8 and 14.1 (two runs,
   medians of 15 steps; the backward alone unchanged; the backward's fetches 1.0-1.1 ms of the gain, the
   forward's 0.1-0.45: training-attention-fetch-step-1thread.txt). Measured alone on the backward and not kept (each
   0.90-1.07 of round 8's time from run to run, no better on the whole; the same bits; round 8's own backward once
   measured 0.965 against itself): 32 queries a pass, probabilities and dS two rows at a time in registers, the
   next 32 queries' S and dPd products interleaved with this group's vector work, dK^T = q^T dS and
   dV^T = dOut^T Pd (dS and Pd in row pairs as the right operand, no T x T transposes; the 32 x 32 results
   transposed in bf16 when stored), 64-byte stores of the outputs. Also not kept: the keep mask's next 16 KB
   fetched ahead as well (no further change in the step). */

/* The lanes of keys [j, j + 16) that the dropout keeps in one query's row of keep bytes (t of them; NULL: all). */
static inline __mmask16 kept_lanes(const uint8_t *keep_row, int64_t j, int64_t t) {
    if (!keep_row) return 0xFFFF;
    __mmask16 lanes = lanes_before(t - j);
    return _mm_mask_test_epi8_mask(lanes, _mm_maskz_loadu_epi8(lanes, keep_row + j), _mm_set1_epi8(-1));
}

/* One query's probabilities P_j = 2^(c s_j + shift) inverse over the live keys (0 elsewhere), written over its
   scores `row` in place: the backward's, the same bits as the forward's (exponentials, then dropped_row). */
static inline void probabilities(float *row, const __mmask16 *live, int64_t padded_t, float c, float shift,
                                 float inverse) {
    __m512 cv = _mm512_set1_ps(c), sv = _mm512_set1_ps(shift), iv = _mm512_set1_ps(inverse);
    for (int64_t j = 0; j < padded_t; j += 16) {
        __m512 e = exp2_nonpositive(_mm512_fmadd_ps(_mm512_load_ps(row + j), cv, sv));
        _mm512_store_ps(row + j, _mm512_maskz_mul_ps(live[j >> 4], e, iv));
    }
}

/* A row's softmax from its scores, in place: shift = -c max over the live keys (0 where none is live), the
   exponentials 2^(c s_j + shift) over the live keys (0 elsewhere) written over the scores, and 1 / their sum (0
   where no key is live: the row's probabilities are then zero). */
static inline void exponentials(float *row, const __mmask16 *live, int64_t padded_t, float c, float *shift,
                                float *inverse) {
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < padded_t; j += 16)
        top = _mm512_mask_max_ps(top, live[j >> 4], top, _mm512_load_ps(row + j));
    float peak = _mm512_reduce_max_ps(top);
    *shift = peak == -INFINITY ? 0.0f : -peak * c;
    __m512 cv = _mm512_set1_ps(c), sv = _mm512_set1_ps(*shift), total = _mm512_setzero_ps();
    for (int64_t j = 0; j < padded_t; j += 16) {
        __m512 x = _mm512_fmadd_ps(_mm512_load_ps(row + j), cv, sv);
        __m512 e = _mm512_maskz_mov_ps(live[j >> 4], exp2_nonpositive(x));
        _mm512_store_ps(row + j, e);
        total = _mm512_add_ps(total, e);
    }
    float sum = _mm512_reduce_add_ps(total);
    *inverse = sum > 0 ? 1.0f / sum : 0.0f;
}

/* Pd = (e inverse) keep drop_scale from a row of exponentials e (as `probabilities` computes P), rounded to bf16
   into out (padded_t values). */
static inline void dropped_row(const float *e, float inverse, const uint8_t *keep_row, int64_t t, int64_t padded_t,
                               float drop_scale, uint16_t *out) {
    __m512 ds = _mm512_set1_ps(keep_row ? drop_scale : 1.0f), iv = _mm512_set1_ps(inverse);
    for (int64_t j = 0; j < padded_t; j += 16) {
        __m512 p = _mm512_mul_ps(_mm512_load_ps(e + j), iv);
        _mm256_store_si256((__m256i *)(out + j),
                           (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_mul_ps(kept_lanes(keep_row, j, t), p, ds)));
    }
}

/* The rows the fused softmax below holds in registers: up to 8 vectors of 16 keys (padded_t up to 128) a row. */
#define REGISTER_VECTORS 8

/* kept_lanes for keys [j, j + 32) at once: bits 0-15 kept_lanes(keep_row, j, t), bits 16-31 kept_lanes(keep_row,
   j + 16, t), from one load and one test. */
static inline __mmask32 kept_pair(const uint8_t *keep_row, int64_t j, int64_t t) {
    if (!keep_row) return 0xFFFFFFFFu;
    int64_t n = t - j;
    __mmask32 lanes = n >= 32 ? 0xFFFFFFFFu : n <= 0 ? 0 : (__mmask32)((1u << n) - 1);
    return _mm256_mask_test_epi8_mask(lanes, _mm256_maskz_loadu_epi8(lanes, keep_row + j), _mm256_set1_epi8(-1));
}

/* exp2_nonpositive(v) on the lanes `live` (0 elsewhere): its two masks joined, one masked power of two. */
static inline __m512 exp2_live(__m512 v, __mmask16 live) {
    __mmask16 normal = _mm512_mask_cmp_ps_mask(live, v, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
    return _mm512_maskz_scalef_ps(normal, exp2_fraction(v), v);
}

/* Two queries' softmax rows at once, each row's n vectors (n = padded_t / 16, a constant where inlined) held in
   registers: exponentials then dropped_row for each, the same operations in the same order (the same bits), without
   the exponentials' round trip through memory, the two rows' chains (max, its reduction, the exponentials, their
   sum, its reduction, the reciprocal) interleaved so that one's latency hides the other's. scores: the two rows (row
   stride padded_t); shift, inverse: the two rows' constants; keep0, keep1: their keep bytes (or NULL); out: the two
   rows of bf16 Pd (row stride padded_t). */
static inline __attribute__((always_inline)) void softmax_two_rows(const float *scores, int64_t padded_t, const int n,
                                                                   const __mmask16 *live, float c,
                                                                   const uint8_t *keep0, const uint8_t *keep1,
                                                                   int64_t t, float drop_scale, float *shift,
                                                                   float *inverse, uint16_t *out) {
    const uint8_t *keep_rows[2] = {keep0, keep1};
    __m512 e[2][REGISTER_VECTORS], top[2], total[2], sv[2], iv[2];
    __m512 cv = _mm512_set1_ps(c), ds = _mm512_set1_ps(keep0 ? drop_scale : 1.0f);
    for (int r = 0; r < 2; r++) top[r] = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j++)
        for (int r = 0; r < 2; r++) {
            e[r][j] = _mm512_load_ps(scores + r * padded_t + 16 * j);
            top[r] = _mm512_mask_max_ps(top[r], live[j], top[r], e[r][j]);
        }
    for (int r = 0; r < 2; r++) {
        float peak = _mm512_reduce_max_ps(top[r]);
        shift[r] = peak == -INFINITY ? 0.0f : -peak * c;
        sv[r] = _mm512_set1_ps(shift[r]);
        total[r] = _mm512_setzero_ps();
    }
    for (int j = 0; j < n; j++)
        for (int r = 0; r < 2; r++) {
            e[r][j] = exp2_live(_mm512_fmadd_ps(e[r][j], cv, sv[r]), live[j]);
            total[r] = _mm512_add_ps(total[r], e[r][j]);
        }
    for (int r = 0; r < 2; r++) {
        float sum = _mm512_reduce_add_ps(total[r]);
        inverse[r] = sum > 0 ? 1.0f / sum : 0.0f;
        iv[r] = _mm512_set1_ps(inverse[r]);
    }
    for (int j = 0; j < n; j += 2)
        for (int r = 0; r < 2; r++) {
            __mmask32 kept = kept_pair(keep_rows[r], 16 * j, t);
            __m512 a = _mm512_maskz_mul_ps((__mmask16)kept, _mm512_mul_ps(e[r][j], iv[r]), ds);
            __m512 a2 = _mm512_maskz_mul_ps((__mmask16)(kept >> 16), _mm512_mul_ps(e[r][j + 1], iv[r]), ds);
            _mm512_store_si512((__m512i *)(out + r * padded_t + 16 * j), (__m512i)_mm512_cvtne2ps_pbh(a2, a));
        }
}

/* A block's rows [0, valid) of scores (row stride padded_t) to bf16 Pd in probs, their constants to shift[i] and
   inverse[i] and their keep bytes from keep + i t (or none): in pairs held in registers where padded_t <= 128
   (softmax_two_rows, one copy for each row length), otherwise (and an odd last row) through memory. */
static void softmax_block(float *scores, int64_t padded_t, int64_t valid, const __mmask16 *live, float c,
                          const uint8_t *keep, int64_t t, float drop_scale, float *shift, float *inverse,
                          uint16_t *probs) {
    int64_t i = 0;
    for (; i + 1 < valid && padded_t <= 16 * REGISTER_VECTORS; i += 2) {
        const uint8_t *k0 = keep ? keep + i * t : NULL, *k1 = keep ? keep + (i + 1) * t : NULL;
        float *row = scores + i * padded_t;
        uint16_t *out = probs + i * padded_t;
        switch (padded_t / 16) {
        case 2: softmax_two_rows(row, padded_t, 2, live, c, k0, k1, t, drop_scale, shift + i, inverse + i, out); break;
        case 4: softmax_two_rows(row, padded_t, 4, live, c, k0, k1, t, drop_scale, shift + i, inverse + i, out); break;
        case 6: softmax_two_rows(row, padded_t, 6, live, c, k0, k1, t, drop_scale, shift + i, inverse + i, out); break;
        default: softmax_two_rows(row, padded_t, 8, live, c, k0, k1, t, drop_scale, shift + i, inverse + i, out);
        }
    }
    for (; i < valid; i++) {
        float *row = scores + i * padded_t;
        exponentials(row, live, padded_t, c, shift + i, inverse + i);
        dropped_row(row, inverse[i], keep ? keep + i * t : NULL, t, padded_t, drop_scale, probs + i * padded_t);
    }
}

/* The first `valid` rows of d float32 at o (row stride d), times factor, rounded to bf16 into out (row stride
   ld). */
static inline void store_rows(const float *o, float factor, int64_t valid, int64_t d, uint16_t *out, int64_t ld) {
    __m512 f = _mm512_set1_ps(factor);
    for (int64_t i = 0; i < valid; i++)
        for (int64_t j = 0; j < d; j += 16)
            _mm256_storeu_si256((__m256i *)(out + i * ld + j),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_load_ps(o + i * d + j), f)));
}

/* c (32 x 32 float32, row stride ldc) = [a; a1] @ [b0 b1] over k_tiles steps of 32, in the four accumulator tiles
   (block_step): a's and a1's step s at a + s a_step, a1 + s a_step (16 rows of 32 bf16 each, row stride lda values),
   b0 and b1 two columns of 16 packed tiles, one tile (512 values) a step. Each output summed over the steps in
   order from zero, as tile_pair sums it (the same bits); four independent sums instead of tile_pair's two, and
   4 tile loads for 4 products instead of 3 for 2 (the forward: 0.955 of round 8's time with 16 queries a pass,
   0.92 with 32, one run each). */
static inline void block_pair(const uint16_t *a, const uint16_t *a1, int64_t lda, int64_t a_step, const uint16_t *b0,
                              const uint16_t *b1, int64_t k_tiles, float *c, int64_t ldc) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t kt = 0; kt < k_tiles; kt++)
        block_step(a + kt * a_step, a1 + kt * a_step, lda, b0 + kt * 512, b1 + kt * 512);
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c + 16, ldc * 4);
    _tile_stored(2, c + 16 * ldc, ldc * 4);
    _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

/* The forward. q, k, v: element (b, h, t, j) at ptr[b sb + h sh + t st + j]; keys: (batch, t) bytes, 0 for keys
   no query may attend to, or NULL; keep: the dropout's (batch, heads, t, t) bytes, 0 where dropped, or NULL (no
   dropout); out: (batch, t, heads, d) contiguous; shift, inverse: (batch, heads, t) float32, each row's softmax
   constants for the backward. d % 32 == 0. A row whose every key is masked comes out zero. Returns 0, or -1 if the
   scratch could not be allocated. Queries 32 at a time: every product in 32 x 32 blocks (block_pair). */
int xm_attention_train(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t sb, int64_t sh, int64_t st,
                       int64_t batch, int64_t heads, int64_t t, int64_t d, const uint8_t *keys, const uint8_t *keep,
                       float drop_scale, float scale, uint16_t *out, float *shift, float *inverse) {
    int64_t padded_t = (t + 31) / 32 * 32, d_tiles = d / 32, k_tiles = padded_t / 32;
    float c = scale * 1.44269504f;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        configure_tiles();
        uint16_t *kp = aligned_alloc(64, padded_t * d * 2), *vp = aligned_alloc(64, padded_t * d * 2);
        uint16_t *probs = aligned_alloc(64, 32 * padded_t * 2), *qpad = aligned_alloc(64, 32 * d * 2);
        float *scores = aligned_alloc(64, 32 * padded_t * 4), *o = aligned_alloc(64, 32 * d * 4);
        __mmask16 *live = malloc((padded_t / 16) * sizeof(__mmask16));
        if (!kp || !vp || !probs || !qpad || !scores || !o || !live) failed = 1;
        else memset(probs, 0, 32 * padded_t * 2); /* rows past t: their outputs are not stored */
#pragma omp for schedule(static)
        for (int64_t item = 0; item < batch * heads; item++) {
            if (failed) continue;
            int64_t b = item / heads, h = item % heads;
            const uint16_t *qh = q + b * sb + h * sh, *kh = k + b * sb + h * sh, *vh = v + b * sb + h * sh;
            pack_transposed(kh, st, t, padded_t, d, kp);
            pack_pairs(vh, st, t, padded_t, d, vp);
            live_key_lanes(keys ? keys + b * t : NULL, t, padded_t, live);
            heads_ahead ahead = {{0}, {0}, 0, 3, t, 2 * d, 0, 0, 0};
            if (item + 1 < batch * heads) { /* the next (example, head)'s q, k, v and output */
                int64_t nb = (item + 1) / heads, nh = (item + 1) % heads, in = nb * sb + nh * sh;
                ahead_add(&ahead, q + in, st * 2);
                ahead_add(&ahead, k + in, st * 2);
                ahead_add(&ahead, v + in, st * 2);
                ahead_add(&ahead, out + (nb * t * heads + nh) * d, heads * d * 2);
            }
            int64_t steps = (t + 31) / 32 * (k_tiles + 1); /* the calls of ahead_fetch below */
            int64_t per_step = (ahead.matrices * t * (d / 32) + steps - 1) / steps;
            for (int64_t q0 = 0; q0 < t; q0 += 32) {
                int64_t valid = t - q0 < 32 ? t - q0 : 32, qstride, r = item * t + q0;
                const uint16_t *qrows = query_rows(qh, st, t, q0, d, 32, qpad, &qstride);
                for (int64_t kt = 0; kt < padded_t / 16; kt += 2) {
                    ahead_fetch(&ahead, per_step);
                    block_pair(qrows, qrows + 16 * qstride, qstride, 32, kp + kt * d_tiles * 512,
                               kp + (kt + 1) * d_tiles * 512, d_tiles, scores + 16 * kt, padded_t);
                }
                ahead_fetch(&ahead, per_step);
                softmax_block(scores, padded_t, valid, live, c, keep ? keep + r * t : NULL, t, drop_scale, shift + r,
                              inverse + r, probs);
                for (int64_t dt = 0; dt < d / 16; dt += 2)
                    block_pair(probs, probs + 16 * padded_t, padded_t, 32, vp + dt * k_tiles * 512,
                               vp + (dt + 1) * k_tiles * 512, k_tiles, o + 16 * dt, d);
                store_rows(o, 1.0f, valid, d, out + ((b * t + q0) * heads + h) * d, heads * d);
            }
        }
        free(kp);
        free(vp);
        free(probs);
        free(qpad);
        free(scores);
        free(o);
        free(live);
        _tile_release();
    }
    return failed ? -1 : 0;
}

/* One query's dS row from its probabilities p (float32) and dPd (float32, row dpd), padded_t values: writes
   round_bf16(Pd) to pd and round_bf16(P (dPd keep drop_scale - delta)) to ds, delta = sum_j Pd_j dPd_j. */
static inline void score_gradient_row(const float *p, const float *dpd, const uint8_t *keep_row, int64_t t,
                                      int64_t padded_t, float drop_scale, uint16_t *pd, uint16_t *ds) {
    __m512 scale = _mm512_set1_ps(keep_row ? drop_scale : 1.0f), sum = _mm512_setzero_ps(), other = _mm512_setzero_ps();
    for (int64_t j = 0; j < padded_t; j += 32) { /* two sums: one chain of dependent additions would wait on each */
        __m512 a = _mm512_maskz_mul_ps(kept_lanes(keep_row, j, t), _mm512_load_ps(p + j), scale);
        __m512 a2 = _mm512_maskz_mul_ps(kept_lanes(keep_row, j + 16, t), _mm512_load_ps(p + j + 16), scale);
        _mm512_store_si512((__m512i *)(pd + j), (__m512i)_mm512_cvtne2ps_pbh(a2, a));
        sum = _mm512_fmadd_ps(a, _mm512_load_ps(dpd + j), sum);
        other = _mm512_fmadd_ps(a2, _mm512_load_ps(dpd + j + 16), other);
    }
    __m512 delta = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(sum, other)));
    for (int64_t j = 0; j < padded_t; j += 32) {
        __m512 dp = _mm512_maskz_mul_ps(kept_lanes(keep_row, j, t), _mm512_load_ps(dpd + j), scale);
        __m512 dp2 = _mm512_maskz_mul_ps(kept_lanes(keep_row, j + 16, t), _mm512_load_ps(dpd + j + 16), scale);
        __m512 g = _mm512_mul_ps(_mm512_load_ps(p + j), _mm512_sub_ps(dp, delta));
        __m512 g2 = _mm512_mul_ps(_mm512_load_ps(p + j + 16), _mm512_sub_ps(dp2, delta));
        _mm512_store_si512((__m512i *)(ds + j), (__m512i)_mm512_cvtne2ps_pbh(g2, g));
    }
}

/* The 16 x padded_t bf16 block at `rows` (row stride padded_t) interleaved in row pairs into 8 rows of `pairs`
   (row stride 2 padded_t): the layout whose 16 x 16 32-bit blocks transpose16 turns into the block's transpose. */
static inline void pair_rows(const uint16_t *rows, int64_t padded_t, uint16_t *pairs) {
    for (int64_t p = 0; p < 8; p++)
        interleave_rows(rows + 2 * p * padded_t, rows + (2 * p + 1) * padded_t, padded_t, pairs + p * 2 * padded_t);
}

/* The key tile kt (16 keys) of a matrix's transpose, from its row pairs (padded_t / 2 rows of 2 padded_t values):
   padded_t / 32 tiles of 16 keys x 32 queries, consecutive, the left operand of rows_by_pairs (a_step 512). */
static inline void transposed_tiles(const uint16_t *pairs, int64_t padded_t, int64_t kt, uint16_t *tiles) {
    for (int64_t qt = 0; qt < padded_t / 32; qt++)
        transpose16(pairs + qt * 16 * 2 * padded_t + 32 * kt, 2 * padded_t, 16, tiles + qt * 512);
}

/* The backward of xm_attention_train for dout (element (b, h, t, j) at dout[b gb + h gh + t gt + j]), from its
   inputs and its row constants: dq, dk, dv written at element (b, h, t, j) = ptr[b db + h dh + t dt + j] (one
   buffer for the three may be interleaved, as the fused projection's gradient). The same bits for any thread count.
   Returns 0, or -1 if the scratch could not be allocated. */
int xm_attention_train_backward(const uint16_t *dout, int64_t gb, int64_t gh, int64_t gt, const uint16_t *q,
                                const uint16_t *k, const uint16_t *v, int64_t sb, int64_t sh, int64_t st,
                                int64_t batch, int64_t heads, int64_t t, int64_t d, const uint8_t *keys,
                                const uint8_t *keep, float drop_scale, float scale, const float *shift,
                                const float *inverse, uint16_t *dq, uint16_t *dk, uint16_t *dv, int64_t db,
                                int64_t dh, int64_t dt) {
    int64_t padded_t = (t + 31) / 32 * 32, d_tiles = d / 32, rows16 = (t + 15) / 16 * 16, tile_bytes = padded_t * d * 2;
    float c = scale * 1.44269504f;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        configure_tiles();
        /* k^T and v^T for the scores and dPd; k, q, dout in row pairs for dQ, dK, dV */
        uint16_t *kt_pack = aligned_alloc(64, tile_bytes), *vt_pack = aligned_alloc(64, tile_bytes);
        uint16_t *k_pairs = aligned_alloc(64, tile_bytes), *q_pairs = aligned_alloc(64, tile_bytes);
        uint16_t *g_pairs = aligned_alloc(64, tile_bytes);
        float *p = aligned_alloc(64, 16 * padded_t * 4), *dpd = aligned_alloc(64, 16 * padded_t * 4);
        float *o = aligned_alloc(64, 16 * d * 4);
        uint16_t *pd = aligned_alloc(64, 16 * padded_t * 2), *ds = aligned_alloc(64, 16 * padded_t * 2);
        uint16_t *pd_pairs = aligned_alloc(64, padded_t * padded_t * 2);
        uint16_t *ds_pairs = aligned_alloc(64, padded_t * padded_t * 2);
        uint16_t *tiles = aligned_alloc(64, 16 * padded_t * 2);
        uint16_t *qpad = aligned_alloc(64, 16 * d * 2), *gpad = aligned_alloc(64, 16 * d * 2);
        __mmask16 *live = malloc((padded_t / 16) * sizeof(__mmask16));
        if (!kt_pack || !vt_pack || !k_pairs || !q_pairs || !g_pairs || !p || !dpd || !o || !pd || !ds || !pd_pairs
            || !ds_pairs || !tiles || !qpad || !gpad || !live)
            failed = 1;
        else { /* the queries past the last block of 16 stay zero: they enter dK's and dV's sums */
            memset(pd_pairs + rows16 * padded_t, 0, (padded_t - rows16) * padded_t * 2);
            memset(ds_pairs + rows16 * padded_t, 0, (padded_t - rows16) * padded_t * 2);
        }
#pragma omp for schedule(static)
        for (int64_t item = 0; item < batch * heads; item++) {
            if (failed) continue;
            int64_t b = item / heads, h = item % heads, key_blocks = (t + 15) / 16;
            const uint16_t *qh = q + b * sb + h * sh, *kh = k + b * sb + h * sh, *vh = v + b * sb + h * sh;
            const uint16_t *gq = dout + b * gb + h * gh;
            int64_t out_offset = b * db + h * dh;
            heads_ahead ahead = {{0}, {0}, 0, 4, t, 2 * d, 0, 0, 0};
            if (item + 1 < batch * heads) { /* the next (example, head)'s 4 inputs and 3 outputs */
                int64_t nb = (item + 1) / heads, nh = (item + 1) % heads, in = nb * sb + nh * sh, g = nb * db + nh * dh;
                ahead_add(&ahead, q + in, st * 2);
                ahead_add(&ahead, k + in, st * 2);
                ahead_add(&ahead, v + in, st * 2);
                ahead_add(&ahead, dout + nb * gb + nh * gh, gt * 2);
                ahead_add(&ahead, dq + g, dt * 2);
                ahead_add(&ahead, dk + g, dt * 2);
                ahead_add(&ahead, dv + g, dt * 2);
            }
            int64_t steps = key_blocks * (padded_t / 32) + key_blocks; /* the calls of ahead_fetch below */
            int64_t per_step = (ahead.matrices * t * (d / 32) + steps - 1) / steps;
            pack_transposed(kh, st, t, padded_t, d, kt_pack);
            pack_transposed(vh, st, t, padded_t, d, vt_pack);
            pack_pairs(kh, st, t, padded_t, d, k_pairs);
            pack_pairs(qh, st, t, padded_t, d, q_pairs);
            pack_pairs(gq, gt, t, padded_t, d, g_pairs);
            live_key_lanes(keys ? keys + b * t : NULL, t, padded_t, live);
            for (int64_t q0 = 0; q0 < t; q0 += 16) {
                int64_t valid = t - q0 < 16 ? t - q0 : 16, qstride, gstride;
                const uint16_t *qrows = query_rows(qh, st, t, q0, d, 16, qpad, &qstride);
                const uint16_t *grows = query_rows(gq, gt, t, q0, d, 16, gpad, &gstride);
                for (int64_t kt = 0; kt < padded_t / 16; kt += 2) {
                    ahead_fetch(&ahead, per_step);
                    score_pair(qrows, qstride, kt_pack, kt, d_tiles, p, padded_t);
                    score_pair(grows, gstride, vt_pack, kt, d_tiles, dpd, padded_t);
                }
                for (int64_t i = 0; i < 16; i++) {
                    int64_t r = item * t + q0 + i;
                    if (i < valid) {
                        probabilities(p + i * padded_t, live, padded_t, c, shift[r], inverse[r]);
                        score_gradient_row(p + i * padded_t, dpd + i * padded_t, keep ? keep + r * t : NULL, t,
                                           padded_t, drop_scale, pd + i * padded_t, ds + i * padded_t);
                    } else { /* queries past t: no probabilities, no gradient */
                        memset(pd + i * padded_t, 0, padded_t * 2);
                        memset(ds + i * padded_t, 0, padded_t * 2);
                    }
                }
                rows_by_pairs(ds, padded_t, 32, k_pairs, padded_t / 32, d, o);
                store_rows(o, scale, valid, d, dq + out_offset + q0 * dt, dt);
                pair_rows(pd, padded_t, pd_pairs + q0 * padded_t);
                pair_rows(ds, padded_t, ds_pairs + q0 * padded_t);
            }
            for (int64_t kb = 0; kb < key_blocks; kb++) {
                int64_t valid = t - 16 * kb < 16 ? t - 16 * kb : 16;
                ahead_fetch(&ahead, per_step);
                transposed_tiles(ds_pairs, padded_t, kb, tiles);
                rows_by_pairs(tiles, 32, 512, q_pairs, padded_t / 32, d, o);
                store_rows(o, scale, valid, d, dk + out_offset + 16 * kb * dt, dt);
                transposed_tiles(pd_pairs, padded_t, kb, tiles);
                rows_by_pairs(tiles, 32, 512, g_pairs, padded_t / 32, d, o);
                store_rows(o, 1.0f, valid, d, dv + out_offset + 16 * kb * dt, dt);
            }
        }
        free(kt_pack);
        free(vt_pack);
        free(k_pairs);
        free(q_pairs);
        free(g_pairs);
        free(p);
        free(dpd);
        free(o);
        free(pd);
        free(ds);
        free(pd_pairs);
        free(ds_pairs);
        free(tiles);
        free(qpad);
        free(gpad);
        free(live);
        _tile_release();
    }
    return failed ? -1 : 0;
}

/* Training: softmax attention in bf16 autocast training on processors without AMX (xm_attention_train_vector,
   xm_attention_train_backward_vector): the same arguments, outputs and saved row constants as xm_attention_train
   and its backward (native.py calls these where available() is False and vector_available() True), every product
   by AVX-512's bf16 pair products (VDPBF16PS) instead of the tile unit; no tile instruction, no begin() or
   configure_tiles. The softmax, the dropout and the score gradients are the tile versions' own vector helpers
   (softmax_block, probabilities, score_gradient_row), so the semantics are theirs: float32 scores, a base-2 float32
   softmax over the live keys, the keep bytes times drop_scale, Pd rounded to bf16 for the product with v, the
   backward recomputing P bit for bit from the shift and 1 / sum the forward saved (the same score product, whose
   sums run over d in the same order for any blocking).

   Every product here is C[r, n] = sum_p A_p[r] . B_p[n] over pairs p of bf16 values: a row's pair broadcast to all
   lanes, times 16 outputs' pairs in one vector (VDPBF16PS adds both products of a lane's pair into float32). The
   right operands come in the tile layouts pack_transposed (k, v over d: the scores, dPd) and pack_pairs (v, k, q,
   dOut over rows: Pd v, dQ, dK, dV) write, which are exactly that: 16 outputs' pairs in 64 bytes, pair after pair.
   dK and dV sum over the queries: their left operand is dS and Pd in row pairs (pair_rows), where a key's two
   queries' values are one 32-bit pair. Four rows times four vectors of 16 outputs are summed at once (16
   accumulators): each loaded vector serves four rows, each broadcast four vectors. */

/* The 4 rows from r0 of C (row stride ldc) times nb vectors of 16 outputs from n0: A's row r at a + r row_step, its
   pair p at + p pair_step (rows past `rows` read row rows - 1, their results not stored); B's vector n, pair p at
   b + (n b_step + p) 32 (bf16 values). nb (4 or 2) a constant where inlined. */
static inline __attribute__((always_inline)) void pair_product_block(const uint16_t *a, int64_t row_step,
                                                                     int64_t pair_step, int64_t r0, int64_t rows,
                                                                     const uint16_t *b, int64_t b_step, int64_t pairs,
                                                                     int64_t n0, const int nb, float *c, int64_t ldc) {
    const uint16_t *ar[4];
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++) {
        ar[i] = a + (r0 + i < rows ? r0 + i : rows - 1) * row_step;
        for (int n = 0; n < nb; n++) acc[i][n] = _mm512_setzero_ps();
    }
    const uint16_t *bp = b + n0 * b_step * 32;
    for (int64_t p = 0; p < pairs; p++) {
        __m512bh bv[4];
        for (int n = 0; n < nb; n++) bv[n] = (__m512bh)_mm512_loadu_si512((const void *)(bp + (n * b_step + p) * 32));
        for (int i = 0; i < 4; i++) {
            int32_t pair;
            memcpy(&pair, ar[i] + p * pair_step, 4);
            __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
            for (int n = 0; n < nb; n++) acc[i][n] = _mm512_dpbf16_ps(acc[i][n], av, bv[n]);
        }
    }
    for (int i = 0; i < 4 && r0 + i < rows; i++)
        for (int n = 0; n < nb; n++) _mm512_storeu_ps(c + (r0 + i) * ldc + 16 * (n0 + n), acc[i][n]);
}

/* C (rows x 16 vectors float32, row stride ldc) = the pair products above over `pairs` pairs, `vectors` even. */
static void pair_product(const uint16_t *a, int64_t row_step, int64_t pair_step, int64_t rows, const uint16_t *b,
                         int64_t b_step, int64_t pairs, int64_t vectors, float *c, int64_t ldc) {
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        int64_t n0 = 0;
        for (; n0 + 4 <= vectors; n0 += 4)
            pair_product_block(a, row_step, pair_step, r0, rows, b, b_step, pairs, n0, 4, c, ldc);
        if (n0 < vectors) pair_product_block(a, row_step, pair_step, r0, rows, b, b_step, pairs, n0, 2, c, ldc);
    }
}

/* The float32 scores of `rows` rows of x (row stride st; q, or dOut for dPd) against the padded_t rows packed by
   pack_transposed at packed (k, or v), into scores (row stride padded_t): sums over d in order, whatever the rows. */
static inline void vector_scores(const uint16_t *x, int64_t st, int64_t rows, const uint16_t *packed, int64_t d,
                                 int64_t padded_t, float *scores) {
    pair_product(x, st, 2, rows, packed, d / 2, d / 2, padded_t / 16, scores, padded_t);
}

/* The forward (xm_attention_train's arguments and results). Queries 32 at a time (softmax_block's pairs of rows). */
int xm_attention_train_vector(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t sb, int64_t sh,
                              int64_t st, int64_t batch, int64_t heads, int64_t t, int64_t d, const uint8_t *keys,
                              const uint8_t *keep, float drop_scale, float scale, uint16_t *out, float *shift,
                              float *inverse) {
    int64_t padded_t = (t + 31) / 32 * 32, pairs = (t + 1) / 2; /* keys past t: zero probabilities, zero v */
    float c = scale * 1.44269504f;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        uint16_t *kp = aligned_alloc(64, padded_t * d * 2), *vp = aligned_alloc(64, padded_t * d * 2);
        uint16_t *probs = aligned_alloc(64, 32 * padded_t * 2);
        float *scores = aligned_alloc(64, 32 * padded_t * 4), *o = aligned_alloc(64, 32 * d * 4);
        __mmask16 *live = malloc((padded_t / 16) * sizeof(__mmask16));
        if (!kp || !vp || !probs || !scores || !o || !live) failed = 1;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < batch * heads; item++) {
            if (failed) continue;
            int64_t b = item / heads, h = item % heads;
            const uint16_t *qh = q + b * sb + h * sh, *kh = k + b * sb + h * sh, *vh = v + b * sb + h * sh;
            pack_transposed(kh, st, t, padded_t, d, kp);
            pack_pairs(vh, st, t, padded_t, d, vp);
            live_key_lanes(keys ? keys + b * t : NULL, t, padded_t, live);
            for (int64_t q0 = 0; q0 < t; q0 += 32) {
                int64_t valid = t - q0 < 32 ? t - q0 : 32, r = item * t + q0;
                vector_scores(qh + q0 * st, st, valid, kp, d, padded_t, scores);
                softmax_block(scores, padded_t, valid, live, c, keep ? keep + r * t : NULL, t, drop_scale, shift + r,
                              inverse + r, probs);
                pair_product(probs, padded_t, 2, valid, vp, padded_t / 2, pairs, d / 16, o, d);
                store_rows(o, 1.0f, valid, d, out + ((b * t + q0) * heads + h) * d, heads * d);
            }
        }
        free(kp);
        free(vp);
        free(probs);
        free(scores);
        free(o);
        free(live);
    }
    return failed ? -1 : 0;
}

/* The backward (xm_attention_train_backward's arguments and results; the same bits for any thread count: each
   (example, head) on one thread, every sum in a fixed order). Queries 16 at a time: their P and dPd recomputed,
   dS and round_bf16(Pd) formed (score_gradient_row), dQ = dS k scale; their Pd and dS rows kept in row pairs for
   dK = dS^T q scale and dV = Pd^T dOut, summed over all queries once every block is done. */
int xm_attention_train_backward_vector(const uint16_t *dout, int64_t gb, int64_t gh, int64_t gt, const uint16_t *q,
                                       const uint16_t *k, const uint16_t *v, int64_t sb, int64_t sh, int64_t st,
                                       int64_t batch, int64_t heads, int64_t t, int64_t d, const uint8_t *keys,
                                       const uint8_t *keep, float drop_scale, float scale, const float *shift,
                                       const float *inverse, uint16_t *dq, uint16_t *dk, uint16_t *dv, int64_t db,
                                       int64_t dh, int64_t dt) {
    int64_t padded_t = (t + 31) / 32 * 32, pairs = (t + 1) / 2, bytes = padded_t * d * 2;
    float c = scale * 1.44269504f;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        /* k^T and v^T for the scores and dPd; k, q, dOut in row pairs for dQ, dK, dV */
        uint16_t *kt_pack = aligned_alloc(64, bytes), *vt_pack = aligned_alloc(64, bytes);
        uint16_t *k_pairs = aligned_alloc(64, bytes), *q_pairs = aligned_alloc(64, bytes);
        uint16_t *g_pairs = aligned_alloc(64, bytes);
        float *p = aligned_alloc(64, 16 * padded_t * 4), *dpd = aligned_alloc(64, 16 * padded_t * 4);
        float *o = aligned_alloc(64, padded_t * d * 4);
        uint16_t *pd = aligned_alloc(64, 16 * padded_t * 2), *ds = aligned_alloc(64, 16 * padded_t * 2);
        uint16_t *pd_pairs = aligned_alloc(64, padded_t * padded_t * 2);
        uint16_t *ds_pairs = aligned_alloc(64, padded_t * padded_t * 2);
        __mmask16 *live = malloc((padded_t / 16) * sizeof(__mmask16));
        if (!kt_pack || !vt_pack || !k_pairs || !q_pairs || !g_pairs || !p || !dpd || !o || !pd || !ds || !pd_pairs
            || !ds_pairs || !live)
            failed = 1;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < batch * heads; item++) {
            if (failed) continue;
            int64_t b = item / heads, h = item % heads, at = b * db + h * dh;
            const uint16_t *qh = q + b * sb + h * sh, *kh = k + b * sb + h * sh, *vh = v + b * sb + h * sh;
            const uint16_t *gq = dout + b * gb + h * gh;
            pack_transposed(kh, st, t, padded_t, d, kt_pack);
            pack_transposed(vh, st, t, padded_t, d, vt_pack);
            pack_pairs(kh, st, t, padded_t, d, k_pairs);
            pack_pairs(qh, st, t, padded_t, d, q_pairs);
            pack_pairs(gq, gt, t, padded_t, d, g_pairs);
            live_key_lanes(keys ? keys + b * t : NULL, t, padded_t, live);
            for (int64_t q0 = 0; q0 < t; q0 += 16) {
                int64_t valid = t - q0 < 16 ? t - q0 : 16;
                vector_scores(qh + q0 * st, st, valid, kt_pack, d, padded_t, p);
                vector_scores(gq + q0 * gt, gt, valid, vt_pack, d, padded_t, dpd);
                for (int64_t i = 0; i < 16; i++) {
                    int64_t r = item * t + q0 + i;
                    if (i < valid) {
                        probabilities(p + i * padded_t, live, padded_t, c, shift[r], inverse[r]);
                        score_gradient_row(p + i * padded_t, dpd + i * padded_t, keep ? keep + r * t : NULL, t,
                                           padded_t, drop_scale, pd + i * padded_t, ds + i * padded_t);
                    } else { /* queries past t: zero in dK's and dV's sums (the last pair's second row) */
                        memset(pd + i * padded_t, 0, padded_t * 2);
                        memset(ds + i * padded_t, 0, padded_t * 2);
                    }
                }
                pair_product(ds, padded_t, 2, valid, k_pairs, padded_t / 2, pairs, d / 16, o, d);
                store_rows(o, scale, valid, d, dq + at + q0 * dt, dt);
                pair_rows(pd, padded_t, pd_pairs + q0 * padded_t);
                pair_rows(ds, padded_t, ds_pairs + q0 * padded_t);
            }
            /* key j's left operand: pair p (queries 2p, 2p + 1) at pairs + p 2 padded_t + 2 j */
            pair_product(ds_pairs, 2, 2 * padded_t, t, q_pairs, padded_t / 2, pairs, d / 16, o, d);
            store_rows(o, scale, t, d, dk + at, dt);
            pair_product(pd_pairs, 2, 2 * padded_t, t, g_pairs, padded_t / 2, pairs, d / 16, o, d);
            store_rows(o, 1.0f, t, d, dv + at, dt);
        }
        free(kt_pack);
        free(vt_pack);
        free(k_pairs);
        free(q_pairs);
        free(g_pairs);
        free(p);
        free(dpd);
        free(o);
        free(pd);
        free(ds);
        free(pd_pairs);
        free(ds_pairs);
        free(live);
    }
    return failed ? -1 : 0;
}

/* Training: the vocabulary projection in bf16 autocast training (xm_vocab_forward, xm_vocab_backward), reading
   the float32 weight W (v x d) directly, each value rounded to bf16 (round to nearest even, as autocast's cast) as
   it is packed, so that no bf16 copy of W is made:

     logits = round_bf16(x @ W16^T + round_bf16(b))      (x: n x d bf16, float32 sums, one rounding)
     dX     = round_bf16(dlogits @ W16)                    (sums over v in float32, one rounding)
     dW     = dlogits^T @ x   in float32, not rounded;  db = column sums of dlogits in float32, not rounded.

   For the masked-LM loss that follows (kernels/loss.py), the forward can also give each row's softmax statistics
   of the bf16 logits it writes, max_j l_j and sum_j exp(l_j - max) (float32), and the backward can then take the
   logits instead of dlogits and form dlogits as xm_cross_entropy does, round_bf16(exp(l_j - max) * (scale / sum)
   - scale [j == t]), as it reads them: the loss pass over the logits and the pass writing dlogits are not made.

   The forward can also write W16 (v x d bf16, 16 MB at 32,000 x 256) in the layout the backward's dX product reads
   (mt_pack_pairs's: row pairs along the vocabulary), from the rounded rows it packs anyway, with non-temporal stores;
   the backward then reads those 16 MB instead of rounding and packing W's 32 MB of float32 again (the same roundings:
   the bits are the same). In the bench's training step (303 x 256, V 32,000, one thread): 1.6-1.8 ms less inside
   the two calls (forward +0.9, backward -2.5; round10/wpack.md).

   Each output value is summed in an order fixed by the shapes alone (not by the thread count): the forward's
   columns are split between threads; the backward's vocabulary is cut into fixed ranges (see xm_vocab_backward).
   Software prefetches fetch the next W rows (forward) and the next gradient columns (backward). Requires
   v % 32 == 0 and d % 32 == 0, any n. */

#define VOCAB_STEP 256
/* With the statistics, the forward's columns in fixed ranges of whole 32-column pairs, the threads taking whole
   ranges: each row's softmax statistics are summed range by range in an order fixed by the shapes, then combined in
   range order. (Without, the column pairs split evenly between the threads, as before.) */
#define VOCAB_RANGES 16

/* One row's 32 logits (a, b: bf16 values as float32) into its running statistics for a range: the lanes' max, and
   the lanes' sums of exp(l - ref), ref the max of the row's first line in the range (so no sum is rescaled as the
   max rises: each term is exp_nonpositive's exp of l - ref, as xm_cross_entropy's of l - max; terms below
   exp(-87) left out, as there), raised, the sums rescaled, only where a logit comes more than 64 above it. */
static inline void lane_statistics(float *lane_max, float *lane_sum, float *ref, __m512 a, __m512 b) {
    __m512 top = _mm512_max_ps(a, b), sum = _mm512_load_ps(lane_sum);
    _mm512_store_ps(lane_max, _mm512_max_ps(_mm512_load_ps(lane_max), top));
    if (*ref == -INFINITY) *ref = _mm512_reduce_max_ps(top);
    __m512 base = _mm512_set1_ps(*ref);
    if (_mm512_cmp_ps_mask(top, _mm512_add_ps(base, _mm512_set1_ps(64.0f)), _CMP_GT_OQ)) {
        float raised = _mm512_reduce_max_ps(top);
        sum = _mm512_mul_ps(sum, exp_nonpositive(_mm512_set1_ps(*ref - raised)));
        base = _mm512_set1_ps(*ref = raised);
    }
    sum = _mm512_add_ps(sum, _mm512_add_ps(exp_nonpositive(_mm512_sub_ps(a, base)),
                                           exp_nonpositive(_mm512_sub_ps(b, base))));
    _mm512_store_ps(lane_sum, sum);
}

/* 16 rows of W (float32, row stride d) from `row`, values [32 kt, 32 kt + 32), as one B tile of the product
   x W^T: [16 input pairs][16 rows][2], rounded to bf16; and, where pairs is not NULL (64-byte aligned), the same
   values as 8 row pairs in the tiles of the product dlogits @ W16: each two rows interleaved (put_row_pair's
   layout), values [32 kt, 32 kt + 16) the tile rows at pairs, [32 kt + 16, 32 kt + 32) those at pairs + next_tile,
   streamed (read only by the backward). */
static inline void vocab_tile(const float *w, int64_t d, int64_t kt, uint16_t *tile, uint16_t *pairs,
                               int64_t next_tile) {
    const __m512i low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                         39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
    uint16_t rows[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16; i += 2) {
        const float *p = w + i * d + 32 * kt, *q = p + d;
        __m512i r0 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + 16), _mm512_loadu_ps(p));
        __m512i r1 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 16), _mm512_loadu_ps(q));
        _mm512_store_si512((__m512i *)(rows + 32 * i), r0);
        _mm512_store_si512((__m512i *)(rows + 32 * i + 32), r1);
        if (pairs) {
            _mm512_stream_si512((__m512i *)(pairs + 16 * i), _mm512_permutex2var_epi16(r0, low, r1));
            _mm512_stream_si512((__m512i *)(pairs + next_tile + 16 * i), _mm512_permutex2var_epi16(r0, high, r1));
        }
    }
    transpose16(rows, 32, 16, tile);
}

/* A pending block's epilogue (bias only) for the vocabulary logits, a whole row of 32 outputs (one 64-byte line) at a
   time, written with a non-temporal store where the line is aligned: the logits (n x v) go to memory without
   being read first; the line's rounded values into the row's softmax statistics where they are asked for. */
static inline void drain_streaming(pending_block *p, int64_t units) {
    int64_t end = p->next + units < p->units ? p->next + units : p->units;
    for (int64_t u = p->next & ~(int64_t)1; u < end; u += 2) {
        int64_t i = u >> 1;
        __m512 lo = _mm512_load_ps(p->acc + i * 32), hi = _mm512_load_ps(p->acc + i * 32 + 16);
        if (p->bias) {
            lo = _mm512_add_ps(lo, _mm512_loadu_ps(p->bias + p->col));
            hi = _mm512_add_ps(hi, _mm512_loadu_ps(p->bias + p->col + 16));
        }
        __m512i line = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        uint16_t *dst = p->out + (p->row + i) * p->ldo + p->col;
        if (((uintptr_t)dst & 63) == 0) _mm512_stream_si512((__m512i *)dst, line);
        else _mm512_storeu_si512((void *)dst, line);
        if (p->lane_max) {
            int64_t at = (p->row + i) * 16;
            lane_statistics(p->lane_max + at, p->lane_sum + at, p->ref + p->row + i,
                            load_bf16_vector((__m256bh)_mm512_castsi512_si256(line)),
                            load_bf16_vector((__m256bh)_mm512_extracti64x4_epi64(line, 1)));
        }
    }
    p->next = end > p->next ? (end + 1) & ~(int64_t)1 : p->next;
    if (p->next > p->units) p->next = p->units;
}

/* The statistics of one range for rows [0, n): the lanes' max, sum and the row's reference, stored at
   [r * VOCAB_RANGES + range]; the lanes reset for the next range. */
static void fold_range(float *lane_max, float *lane_sum, float *ref, int64_t n, int range, float *range_stats) {
    for (int64_t r = 0; r < n; r++) {
        float *at = range_stats + 3 * (r * VOCAB_RANGES + range);
        at[0] = _mm512_reduce_max_ps(_mm512_load_ps(lane_max + 16 * r));
        at[1] = _mm512_reduce_add_ps(_mm512_load_ps(lane_sum + 16 * r));
        at[2] = ref[r];
        _mm512_store_ps(lane_max + 16 * r, _mm512_set1_ps(-INFINITY));
        _mm512_store_ps(lane_sum + 16 * r, _mm512_setzero_ps());
        ref[r] = -INFINITY;
    }
}

/* row_max, row_total (n float32 each, or both NULL): each row's max of its bf16 logits and sum of exp(l - max),
   the ranges' sums rescaled from their references to the row's max and added in range order, in double. w16 (v x d
   bf16, 64-byte aligned, or NULL): W rounded to bf16 in mt_pack_pairs's layout, [d / 16][v / 32][16 row pairs][16]
   [2], for xm_vocab_backward's `pairs`. */
int xm_vocab_forward(const uint16_t *x, const float *w, const float *bias, int64_t n, int64_t v, int64_t d,
                     uint16_t *out, float *row_max, float *row_total, uint16_t *w16) {
    int64_t padded_n = (n + 31) / 32 * 32, k_tiles = d / 32, per_step = (64 + k_tiles - 1) / k_tiles;
    int stats = row_max != NULL;
    uint16_t *xp = aligned_alloc(64, padded_n * d * sizeof(uint16_t));
    float *rounded = bias ? aligned_alloc(64, v * sizeof(float)) : NULL;
    float *range_stats = stats ? aligned_alloc(64, (3 * n * VOCAB_RANGES + 16) * sizeof(float)) : NULL;
    int failed = !xp || (bias && !rounded) || (stats && !range_stats);
    if (!failed) {
        memcpy(xp, x, n * d * sizeof(uint16_t));
        memset(xp + n * d, 0, (padded_n - n) * d * sizeof(uint16_t));
        for (int64_t j = 0; bias && j < v; j += 16)
            _mm512_store_ps(rounded + j, load_bf16_vector(_mm512_cvtneps_pbh(_mm512_loadu_ps(bias + j))));
#pragma omp parallel reduction(| : failed)
        {
            int threads = omp_get_num_threads(), me = omp_get_thread_num();
            int64_t pairs = v / 32, own = pairs * me / threads, own_end = pairs * (me + 1) / threads;
            int r0 = stats ? VOCAB_RANGES * me / threads : 0, r1 = stats ? VOCAB_RANGES * (me + 1) / threads : 1;
            int64_t stop = stats ? pairs * r1 / VOCAB_RANGES : own_end;
            thread_state *st = begin();
            uint16_t *wp = aligned_alloc(64, 32 * d * sizeof(uint16_t));
            float *lane_max = stats ? aligned_alloc(64, (2 * padded_n * 16 + padded_n) * sizeof(float)) : NULL;
            float *lane_sum = lane_max ? lane_max + padded_n * 16 : NULL;
            float *ref = lane_max ? lane_sum + padded_n * 16 : NULL;
            if (!st || !wp || (stats && !lane_max)) {
                failed = 1;
            } else {
                for (int64_t i = 0; stats && i < padded_n * 16; i++) lane_max[i] = -INFINITY, lane_sum[i] = 0.0f;
                for (int64_t i = 0; stats && i < padded_n; i++) ref[i] = -INFINITY;
                for (int range = r0; range < r1; range++) {
                    int64_t first = stats ? pairs * range / VOCAB_RANGES : own;
                    int64_t last = stats ? pairs * (range + 1) / VOCAB_RANGES : own_end;
                    for (int64_t c = first; c < last; c++) {
                        for (int64_t kt = 0; kt < 2 * k_tiles; kt++) /* both groups of 16 rows */
                            vocab_tile(w + (32 * c + 16 * (kt / k_tiles)) * d, d, kt % k_tiles, wp + kt * 512,
                                       w16 ? w16 + (2 * (kt % k_tiles) * (v / 32) + c) * 512 + 8 * (kt / k_tiles) * 32
                                           : NULL, v / 32 * 512);
                        /* the next pair's 32 float32 rows (32 d / 16 lines), fetched over this pair's row blocks */
                        int64_t blocks = padded_n / 32, lines = (2 * d + blocks * k_tiles - 1) / (blocks * k_tiles);
                        const char *next = (const char *)(w + 32 * (c + 1 < stop ? c + 1 : c) * d);
                        for (int64_t row = 0; row < padded_n; row += 32) {
                            int64_t valid = n - row < 32 ? n - row : 32;
                            block(xp + row * d, d, wp, wp + k_tiles * 512, k_tiles, st->acc[st->current],
                                  &st->pending, per_step, next + row / 32 * k_tiles * lines * 64, lines, 1);
                            drain_streaming(&st->pending, 64);
                            st->pending = (pending_block){st->acc[st->current], row, 32 * c, 2 * valid, 0,
                                                          rounded, NULL, 0, v, out, 0, 1, lane_max, lane_sum, ref};
                            st->current ^= 1;
                        }
                    }
                    if (stats) { /* the range's last block in, then its statistics */
                        drain_streaming(&st->pending, 64);
                        fold_range(lane_max, lane_sum, ref, n, range, range_stats);
                    }
                }
            }
            free(wp);
            end(st);
            free(lane_max);
            _mm_sfence();
        }
        for (int64_t r = 0; stats && !failed && r < n; r++) {
            const float *at = range_stats + 3 * r * VOCAB_RANGES;
            float top = at[0];
            double total = 0.0;
            for (int i = 1; i < VOCAB_RANGES; i++) top = at[3 * i] > top ? at[3 * i] : top;
            for (int i = 0; i < VOCAB_RANGES; i++)
                if (at[3 * i + 2] != -INFINITY) total += (double)at[3 * i + 1] * exp((double)at[3 * i + 2] - top);
            row_max[r] = top;
            row_total[r] = (float)total;
        }
    }
    free(xp);
    free(rounded);
    free(range_stats);
    return failed ? -1 : 0;
}

/* The backward in one pass over the vocabulary (xm_vocab_backward): dX, dW and db (each optional) from one read of
   g and W. The vocabulary is cut into VOCAB_CHUNKS fixed ranges (of whole 32-row blocks), the threads taking whole
   chunks, and each chunk is walked in steps of VOCAB_STEP rows. A step copies its columns of g (n x VOCAB_STEP
   bf16, summing db's values on the way, and transposing them for dW's product 32 rows at a time, while they are in
   L1) and rounds and packs its rows of W into the thread's scratch (in L2), or takes them from the forward's W16
   (`pairs`), and from there makes the chunk's float32 partial of dX (its own
   padded_n x d buffer: each 32 x 32 block's accumulator tiles loaded and stored once a step, VOCAB_STEP / 32 tile
   steps between) and dW's rows for the step (streamed out). g's columns (and W16's tiles) for the next step are
   fetched while this step's products run. The chunks' partials are then
   added in chunk order and rounded once: each value is summed in an order fixed by the shapes alone, so the bits do
   not depend on the thread count. */
#define VOCAB_CHUNKS 4

/* A thread's scratch for one step. */
typedef struct {
    uint16_t *g;      /* g's columns: padded_n rows of VOCAB_STEP bf16, rows from n on zero */
    uint16_t *w;      /* W16's rows in row pairs, B tiles of dX's product: [d / 16][VOCAB_STEP / 32][16 pairs][16][2] */
    uint16_t *pairs;  /* 32 of g's rows in pairs, by 32 columns: [VOCAB_STEP / 32][16 pairs][32][2] */
    uint16_t *tiles;  /* g's columns transposed, A tiles of dW's product, by 32 columns:
                         [VOCAB_STEP / 32][2][padded_n / 32][16][16 pairs][2] */
} vocab_scratch;

static int vocab_scratch_alloc(vocab_scratch *s, int64_t padded_n, int64_t d) {
    s->g = aligned_alloc(64, padded_n * VOCAB_STEP * sizeof(uint16_t));
    s->w = aligned_alloc(64, VOCAB_STEP * d * sizeof(uint16_t));
    s->pairs = aligned_alloc(64, 32 * VOCAB_STEP * sizeof(uint16_t));
    s->tiles = aligned_alloc(64, padded_n * VOCAB_STEP * sizeof(uint16_t));
    return s->g && s->w && s->pairs && s->tiles;
}

static void vocab_scratch_free(vocab_scratch *s) {
    free(s->g);
    free(s->w);
    free(s->pairs);
    free(s->tiles);
}

/* The lines of the next step's columns of g (rows of `per_row` 64-byte lines, `stride` bytes apart), fetched a few
   at a time between the tile products. */
typedef struct {
    const char *base;
    int64_t stride, per_row, next, total;
} vocab_ahead;

static inline void fetch_ahead(vocab_ahead *a, int64_t count) {
    for (int64_t end = a->next + count < a->total ? a->next + count : a->total; a->next < end; a->next++)
        _mm_prefetch(a->base + a->next / a->per_row * a->stride + a->next % a->per_row * 64, _MM_HINT_T0);
}

/* The loss whose gradient the backward forms from the logits (xm_vocab_backward's loss arguments). */
typedef struct {
    const int64_t *targets;
    const float *row_max, *row_total;
    float scale;
} vocab_loss;

/* Row r's dlogits for the columns [c, c + 32) of the logits at l into out, as xm_cross_entropy writes them:
   round_bf16(exp(l - max) * factor), the target's round_bf16(exp(l_t - max) * factor - scale). */
static inline void loss_gradient_line(const uint16_t *l, int64_t c, int64_t t, __m512 top, float factor, float scale,
                                      uint16_t *out) {
    __m512 ea = exp_nonpositive(_mm512_sub_ps(load_bf16(l), top));
    __m512 eb = exp_nonpositive(_mm512_sub_ps(load_bf16(l + 16), top));
    __m512 fv = _mm512_set1_ps(factor);
    _mm512_store_si512((__m512i *)out, (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(eb, fv), _mm512_mul_ps(ea, fv)));
    if (t >= c && t < c + 32) {
        float e[32] __attribute__((aligned(64)));
        _mm512_store_ps(e, ea);
        _mm512_store_ps(e + 16, eb);
        out[t - c] = round_bf16(e[t - c] * factor - scale);
    }
}

/* g's columns [vs, vs + len) into s->g (rows past n zero); their sums, row after row, into db[0, len) (or none);
   and, with `tiles`, the same columns transposed into s->tiles as dW's product takes them (rows past n zero): each
   row pair interleaved into s->pairs as soon as its second row is in, and each 32 rows' pairs transposed as soon as
   they are all in, both from L1. With a loss, g is the logits and the columns are the loss's gradient, formed as
   they are read. Each row's segment of g lies in its own page: the one 8 rows on is fetched ahead (the hardware's
   prefetcher follows runs within a page only). */
static void vocab_gather(const uint16_t *g, int64_t n, int64_t padded_n, int64_t v, int64_t vs, int64_t len,
                         vocab_scratch *s, int tiles, float *db, const vocab_loss *loss) {
    uint16_t *out = s->g;
    int64_t k_tiles = padded_n / 32;
    float sums[VOCAB_STEP] __attribute__((aligned(64)));
    memset(sums, 0, sizeof sums);
    for (int64_t r = 0; r < n; r++) {
        __m512 top = _mm512_setzero_ps();
        float factor = 0.0f;
        int64_t t = 0;
        if (loss) {
            top = _mm512_set1_ps(loss->row_max[r]);
            factor = (1.0f / loss->row_total[r]) * loss->scale;
            t = loss->targets[r];
        }
        for (int64_t j = 0; j < len; j += 32) {
            if (r + 8 < n) _mm_prefetch((const char *)(g + (r + 8) * v + vs + j), _MM_HINT_T0);
            if (loss) {
                loss_gradient_line(g + r * v + vs + j, vs + j, t, top, factor, loss->scale, out + r * VOCAB_STEP + j);
            } else {
                __m512i line = _mm512_loadu_si512((const void *)(g + r * v + vs + j));
                _mm512_store_si512((__m512i *)(out + r * VOCAB_STEP + j), line);
            }
            if (db) {
                const uint16_t *o = out + r * VOCAB_STEP + j;
                _mm512_store_ps(sums + j, _mm512_add_ps(_mm512_load_ps(sums + j), load_bf16(o)));
                _mm512_store_ps(sums + j + 16, _mm512_add_ps(_mm512_load_ps(sums + j + 16), load_bf16(o + 16)));
            }
        }
        if (tiles && ((r & 1) || r + 1 == n)) {
            const uint16_t *even = out + (r & ~(int64_t)1) * VOCAB_STEP, *odd = r & 1 ? out + r * VOCAB_STEP : NULL;
            for (int64_t j = 0; j < len; j += 32)
                interleave_rows(even + j, odd ? odd + j : NULL, 32, s->pairs + 32 * j + (r & 31 & ~1) * 32);
        }
        if (tiles && ((r & 31) == 31 || r + 1 == n)) /* the pairs past n read as zero */
            for (int64_t j = 0; j < len; j += 32)
                for (int64_t h = 0; h < 2; h++) /* columns j to j + 15, then j + 16 to j + 31 */
                    transpose16(s->pairs + 32 * j + 32 * h, 64, (r & 31) / 2 + 1,
                                s->tiles + ((j / 16 + h) * k_tiles + r / 32) * 512);
    }
    memset(out + n * VOCAB_STEP, 0, (padded_n - n) * VOCAB_STEP * sizeof(uint16_t));
    if (db) memcpy(db, sums, len * sizeof(float));
}

/* W's rows [0, len) (float32, row stride d) rounded to bf16, in row pairs: tiles [column tile][kt][16 row pairs]
   [16 columns][2], VOCAB_STEP / 32 tiles from one column tile to the next; the rows 16 on fetched ahead (across
   page boundaries, where the hardware's prefetcher stops; past W's end harmless, a prefetch does not fault). */
static void vocab_pack_rows(const float *w, int64_t d, int64_t len, uint16_t *wp) {
    int64_t step_tiles = VOCAB_STEP / 32;
    uint16_t r0[32] __attribute__((aligned(64))), r1[32] __attribute__((aligned(64)));
    for (int64_t p = 0; p < len / 2; p++) {
        const float *a = w + 2 * p * d, *b = a + d;
        for (int64_t j = 0; j < 2 * d; j += 16) _mm_prefetch((const char *)(a + 16 * d + j), _MM_HINT_T0);
        for (int64_t j = 0; j < d; j += 32) {
            _mm512_store_si512((__m512i *)r0, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + j + 16),
                                                                          _mm512_loadu_ps(a + j)));
            _mm512_store_si512((__m512i *)r1, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(b + j + 16),
                                                                          _mm512_loadu_ps(b + j)));
            put_row_pair(r0, r1, 2 * p, j, step_tiles, wp);
        }
    }
}

/* acc (padded_n x d float32) += gs @ W16 over the step's len rows (zeroed first at a chunk's first step), 32 x 32
   outputs at a time in the accumulator tiles, W16's tiles at wp (step_tiles tiles from one column tile to the
   next); the next step's lines of g and of W16 fetched `per` and `w_per` at a time between the tile steps. */
static void vocab_input_step(const uint16_t *gs, const uint16_t *wp, int64_t step_tiles, int64_t padded_n, int64_t d,
                             int64_t len, int first, float *acc, vocab_ahead *ahead, int64_t per,
                             vocab_ahead *w_ahead, int64_t w_per) {
    for (int64_t row = 0; row < padded_n; row += 32) {
        const uint16_t *a = gs + row * VOCAB_STEP, *a1 = a + 16 * VOCAB_STEP;
        for (int64_t ct = 0; ct < d / 16; ct += 2) {
            float *c = acc + row * d + 16 * ct;
            if (first) {
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            } else {
                _tile_loadd(0, c, d * 4);
                _tile_loadd(1, c + 16, d * 4);
                _tile_loadd(2, c + 16 * d, d * 4);
                _tile_loadd(3, c + 16 * d + 16, d * 4);
            }
            const uint16_t *b0 = wp + ct * step_tiles * 512, *b1 = b0 + step_tiles * 512;
            for (int64_t kt = 0; kt < len / 32; kt++) {
                block_step(a + kt * 32, a1 + kt * 32, VOCAB_STEP, b0 + kt * 512, b1 + kt * 512);
                fetch_ahead(ahead, per);
                fetch_ahead(w_ahead, w_per);
            }
            _tile_stored(0, c, d * 4);
            _tile_stored(1, c + 16, d * 4);
            _tile_stored(2, c + 16 * d, d * 4);
            _tile_stored(3, c + 16 * d + 16, d * 4);
        }
    }
}

/* dW's len rows for the step (dw: the first, float32, row stride d) = gs^T @ x, 32 x 32 outputs at a time in the
   accumulator tiles (both operands' tiles used twice; gs^T the tiles vocab_gather made); the next step's lines of g
   fetched `per` at a time between the groups of 32 rows. */
static void vocab_weight_step(const uint16_t *xp, int64_t padded_n, int64_t d, int64_t len, vocab_scratch *s,
                              float *dw, vocab_ahead *ahead, int64_t per) {
    int64_t k_tiles = padded_n / 32;
    float acc[32 * 32] __attribute__((aligned(64)));
    for (int64_t c = 0; c < len; c += 32) {
        const uint16_t *a0 = s->tiles + c / 16 * k_tiles * 512, *a1 = a0 + k_tiles * 512;
        for (int64_t ct = 0; ct < d / 16; ct += 2) {
            const uint16_t *b0 = xp + ct * k_tiles * 512, *b1 = b0 + k_tiles * 512;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int64_t kt = 0; kt < k_tiles; kt++)
                block_step(a0 + kt * 512, a1 + kt * 512, 32, b0 + kt * 512, b1 + kt * 512);
            _tile_stored(0, acc, 128);
            _tile_stored(1, acc + 16, 128);
            _tile_stored(2, acc + 512, 128);
            _tile_stored(3, acc + 528, 128);
            stream_block(acc, dw + c * d + 16 * ct, d);
        }
        fetch_ahead(ahead, per);
    }
}

/* One chunk [v0, v1) of the vocabulary, step by step: acc (dX's partial for the chunk), dW's and db's rows, each
   NULL where not asked for. */
static void vocab_chunk(const uint16_t *g, const float *w, const uint16_t *pairs, const uint16_t *xp, int64_t n,
                        int64_t padded_n, int64_t v, int64_t d, int64_t v0, int64_t v1, float *acc, float *dw,
                        float *db, vocab_scratch *s, const vocab_loss *loss) {
    if (acc && v0 == v1) memset(acc, 0, padded_n * d * sizeof(float));
    for (int64_t vs = v0; vs < v1; vs += VOCAB_STEP) {
        int64_t len = v1 - vs < VOCAB_STEP ? v1 - vs : VOCAB_STEP, next = vs + len;
        int64_t next_len = v1 - next < VOCAB_STEP ? v1 - next : VOCAB_STEP;
        vocab_gather(g, n, padded_n, v, vs, len, s, dw != NULL, db ? db + vs : NULL, loss);
        vocab_ahead ahead = {(const char *)(g + next), 2 * v, next_len / 32, 0, n * (next_len / 32)};
        if (acc) {
            int64_t steps = padded_n / 32 * (d / 32) * (len / 32);
            if (!pairs) vocab_pack_rows(w + vs * d, d, len, s->w);
            vocab_ahead w_ahead = {pairs ? (const char *)(pairs + next / 32 * 512) : NULL, v / 32 * 1024, next_len / 2,
                                   0, pairs ? d / 16 * (next_len / 2) : 0}; /* each column tile's 16 lines a block */
            vocab_input_step(s->g, pairs ? pairs + vs / 32 * 512 : s->w, pairs ? v / 32 : VOCAB_STEP / 32, padded_n, d,
                             len, vs == v0, acc, &ahead, (ahead.total + steps - 1) / steps, &w_ahead,
                             (w_ahead.total + steps - 1) / steps);
        }
        if (dw)
            vocab_weight_step(xp, padded_n, d, len, s, dw + vs * d, &ahead, (ahead.total + len / 32 - 1) / (len / 32));
    }
}

/* targets NULL: g is dlogits. Else g is the logits and dlogits are the loss's gradient, formed as they are read
   from targets (n, each in [0, v)), row_max and row_total (xm_vocab_forward's) and scale (1 / N for a mean).
   pairs: W16 as xm_vocab_forward's w16 wrote it (W then not read), or NULL (W rounded and packed step by step). */
int xm_vocab_backward(const uint16_t *g, const uint16_t *x, const float *w, int64_t n, int64_t v, int64_t d,
                      uint16_t *dx, float *dw, float *db, const int64_t *targets, const float *row_max,
                      const float *row_total, float scale, const uint16_t *pairs) {
    int64_t padded_n = (n + 31) / 32 * 32, blocks = v / 32;
    vocab_loss loss = {targets, row_max, row_total, scale};
    uint16_t *xp = dw ? aligned_alloc(64, padded_n * d * sizeof(uint16_t)) : NULL;
    float *partial = dx ? aligned_alloc(64, VOCAB_CHUNKS * padded_n * d * sizeof(float)) : NULL;
    int failed = (dw && !xp) || (dx && !partial);
    if (!failed) {
        if (dw) pack_pairs(x, d, n, padded_n, d, xp);
#pragma omp parallel reduction(| : failed)
        {
            vocab_scratch s;
            int ok = vocab_scratch_alloc(&s, padded_n, d); /* every thread meets the loop, none works without */
            failed = !ok;
            if (ok) configure_tiles();
#pragma omp for schedule(static)
            for (int ch = 0; ch < VOCAB_CHUNKS; ch++) {
                int64_t v0 = 32 * (blocks * ch / VOCAB_CHUNKS), v1 = 32 * (blocks * (ch + 1) / VOCAB_CHUNKS);
                if (ok) vocab_chunk(g, w, pairs, xp, n, padded_n, v, d, v0, v1,
                                    dx ? partial + ch * padded_n * d : NULL, dw, db, &s, targets ? &loss : NULL);
            }
            if (ok) _tile_release();
            vocab_scratch_free(&s);
            _mm_sfence();
            if (dx) {
#pragma omp for schedule(static)
                for (int64_t r = 0; r < n; r++)
                    for (int64_t j = 0; j < d; j += 16) {
                        __m512 sum = _mm512_load_ps(partial + r * d + j);
                        for (int ch = 1; ch < VOCAB_CHUNKS; ch++)
                            sum = _mm512_add_ps(sum, _mm512_load_ps(partial + (ch * padded_n + r) * d + j));
                        _mm256_storeu_si256((__m256i *)(dx + r * d + j), (__m256i)_mm512_cvtneps_pbh(sum));
                    }
            }
        }
    }
    free(xp);
    free(partial);
    return failed ? -1 : 0;
}

/* The language modules in bf16 autocast training (xm_modules_train, xm_modules_train_backward): for each segment s
   of consecutive rows, with its own module (float32 parameters, the weights rounded to bf16 as they are packed, as
   autocast's casts round them):
     H = x W1^T + b1, G = gelu_erf(H), y = G W2^T + b2     (float32 sums; G, y and S = gelu'(H) stored bf16)
   and from dy: db2 = sum_rows dy, dW2 = dy^T G, dG = dy W2, dH = dG S, db1 = sum_rows dH, dW1 = dH^T x,
   dx = dH W1 (weight and bias gradients float32, dx bf16). Each thread takes whole segments (consecutive, balanced
   by rows), so no sum crosses threads and the bits do not depend on the thread count. The products are 32 x 32
   blocks in the four accumulator tiles; the operands summed over rows (dW1, dW2) come as pack_pairs tiles, each
   transposed by transpose16 where it is the left operand (X^T's rows are X's columns). Requires d % 32 == 0 and
   r % 32 == 0; any row count (the last block of a segment padded with zeros). */

/* GELU x Phi(x) (the same operations as gelu_erf, so the same bits) and, into *slope, its derivative
   Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) (as 2^(-x^2 log2(e) / 2)): both from one erf tail, in the
   forward's epilogue, so that the backward only multiplies (denormals flushed by begin). */
static inline __m512 gelu_erf_and_slope(__m512 x, __m512 *slope) {
    __m512 tail = normal_tail(x);
    __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 cdf = _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(1.0f), tail), tail);
    __m512 power = _mm512_mul_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(-0.72134752f));
    __m512 density = _mm512_mul_ps(_mm512_scalef_ps(exp2_fraction(power), power), _mm512_set1_ps(0.39894228f));
    *slope = _mm512_fmadd_ps(x, density, cdf);
    return _mm512_mul_ps(x, cdf);
}

/* What a 32 x 32 block of a module product does with its float32 sums. */
enum { MT_INNER, MT_OUTER, MT_HIDDEN, MT_ROUND, MT_FLOAT };
typedef struct {
    int kind;          /* MT_INNER: +b1 (H), GELU(H) to g and gelu'(H) to h; MT_OUTER: +b2 to out; MT_HIDDEN: times h
                          (gelu'(H)) to out, summed into sums; MT_ROUND: rounded to out; MT_FLOAT: float32 to fout */
    const float *bias; /* MT_INNER, MT_OUTER */
    uint16_t *h, *g;   /* MT_INNER: written; MT_HIDDEN: h read (GELU's slope at H, bf16) */
    uint16_t *out;     /* bf16 result (row stride ld) */
    float *fout;       /* MT_FLOAT's result (row stride ld) */
    float *sums;       /* MT_HIDDEN: column sums of the float32 result over the valid rows (added to) */
    int64_t ld;
    int stream;        /* MT_FLOAT: fout 64-byte aligned and ld a multiple of 16: non-temporal stores */
} mt_epilogue;

static inline void mt_store(uint16_t *p, __m512 v) { _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(v)); }

/* A finished block whose epilogue runs piecewise during the next block's tile products (as drain does for products):
   2 units (16 columns each) per valid row, `next` the first not yet done. */
typedef struct {
    const float *acc;
    int64_t row, col, units, next;
} mt_pending;

/* The next `units` units of p's epilogue (all that remain for units >= 64), in order: row after row, so the column
   sums of MT_HIDDEN add the rows in order. The epilogue's fields are read into locals and the kind chosen once,
   outside the loop over units: the intrinsics' stores may alias anything, so in a loop reading e's fields the
   compiler reloaded each of them after every store (load slots the tile loads of the products compete for); the
   backward alone took ~0.05 ms less of ~0.9 ms at 8 segments x 256 rows, d 256, r 128, one thread. Always inlined
   (as mt_product is): left to gcc, a change elsewhere in this section made it call mt_drain out of line from the
   forward's products, the forward 2-4% slower (round11/modtrain.md). */
static inline __attribute__((always_inline)) void mt_drain(const mt_epilogue *e, mt_pending *p, int64_t units) {
    int64_t end = p->next + units < p->units ? p->next + units : p->units, ld = e->ld, row = p->row, col = p->col;
    const float *acc = p->acc, *bias = e->bias;
    uint16_t *out = e->out, *h = e->h, *g = e->g;
    float *fout = e->fout, *sums = e->sums;
    switch (e->kind) {
    case MT_INNER:
        for (int64_t u = p->next; u < end; u++) {
            int64_t c = col + 16 * (u & 1), at = (row + (u >> 1)) * ld + c;
            __m512 v = _mm512_load_ps(acc + (u >> 1) * 32 + 16 * (u & 1)), slope;
            mt_store(g + at, gelu_erf_and_slope(_mm512_add_ps(v, _mm512_loadu_ps(bias + c)), &slope));
            mt_store(h + at, slope);
        }
        break;
    case MT_OUTER:
        for (int64_t u = p->next; u < end; u++) {
            int64_t c = col + 16 * (u & 1), at = (row + (u >> 1)) * ld + c;
            mt_store(out + at, _mm512_add_ps(_mm512_load_ps(acc + (u >> 1) * 32 + 16 * (u & 1)),
                                             _mm512_loadu_ps(bias + c)));
        }
        break;
    case MT_HIDDEN:
        for (int64_t u = p->next; u < end; u++) {
            int64_t c = col + 16 * (u & 1), at = (row + (u >> 1)) * ld + c;
            __m512 v = _mm512_mul_ps(_mm512_load_ps(acc + (u >> 1) * 32 + 16 * (u & 1)), load_bf16(h + at));
            mt_store(out + at, v);
            _mm512_storeu_ps(sums + c, _mm512_add_ps(_mm512_loadu_ps(sums + c), v));
        }
        break;
    case MT_ROUND:
        for (int64_t u = p->next; u < end; u++)
            mt_store(out + (row + (u >> 1)) * ld + col + 16 * (u & 1), _mm512_load_ps(acc + (u >> 1) * 32 + 16 * (u & 1)));
        break;
    default: /* float32 weight gradients, written once and read by the optimizer: not through the cache */
        for (int64_t u = p->next; u < end; u++) {
            int64_t at = (row + (u >> 1)) * ld + col + 16 * (u & 1);
            __m512 v = _mm512_load_ps(acc + (u >> 1) * 32 + 16 * (u & 1));
            if (e->stream) _mm512_stream_ps(fout + at, v);
            else _mm512_storeu_ps(fout + at, v);
        }
    }
    p->next = end;
}

/* The next segment's operands fetched into L2 during this segment's products, a few lines per step: up to 4
   regions (bytes), spread evenly over a product's steps. In a training step the forward's float32 weights come from
   memory (the optimizer wrote them a step before): fetched ahead, the forward's modules took ~0.58 ms less of ~4.9 ms
   per step of 4 layers (round9/modules_training_step.py, one thread). The backward's saved operands fetched so
   gained 0.12-0.15 ms of ~5.5 (fetching dy, hot, as well lost 0.25), within the noise: not done. Alone, with
   everything in the caches, neither gains (the prefetches take load slots the tile loads need). */
typedef struct {
    const char *at[4];
    int64_t lines[4];
    int count, region;
    int64_t offset, total, done;
} mt_ahead;

static mt_ahead mt_ahead_of(int count, const void *const *at, const int64_t *bytes) {
    mt_ahead a = {.count = count, .region = 0, .offset = 0, .total = 0, .done = 0};
    for (int i = 0; i < count; i++) {
        a.at[i] = (const char *)at[i];
        a.lines[i] = (bytes[i] + 63) / 64;
        a.total += a.lines[i];
    }
    return a;
}

static inline void mt_ahead_until(mt_ahead *a, int64_t until) {
    for (; a->done < until; a->done++) {
        while (a->offset >= a->lines[a->region]) a->region++, a->offset = 0;
        _mm_prefetch(a->at[a->region] + 64 * a->offset++, _MM_HINT_T1);
    }
}

/* C (m x n) = A B over k_tiles steps of 32, 32 x 32 blocks in the accumulator tiles, each block's epilogue run
   during the next block's steps (st->acc's two buffers), all done on return. A: row-major rows (row stride lda, step
   a_step = 32 values; `valid` rows exist, the last block's missing rows read from a zero-padded copy in `padded`,
   32 x 32 k_tiles values), or transposed tiles (lda 32, a_step 512, the next 16 rows `half` values on, every 32 rows
   `next` values on; valid == m). B packed: [n / 16][k_tiles][16 pairs][16][2]. `ahead` (or NULL): fetched into L2
   over the steps, all requested on return. Always inlined, so that each call's epilogue kind is a constant (its
   switch folded away) and gcc's inlining of mt_drain does not depend on the rest of the file: the backward alone
   2-7% faster than with gcc's choice (round11/modtrain.md). */
static inline __attribute__((always_inline)) void mt_product(thread_state *st, const uint16_t *a, int64_t lda,
                                                             int64_t a_step, int64_t half, int64_t next, int64_t valid,
                                                             int64_t m, const uint16_t *b, int64_t k_tiles, int64_t n,
                                                             const mt_epilogue *e, uint16_t *padded, mt_ahead *ahead) {
    int64_t per_step = k_tiles ? (64 + k_tiles - 1) / k_tiles : 64; /* no steps: a segment of no rows, dW = 0 */
    int64_t steps = m / 32 * (n / 32) * k_tiles, step = 0;
    mt_pending pending = {NULL, 0, 0, 0, 0};
    for (int64_t row = 0; row < m; row += 32) {
        int64_t live = valid - row < 32 ? valid - row : 32;
        const uint16_t *a0 = a + row / 32 * next;
        if (live < 32) { /* row-major only: the block's rows copied, the rest zero */
            int64_t k = 32 * k_tiles;
            for (int64_t i = 0; i < 32; i++) {
                if (i < live) memcpy(padded + i * k, a0 + i * lda, k * sizeof(uint16_t));
                else memset(padded + i * k, 0, k * sizeof(uint16_t));
            }
            a0 = padded;
        }
        int64_t step_a = live < 32 ? 32 : a_step, ld_a = live < 32 ? 32 * k_tiles : lda;
        const uint16_t *a1 = live < 32 ? a0 + 16 * ld_a : a0 + half;
        for (int64_t c = 0; c < n / 32; c++) {
            const uint16_t *b0 = b + 2 * c * k_tiles * 512, *b1 = b0 + k_tiles * 512;
            float *acc = st->acc[st->current];
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t kt = 0; kt < k_tiles; kt++) {
                block_step(a0 + kt * step_a, a1 + kt * step_a, ld_a, b0 + kt * 512, b1 + kt * 512);
                mt_drain(e, &pending, per_step);
                if (ahead) mt_ahead_until(ahead, ahead->total * ++step / steps);
            }
            mt_drain(e, &pending, 64);
            _tile_stored(0, acc, 128);
            _tile_stored(1, acc + 16, 128);
            _tile_stored(2, acc + 512, 128);
            _tile_stored(3, acc + 528, 128);
            pending = (mt_pending){acc, row, 32 * c, 2 * live, 0};
            st->current ^= 1;
        }
    }
    mt_drain(e, &pending, 64);
    if (ahead) mt_ahead_until(ahead, ahead->total);
}

/* A float32 (n x k) weight rounded to bf16 in xm_pack's layout (the right operand of x W^T), by vocab_tile; and where
   pairs is not NULL (64-byte aligned), the same rounded values in mt_pack_pairs' layout (t = n, c = k), streamed by
   vocab_tile from the registers it rounds into: the weight read and rounded once for both layouts. */
static void mt_pack_rows(const float *w, int64_t n, int64_t k, uint16_t *out, uint16_t *pairs) {
    for (int64_t nt = 0; nt < n / 16; nt++)
        for (int64_t kt = 0; kt < k / 32; kt++)
            vocab_tile(w + 16 * nt * k, k, kt, out + (nt * (k / 32) + kt) * 512,
                       pairs ? pairs + (nt / 2 * 16 + nt % 2 * 8) * 32 + 2 * kt * (n / 32) * 512 : NULL,
                       (n / 32) * 512);
}

/* A float32 (t x c) weight rounded to bf16 as pack_pairs lays out bf16 rows (the right operand of products summing
   over its t rows: dG = dy W2, dx = dH W1): [c / 16][t / 32][16 row pairs][16][2], each two rows interleaved as
   put_row_pair does, by plain stores: the forward's way where out is not 64-byte aligned (aligned, mt_pack_rows
   streams the same values from its own rounding: read only by the backward, long after in a training step, they are
   not first read for ownership; the forward's modules took ~0.18 ms less per step of 4 layers streamed,
   round9/modules_training_step.py, one thread; 0.10-0.38 ms over three runs). */
static void mt_pack_pairs(const float *w, int64_t t, int64_t c, uint16_t *out) {
    const __m512i low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                         39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
    for (int64_t r = 0; r < t; r += 2)
        for (int64_t j = 0; j < c; j += 32) {
            const float *a = w + r * c + j, *b = a + c;
            __m512i r0 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + 16), _mm512_loadu_ps(a));
            __m512i r1 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(b + 16), _mm512_loadu_ps(b));
            uint16_t *tile_row = out + ((r / 32) * 16 + (r % 32) / 2) * 32 + (j / 16) * (t / 32) * 512;
            _mm512_storeu_si512((void *)tile_row, _mm512_permutex2var_epi16(r0, low, r1));
            _mm512_storeu_si512((void *)(tile_row + (t / 32) * 512), _mm512_permutex2var_epi16(r0, high, r1));
        }
}

/* Whether float32 rows at p, ld apart, can take aligned 64-byte stores. */
static inline int mt_aligned(const float *p, int64_t ld) { return ((uintptr_t)p & 63) == 0 && ld % 16 == 0; }

/* The segments [*first, *last) of this thread: segment s to thread floor(threads x (its middle row) / total), so
   each thread's segments are consecutive and about as many rows as the others'. */
static void mt_own_segments(const int64_t *rows, int64_t segments, int64_t *first, int64_t *last) {
    int threads = omp_get_num_threads(), me = omp_get_thread_num();
    int64_t total = 0, start = 0;
    for (int64_t s = 0; s < segments; s++) total += rows[s];
    *first = segments, *last = segments;
    for (int64_t s = 0; s < segments; start += rows[s], s++) {
        int64_t owner = total ? (int64_t)threads * (2 * start + rows[s]) / (2 * total) : 0;
        if (owner >= threads) owner = threads - 1;
        if (owner == me && *first == segments) *first = s;
        if (owner > me) {
            *last = s;
            break;
        }
    }
    if (*first == segments) *last = segments;
}

static int64_t mt_max_rows(const int64_t *rows, int64_t segments) {
    int64_t most = 0;
    for (int64_t s = 0; s < segments; s++) most = rows[s] > most ? rows[s] : most;
    return (most + 31) / 32 * 32;
}

/* The forward: x (all rows, d each, contiguous bf16); w1s[s] (r x d), b1s[s] (r), w2s[s] (d x r), b2s[s] (d) float32;
   writes y (rows x d, bf16) and what the backward reads: h and g (rows x r: GELU's slope at H and GELU(H), bf16) and
   pairs (per segment W2 then W1 rounded to bf16 in mt_pack_pairs' layout: the right operands of dG = dy W2 and
   dx = dH W1, packed here from the float32 rows just read, so the backward reads half the bytes and packs nothing).
   Returns 0, or -1 if a buffer could not be allocated. */
int xm_modules_train(int64_t segments, const int64_t *rows, const uint64_t *w1s, const uint64_t *b1s,
                     const uint64_t *w2s, const uint64_t *b2s, const uint16_t *x, int64_t d, int64_t r, uint16_t *h,
                     uint16_t *g, uint16_t *y, uint16_t *pairs) {
    int failed = 0;
    int64_t wide = d > r ? d : r;
#pragma omp parallel reduction(| : failed)
    {
        int64_t first, last, start = 0;
        mt_own_segments(rows, segments, &first, &last);
        for (int64_t s = 0; s < first; s++) start += rows[s];
        thread_state *st = begin();
        uint16_t *w1 = aligned_alloc(64, r * d * sizeof(uint16_t)), *w2 = aligned_alloc(64, r * d * sizeof(uint16_t));
        uint16_t *padded = aligned_alloc(64, 32 * wide * sizeof(uint16_t));
        failed = !st || !w1 || !w2 || !padded;
        for (int64_t s = first; s < last && !failed; start += rows[s], s++) {
            int64_t m = (rows[s] + 31) / 32 * 32;
            /* the backward's operands too: from the same rounded values (streamed out), or where pairs is not
               64-byte aligned by mt_pack_pairs, while the float32 rows are in the cache */
            int aligned = ((uintptr_t)pairs & 63) == 0;
            mt_pack_rows((const float *)w1s[s], r, d, w1, aligned ? pairs + (2 * s + 1) * r * d : NULL);
            mt_pack_rows((const float *)w2s[s], d, r, w2, aligned ? pairs + 2 * s * r * d : NULL);
            if (!aligned) {
                mt_pack_pairs((const float *)w2s[s], d, r, pairs + 2 * s * r * d);
                mt_pack_pairs((const float *)w1s[s], r, d, pairs + (2 * s + 1) * r * d);
            }
            mt_epilogue inner = {.kind = MT_INNER, .bias = (const float *)b1s[s], .h = h + start * r,
                                 .g = g + start * r, .ld = r};
            /* the next segment's x and weights into L2 meanwhile (mt_ahead) */
            int more = s + 1 < last;
            const void *next_h[2] = {x + (start + rows[s]) * d, more ? (const void *)w1s[s + 1] : NULL};
            int64_t next_h_bytes[2] = {more ? rows[s + 1] * d * 2 : 0, more ? r * d * 4 : 0};
            mt_ahead ahead = mt_ahead_of(2, next_h, next_h_bytes);
            mt_product(st, x + start * d, d, 32, 16 * d, 32 * d, rows[s], m, w1, d / 32, r, &inner, padded, &ahead);
            mt_epilogue outer = {.kind = MT_OUTER, .bias = (const float *)b2s[s], .out = y + start * d, .ld = d};
            const void *next_y[3] = {more ? (const void *)w2s[s + 1] : NULL, more ? (const void *)b1s[s + 1] : NULL,
                                     more ? (const void *)b2s[s + 1] : NULL};
            int64_t next_y_bytes[3] = {more ? r * d * 4 : 0, more ? r * 4 : 0, more ? d * 4 : 0};
            ahead = mt_ahead_of(3, next_y, next_y_bytes);
            mt_product(st, g + start * r, r, 32, 16 * r, 32 * r, rows[s], m, w2, r / 32, d, &outer, padded, &ahead);
        }
        free(w1);
        free(w2);
        free(padded);
        _mm_sfence(); /* pairs' streamed stores */
        end(st);
    }
    return failed ? -1 : 0;
}

/* bf16 rows (t of c values, row stride c, rows up to padded_t zero) as the left operand of X^T products: pack_pairs'
   tiles, each transposed (16 columns x 32 rows): [c / 16][padded_t / 32][16][16 row pairs][2]; with `sums` (or
   NULL), the column sums of the t rows, row after row (db2's order), from the same loads. One pass over x, 32
   columns at a time down all rows, by the weight gradients' weight_grad_columns (whose blocks of dY^T are these
   tiles): each tile's row pairs interleaved into an L1 buffer and transposed from there (packing all of x, then
   transposing it in place, read and wrote it twice through L2). */
static void mt_pack_transposed(const uint16_t *x, int64_t t, int64_t padded_t, int64_t c, uint16_t *out,
                               float *sums) {
    uint16_t pairs[16 * 64] __attribute__((aligned(64)));
    int64_t row_tiles = padded_t / 32;
    for (int64_t nb = 0; nb < c / 32; nb++)
        weight_grad_columns(x, c, t, row_tiles, nb, out + 2 * nb * row_tiles * 512, pairs,
                            sums ? sums + 32 * nb : NULL);
}

/* The backward from dy (rows x d, bf16) with the forward's x, h (GELU's slope), g and pairs: dx (rows x d, bf16);
   dw1s[s] (r x d), db1s[s] (r), dw2s[s] (d x r), db2s[s] (d) float32, each written whole. Returns 0, or -1 if a
   buffer could not be allocated. */
int xm_modules_train_backward(int64_t segments, const int64_t *rows, const uint16_t *pairs, const uint16_t *x,
                              const uint16_t *h, const uint16_t *g, const uint16_t *dy, int64_t d,
                              int64_t r, uint16_t *dx, const uint64_t *dw1s, const uint64_t *db1s,
                              const uint64_t *dw2s, const uint64_t *db2s) {
    int failed = 0;
    int64_t most = mt_max_rows(rows, segments), wide = d > r ? d : r;
#pragma omp parallel reduction(| : failed)
    {
        int64_t first, last, start = 0;
        mt_own_segments(rows, segments, &first, &last);
        for (int64_t s = 0; s < first; s++) start += rows[s];
        thread_state *st = begin();
        uint16_t *padded = aligned_alloc(64, 32 * wide * sizeof(uint16_t));
        uint16_t *left = aligned_alloc(64, most * wide * sizeof(uint16_t));   /* dy^T, then dH^T */
        uint16_t *right = aligned_alloc(64, most * wide * sizeof(uint16_t));  /* G's pairs, then x's */
        uint16_t *dh = aligned_alloc(64, most * r * sizeof(uint16_t));
        failed = !st || !padded || !left || !right || !dh;
        for (int64_t s = first; s < last && !failed; start += rows[s], s++) {
            int64_t n = rows[s], m = (n + 31) / 32 * 32, tiles = m / 32;
            const uint16_t *dys = dy + start * d, *xs = x + start * d;
            float *db1 = (float *)db1s[s], *db2 = (float *)db2s[s];
            /* dW2 = dy^T G; db2, dy's column sums, as dy^T is laid out */
            mt_pack_transposed(dys, n, m, d, left, db2);
            pack_pairs(g + start * r, r, n, m, r, right);
            mt_epilogue weights2 = {.kind = MT_FLOAT, .fout = (float *)dw2s[s], .ld = r,
                                    .stream = mt_aligned((float *)dw2s[s], r)};
            mt_product(st, left, 32, 512, tiles * 512, 2 * tiles * 512, d, d, right, tiles, r, &weights2, padded,
                       NULL);
            /* dH = (dy W2) S, db1 its column sums */
            memset(db1, 0, r * sizeof(float));
            mt_epilogue hidden = {.kind = MT_HIDDEN, .h = (uint16_t *)h + start * r, .out = dh, .sums = db1, .ld = r};
            mt_product(st, dys, d, 32, 16 * d, 32 * d, n, m, pairs + 2 * s * r * d, d / 32, r, &hidden, padded, NULL);
            /* dx = dH W1 */
            mt_epilogue input = {.kind = MT_ROUND, .out = dx + start * d, .ld = d};
            mt_product(st, dh, r, 32, 16 * r, 32 * r, n, m, pairs + (2 * s + 1) * r * d, r / 32, d, &input, padded,
                       NULL);
            /* dW1 = dH^T x */
            mt_pack_transposed(dh, n, m, r, left, NULL);
            pack_pairs(xs, d, n, m, d, right);
            mt_epilogue weights1 = {.kind = MT_FLOAT, .fout = (float *)dw1s[s], .ld = d,
                                    .stream = mt_aligned((float *)dw1s[s], d)};
            mt_product(st, left, 32, 512, tiles * 512, 2 * tiles * 512, r, r, right, tiles, d, &weights1, padded,
                       NULL);
        }
        free(padded);
        free(left);
        free(right);
        free(dh);
        _mm_sfence();
        end(st);
    }
    return failed ? -1 : 0;
}

/* Softmax attention for bf16 inference on processors without AMX (xm_attention_vector).

   xm_attention's computation with AVX-512 alone (AMD's Zen 4 and 5: bf16 products, no tile unit; no tile instruction
   here, no begin()): float32 scores of bf16 products, the softmax in float32 and in base 2 (exp2_nonpositive), the
   key mask, the unnormalised probabilities rounded to bf16 for the product with v and that product divided by the
   float32 row sum at the end, the output in (batch, t, heads, d) memory, the (example, head) pairs split between the
   threads and the next pair's rows fetched ahead. Both products by VDPBF16PS, whose step sums a pair of bf16
   products into each of 16 float32 lanes:
   - the scores: k as pack_transposed lays it out for the tile unit, which is also the layout this needs (for 16 keys,
     one vector per d-pair): a step multiplies 16 keys by one query's d-pair, broadcast from memory;
   - probabilities @ v: v by key pairs (keys 2m and 2m + 1 interleaved over d, interleave_rows): a step multiplies
     16 d values by one query's pair of probabilities, broadcast.
   VECTOR_ROWS queries at a time against 32 keys (scores) or 32 d values (the output), 16 accumulators: each vector of
   k or v loaded serves VECTOR_ROWS queries. Rows past t in the last block repeat row t - 1 (computed, not stored).
   On a 2-core Zen 5 at one thread, 12 heads of 64 at batch 8 x 128 took 1.2-1.5 ms, 3-4x less than
   bf16_attention's hi + lo products and 5x less than torch's SDPA (docs/results/amx-perf/round12/vattn.md); blocks of
   4 and of 12 rows were 5-20% slower, and without the fetching ahead T 32 at batch 81 was 15% slower. */
#define VECTOR_ROWS 8

/* A query's (or probability row's) 32-bit pair at p broadcast to 16 lanes: one operand of VDPBF16PS. */
static inline __m512bh pair_broadcast(const uint16_t *p) {
    int32_t pair;
    memcpy(&pair, p, 4);
    return (__m512bh)_mm512_set1_epi32(pair);
}

/* The float32 scores of VECTOR_ROWS queries (rows[r]: query r's d values) against keys [j0, j0 + 32), into
   scores + j0 (row stride ld floats); kp: k by pack_transposed (16 keys' d-pair p at kp + 16 d (j / 16) + 32 p). */
static inline void inference_scores(const uint16_t *const *rows, const uint16_t *kp, int64_t d, int64_t j0,
                                 float *scores, int64_t ld) {
    __m512 acc[VECTOR_ROWS][2];
    for (int r = 0; r < VECTOR_ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const uint16_t *k0 = kp + j0 * d, *k1 = k0 + 16 * d;
    for (int64_t p = 0; p < d / 2; p++) {
        __m512bh a = (__m512bh)_mm512_load_si512((const void *)(k0 + 32 * p));
        __m512bh b = (__m512bh)_mm512_load_si512((const void *)(k1 + 32 * p));
        for (int r = 0; r < VECTOR_ROWS; r++) {
            __m512bh x = pair_broadcast(rows[r] + 2 * p);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, a);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b);
        }
    }
    for (int r = 0; r < VECTOR_ROWS; r++) {
        _mm512_store_ps(scores + r * ld + j0, acc[r][0]);
        _mm512_store_ps(scores + r * ld + j0 + 16, acc[r][1]);
    }
}

/* VECTOR_ROWS rows' softmax numerators as xm_attention forms them: over the live keys 2^(c s - c max) (0 for masked
   keys and keys past t; no shift where none is live), rounded to bf16 into probs (row stride padded_t); inverse[r]:
   1 / row r's float32 sum (0 where it is 0). The rows' maxima first, then their exponentials: each pass's rows
   independent, so that one row's reductions overlap the next row's work. */
static inline void inference_softmax_rows(const float *scores, const __mmask16 *live, int64_t padded_t, float c,
                                       uint16_t *probs, float *inverse) {
    float shift[VECTOR_ROWS];
    for (int r = 0; r < VECTOR_ROWS; r++) {
        const float *row = scores + r * padded_t;
        __m512 top = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < padded_t; j += 16)
            top = _mm512_mask_max_ps(top, live[j >> 4], top, _mm512_load_ps(row + j));
        float peak = _mm512_reduce_max_ps(top);
        shift[r] = peak == -INFINITY ? 0.0f : -peak * c;
    }
    __m512 cv = _mm512_set1_ps(c);
    for (int r = 0; r < VECTOR_ROWS; r++) {
        const float *row = scores + r * padded_t;
        __m512 sv = _mm512_set1_ps(shift[r]), total = _mm512_setzero_ps(), other = _mm512_setzero_ps();
        for (int64_t j = 0; j < padded_t; j += 32) { /* 32 at a time: one rounding instruction for both */
            __m512 p = _mm512_maskz_mov_ps(live[j >> 4],
                                           exp2_nonpositive(_mm512_fmadd_ps(_mm512_load_ps(row + j), cv, sv)));
            __m512 p2 = _mm512_maskz_mov_ps(live[(j >> 4) + 1],
                                            exp2_nonpositive(_mm512_fmadd_ps(_mm512_load_ps(row + j + 16), cv, sv)));
            total = _mm512_add_ps(total, p);
            other = _mm512_add_ps(other, p2);
            _mm512_store_si512((__m512i *)(probs + r * padded_t + j), (__m512i)_mm512_cvtne2ps_pbh(p2, p));
        }
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(total, other));
        inverse[r] = sum > 0 ? 1.0f / sum : 0.0f;
    }
}

/* v (t rows of d bf16, row stride st) by key pairs: keys 2m and 2m + 1 interleaved over d at vp + 2 d m (the pair
   for d value j at 2 j); keys past t zero. */
static void pack_key_pairs(const uint16_t *v, int64_t st, int64_t t, int64_t padded_t, int64_t d, uint16_t *vp) {
    for (int64_t m = 0; 2 * m < padded_t; m++)
        interleave_rows(2 * m < t ? v + 2 * m * st : NULL, 2 * m + 1 < t ? v + (2 * m + 1) * st : NULL, d,
                        vp + 2 * d * m);
}

/* d values [c0, c0 + 32) of VECTOR_ROWS queries' outputs: their probabilities (bf16 rows of stride padded_t) @ v
   (pack_key_pairs) over padded_t keys, times inverse[r] (1 / the row's sum), rounded to bf16 into targets[r] + c0
   for the `valid` rows that exist. */
static inline void inference_values(const uint16_t *probs, const uint16_t *vp, int64_t d, int64_t padded_t, int64_t c0,
                                 const float *inverse, int64_t valid, uint16_t *const *targets) {
    __m512 acc[VECTOR_ROWS][2];
    for (int r = 0; r < VECTOR_ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t m = 0; 2 * m < padded_t; m++) {
        const uint16_t *pair = vp + 2 * d * m + 2 * c0;
        __m512bh a = (__m512bh)_mm512_load_si512((const void *)pair);
        __m512bh b = (__m512bh)_mm512_load_si512((const void *)(pair + 32));
        for (int r = 0; r < VECTOR_ROWS; r++) {
            __m512bh x = pair_broadcast(probs + r * padded_t + 2 * m);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, a);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b);
        }
    }
    for (int r = 0; r < valid; r++) {
        __m512 scale = _mm512_set1_ps(inverse[r]);
        __m512bh rounded = _mm512_cvtne2ps_pbh(_mm512_mul_ps(acc[r][1], scale), _mm512_mul_ps(acc[r][0], scale));
        _mm512_storeu_si512((void *)(targets[r] + c0), (__m512i)rounded);
    }
}

/* Arguments as xm_attention's (q, k, v at ptr[b sb + h sh + t st + j]; keep (batch, t) bytes or NULL; out (batch, t,
   heads, d) contiguous; d % 32 == 0); a row whose every key is masked comes out zero. Returns 0, or -1 if the scratch
   could not be allocated. */
int xm_attention_vector(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t sb, int64_t sh, int64_t st,
                        int64_t batch, int64_t heads, int64_t t, int64_t d, const uint8_t *keep, float scale,
                        uint16_t *out) {
    if (t == 0) return 0; /* nothing to compute (and the fetching ahead divides by t) */
    int64_t padded_t = (t + 31) / 32 * 32;
    float c = scale * 1.44269504f; /* e^(scale s) = 2^(c s) */
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        attention_scratch scratch; /* xm_attention's buffers, of which this uses k, v, scores, probs, live */
        if (!scratch_alloc(&scratch, padded_t, d)) failed = 1;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < batch * heads; item++) {
            if (failed) continue;
            int64_t b = item / heads, h = item % heads;
            const uint16_t *qh = q + b * sb + h * sh, *kh = k + b * sb + h * sh, *vh = v + b * sb + h * sh;
            pack_transposed(kh, st, t, padded_t, d, scratch.kp);
            pack_key_pairs(vh, st, t, padded_t, d, scratch.vp);
            live_key_lanes(keep ? keep + b * t : NULL, t, padded_t, scratch.live);
            heads_ahead ahead = {{0}, {0}, 0, 3, t, 2 * d, 0, 0, 0};
            if (item + 1 < batch * heads) { /* the next (example, head)'s q, k, v and output */
                int64_t nb = (item + 1) / heads, nh = (item + 1) % heads, in = nb * sb + nh * sh;
                ahead_add(&ahead, q + in, st * 2);
                ahead_add(&ahead, k + in, st * 2);
                ahead_add(&ahead, v + in, st * 2);
                ahead_add(&ahead, out + (nb * t * heads + nh) * d, heads * d * 2);
            }
            int64_t per_row = (ahead.matrices * t * (d / 32) + t - 1) / t;
            for (int64_t q0 = 0; q0 < t; q0 += VECTOR_ROWS) {
                int64_t valid = t - q0 < VECTOR_ROWS ? t - q0 : VECTOR_ROWS;
                const uint16_t *rows[VECTOR_ROWS];
                uint16_t *targets[VECTOR_ROWS];
                float inverse[VECTOR_ROWS];
                for (int r = 0; r < VECTOR_ROWS; r++) {
                    int64_t i = r < valid ? q0 + r : t - 1;
                    rows[r] = qh + i * st;
                    targets[r] = out + ((b * t + i) * heads + h) * d;
                }
                for (int64_t j0 = 0; j0 < padded_t; j0 += 32)
                    inference_scores(rows, scratch.kp, d, j0, scratch.scores, padded_t);
                ahead_fetch(&ahead, VECTOR_ROWS * per_row);
                inference_softmax_rows(scratch.scores, scratch.live, padded_t, c, scratch.probs, inverse);
                for (int64_t c0 = 0; c0 < d; c0 += 32)
                    inference_values(scratch.probs, scratch.vp, d, padded_t, c0, inverse, valid, targets);
            }
        }
        scratch_free(&scratch);
    }
    return failed ? -1 : 0;
}

/* The language modules for bf16 inference without AMX (xm_modules_vector): xm_modules' computation and arguments,
   out = norm(W2_s GELU(W1_s x + b1_s) + b2_s + residual) for each segment s, by AVX-512's bf16 pair products. The
   weights are xm_pack's (which has no tile instruction): for 16 outputs, an input pair p's 16 x 2 values at 32 p,
   one vector, which is the operand VDPBF16PS wants against a row's pair (x[2p], x[2p + 1]) broadcast to 16 lanes;
   the rows need no layout of their own (a row's pairs are its consecutive values). VM_ROWS rows x 32 outputs at a
   time (16 accumulators over the whole K), each vector of weights loaded serving VM_ROWS rows; the epilogue on the
   accumulators in registers: bias, GELU (gelu_erf), residual, one rounding to bf16. The threads share the rows
   (own_rows, in 32-row blocks, as xm_modules); each thread's rows in chunks of VM_CHUNK go through the first
   product into `inner` and through the second while they are in its cache, then LayerNorm (norm_row) where asked.
   Rows past the end of a chunk in its last block repeat its last row (computed, not stored). Every row's sums run in
   one order whatever the thread count: the same bits on 1 or 2 threads. Denormals flushed for the call (as
   begin()), MXCSR restored. The sizes may be set by -D for the variant measurements. */
#ifndef VM_ROWS
#define VM_ROWS 8
#endif
#ifndef VM_CHUNK
#define VM_CHUNK 64
#endif
#ifndef VM_AHEAD
#define VM_AHEAD 1
#endif

/* VM_ROWS rows (rows[i]: row i's k values) x the 32 outputs whose packed weights start at w (16 outputs at w, 16 at
   w + 16 k), with the epilogue, into targets[i] for the `valid` first rows; res: residual rows or NULL. `lines` 64-byte
   lines from `ahead` fetched into L1 on the way, two a step (the next weights: see vm_product). */
static inline __attribute__((always_inline)) void vm_block(const uint16_t *const *rows, const uint16_t *w, int64_t k,
                                                            const float *bias, int act, const uint16_t *const *res,
                                                            uint16_t *const *targets, int64_t valid,
                                                            const char *ahead, int64_t lines) {
    __m512 acc[VM_ROWS][2];
    for (int i = 0; i < VM_ROWS; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const uint16_t *w1 = w + 16 * k;
    for (int64_t p = 0; p < k / 2; p++) {
        __m512bh a = (__m512bh)_mm512_load_si512((const void *)(w + 32 * p));
        __m512bh b = (__m512bh)_mm512_load_si512((const void *)(w1 + 32 * p));
        for (int i = 0; i < VM_ROWS; i++) {
            __m512bh x = pair_broadcast(rows[i] + 2 * p);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, a);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b);
        }
        if (VM_AHEAD && 2 * p < lines) {
            _mm_prefetch(ahead + 128 * p, _MM_HINT_T0);
            _mm_prefetch(ahead + 128 * p + 64, _MM_HINT_T0);
        }
    }
    __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
    for (int i = 0; i < valid; i++) {
        __m512 v0 = _mm512_add_ps(acc[i][0], b0), v1 = _mm512_add_ps(acc[i][1], b1);
        if (act) {
            v0 = gelu_erf(v0);
            v1 = gelu_erf(v1);
        }
        if (res) {
            v0 = _mm512_add_ps(v0, load_bf16(res[i]));
            v1 = _mm512_add_ps(v1, load_bf16(res[i] + 16));
        }
        _mm512_storeu_si512((void *)targets[i], (__m512i)_mm512_cvtne2ps_pbh(v1, v0));
    }
}

/* out[from, to) (row stride ldo) = act(a @ W^T + bias) + residual over all n = 32 blocks outputs (W packed, K = k;
   bias float32 or NULL; residual bf16 or NULL). Output columns outer: a block's weights (32 x k) are read from L1
   while the chunk's rows (in L2) pass by; the next block's weights (`after`'s first after the last) are fetched
   meanwhile, a share of them during each row block (where segments have few rows, the weights come from memory). */
static void vm_product(const uint16_t *a, int64_t lda, const uint16_t *w, const float *bias, int act,
                       const uint16_t *residual, int64_t ldr, uint16_t *out, int64_t ldo, int64_t from, int64_t to,
                       int64_t k, int64_t blocks, const uint16_t *after) {
    int64_t row_blocks = (to - from + VM_ROWS - 1) / VM_ROWS, lines = (k + row_blocks - 1) / row_blocks;
    for (int64_t c = 0; c < blocks; c++)
        for (int64_t r0 = from; r0 < to; r0 += VM_ROWS) {
            const char *next = (const char *)(c + 1 < blocks ? w + 32 * (c + 1) * k : after);
            const char *ahead = next + (r0 - from) / VM_ROWS * lines * 64;
            int64_t valid = to - r0 < VM_ROWS ? to - r0 : VM_ROWS;
            const uint16_t *rows[VM_ROWS], *res[VM_ROWS];
            uint16_t *targets[VM_ROWS];
            for (int i = 0; i < VM_ROWS; i++) {
                int64_t row = i < valid ? r0 + i : to - 1;
                rows[i] = a + row * lda;
                res[i] = residual ? residual + row * ldr + 32 * c : NULL;
                targets[i] = out + row * ldo + 32 * c;
            }
            int64_t left = k - (r0 - from) / VM_ROWS * lines; /* lines of the next block not yet asked for */
            vm_block(rows, w + 32 * c * k, k, bias ? bias + 32 * c : NULL, act, residual ? res : NULL, targets,
                     valid, ahead, lines < left ? lines : left);
        }
}

/* Arguments as xm_modules' (weights by xm_pack; d and r multiples of 32). Returns 0. */
int xm_modules_vector(int64_t segments, const int64_t *rows, const uint64_t *first_weights,
                      const uint64_t *first_biases, const uint64_t *second_weights, const uint64_t *second_biases,
                      const uint16_t *x, int64_t ldx, uint16_t *inner, const uint16_t *residual, int64_t ldr,
                      uint16_t *out, int64_t ldo, int64_t d, int64_t r, int norm, const uint16_t *norm_weight,
                      const uint16_t *norm_bias, float eps) {
#pragma omp parallel
    {
        unsigned int csr = _mm_getcsr();
        _mm_setcsr(csr | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON);
        int64_t start = 0;
        for (int64_t s = 0; s < segments; start += rows[s], s++) {
            const uint16_t *w1 = (const uint16_t *)first_weights[s], *w2 = (const uint16_t *)second_weights[s];
            int64_t own_from, own_to;
            own_rows(rows, segments, s, 1, &own_from, &own_to);
            for (int64_t chunk = own_from; chunk < own_to; chunk += VM_CHUNK) {
                int64_t from = start + chunk, to = start + (chunk + VM_CHUNK < own_to ? chunk + VM_CHUNK : own_to);
                /* after the second product: this segment's first weights again for the next chunk, else the next
                   segment's */
                const uint16_t *after = to < start + own_to || s + 1 == segments ? w1
                                                                                   : (const uint16_t *)first_weights[s + 1];
                vm_product(x, ldx, w1, (const float *)first_biases[s], 1, NULL, 0, inner, r, from, to, d, r / 32, w2);
                vm_product(inner, r, w2, (const float *)second_biases[s], 0, residual, ldr, out, ldo, from, to, r,
                           d / 32, after);
                if (norm)
                    for (int64_t i = from; i < to; i++) norm_row(out + i * ldo, norm_weight, norm_bias, eps, out + i * ldo, d);
            }
        }
        _mm_setcsr(csr);
    }
    return 0;
}
