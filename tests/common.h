/* Helpers shared by the Criterion suites. */
#ifndef CT_TESTS_COMMON_H
#define CT_TESTS_COMMON_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "ctensor/ctensor.h"

/* Uniform values in [lo, hi) from the ctensor generator (seeded per test by the caller). */
ct_tensor *t_rand(const int64_t *shape, int ndim, ct_dtype dtype, double lo, double hi);
/* All elements as doubles (row-major); the caller frees. Works on any dtype and strides. */
double *t_values(const ct_tensor *t);
/* Largest |t[i] - ref[i]| and largest |t[i] - ref[i]| / max(1, |ref[i]|). */
double t_max_abs_diff(const ct_tensor *t, const double *ref);
double t_max_rel_diff(const ct_tensor *t, const double *ref);
/* Assert t's shape equals (ndim, shape). */
void t_assert_shape(const ct_tensor *t, const int64_t *shape, int ndim);
/* Assert t (any dtype) matches ref within atol + rtol*|ref| elementwise. */
void t_assert_close(const ct_tensor *t, const double *ref, double atol, double rtol);
/* Assert the last error has `status` and its message contains each of the NULL-terminated
 * fragments; then clear it. */
void t_assert_error(ct_status status, const char *fragment, ...);

/* ct_graph_* given a NULL graph report CT_ERR_NULL naming the call (or ignore it), with or
 * without a GPU. */
void t_assert_graph_null_arguments(void);

/* Gradient check by central differences in F64. `fn` builds one output from inputs (F64,
 * contiguous CPU leaves with requires_grad set by the caller). Compares the analytic
 * gradient of sum(out * w), w random, with the numeric one. */
typedef ct_tensor *(*t_grad_fn)(ct_tensor **inputs, void *ctx);
void t_gradcheck(t_grad_fn fn, ct_tensor **inputs, int n, void *ctx, double eps, double atol, double rtol);

/* Run `body` inside a scope and assert that no tensor outlives it. */
#define T_NO_LEAK(...)                                                                      \
    do {                                                                                    \
        int64_t live_before_ = ct_live_tensors();                                           \
        ct_scope_begin();                                                                   \
        __VA_ARGS__;                                                                            \
        ct_scope_end();                                                                     \
        cr_assert_eq(ct_live_tensors(), live_before_, "leaked %lld tensors",                \
                     (long long)(ct_live_tensors() - live_before_));                         \
    } while (0)

/* True when a CUDA device is usable; otherwise the calling test reports itself skipped. */
#define T_REQUIRE_GPU()                                                                     \
    do {                                                                                    \
        if (!ct_cuda_is_available())                                                        \
            cr_skip_test("no usable CUDA device: GPU parity test skipped");                 \
    } while (0)

/* ---- CPU-vs-CUDA parity helpers (the GPU suites) ------------------------------------- */
#define T_GPU CT_CUDA(0)
/* A copy of t on the GPU (asserts on failure). */
ct_tensor *t_to_gpu(const ct_tensor *t);
/* Uniform values in [lo, hi) of `dtype` on the CPU, rounded once from f32 so both devices
 * start from the same numbers. */
ct_tensor *t_rand_dtype(const int64_t *shape, int ndim, ct_dtype dtype, double lo, double hi);
/* Leave NaN-filled free blocks of `numel` elements in the GPU allocator's cache (several,
 * in case an op allocates scratch first), so that a new output of that size starts as NaN. */
void t_poison_gpu_cache(int64_t numel, ct_dtype dtype);
/* gpu (on the GPU) against cpu: same dtype and shape, every element within
 * tol * max(1, |cpu|), and NaN only where the CPU has NaN (an unwritten poisoned element
 * fails). */
void t_assert_parity(const ct_tensor *gpu, const ct_tensor *cpu, double tol, const char *what);
/* The same with the error relative to max(1, max |cpu|) over the whole tensor: for sums of
 * thousands of products (a convolution's weight gradient), whose rounding error scales
 * with the terms, not with a result that cancels to near zero. */
void t_assert_parity_normwise(const ct_tensor *gpu, const ct_tensor *cpu, double tol, const char *what);

/* Naive multi-index helpers for references: linear index <-> coordinates. */
void t_unravel(int64_t linear, int ndim, const int64_t *shape, int64_t *coords);
int64_t t_ravel_broadcast(const int64_t *coords, int ndim, int src_ndim, const int64_t *src_shape);

#endif
