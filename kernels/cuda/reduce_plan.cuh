// ctensor — the reductions' plan and per-thread work (kernels/cuda/reduce.cu), as host and
// device code: the kernels call these, and tests/test_reduce_plan.cu runs the same code on
// the CPU through an emulation of the kernels' merge trees, so the geometry, the index
// bookkeeping and the accumulators' NaN, tie and infinity rules are tested without a GPU.
// What stays in reduce.cu is only what needs one: shuffles, shared memory, launches.
#ifndef CT_KERNELS_CUDA_REDUCE_PLAN_CUH
#define CT_KERNELS_CUDA_REDUCE_PLAN_CUH

#include "kernels/cuda/common.cuh"

#include <math.h>

// #pragma unroll for the device pass only (the host compiler does not know it).
#ifdef __CUDA_ARCH__
#define CT_UNROLL _Pragma("unroll")
#else
#define CT_UNROLL
#endif

#define BLOCK 256           // threads per block, everywhere
#define TARGET_BLOCKS 1024  // about one full wave of 256-thread blocks on an H100 (132 SMs)
#define MIN_SLICE 16384     // elements per slice when an inner reduction is split
#define BLOCK_MIN 2048      // inner reductions at least this long get a whole block
#define MIN_WALK 16         // outer: reduced elements per thread when the walk is split
#define PARTIAL_BYTES 16    // workspace bytes per partial, enough for every accumulator

typedef ct_dims group; // kernels/cpu/strided.h: the dims, their offsets

template <typename T> struct acc_of { typedef float type; };
template <> struct acc_of<int32_t> { typedef double type; };

// exp for the accumulators: __expf on the GPU, 2^(x log2 e) with the product rounded to float
// (a few ulp, well inside the 1e-4 the parity asks); on the host the same product through
// exp2f, so the host tests see the rounding that dominates __expf's error for large |x|.
CT_HOST_DEVICE float ct_fast_exp(float x) {
#ifdef __CUDA_ARCH__
    return __expf(x);
#else
    return exp2f(x * 1.4426950408889634f);
#endif
}

// x is a NaN, or larger (is_max) or smaller than y: the test of a scan that keeps y unless x
// is more extreme, with NaN the most extreme. Written with & | and selects rather than
// && || and ifs, so that the compiler predicates it: the short-circuit forms compiled to
// divergent branches (BSSY/BSYNC around every element) in the hot loops.
template <typename F> CT_HOST_DEVICE bool ct_nan_or_beats(F x, F y, bool is_max) {
    return (x != x) | (is_max & (x > y)) | (!is_max & (x < y));
}

// ---- accumulators -----------------------------------------------------------------------
// push(a, x, j): element x at reduced index j; push_n: N elements at j0, j0 + step, ... Each
// thread pushes its elements in increasing index order (after all of a's), so push may use a
// sequential scan's rule. merge(a, b): two partials, in either order (the shuffle trees pair
// interleaved lanes). result: the output's value; write: store it as output k.

template <typename F> struct sum_op {
    typedef F acc;
    F scale;
    CT_HOST_DEVICE acc identity() const { return F(0); }
    CT_HOST_DEVICE void push(acc &a, F x, int64_t) const { a += x; }
    template <int N> CT_HOST_DEVICE void push_n(acc &a, const F (&x)[N], int64_t, int64_t) const {
        F t = x[0];
        CT_UNROLL
        for (int i = 1; i < N; i++)
            t += x[i];
        a += t;
    }
    CT_HOST_DEVICE void merge(acc &a, const acc &b) const { a += b; }
    CT_HOST_DEVICE double result(const acc &a) const { return (double)(a * scale); }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        out[k] = ct_from_double<T>(result(a));
    }
};

// max (is_max) or min; a NaN is the extreme and stays.
template <typename F> struct extreme_op {
    typedef F acc;
    bool is_max;
    CT_HOST_DEVICE acc identity() const { return is_max ? F(-INFINITY) : F(INFINITY); }
    CT_HOST_DEVICE void push(acc &a, F x, int64_t) const { a = ct_nan_or_beats(x, a, is_max) ? x : a; }
    template <int N> CT_HOST_DEVICE void push_n(acc &a, const F (&x)[N], int64_t, int64_t) const {
        CT_UNROLL
        for (int i = 0; i < N; i++)
            push(a, x[i], 0);
    }
    CT_HOST_DEVICE void merge(acc &a, const acc &b) const { push(a, b, 0); }
    CT_HOST_DEVICE double result(const acc &a) const { return (double)a; }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        out[k] = ct_from_double<T>(result(a));
    }
};

