// ctensor — reductions on the GPU: sum/mean, var/std, logsumexp and max/min over sets of
// dims, and the first extreme with its index along one dim (max/min/argmax/argmin).
//
// The geometry is that of kernels/cpu/reduce.c: the dims split into a kept group and a
// reduced group, each coalesced; K outputs of R elements each. Two layouts of work:
// - inner (the reduced elements of an output are contiguous, or neither group is, or
//   everything is reduced): G threads per output, a sub-warp of 1..32 lanes for short
//   reductions and a block of 256 for long ones. Contiguous elements are read with
//   16-byte loads (a scalar head and tail around the aligned middle), four loads in
//   flight per thread, and the threads are merged with warp shuffles.
// - outer (the kept innermost dim is contiguous): each thread owns VEC neighbouring
//   outputs (one 16-byte load when aligned) and walks the reduced index, so a warp reads
//   whole lines; the threadIdx.y rows of a block split the walk and are merged through
//   shared memory in a fixed tree.
// When the outputs alone would not fill the GPU (few outputs with long reductions; the
// all-reduce is K = 1), the reduced elements of each output are cut into S slices: each
// writes its partial to the workspace and a second small kernel merges the S partials of
// each output in a fixed order. There are no atomics: the result depends on the geometry
// and the pointer alignment only, so it repeats bit for bit, on any GPU.
//
// F32, F16 and BF16 accumulate in float, I32 in double (exact below 2^53, like the CPU's
// double accumulator). Each reduction is an accumulator with push (elements), merge (two
// partials) and write (the output). Semantics are the CPU's: NaN propagates through
// max/min/sum/logsumexp/var, argmax/argmin take the first NaN or else the first extreme
// (ties resolve to the lowest index whatever the merge order), logsumexp adds equal maxima
// directly so that infinities never meet in exp(inf - inf). Empty reductions are filled
// by the launcher before any kernel runs.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

#include <math.h>

#define BLOCK 256           // threads per block, everywhere
#define TARGET_BLOCKS 1024  // about one full wave of 256-thread blocks on an H100 (132 SMs)
#define MIN_SLICE 16384     // elements per slice when an inner reduction is split
#define BLOCK_MIN 2048      // inner reductions at least this long get a whole block
#define MIN_WALK 16         // outer: reduced elements per thread when the walk is split
#define PARTIAL_BYTES 16    // workspace bytes per partial, enough for every accumulator

// ---- geometry ---------------------------------------------------------------------------

typedef ct_dims group; // kernels/cpu/strided.h: the dims, their offsets

// ---- element access ---------------------------------------------------------------------

template <typename T> struct acc_of { typedef float type; };
template <> struct acc_of<int32_t> { typedef double type; };

// Any accumulator (a multiple of 4 bytes) exchanged between lanes word by word.
template <typename A> __device__ __forceinline__ A shfl_xor(A a, int offset) {
    static_assert(sizeof(A) % 4 == 0, "accumulators are made of 4-byte words");
    union {
        A a;
        int w[sizeof(A) / 4];
    } u;
    u.a = a;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(A) / 4); i++)
        u.w[i] = __shfl_xor_sync(0xffffffffu, u.w[i], offset);
    return u.a;
}

// ---- accumulators -----------------------------------------------------------------------
// push(a, x, j): element x at reduced index j. push_n: N elements at j0, j0 + step, ...
// merge(a, b): b's elements come after a's. write: the output k.

template <typename F> struct sum_op {
    typedef F acc;
    F scale;
    __device__ acc identity() const { return F(0); }
    __device__ void push(acc &a, F x, int64_t) const { a += x; }
    template <int N> __device__ void push_n(acc &a, const F (&x)[N], int64_t, int64_t) const {
        F t = x[0];
#pragma unroll
        for (int i = 1; i < N; i++)
            t += x[i];
        a += t;
    }
    __device__ void merge(acc &a, const acc &b) const { a += b; }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        out[k] = ct_from_double<T>((double)(a * scale));
    }
};

