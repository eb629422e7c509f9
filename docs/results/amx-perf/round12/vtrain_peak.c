/* VDPBF16PS throughput on this core: 16 independent sums in registers, and pair_product's 4 x 4 block with its loads
   (4 rows broadcast, 4 vectors loaded per pair). Output: vtrain-peak.txt. */
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void) {
    __m512 acc[16]; for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps(i);
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b[4];
    for (int i = 0; i < 4; i++) b[i] = (__m512bh)_mm512_set1_epi32(0x3c003c00 + i);
    long n = 200000000;
    double s = now();
    for (long p = 0; p < n; p++) {
        for (int i = 0; i < 16; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b[i & 3]);
        __asm__ volatile("" : "+v"(a));
    }
    double e = now();
    float out = 0; for (int i = 0; i < 16; i++) out += _mm512_reduce_add_ps(acc[i]);
    printf("register-only: %.3f G dpbf16/s (%g)\n", 16.0 * n / (e - s) / 1e9, out);
    /* with loads: 4 rows broadcast from memory, 4 vectors loaded, as pair_product */
    static uint16_t A[4][4096] __attribute__((aligned(64))), B[4][64 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 4; i++) for (int j = 0; j < 4096; j++) A[i][j] = 0x3f80;
    for (int i = 0; i < 4; i++) for (int j = 0; j < 2048; j++) B[i][j] = 0x3c00;
    long reps = 3000000; s = now();
    for (long r = 0; r < reps; r++) {
        __m512 c[4][4]; for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) c[i][j] = _mm512_setzero_ps();
        for (int p = 0; p < 64; p++) {
            __m512bh bv[4]; for (int n2 = 0; n2 < 4; n2++) bv[n2] = (__m512bh)_mm512_load_si512(B[n2] + p * 32);
            for (int i = 0; i < 4; i++) { int32_t x; memcpy(&x, A[i] + 2 * p, 4); __m512bh av = (__m512bh)_mm512_set1_epi32(x);
                for (int n2 = 0; n2 < 4; n2++) c[i][n2] = _mm512_dpbf16_ps(c[i][n2], av, bv[n2]); }
        }
        for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) acc[i * 4 + j] = _mm512_add_ps(acc[i * 4 + j], c[i][j]);
        __asm__ volatile("" ::: "memory");
    }
    e = now();
    out = 0; for (int i = 0; i < 16; i++) out += _mm512_reduce_add_ps(acc[i]);
    printf("4x4 with loads: %.3f G dpbf16/s (%g)\n", 16.0 * 64 * reps / (e - s) / 1e9, out);
    return 0;
}