// Log-sum-exp as (max m, sum s of exp(x - m)); once m is NaN it stays.
struct lse_acc {
    float m, s;
};
struct lse_op {
    typedef lse_acc acc;
    CT_HOST_DEVICE acc identity() const { return {-INFINITY, 0.0f}; }
    CT_HOST_DEVICE void merge(acc &a, const acc &b) const {
        if (a.m != a.m)
            return;
        if (b.m != b.m) {
            a.m = b.m;
        } else if (b.m > a.m) {
            a.s = a.s * expf(a.m - b.m) + b.s;
            a.m = b.m;
        } else if (b.m == a.m) {
            a.s += b.s;
        } else {
            a.s += b.s * expf(b.m - a.m);
        }
    }
    CT_HOST_DEVICE void push(acc &a, float x, int64_t) const { merge(a, {x, 1.0f}); }
    // The group's max first. While both it and the running max are finite (after the first
    // group, nearly always), the group's elements are added to the running sum directly,
    // rescaled only when the max grows: one fast exp per element and no merge. Otherwise the
    // group becomes a partial and is merged.
    template <int N> CT_HOST_DEVICE void push_n(acc &a, const float (&x)[N], int64_t, int64_t) const {
        float m = x[0];
        CT_UNROLL
        for (int i = 1; i < N; i++)
            m = ct_nan_or_beats(x[i], m, true) ? x[i] : m;
        if (isfinite(m) && isfinite(a.m)) {
            if (m > a.m) {
                a.s *= ct_fast_exp(a.m - m);
                a.m = m;
            }
            CT_UNROLL
            for (int i = 0; i < N; i++)
                a.s += ct_fast_exp(x[i] - a.m);
            return;
        }
        float s = 1.0f; // when m is infinite or NaN, only m matters
        if (isfinite(m)) {
            s = 0.0f;
            CT_UNROLL
            for (int i = 0; i < N; i++)
                s += ct_fast_exp(x[i] - m);
        }
        merge(a, {m, s});
    }
    CT_HOST_DEVICE double result(const acc &a) const {
        return (double)((a.m != a.m || isinf(a.m)) ? a.m : a.m + logf(a.s));
    }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        out[k] = ct_from_double<T>(result(a));
    }
};

// Variance as (count n, mean, m2 = sum of squared deviations): Welford's update for single
// elements, Chan's merge for partials and for groups of N (two passes over registers).
struct var_acc {
    float n, mean, m2;
};
struct var_op {
    typedef var_acc acc;
    float divisor; // max(0, R - correction), from the host
    bool take_sqrt;
    CT_HOST_DEVICE acc identity() const { return {0.0f, 0.0f, 0.0f}; }
    CT_HOST_DEVICE void push(acc &a, float x, int64_t) const {
        a.n += 1.0f;
        float d = x - a.mean;
        a.mean += d / a.n;
        a.m2 += d * (x - a.mean);
    }
    CT_HOST_DEVICE void merge(acc &a, const acc &b) const {
        if (b.n == 0.0f)
            return;
        if (a.n == 0.0f) {
            a = b;
            return;
        }
        float n = a.n + b.n, d = b.mean - a.mean, f = b.n / n;
        a.mean += d * f;
        a.m2 += b.m2 + d * d * a.n * f;
        a.n = n;
    }
    template <int N> CT_HOST_DEVICE void push_n(acc &a, const float (&x)[N], int64_t, int64_t) const {
        float sum = 0.0f, m2 = 0.0f;
        CT_UNROLL
        for (int i = 0; i < N; i++)
            sum += x[i];
        float mean = sum * (1.0f / N);
        CT_UNROLL
        for (int i = 0; i < N; i++)
            m2 += (x[i] - mean) * (x[i] - mean);
        merge(a, {(float)N, mean, m2});
    }
    CT_HOST_DEVICE double result(const acc &a) const {
        float m2 = a.m2 > 0.0f || a.m2 != a.m2 ? a.m2 : 0.0f; // rounding may leave it below 0
        float v = m2 / divisor;
        return (double)(take_sqrt ? sqrtf(v) : v);
    }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        out[k] = ct_from_double<T>(result(a));
    }
};