// max (is_max) or min; a NaN is the extreme and stays.
template <typename F> struct extreme_op {
    typedef F acc;
    bool is_max;
    __device__ acc identity() const { return is_max ? F(-INFINITY) : F(INFINITY); }
    __device__ void push(acc &a, F x, int64_t) const {
        if (x != x || (is_max ? x > a : x < a))
            a = x;
    }
    template <int N> __device__ void push_n(acc &a, const F (&x)[N], int64_t, int64_t) const {
#pragma unroll
        for (int i = 0; i < N; i++)
            push(a, x[i], 0);
    }
    __device__ void merge(acc &a, const acc &b) const { push(a, b, 0); }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        out[k] = ct_from_double<T>((double)a);
    }
};

// Log-sum-exp as (max m, sum s of exp(x - m)); once m is NaN it stays.
struct lse_acc {
    float m, s;
};
struct lse_op {
    typedef lse_acc acc;
    __device__ acc identity() const { return {-INFINITY, 0.0f}; }
    __device__ void merge(acc &a, const acc &b) const {
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
    __device__ void push(acc &a, float x, int64_t) const { merge(a, {x, 1.0f}); }
    // The group's max first, then one shifted sum: one exp per element.
    template <int N> __device__ void push_n(acc &a, const float (&x)[N], int64_t, int64_t) const {
        float m = x[0];
#pragma unroll
        for (int i = 1; i < N; i++)
            if (x[i] > m || x[i] != x[i])
                m = x[i];
        float s = 1.0f; // when m is infinite or NaN, only m matters
        if (isfinite(m)) {
            s = 0.0f;
#pragma unroll
            for (int i = 0; i < N; i++)
                s += __expf(x[i] - m); // ex2.approx: a few ulp, well inside the 1e-4 the parity asks
        }
        merge(a, {m, s});
    }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        float r = (a.m != a.m || isinf(a.m)) ? a.m : a.m + logf(a.s);
        out[k] = ct_from_double<T>((double)r);
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
    __device__ acc identity() const { return {0.0f, 0.0f, 0.0f}; }
    __device__ void push(acc &a, float x, int64_t) const {
        a.n += 1.0f;
        float d = x - a.mean;
        a.mean += d / a.n;
        a.m2 += d * (x - a.mean);
    }
    __device__ void merge(acc &a, const acc &b) const {
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
    template <int N> __device__ void push_n(acc &a, const float (&x)[N], int64_t, int64_t) const {
        float sum = 0.0f, m2 = 0.0f;
#pragma unroll
        for (int i = 0; i < N; i++)
            sum += x[i];
        float mean = sum * (1.0f / N);
#pragma unroll
        for (int i = 0; i < N; i++)
            m2 += (x[i] - mean) * (x[i] - mean);
        merge(a, {(float)N, mean, m2});
    }
    template <typename T> __device__ void write(T *out, int32_t *, int64_t k, const acc &a) const {
        float m2 = a.m2 > 0.0f || a.m2 != a.m2 ? a.m2 : 0.0f; // rounding may leave it below 0
        float v = m2 / divisor;
        out[k] = ct_from_double<T>((double)(take_sqrt ? sqrtf(v) : v));
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
    __device__ acc identity() const { return {F(0), -1}; }
    __device__ bool before(F x, int64_t i, const acc &b) const {
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
    __device__ void push(acc &a, F x, int64_t j) const {
        if (before(x, j, a))
            a = {x, (int32_t)j};
    }
    // The pack's own first extreme (its indices increase, so a tie keeps the earlier one),
    // then one full comparison with the accumulator.
    template <int N> __device__ void push_n(acc &a, const F (&x)[N], int64_t j0, int64_t step) const {
        F b = x[0];
        int bi = 0;
#pragma unroll
        for (int i = 1; i < N; i++) {
            if (b == b && (x[i] != x[i] || (is_max ? x[i] > b : x[i] < b))) {
                b = x[i];
                bi = i;
            }
        }
        push(a, b, j0 + bi * step);
    }
    __device__ void merge(acc &a, const acc &b) const {
        if (b.i >= 0 && before(b.v, b.i, a))
            a = b;
    }
    template <typename T> __device__ void write(T *out, int32_t *indices, int64_t k, const acc &a) const {
        if (out)
            out[k] = ct_from_double<T>((double)a.v);
        if (indices)
            indices[k] = (int32_t)a.i;
    }
};

// ---- merging across threads -------------------------------------------------------------

// Within aligned groups of G lanes (a power of two up to 32); lane 0 of each holds the
// result. Every lane of the warp must call it.
template <typename Op> __device__ __forceinline__ void group_reduce(const Op &op, typename Op::acc &a, int G) {
    for (int offset = G / 2; offset > 0; offset /= 2)
        op.merge(a, shfl_xor(a, offset));
}

// Over the whole block (BLOCK threads); thread 0 holds the result.
template <typename Op> __device__ typename Op::acc block_reduce(const Op &op, typename Op::acc a) {
    __shared__ typename Op::acc warp_results[BLOCK / 32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    group_reduce(op, a, 32);
    if (lane == 0)
        warp_results[warp] = a;
    __syncthreads();
    if (warp == 0) {
        a = lane < BLOCK / 32 ? warp_results[lane] : op.identity();
        group_reduce(op, a, 32);
    }
    return a;
}

// ---- kernels ----------------------------------------------------------------------------

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
__device__ __forceinline__ void push_contiguous(const Op &op, typename Op::acc &a, const T *row, int64_t j0,
                                                int64_t j1, int lane, int G) {
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
#pragma unroll
        for (int u = 0; u < 4; u++)
            p[u] = vp[v + u * G];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            F x[VEC];
#pragma unroll
            for (int e = 0; e < VEC; e++)
                x[e] = (F)ct_widen(p[u].v[e]);
            op.push_n(a, x, jv + (v + u * G) * VEC, 1);
        }
    }
    for (; v < nvec; v += G) {
        ct_pack<T, VEC> p = vp[v];
        F x[VEC];
#pragma unroll
        for (int e = 0; e < VEC; e++)
            x[e] = (F)ct_widen(p.v[e]);
        op.push_n(a, x, jv + v * VEC, 1);
    }
    for (int64_t j = jv + nvec * VEC + lane; j < j1; j += G)
        op.push(a, (F)ct_widen(row[j]), j);
}

// Inner layout: unit u = (output u / slices, slice u % slices), G threads each.
template <typename T, typename Op, int VEC>
__global__ void __launch_bounds__(BLOCK) reduce_inner_kernel(reduce_job<T, Op> job, int G) {
    typedef typename acc_of<T>::type F;
    const Op &op = job.op;
    int lane = threadIdx.x % G;
    int64_t unit = (int64_t)blockIdx.x * (BLOCK / G) + threadIdx.x / G;
    bool live = unit < job.K * job.slices; // no early return: every lane joins the shuffles
    typename Op::acc a = op.identity();
    if (live) {
        int64_t k = unit / job.slices, s = unit % job.slices;
        const T *base = job.in + ct_dims_offset(&job.kept, k);
        int64_t j0 = s * job.chunk, j1 = j0 + job.chunk < job.R ? j0 + job.chunk : job.R;
        if (VEC > 1) {
            push_contiguous<T, VEC>(op, a, base, j0, j1, lane, G);
        } else {
            for (int64_t j = j0 + lane; j < j1; j += G)
                op.push(a, (F)ct_widen(base[ct_dims_offset(&job.red, j)]), j);
        }
    }
    if (G == BLOCK)
        a = block_reduce(op, a);
    else
        group_reduce(op, a, G);
    if (live && lane == 0) {
        if (job.slices == 1)
            op.write(job.out, job.indices, unit, a);
        else
            job.partials[unit] = a;
    }
}

// Outer layout: block (bx, by) over bx * VEC outputs of one kept row; blockIdx.y is the
// slice. Thread (x, y) walks reduced indices y, y + by, ... of its slice.
template <typename T, typename Op, int VEC>
__global__ void __launch_bounds__(BLOCK) reduce_outer_kernel(reduce_job<T, Op> job, int64_t tiles) {
    typedef typename acc_of<T>::type F;
    typedef typename Op::acc A;
    __shared__ A partial[BLOCK * VEC];
    const Op &op = job.op;
    int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
    int64_t row = blockIdx.x / tiles, col = ((int64_t)(blockIdx.x % tiles) * bx + tx) * VEC;
    bool live = col < job.width;
    int64_t r0 = (int64_t)blockIdx.y * job.chunk, r1 = r0 + job.chunk < job.R ? r0 + job.chunk : job.R;
    A a[VEC];
#pragma unroll
    for (int e = 0; e < VEC; e++)
        a[e] = op.identity();
    if (live) {
        const T *base = job.in + ct_dims_offset(&job.kept, row) + col;
        int64_t r = r0 + ty;
        for (; r + 3 * by < r1; r += 4 * by) {
            ct_pack<T, VEC> p[4];
#pragma unroll
            for (int u = 0; u < 4; u++)
                p[u] = *reinterpret_cast<const ct_pack<T, VEC> *>(base + ct_dims_offset(&job.red, r + u * by));
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                F x[4];
#pragma unroll
                for (int u = 0; u < 4; u++)
                    x[u] = (F)ct_widen(p[u].v[e]);
                op.push_n(a[e], x, r, by);
            }
        }
        for (; r < r1; r += by) {
            ct_pack<T, VEC> p = *reinterpret_cast<const ct_pack<T, VEC> *>(base + ct_dims_offset(&job.red, r));
#pragma unroll
            for (int e = 0; e < VEC; e++)
                op.push(a[e], (F)ct_widen(p.v[e]), r);
        }
    }
    int slot = (ty * bx + tx) * VEC;
#pragma unroll
    for (int e = 0; e < VEC; e++)
        partial[slot + e] = a[e];
    __syncthreads();
    for (int half = by / 2; half > 0; half /= 2) {
        if (ty < half) {
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                op.merge(a[e], partial[slot + half * bx * VEC + e]);
                partial[slot + e] = a[e];
            }
        }
        __syncthreads();
    }
    if (ty == 0 && live) {
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            int64_t k = row * job.width + col + e;
            if (job.slices == 1)
                op.write(job.out, job.indices, k, a[e]);
            else
                job.partials[k * job.slices + blockIdx.y] = a[e];
        }
    }
}

