/* ctensor — Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy
 * as 1, 2, 3", SC'11). Header-only so the CUDA kernels can include the same code. */
#ifndef CT_KERNELS_CPU_PHILOX_H
#define CT_KERNELS_CPU_PHILOX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define CT_PHILOX_FN __host__ __device__ static inline
#else
#define CT_PHILOX_FN static inline
#endif

#define CT_PHILOX_M0 0xD2511F53u
#define CT_PHILOX_M1 0xCD9E8D57u
#define CT_PHILOX_W0 0x9E3779B9u
#define CT_PHILOX_W1 0xBB67AE85u

CT_PHILOX_FN void ct_philox_block(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                                  uint32_t out[4]) {
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)CT_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)CT_PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += CT_PHILOX_W0;
        k1 += CT_PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The four words of block `block` of the stream of `seed` (see random.h). */
CT_PHILOX_FN void ct_philox_stream_block(uint64_t seed, uint64_t block, uint32_t out[4]) {
    ct_philox_block((uint32_t)block, (uint32_t)(block >> 32), 0, 0, (uint32_t)seed, (uint32_t)(seed >> 32), out);
}

/* Word i of the stream (seed, offset): block offset + i/4, word i%4 (see random.h). */
CT_PHILOX_FN uint32_t ct_philox_word(uint64_t seed, uint64_t offset, uint64_t i) {
    uint32_t out[4];
    ct_philox_stream_block(seed, offset + i / 4, out);
    return out[i % 4];
}

/* (w >> 8) * 2^-24: uniform in [0, 1) with 24 random bits. */
CT_PHILOX_FN float ct_philox_uniform_f32(uint32_t w) { return (float)(w >> 8) * 5.9604644775390625e-08f; }
CT_PHILOX_FN double ct_philox_uniform_f64(uint32_t hi, uint32_t lo) {
    return ((double)(hi >> 5) * 67108864.0 + (double)(lo >> 6)) * 1.1102230246251565e-16;
}

/* a + b * c, the product rounded before the sum, on the GPU too (where nvcc would otherwise
 * fuse them into one FMA). On the host the product goes through a volatile: a compiler that
 * contracts (GCC's default -ffp-contract=fast outside ISO C, with -mfma or -march=native)
 * cannot fuse it either. */
CT_PHILOX_FN double ct_philox_add_mul(double a, double b, double c) {
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, __dmul_rn(b, c));
#else
    volatile double product = b * c;
    return a + product;
#endif
}

/* The distributions of random.h, one Philox block at a time, for the CPU (runtime/random.c)
 * and the GPU (kernels/cuda/random.cu) alike. kind: 0 uniform(p0, p1), 1 normal(mean p0,
 * std p1), 2 bernoulli(p0); f64: the F64 uniform (two words per element). Block b of the
 * stream (seed, offset) makes elements per * b .. per * b + per - 1 of a tensor of n, where
 * per = ct_philox_per_block: 2 for the F64 uniform, else 4 (normal takes its words in pairs:
 * two pairs per block). The values of those below n go to v, in double before rounding to
 * the dtype; returns how many. */
CT_PHILOX_FN int ct_philox_per_block(int kind, int f64) { return kind == 0 && f64 ? 2 : 4; }

CT_PHILOX_FN int ct_philox_dist_block(int kind, int f64, uint64_t seed, uint64_t offset, uint64_t b, int64_t n,
                                      double p0, double p1, double v[4]) {
    const int per = ct_philox_per_block(kind, f64);
    const int64_t first = (int64_t)b * per;
    const int count = n - first < per ? (int)(n - first) : per;
    uint32_t w[4];
    ct_philox_stream_block(seed, offset + b, w);
    if (kind == 1) {
        for (int k = 0; k < count; k += 2) { /* Box-Muller on words (k, k + 1); an odd tail drops the sine */
            double u1 = ((double)w[k] + 1.0) * 2.3283064365386963e-10, u2 = (double)w[k + 1] * 2.3283064365386963e-10;
            double r = sqrt(-2.0 * log(u1)), angle = 2.0 * 3.14159265358979323846 * u2;
            v[k] = ct_philox_add_mul(p0, p1, r * cos(angle));
            if (k + 1 < count)
                v[k + 1] = ct_philox_add_mul(p0, p1, r * sin(angle));
        }
        return count;
    }
    for (int k = 0; k < count; k++) {
        if (kind == 0)
            v[k] = ct_philox_add_mul(p0, p1 - p0,
                                     f64 ? ct_philox_uniform_f64(w[2 * k], w[2 * k + 1]) : ct_philox_uniform_f32(w[k]));
        else
            v[k] = ct_philox_uniform_f32(w[k]) < p0 ? 1.0 : 0.0;
    }
    return count;
}

#endif