// The first extreme and its index; i < 0 marks the empty accumulator. The order "NaN
// first, then larger (smaller), then lower index" is total, so any merge tree finds the
// element a sequential scan keeps.
// The index is 32-bit (8 bytes per accumulator for float, one shuffle word less than a
// 64-bit index): indices are I32 tensors, and the op layer refuses dims over INT32_MAX.
template <typename F> struct arg_acc {
    F v;
    int32_t i;
};
template <typename F> struct arg_op {
    typedef arg_acc<F> acc;
    bool is_max;
    CT_HOST_DEVICE acc identity() const { return {F(0), -1}; }
    CT_HOST_DEVICE bool before(F x, int64_t i, const acc &b) const {
        if (b.i < 0)
            return true;
        bool x_nan = x != x, b_nan = b.v != b.v;
        if (b_nan)
            return x_nan && i < b.i;
        if (x_nan)
            return true;
        if (x == b.v)
            return i < b.i;
        return is_max ? x > b.v : x < b.v;
    }
    // A pushed x comes after all of a's elements, so the sequential scan's rule decides: x
    // replaces a's element when a is empty, or holds no NaN and x is a NaN or strictly more
    // extreme (a tie keeps the earlier one). Three comparisons, no index comparison.
    CT_HOST_DEVICE void push(acc &a, F x, int64_t j) const {
        bool take = (a.i < 0) | ((a.v == a.v) & ct_nan_or_beats(x, a.v, is_max));
        a.v = take ? x : a.v;
        a.i = take ? (int32_t)j : a.i;
    }
    // The pack's own first extreme by the same rule, then one step with the accumulator.
    template <int N> CT_HOST_DEVICE void push_n(acc &a, const F (&x)[N], int64_t j0, int64_t step) const {
        F b = x[0];
        int bi = 0;
        CT_UNROLL
        for (int i = 1; i < N; i++) {
            bool take = (b == b) & ct_nan_or_beats(x[i], b, is_max);
            b = take ? x[i] : b;
            bi = take ? i : bi;
        }
        push(a, b, j0 + bi * step);
    }
    CT_HOST_DEVICE void merge(acc &a, const acc &b) const {
        if (b.i >= 0 && before(b.v, b.i, a))
            a = b;
    }
    CT_HOST_DEVICE double result(const acc &a) const { return (double)a.v; }
    template <typename T> __device__ void write(T *out, int32_t *indices, int64_t k, const acc &a) const {
        if (out)
            out[k] = ct_from_double<T>(result(a));
        if (indices)
            indices[k] = (int32_t)a.i;
    }
};

// ---- the work of one thread ---------------------------------------------------------------

template <typename T, typename Op> struct reduce_job {
    const T *in;
    group kept;           // inner: one offset per output; outer: one per row of outputs
    group red;            // the reduced elements of one output
    int64_t K, R;         // outputs, reduced elements per output
    int64_t slices;       // partials per output (1: the kernel writes the outputs)
    int64_t chunk;        // reduced elements per slice
    int64_t width;        // outer: outputs per kept row (the contiguous kept dim)
    typename Op::acc *partials; // (K, slices) when slices > 1
    T *out;               // (K) values, may be NULL for argmax/argmin
    int32_t *indices;     // (K) argmax/argmin positions, or NULL
    Op op;
};