// The slices of each output merged by one warp: lane l takes partials l, l + 32, ...
template <typename T, typename Op>
__global__ void __launch_bounds__(BLOCK) reduce_finish_kernel(reduce_job<T, Op> job) {
    const Op &op = job.op;
    int lane = threadIdx.x % 32;
    int64_t k = ((int64_t)blockIdx.x * BLOCK + threadIdx.x) / 32;
    typename Op::acc a = op.identity();
    if (k < job.K)
        for (int64_t s = lane; s < job.slices; s += 32)
            op.merge(a, job.partials[k * job.slices + s]);
    group_reduce(op, a, 32);
    if (k < job.K && lane == 0)
        op.write(job.out, job.indices, k, a);
}

// ---- plans and launches -----------------------------------------------------------------

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

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int pow2_at_least(int64_t n, int cap) {
    int p = 1;
    while (p < cap && p < n)
        p *= 2;
    return p;
}

// A plan for this geometry. It depends on shapes, strides and the pointer's alignment
// only (never on the device), so the workspace query and the launch agree.
static void make_plan(reduce_plan *p, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
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
            int64_t s = ceil_div(TARGET_BLOCKS, p->K), most = ceil_div(p->R, MIN_SLICE);
            s = s < most ? s : most;
            p->chunk = (ceil_div(p->R, s) + 15) / 16 * 16; // slices start 16-byte aligned with the row
            p->slices = ceil_div(p->R, p->chunk);
        }
        p->G = p->chunk >= BLOCK_MIN ? BLOCK : pow2_at_least(ceil_div(p->chunk, p->vectorized ? vec : 1), 32);
        p->blocks = ceil_div(p->K * p->slices, BLOCK / p->G);
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
    p->bx = pow2_at_least(cols, 32);
    p->by = BLOCK / p->bx;
    p->tiles = ceil_div(cols, p->bx);
    p->blocks = p->K / width * p->tiles;
    if (p->blocks < TARGET_BLOCKS && p->R >= 2 * MIN_WALK * p->by) {
        int64_t s = ceil_div(TARGET_BLOCKS, p->blocks), most = p->R / (MIN_WALK * p->by);
        s = s < most ? s : most;
        p->chunk = ceil_div(p->R, s);
        p->slices = ceil_div(p->R, p->chunk);
    }
}

