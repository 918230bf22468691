/* ctensor — random numbers.
 *
 * One counter-based Philox4x32-10 generator (Salmon et al., SC'11) per process, defined by a
 * 64-bit seed and a 64-bit offset, so the CPU and CUDA backends produce the same bits for the
 * same (seed, offset). The exact scheme, which any backend must reproduce:
 *
 *   key     = (k0, k1) = (low 32 bits of seed, high 32 bits of seed)
 *   block j = Philox4x32-10(counter = (lo(offset + j), hi(offset + j), 0, 0), key)
 *             -> four 32-bit words w[4j], w[4j+1], w[4j+2], w[4j+3]
 *   A request that uses m words consumes ceil(m / 4) blocks and advances the offset by that.
 *
 *   uniform f32/f16/bf16 in [0, 1): u = (w[i] >> 8) * 2^-24            (one word per element)
 *   uniform f64 in [0, 1):  u = ((w[2i] >> 5) * 2^26 + (w[2i+1] >> 6)) * 2^-53   (two words)
 *   x = low + (high - low) * u, then rounded to the dtype.
 *   normal (Box-Muller, pairs): element 2k and 2k+1 use words a = w[2k], b = w[2k+1]:
 *       u1 = (a + 1) * 2^-32 (in (0, 1]), u2 = b * 2^-32, r = sqrt(-2 ln u1),
 *       z[2k] = r cos(2 pi u2), z[2k+1] = r sin(2 pi u2)  (computed in double, then rounded);
 *       an odd count uses one extra pair and drops its sine.
 *   bernoulli(p): element i is 1 when uniform_f32(w[i]) < p.
 *   permutation(n): key[i] = w[i]; the result sorts 0..n-1 by (key, index) ascending.
 */
#ifndef CTENSOR_RANDOM_H
#define CTENSOR_RANDOM_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Set the global generator's seed and reset its offset to 0. */
void ct_manual_seed(uint64_t seed);
uint64_t ct_random_seed(void);
uint64_t ct_random_offset(void);
/* Move the offset (to replay a stream of numbers). */
void ct_random_set_offset(uint64_t offset);

/* One Philox4x32-10 block: the reference the CUDA kernels are tested against. */
void ct_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* New tensors filled from the global generator (advancing its offset). */
ct_tensor *ct_rand(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device);  /* U[0,1) */
ct_tensor *ct_uniform(const int64_t *shape, int ndim, double low, double high, ct_dtype dtype, ct_device device);
ct_tensor *ct_randn(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device);
ct_tensor *ct_normal(const int64_t *shape, int ndim, double mean, double std, ct_dtype dtype, ct_device device);
/* 1 with probability p, else 0, in `dtype`. */
ct_tensor *ct_bernoulli(const int64_t *shape, int ndim, double p, ct_dtype dtype, ct_device device);
/* A random permutation of 0..n-1 as I32 (n < 2^31): Philox words sorted with their indices,
 * the same permutation on the CPU and on a GPU for the same seed and offset. */
ct_tensor *ct_randperm(int64_t n, ct_device device);

#ifdef __cplusplus
}
#endif
#endif
