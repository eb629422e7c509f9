/* The vector weight-gradient kernel's inner loop alone (weight_grad_block's products without db), on blocks that stay
   in L1: R of dY's column pairs broadcast against V vectors of X's pairs (R x 16 V accumulators) over `pairs` steps,
   repeated; GFLOP/s of the bf16 products. -DNOBCAST uses an X vector in place of the broadcast (no broadcast at all).

     gcc -O3 -mavx512f -mavx512bf16 -mavx512vl -DR=8 -DV=2 vwgrad_inner.c -o inner && taskset -c 0 ./inner 256 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__attribute__((noinline)) static void block(const uint16_t *a, const uint16_t *b, int64_t pairs, float *dw) {
    __m512 acc[R][V];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; p++) {
        __m512bh x[V];
        for (int v = 0; v < V; v++) x[v] = (__m512bh)_mm512_load_si512((const void *)(b + 32 * V * p + 32 * v));
        const uint16_t *column_pairs = a + 2 * R * p;
        for (int r = 0; r < R; r++) {
#ifdef NOBCAST
            __m512bh y = x[V - 1];
#else
            int32_t pair;
            memcpy(&pair, column_pairs + 2 * r, 4);
            __m512bh y = (__m512bh)_mm512_set1_epi32(pair);
#endif
            for (int v = 0; v < V; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], y, x[v]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) _mm512_storeu_ps(dw + (r * V + v) * 16, acc[r][v]);
}

int main(int argc, char **argv) {
    int64_t pairs = argc > 1 ? atoi(argv[1]) : 256;
    uint16_t *a = aligned_alloc(64, pairs * 4 * R + 64), *b = aligned_alloc(64, pairs * 64 * V + 64);
    for (int64_t i = 0; i < pairs * 2 * R; i++) a[i] = 0x3f80 + (i & 7); /* bf16 values near 1 */
    for (int64_t i = 0; i < pairs * 32 * V; i++) b[i] = 0x3f00 + (i & 15);
    float dw[R * V * 16];
    long reps = 400000000L / pairs / (R * V);
    struct timespec s, e;
    clock_gettime(CLOCK_MONOTONIC, &s);
    for (long i = 0; i < reps; i++) block(a, b, pairs, dw);
    clock_gettime(CLOCK_MONOTONIC, &e);
    double seconds = (e.tv_sec - s.tv_sec) + (e.tv_nsec - s.tv_nsec) * 1e-9;
    printf("R %d x V %d (%d x %d of N x K), pairs %ld: %.0f GFLOP/s (%g)\n", R, V, R, 16 * V, (long)pairs,
           reps * pairs * R * V * 64.0 / seconds / 1e9, dw[0]);
    free(a);
    free(b);
    return 0;
}