static size_t workspace_bytes(const reduce_plan &p) {
    return p.slices > 1 ? (size_t)(p.K * p.slices) * PARTIAL_BYTES : 0;
}

template <typename T, typename Op>
static ct_status launch(const reduce_plan &p, const void *in, const Op &op, void *out, int32_t *indices,
                        void *workspace, cudaStream_t stream) {
    if (p.slices > 1 && !workspace)
        return ct__set_error(CT_ERR_INTERNAL, "reduction: the plan needs a workspace and none was given");
    if (p.blocks > INT32_MAX)
        return ct__set_error(CT_ERR_UNSUPPORTED, "reduction: %lld blocks exceed the grid", (long long)p.blocks);
    constexpr int VEC = 16 / sizeof(T);
    static_assert(sizeof(typename Op::acc) <= PARTIAL_BYTES, "a partial must fit its workspace slot");
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
        // The kernel's `kept` is the rows of outputs: the kept dims but the last.
        job.kept.ndim = p.kept.ndim - 1;
        if (job.kept.ndim == 0) {
            job.kept.ndim = 1;
            job.kept.shape[0] = 1;
            job.kept.strides[0] = 0;
        }
        dim3 grid((unsigned)p.blocks, (unsigned)p.slices), block(p.bx, p.by);
        if (p.vectorized)
            reduce_outer_kernel<T, Op, VEC><<<grid, block, 0, stream>>>(job, p.tiles);
        else
            reduce_outer_kernel<T, Op, 1><<<grid, block, 0, stream>>>(job, p.tiles);
    } else if (p.vectorized) {
        reduce_inner_kernel<T, Op, VEC><<<(unsigned)p.blocks, BLOCK, 0, stream>>>(job, p.G);
    } else {
        reduce_inner_kernel<T, Op, 1><<<(unsigned)p.blocks, BLOCK, 0, stream>>>(job, p.G);
    }
    if (!CT_CUDA_CHECK_LAUNCH())
        return ct_last_error();
    if (p.slices > 1) {
        reduce_finish_kernel<T, Op><<<(unsigned)ceil_div(p.K * 32, BLOCK), BLOCK, 0, stream>>>(job);
        if (!CT_CUDA_CHECK_LAUNCH())
            return ct_last_error();
    }
    return CT_OK;
}