// Elements [j0, j1) of a contiguous row: a scalar head up to a 16-byte boundary, 16-byte
// loads four at a time, a scalar tail.
template <typename T, int VEC, typename Op>
CT_HOST_DEVICE void push_contiguous(const Op &op, typename Op::acc &a, const T *row, int64_t j0, int64_t j1, int lane,
                                    int G) {
    typedef typename acc_of<T>::type F;
    int64_t misaligned = (int64_t)(((uintptr_t)(row + j0) % 16) / sizeof(T));
    int64_t head = misaligned ? VEC - misaligned : 0;
    head = head < j1 - j0 ? head : j1 - j0;
    for (int64_t j = j0 + lane; j < j0 + head; j += G)
        op.push(a, (F)ct_widen(row[j]), j);
    int64_t jv = j0 + head, nvec = (j1 - jv) / VEC;
    const ct_pack<T, VEC> *vp = reinterpret_cast<const ct_pack<T, VEC> *>(row + jv);
    int64_t v = lane;
    for (; v + 3 * G < nvec; v += 4 * G) {
        ct_pack<T, VEC> p[4];
        CT_UNROLL
        for (int u = 0; u < 4; u++)
            p[u] = vp[v + u * G];
        CT_UNROLL
        for (int u = 0; u < 4; u++) {
            F x[VEC];
            CT_UNROLL
            for (int e = 0; e < VEC; e++)
                x[e] = (F)ct_widen(p[u].v[e]);
            op.push_n(a, x, jv + (v + u * G) * VEC, 1);
        }
    }
    for (; v < nvec; v += G) {
        ct_pack<T, VEC> p = vp[v];
        F x[VEC];
        CT_UNROLL
        for (int e = 0; e < VEC; e++)
            x[e] = (F)ct_widen(p.v[e]);
        op.push_n(a, x, jv + v * VEC, 1);
    }
    for (int64_t j = jv + nvec * VEC + lane; j < j1; j += G)
        op.push(a, (F)ct_widen(row[j]), j);
}

// Inner layout: lane `lane` of the G threads of unit u = (output u / slices, slice u % slices).
template <typename T, typename Op, int VEC>
CT_HOST_DEVICE typename Op::acc inner_lane(const reduce_job<T, Op> &job, int64_t unit, int lane, int G) {
    typedef typename acc_of<T>::type F;
    const Op &op = job.op;
    typename Op::acc a = op.identity();
    int64_t k = unit / job.slices, s = unit % job.slices;
    const T *base = job.in + ct_dims_offset(&job.kept, k);
    int64_t j0 = s * job.chunk, j1 = j0 + job.chunk < job.R ? j0 + job.chunk : job.R;
    if (VEC > 1) {
        push_contiguous<T, VEC>(op, a, base, j0, j1, lane, G);
    } else {
        for (int64_t j = j0 + lane; j < j1; j += G)
            op.push(a, (F)ct_widen(base[ct_dims_offset(&job.red, j)]), j);
    }
    return a;
}

// Outer layout: the thread at row `ty` of `by` walks reduced indices r0 + ty, r0 + ty + by, ...
// below r1 for the VEC outputs from `col` of kept row `row`.
template <typename T, typename Op, int VEC>
CT_HOST_DEVICE void outer_walk(const reduce_job<T, Op> &job, int64_t row, int64_t col, int64_t r0, int64_t r1, int ty,
                               int by, typename Op::acc (&a)[VEC]) {
    typedef typename acc_of<T>::type F;
    const Op &op = job.op;
    const T *base = job.in + ct_dims_offset(&job.kept, row) + col;
    int64_t r = r0 + ty;
    for (; r + 3 * by < r1; r += 4 * by) {
        ct_pack<T, VEC> p[4];
        CT_UNROLL
        for (int u = 0; u < 4; u++)
            p[u] = *reinterpret_cast<const ct_pack<T, VEC> *>(base + ct_dims_offset(&job.red, r + u * by));
        CT_UNROLL
        for (int e = 0; e < VEC; e++) {
            F x[4];
            CT_UNROLL
            for (int u = 0; u < 4; u++)
                x[u] = (F)ct_widen(p[u].v[e]);
            op.push_n(a[e], x, r, by);
        }
    }
    for (; r < r1; r += by) {
        ct_pack<T, VEC> p = *reinterpret_cast<const ct_pack<T, VEC> *>(base + ct_dims_offset(&job.red, r));
        CT_UNROLL
        for (int e = 0; e < VEC; e++)
            op.push(a[e], (F)ct_widen(p.v[e]), r);
    }
}

// ---- plans --------------------------------------------------------------------------------

struct reduce_plan {
    group kept, red;
    int64_t K, R;
    bool outer;
    bool vectorized;   // 16-byte loads
    int G;             // inner: threads per unit
    int bx, by;        // outer: block shape
    int64_t tiles;     // outer: blocks across one kept row
    int64_t slices, chunk;
    int64_t blocks;    // grid.x
};