static ct_status unsupported(const char *what, ct_dtype dtype) {
    return ct__set_error(CT_ERR_DTYPE, "%s: no CUDA kernel for %s tensors", what, ct_dtype_name(dtype));
}

// Floating dtypes with a float accumulator.
template <typename Op>
static ct_status launch_float(const char *what, ct_dtype dtype, const reduce_plan &p, const void *in, const Op &op,
                              void *out, int32_t *indices, void *workspace, cudaStream_t s) {
    switch (dtype) {
    case CT_F32: return launch<float>(p, in, op, out, indices, workspace, s);
    case CT_F16: return launch<__half>(p, in, op, out, indices, workspace, s);
    case CT_BF16: return launch<__nv_bfloat16>(p, in, op, out, indices, workspace, s);
    default: return unsupported(what, dtype);
    }
}

// Sum, max and min (and their arg forms) also for I32, accumulated in double.
template <template <typename> class Op>
static ct_status launch_any(const char *what, ct_dtype dtype, const reduce_plan &p, const void *in,
                            const Op<float> &op_float, const Op<double> &op_double, void *out, int32_t *indices,
                            void *workspace, cudaStream_t s) {
    if (dtype == CT_I32)
        return launch<int32_t>(p, in, op_double, out, indices, workspace, s);
    return launch_float(what, dtype, p, in, op_float, out, indices, workspace, s);
}

// An empty reduction: every output is `value`.
static ct_status fill_outputs(const reduce_plan &p, void *out, ct_dtype dtype, double value, ct_stream *stream) {
    int64_t one = 1;
    return ct_cuda_fill(1, &p.K, out, dtype, &one, value, stream);
}

extern "C" ct_status ct_cuda_reduce_workspace(ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                                              const int64_t *in_strides, const bool *reduce_mask, size_t *bytes) {
    reduce_plan p;
    make_plan(&p, dtype, ndim, shape, in, in_strides, reduce_mask);
    *bytes = workspace_bytes(p);
    return CT_OK;
}

extern "C" ct_status ct_cuda_reduce(ct_reduce_op op, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                                    const int64_t *in_strides, const bool *reduce_mask, void *out, double scale,
                                    void *workspace, ct_stream *stream) {
    reduce_plan p;
    make_plan(&p, dtype, ndim, shape, in, in_strides, reduce_mask);
    if (p.K == 0)
        return CT_OK;
    if (p.R == 0) {
        double empty = op == CT_RED_SUM ? 0.0 * scale : (op == CT_RED_LOGSUMEXP ? -INFINITY : NAN);
        return fill_outputs(p, out, dtype, empty, stream);
    }
    CT_LAUNCH_STREAM(s, stream);
    switch (op) {
    case CT_RED_SUM:
        return launch_any<sum_op>("ct_cuda_reduce", dtype, p, in, sum_op<float>{(float)scale}, sum_op<double>{scale},
                                  out, NULL, workspace, s);
    case CT_RED_MAX:
    case CT_RED_MIN: {
        bool is_max = op == CT_RED_MAX;
        return launch_any<extreme_op>("ct_cuda_reduce", dtype, p, in, extreme_op<float>{is_max},
                                      extreme_op<double>{is_max}, out, NULL, workspace, s);
    }
    case CT_RED_LOGSUMEXP: return launch_float("ct_cuda_reduce", dtype, p, in, lse_op{}, out, NULL, workspace, s);
    }
    return ct__set_error(CT_ERR_INTERNAL, "ct_cuda_reduce: unknown reduction %d", (int)op);
}

extern "C" ct_status ct_cuda_reduce_var(ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                                        const int64_t *in_strides, const bool *reduce_mask, void *out,
                                        double correction, bool take_sqrt, void *workspace, ct_stream *stream) {
    reduce_plan p;
    make_plan(&p, dtype, ndim, shape, in, in_strides, reduce_mask);
    if (p.K == 0)
        return CT_OK;
    double divisor = (double)p.R - correction;
    if (p.R == 0) { // as the CPU: 0 / max(0, divisor), NaN unless the correction is negative
        double v = 0.0 / (divisor > 0 ? divisor : 0.0);
        return fill_outputs(p, out, dtype, take_sqrt ? sqrt(v) : v, stream);
    }
    CT_LAUNCH_STREAM(s, stream);
    var_op op = {(float)(divisor > 0 ? divisor : 0.0), take_sqrt};
    return launch_float("ct_cuda_reduce_var", dtype, p, in, op, out, NULL, workspace, s);
}

extern "C" ct_status ct_cuda_reduce_arg(ct_reduce_op op, ct_dtype dtype, int ndim, const int64_t *shape,
                                        const void *in, const int64_t *in_strides, int dim, void *values,
                                        int32_t *indices, void *workspace, ct_stream *stream) {
    bool mask[CT_KMAX_DIMS] = {false};
    mask[dim] = true;
    reduce_plan p;
    make_plan(&p, dtype, ndim, shape, in, in_strides, mask);
    if (p.K == 0 || p.R == 0) // callers reject an empty dim; nothing to write
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    bool is_max = op == CT_RED_MAX;
    return launch_any<arg_op>("ct_cuda_reduce_arg", dtype, p, in, arg_op<float>{is_max}, arg_op<double>{is_max},
                              values, indices, workspace, s);
}