// A plan for this geometry. It depends on shapes, strides and the pointer's alignment
// only (never on the device), so the workspace query and the launch agree.
static inline void make_plan(reduce_plan *p, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                             const int64_t *in_strides, const bool *mask) {
    ct_dims_group(&p->kept, ndim, shape, in_strides, mask, false);
    ct_dims_group(&p->red, ndim, shape, in_strides, mask, true);
    p->K = p->kept.numel;
    p->R = p->red.numel;
    p->slices = 1;
    p->chunk = p->R;
    p->blocks = 0;
    if (p->K == 0 || p->R == 0)
        return;
    int64_t vec = 16 / (int64_t)ct_dtype_size(dtype);
    const group &kept = p->kept, &red = p->red;
    p->outer = p->K > 1 && red.strides[red.ndim - 1] != 1 && kept.strides[kept.ndim - 1] == 1;
    if (!p->outer) {
        p->vectorized = red.ndim == 1 && red.strides[0] == 1;
        if (p->K < TARGET_BLOCKS && p->R >= 2 * MIN_SLICE) {
            int64_t s = ct_ceil_div(TARGET_BLOCKS, p->K), most = ct_ceil_div(p->R, MIN_SLICE);
            s = s < most ? s : most;
            p->chunk = (ct_ceil_div(p->R, s) + 15) / 16 * 16; // slices start 16-byte aligned with the row
            p->slices = ct_ceil_div(p->R, p->chunk);
        }
        p->G = p->chunk >= BLOCK_MIN ? BLOCK : ct_pow2_at_least(ct_ceil_div(p->chunk, p->vectorized ? vec : 1), 32);
        p->blocks = ct_ceil_div(p->K * p->slices, BLOCK / p->G);
        return;
    }
    // Outer: the kept group's last dim is the contiguous row of outputs.
    int64_t width = kept.shape[kept.ndim - 1];
    bool aligned = (uintptr_t)in % 16 == 0 && width % vec == 0;
    for (int d = 0; d < kept.ndim - 1; d++)
        aligned = aligned && kept.strides[d] % vec == 0;
    for (int d = 0; d < red.ndim; d++)
        aligned = aligned && red.strides[d] % vec == 0;
    p->vectorized = aligned;
    int64_t cols = aligned ? width / vec : width;
    p->bx = ct_pow2_at_least(cols, 32);
    p->by = BLOCK / p->bx;
    p->tiles = ct_ceil_div(cols, p->bx);
    p->blocks = p->K / width * p->tiles;
    if (p->blocks < TARGET_BLOCKS && p->R >= 2 * MIN_WALK * p->by) {
        int64_t s = ct_ceil_div(TARGET_BLOCKS, p->blocks), most = p->R / (MIN_WALK * p->by);
        s = s < most ? s : most;
        p->chunk = ct_ceil_div(p->R, s);
        p->slices = ct_ceil_div(p->R, p->chunk);
    }
}

static inline size_t workspace_bytes(const reduce_plan &p) {
    return p.slices > 1 ? (size_t)(p.K * p.slices) * PARTIAL_BYTES : 0;
}

// The kernels' arguments for plan p.
template <typename T, typename Op>
static inline reduce_job<T, Op> make_job(const reduce_plan &p, const void *in, const Op &op, void *out,
                                         int32_t *indices, void *workspace) {
    reduce_job<T, Op> job;
    job.in = (const T *)in;
    job.kept = p.kept;
    job.red = p.red;
    job.K = p.K;
    job.R = p.R;
    job.slices = p.slices;
    job.chunk = p.chunk;
    job.width = p.kept.shape[p.kept.ndim - 1];
    job.partials = (typename Op::acc *)workspace;
    job.out = (T *)out;
    job.indices = indices;
    job.op = op;
    if (p.outer) {
        // The outer kernel's `kept` is the rows of outputs: the kept dims but the last.
        job.kept.ndim = p.kept.ndim - 1;
        if (job.kept.ndim == 0) {
            job.kept.ndim = 1;
            job.kept.shape[0] = 1;
            job.kept.strides[0] = 0;
        }
    }
    return job;
}

#endif
