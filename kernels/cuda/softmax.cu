// ctensor — softmax and log-softmax along one dim on the GPU, forward and backward.
//
// The work is laid out as in kernels/cpu/softmax.c:
// - lanes: when the dims after `dim` form one contiguous block (any contiguous input with
//   `dim` not last), each thread owns one lane (an index of those dims) and walks `dim`;
//   neighbouring threads read neighbouring elements, so every step is coalesced.
// - rows: otherwise each row (the elements along `dim`) belongs to a group of threads:
//   * short rows (<= 1024) that allow 16-byte loads (unit stride, aligned, a multiple of
//     16 bytes long): a sub-warp of 1..32 lanes holds the whole row in registers, so it
//     is read from memory once, and reduces the max and the sum with shuffles;
//   * other rows up to 1024: a sub-warp, two passes over memory (the second mostly from
//     L1/L2, the row having just been read);
//   * longer rows: a block of 256 threads per row, 16-byte loads when aligned.
// The first pass keeps an online (max, sum of exp(x - max)) pair per thread, the sum
// rescaled when the max grows, so exp never sees a positive argument; the pairs are merged
// across threads in a fixed tree and the write pass computes exp(x - max) / sum or
// (x - max) - log(sum). Everything computes in float. Results match the CPU's rules: a
// row whose max is -inf (all -inf) gives NaN, -inf elements of other rows give 0
// (log-softmax: -inf), a NaN or +inf anywhere in a row makes the row NaN.
//
// The backward computes sum(g * y) (log-softmax: sum(g)) per row with the same layouts,
// then y * (g - sum) (log-softmax: g - exp(y) * sum).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

#include <math.h>
#include <type_traits>

#define BLOCK 256
#define WARP_ROW_MAX 1024 // rows up to this long get a sub-warp, longer ones a block

// ---- geometry ---------------------------------------------------------------------------

// The rows: every dim but `dim`, or those before it (the outer index of lanes), coalesced
// (kernels/cpu/strided.h: ct_dims_rows, ct_dims_offset).
typedef ct_dims rows_geom;

// True when the dims after `dim` form one contiguous block (lanes at stride 1).
static bool lanes_contiguous(int ndim, const int64_t *shape, const int64_t *strides, int dim) {
    int64_t expected = 1;
    for (int d = ndim - 1; d > dim; d--) {
        if (shape[d] != 1 && strides[d] != expected)
            return false;
        expected *= shape[d];
    }
    return true;
}

// Every row of `w` at `base` starts on a 16-byte boundary (strides in multiples of vec elements).
static bool rows_aligned(const void *base, const rows_geom &w, int64_t vec) {
    bool ok = (uintptr_t)base % 16 == 0;
    for (int d = 0; d < w.ndim; d++)
        ok = ok && w.strides[d] % vec == 0;
    return ok;
}

// ---- merging across threads -------------------------------------------------------------

// Online softmax statistics: m the max so far, s the sum of exp(x - m). NaN elements never
// raise m but make s NaN; -inf elements add nothing; a +inf element adds exp(inf - inf), NaN,
// as when the max is taken first (online_push_n, the warp kernel, the CPU).
struct online {
    float m, s;
};

__device__ __forceinline__ void online_push(online &a, float x) {
    if (x > a.m) {
        a.s = a.s * expf(a.m - x) + (isinf(x) ? NAN : 1.0f);
        a.m = x;
    } else if (x != -INFINITY) {
        a.s += expf(x - a.m);
    }
}

// N elements: their max first, so the sum is rescaled at most once.
template <int N> __device__ __forceinline__ void online_push_n(online &a, const float (&x)[N]) {
    float m = a.m;
#pragma unroll
    for (int i = 0; i < N; i++)
        m = x[i] > m ? x[i] : m;
    if (m > a.m) {
        a.s *= expf(a.m - m);
        a.m = m;
    }
#pragma unroll
    for (int i = 0; i < N; i++)
        a.s += x[i] == -INFINITY ? 0.0f : expf(x[i] - a.m);
}

struct online_merge {
    __device__ void operator()(online &a, const online &b) const {
        if (b.m > a.m) {
            a.s = a.s * expf(a.m - b.m) + b.s;
            a.m = b.m;
        } else if (b.m == -INFINITY) {
            a.s += b.s; // 0, or a NaN to pass on
        } else {
            a.s += b.s * expf(b.m - a.m);
        }
    }
};

struct max_merge {
    __device__ void operator()(float &a, const float &b) const { a = fmaxf(a, b); } // NaN never wins
};

struct sum_merge {
    __device__ void operator()(float &a, const float &b) const { a += b; }
};

template <typename A> __device__ __forceinline__ A shuffle_words(A a, int lane_or_mask, int width, bool xor_mode) {
    static_assert(sizeof(A) % 4 == 0, "made of 4-byte words");
    union {
        A a;
        int w[sizeof(A) / 4];
    } u;
    u.a = a;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(A) / 4); i++)
        u.w[i] = xor_mode ? __shfl_xor_sync(0xffffffffu, u.w[i], lane_or_mask)
                          : __shfl_sync(0xffffffffu, u.w[i], lane_or_mask, width);
    return u.a;
}

// Merged over each aligned group of G lanes (a power of two up to 32) in a fixed tree; every
// lane gets its group's lane-0 result. Every lane of the warp must call it.
template <typename A, typename M> __device__ __forceinline__ A group_all(A a, int G, M merge) {
    for (int offset = G / 2; offset > 0; offset /= 2)
        merge(a, shuffle_words(a, offset, 32, true));
    return shuffle_words(a, 0, G, false);
}

// Merged over the block (BLOCK threads); every thread gets the result. Once per kernel.
template <typename A, typename M> __device__ A block_all(A a, M merge) {
    __shared__ A warp_results[BLOCK / 32];
    __shared__ A result;
    a = group_all(a, 32, merge);
    if (threadIdx.x % 32 == 0)
        warp_results[threadIdx.x / 32] = a;
    __syncthreads();
    if (threadIdx.x == 0) {
        A r = warp_results[0];
        for (int w = 1; w < BLOCK / 32; w++)
            merge(r, warp_results[w]);
        result = r;
    }
    __syncthreads();
    return result;
}

// ---- forward ----------------------------------------------------------------------------

template <typename T> struct softmax_job {
    const T *in;
    rows_geom in_rows;
    int64_t in_stride; // along dim
    T *out;
    rows_geom out_rows;
    int64_t out_stride;
    int64_t n;     // elements along dim
    int64_t items; // rows, or outer indices on the lanes path
    bool take_log;
};

__device__ __forceinline__ float softmax_value(float x, float m, float log_s, float inv_s, bool take_log) {
    return take_log ? (x - m) - log_s : expf(x - m) * inv_s;
}

// Rows of n = G * NV * VEC elements or fewer, unit stride, aligned: held in registers.
template <typename T, int NV>
__global__ void __launch_bounds__(BLOCK) softmax_warp_kernel(softmax_job<T> job, int G) {
    constexpr int VEC = 16 / sizeof(T);
    int lane = threadIdx.x % G;
    int64_t row = (int64_t)blockIdx.x * (BLOCK / G) + threadIdx.x / G;
    bool live = row < job.items; // no early return before the shuffles
    int64_t nvec = job.n / VEC;
    const T *row_in = job.in + (live ? ct_dims_offset(&job.in_rows, row) : 0);
    const ct_pack<T, VEC> *src = reinterpret_cast<const ct_pack<T, VEC> *>(row_in);
    float x[NV][VEC];
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int64_t v = lane + (int64_t)i * G;
        ct_pack<T, VEC> p = {};
        if (live && v < nvec)
            p = src[v];
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            x[i][e] = live && v < nvec ? ct_widen(p.v[e]) : -INFINITY;
            m = x[i][e] > m ? x[i][e] : m;
        }
    }
    m = group_all(m, G, max_merge());
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++)
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            float ex = x[i][e] == -INFINITY ? 0.0f : expf(x[i][e] - m); // padding adds 0
            s += ex;
            if (!job.take_log)
                x[i][e] = ex; // 0 * (1 / 0) = NaN when the whole row is -inf, as wanted
        }
    s = group_all(s, G, sum_merge());
    if (!live)
        return;
    float log_s = logf(s), inv_s = 1.0f / s;
    ct_pack<T, VEC> *dst = reinterpret_cast<ct_pack<T, VEC> *>(job.out + ct_dims_offset(&job.out_rows, row));
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int64_t v = lane + (int64_t)i * G;
        if (v < nvec) {
            ct_pack<T, VEC> q;
#pragma unroll
            for (int e = 0; e < VEC; e++)
                q.v[e] = ct_narrow<T>(job.take_log ? (x[i][e] - m) - log_s : x[i][e] * inv_s);
            dst[v] = q;
        }
    }
}

// Any row: G lanes (or the whole block when G == BLOCK) per row, two passes over memory.
// VEC > 1: unit strides and aligned rows, 16-byte accesses.
template <typename T, int VEC>
__global__ void __launch_bounds__(BLOCK) softmax_rows_kernel(softmax_job<T> job, int G) {
    int lane = threadIdx.x % G;
    int64_t row = (int64_t)blockIdx.x * (BLOCK / G) + threadIdx.x / G;
    bool live = row < job.items;
    const T *src = job.in + (live ? ct_dims_offset(&job.in_rows, row) : 0);
    online a = {-INFINITY, 0.0f};
    if (live) {
        if (VEC > 1) {
            const ct_pack<T, VEC> *vp = reinterpret_cast<const ct_pack<T, VEC> *>(src);
            int64_t nvec = job.n / VEC, v = lane;
            for (; v + 3 * G < nvec; v += 4 * G) {
                ct_pack<T, VEC> p[4];
#pragma unroll
                for (int u = 0; u < 4; u++)
                    p[u] = vp[v + u * G];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    float x[VEC];
#pragma unroll
                    for (int e = 0; e < VEC; e++)
                        x[e] = ct_widen(p[u].v[e]);
                    online_push_n(a, x);
                }
            }
            for (; v < nvec; v += G) {
                ct_pack<T, VEC> p = vp[v];
                float x[VEC];
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    x[e] = ct_widen(p.v[e]);
                online_push_n(a, x);
            }
        } else {
#pragma unroll 4
            for (int64_t j = lane; j < job.n; j += G)
                online_push(a, ct_widen(src[j * job.in_stride]));
        }
    }
    if (G == BLOCK)
        a = block_all(a, online_merge());
    else
        a = group_all(a, G, online_merge());
    if (!live)
        return;
    float log_s = logf(a.s), inv_s = 1.0f / a.s;
    T *dst = job.out + ct_dims_offset(&job.out_rows, row);
    if (VEC > 1) {
        const ct_pack<T, VEC> *vp = reinterpret_cast<const ct_pack<T, VEC> *>(src);
        ct_pack<T, VEC> *wp = reinterpret_cast<ct_pack<T, VEC> *>(dst);
        for (int64_t v = lane; v < job.n / VEC; v += G) {
            ct_pack<T, VEC> p = vp[v], q;
#pragma unroll
            for (int e = 0; e < VEC; e++)
                q.v[e] = ct_narrow<T>(softmax_value(ct_widen(p.v[e]), a.m, log_s, inv_s, job.take_log));
            wp[v] = q;
        }
    } else {
#pragma unroll 4
        for (int64_t j = lane; j < job.n; j += G)
            dst[j * job.out_stride] =
                ct_narrow<T>(softmax_value(ct_widen(src[j * job.in_stride]), a.m, log_s, inv_s, job.take_log));
    }
}

// Lanes: thread t owns lane t % inner of outer index t / inner and walks dim.
template <typename T>
__global__ void __launch_bounds__(BLOCK) softmax_lanes_kernel(softmax_job<T> job, int64_t inner) {
    int64_t t = (int64_t)blockIdx.x * BLOCK + threadIdx.x;
    if (t >= job.items * inner)
        return;
    int64_t o = t / inner, l = t % inner;
    const T *src = job.in + ct_dims_offset(&job.in_rows, o) + l;
    T *dst = job.out + ct_dims_offset(&job.out_rows, o) + l;
    online a = {-INFINITY, 0.0f};
#pragma unroll 4
    for (int64_t j = 0; j < job.n; j++)
        online_push(a, ct_widen(src[j * job.in_stride]));
    float log_s = logf(a.s), inv_s = 1.0f / a.s;
#pragma unroll 4
    for (int64_t j = 0; j < job.n; j++)
        dst[j * job.out_stride] =
            ct_narrow<T>(softmax_value(ct_widen(src[j * job.in_stride]), a.m, log_s, inv_s, job.take_log));
}

// ---- backward ---------------------------------------------------------------------------

template <typename T> struct backward_job {
    const T *y, *g;
    rows_geom y_rows, g_rows;
    int64_t y_stride, g_stride;
    T *out;
    rows_geom out_rows;
    int64_t out_stride;
    int64_t n, items;
    bool take_log;
};

// The dot term of one element: g * y, or g alone for log-softmax.
__device__ __forceinline__ float dot_term(float y, float g, bool take_log) { return take_log ? g : g * y; }

__device__ __forceinline__ float grad_value(float y, float g, float dot, bool take_log) {
    return take_log ? g - expf(y) * dot : y * (g - dot);
}

template <typename T, int NV>
__global__ void __launch_bounds__(BLOCK) backward_warp_kernel(backward_job<T> job, int G) {
    constexpr int VEC = 16 / sizeof(T);
    int lane = threadIdx.x % G;
    int64_t row = (int64_t)blockIdx.x * (BLOCK / G) + threadIdx.x / G;
    bool live = row < job.items;
    int64_t nvec = job.n / VEC;
    const ct_pack<T, VEC> *yp = reinterpret_cast<const ct_pack<T, VEC> *>(job.y + (live ? ct_dims_offset(&job.y_rows, row) : 0));
    const ct_pack<T, VEC> *gp = reinterpret_cast<const ct_pack<T, VEC> *>(job.g + (live ? ct_dims_offset(&job.g_rows, row) : 0));
    float y[NV][VEC], g[NV][VEC];
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int64_t v = lane + (int64_t)i * G;
        ct_pack<T, VEC> py = {}, pg = {};
        if (live && v < nvec) {
            py = yp[v];
            pg = gp[v];
        }
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            bool valid = live && v < nvec;
            y[i][e] = valid ? ct_widen(py.v[e]) : 0.0f;
            g[i][e] = valid ? ct_widen(pg.v[e]) : 0.0f;
            dot += dot_term(y[i][e], g[i][e], job.take_log);
        }
    }
    dot = group_all(dot, G, sum_merge());
    if (!live)
        return;
    ct_pack<T, VEC> *dst = reinterpret_cast<ct_pack<T, VEC> *>(job.out + ct_dims_offset(&job.out_rows, row));
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int64_t v = lane + (int64_t)i * G;
        if (v < nvec) {
            ct_pack<T, VEC> q;
#pragma unroll
            for (int e = 0; e < VEC; e++)
                q.v[e] = ct_narrow<T>(grad_value(y[i][e], g[i][e], dot, job.take_log));
            dst[v] = q;
        }
    }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(BLOCK) backward_rows_kernel(backward_job<T> job, int G) {
    int lane = threadIdx.x % G;
    int64_t row = (int64_t)blockIdx.x * (BLOCK / G) + threadIdx.x / G;
    bool live = row < job.items;
    const T *ys = job.y + (live ? ct_dims_offset(&job.y_rows, row) : 0);
    const T *gs = job.g + (live ? ct_dims_offset(&job.g_rows, row) : 0);
    float dot = 0.0f;
    if (live) {
        if (VEC > 1) {
            const ct_pack<T, VEC> *yp = reinterpret_cast<const ct_pack<T, VEC> *>(ys);
            const ct_pack<T, VEC> *gp = reinterpret_cast<const ct_pack<T, VEC> *>(gs);
            for (int64_t v = lane; v < job.n / VEC; v += G) {
                ct_pack<T, VEC> py = yp[v], pg = gp[v];
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    dot += dot_term(ct_widen(py.v[e]), ct_widen(pg.v[e]), job.take_log);
            }
        } else {
#pragma unroll 4
            for (int64_t j = lane; j < job.n; j += G)
                dot += dot_term(ct_widen(ys[j * job.y_stride]), ct_widen(gs[j * job.g_stride]), job.take_log);
        }
    }
    if (G == BLOCK)
        dot = block_all(dot, sum_merge());
    else
        dot = group_all(dot, G, sum_merge());
    if (!live)
        return;
    T *dst = job.out + ct_dims_offset(&job.out_rows, row);
    if (VEC > 1) {
        const ct_pack<T, VEC> *yp = reinterpret_cast<const ct_pack<T, VEC> *>(ys);
        const ct_pack<T, VEC> *gp = reinterpret_cast<const ct_pack<T, VEC> *>(gs);
        ct_pack<T, VEC> *wp = reinterpret_cast<ct_pack<T, VEC> *>(dst);
        for (int64_t v = lane; v < job.n / VEC; v += G) {
            ct_pack<T, VEC> py = yp[v], pg = gp[v], q;
#pragma unroll
            for (int e = 0; e < VEC; e++)
                q.v[e] = ct_narrow<T>(grad_value(ct_widen(py.v[e]), ct_widen(pg.v[e]), dot, job.take_log));
            wp[v] = q;
        }
    } else {
#pragma unroll 4
        for (int64_t j = lane; j < job.n; j += G)
            dst[j * job.out_stride] =
                ct_narrow<T>(grad_value(ct_widen(ys[j * job.y_stride]), ct_widen(gs[j * job.g_stride]), dot, job.take_log));
    }
}

template <typename T>
__global__ void __launch_bounds__(BLOCK) backward_lanes_kernel(backward_job<T> job, int64_t inner) {
    int64_t t = (int64_t)blockIdx.x * BLOCK + threadIdx.x;
    if (t >= job.items * inner)
        return;
    int64_t o = t / inner, l = t % inner;
    const T *ys = job.y + ct_dims_offset(&job.y_rows, o) + l;
    const T *gs = job.g + ct_dims_offset(&job.g_rows, o) + l;
    T *dst = job.out + ct_dims_offset(&job.out_rows, o) + l;
    float dot = 0.0f;
#pragma unroll 4
    for (int64_t j = 0; j < job.n; j++)
        dot += dot_term(ct_widen(ys[j * job.y_stride]), ct_widen(gs[j * job.g_stride]), job.take_log);
#pragma unroll 4
    for (int64_t j = 0; j < job.n; j++)
        dst[j * job.out_stride] =
            ct_narrow<T>(grad_value(ct_widen(ys[j * job.y_stride]), ct_widen(gs[j * job.g_stride]), dot, job.take_log));
}

// ---- launchers --------------------------------------------------------------------------

// The layout shared by forward and backward: n along dim, `inner` elements after it, the
// output's contiguous strides, and whether the lanes path applies.
struct softmax_plan {
    int64_t numel, n, inner;
    bool lanes;
    int64_t out_strides[CT_KMAX_DIMS];
};

static void make_plan(softmax_plan *p, int ndim, const int64_t *shape, int dim, bool lanes_ok) {
    p->numel = 1;
    p->inner = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        p->out_strides[d] = p->numel;
        p->numel *= shape[d];
        if (d > dim)
            p->inner *= shape[d];
    }
    p->n = shape[dim];
    p->lanes = lanes_ok && p->inner > 1;
}

// The launch geometry of the rows path: the register kernel (nv > 0 vectors per lane) or
// the two-pass kernel, G threads per row.
struct rows_launch {
    int nv, G;
    int64_t blocks;
};

static rows_launch rows_geometry(int64_t n, int64_t items, bool vectorized, int64_t vec) {
    rows_launch r;
    int64_t units = vectorized ? n / vec : n;
    r.nv = 0;
    if (n > WARP_ROW_MAX) {
        r.G = BLOCK;
    } else {
        r.G = ct_pow2_at_least(units, 32);
        if (vectorized)
            r.nv = ct_pow2_at_least(ct_ceil_div(units, r.G), 8);
    }
    r.blocks = ct_ceil_div(items, BLOCK / r.G);
    return r;
}

static ct_status check_launch(void) { return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error(); }

// Launch the rows path of geometry r: warp(nv, grid) for the register kernel with nv
// vectors per lane, else rows(vec, grid) for the two-pass kernel with vectors of vec (VEC
// when vectorized, else 1); nv and vec come as std::integral_constant.
template <int VEC, typename Warp, typename Rows>
static ct_status launch_rows(const char *what, const rows_launch &r, bool vectorized, const Warp &warp,
                             const Rows &rows) {
    if (r.blocks > INT32_MAX)
        return ct__set_error(CT_ERR_UNSUPPORTED, "%s: %lld blocks exceed the grid", what, (long long)r.blocks);
    unsigned grid = (unsigned)r.blocks;
    switch (r.nv) {
    case 1: warp(std::integral_constant<int, 1>(), grid); break;
    case 2: warp(std::integral_constant<int, 2>(), grid); break;
    case 4: warp(std::integral_constant<int, 4>(), grid); break;
    case 8: // only F32 rows hold more than 4 vectors per lane
        if constexpr (VEC == 4)
            warp(std::integral_constant<int, 8>(), grid);
        else
            return ct__set_error(CT_ERR_INTERNAL, "%s: no register kernel for 8 vectors per lane", what);
        break;
    default:
        if (vectorized)
            rows(std::integral_constant<int, VEC>(), grid);
        else
            rows(std::integral_constant<int, 1>(), grid);
    }
    return check_launch();
}

template <typename T>
static ct_status softmax_launch(bool take_log, int ndim, const int64_t *shape, const void *in,
                                const int64_t *in_strides, int dim, void *out, cudaStream_t s) {
    softmax_plan p;
    make_plan(&p, ndim, shape, dim, lanes_contiguous(ndim, shape, in_strides, dim));
    if (p.numel == 0)
        return CT_OK;
    softmax_job<T> job;
    job.in = (const T *)in;
    job.out = (T *)out;
    job.in_stride = in_strides[dim];
    job.out_stride = p.out_strides[dim];
    job.n = p.n;
    job.take_log = take_log;
    ct_dims_rows(&job.in_rows, ndim, shape, in_strides, dim, p.lanes);
    ct_dims_rows(&job.out_rows, ndim, shape, p.out_strides, dim, p.lanes);
    if (p.lanes) {
        job.items = p.numel / (p.n * p.inner);
        int64_t blocks = ct_ceil_div(job.items * p.inner, BLOCK);
        if (blocks > INT32_MAX)
            return ct__set_error(CT_ERR_UNSUPPORTED, "ct_cuda_softmax: %lld blocks exceed the grid", (long long)blocks);
        softmax_lanes_kernel<T><<<(unsigned)blocks, BLOCK, 0, s>>>(job, p.inner);
        return check_launch();
    }
    constexpr int VEC = 16 / sizeof(T);
    job.items = p.numel / p.n;
    bool vectorized = job.in_stride == 1 && job.out_stride == 1 && p.n % VEC == 0 &&
                      rows_aligned(in, job.in_rows, VEC) && rows_aligned(out, job.out_rows, VEC);
    rows_launch r = rows_geometry(p.n, job.items, vectorized, VEC);
    return launch_rows<VEC>(
        "ct_cuda_softmax", r, vectorized,
        [&](auto nv, unsigned grid) { softmax_warp_kernel<T, decltype(nv)::value><<<grid, BLOCK, 0, s>>>(job, r.G); },
        [&](auto vec, unsigned grid) { softmax_rows_kernel<T, decltype(vec)::value><<<grid, BLOCK, 0, s>>>(job, r.G); });
}

template <typename T>
static ct_status backward_launch(bool take_log, int ndim, const int64_t *shape, const void *y,
                                 const int64_t *y_strides, const void *g, const int64_t *g_strides, int dim,
                                 void *grad_in, cudaStream_t s) {
    softmax_plan p;
    make_plan(&p, ndim, shape, dim,
              lanes_contiguous(ndim, shape, y_strides, dim) && lanes_contiguous(ndim, shape, g_strides, dim));
    if (p.numel == 0)
        return CT_OK;
    backward_job<T> job;
    job.y = (const T *)y;
    job.g = (const T *)g;
    job.out = (T *)grad_in;
    job.y_stride = y_strides[dim];
    job.g_stride = g_strides[dim];
    job.out_stride = p.out_strides[dim];
    job.n = p.n;
    job.take_log = take_log;
    ct_dims_rows(&job.y_rows, ndim, shape, y_strides, dim, p.lanes);
    ct_dims_rows(&job.g_rows, ndim, shape, g_strides, dim, p.lanes);
    ct_dims_rows(&job.out_rows, ndim, shape, p.out_strides, dim, p.lanes);
    if (p.lanes) {
        job.items = p.numel / (p.n * p.inner);
        int64_t blocks = ct_ceil_div(job.items * p.inner, BLOCK);
        if (blocks > INT32_MAX)
            return ct__set_error(CT_ERR_UNSUPPORTED, "ct_cuda_softmax_backward: %lld blocks exceed the grid",
                                 (long long)blocks);
        backward_lanes_kernel<T><<<(unsigned)blocks, BLOCK, 0, s>>>(job, p.inner);
        return check_launch();
    }
    constexpr int VEC = 16 / sizeof(T);
    job.items = p.numel / p.n;
    bool vectorized = job.y_stride == 1 && job.g_stride == 1 && job.out_stride == 1 && p.n % VEC == 0 &&
                      rows_aligned(y, job.y_rows, VEC) && rows_aligned(g, job.g_rows, VEC) &&
                      rows_aligned(grad_in, job.out_rows, VEC);
    rows_launch r = rows_geometry(p.n, job.items, vectorized, VEC);
    return launch_rows<VEC>(
        "ct_cuda_softmax_backward", r, vectorized,
        [&](auto nv, unsigned grid) { backward_warp_kernel<T, decltype(nv)::value><<<grid, BLOCK, 0, s>>>(job, r.G); },
        [&](auto vec, unsigned grid) { backward_rows_kernel<T, decltype(vec)::value><<<grid, BLOCK, 0, s>>>(job, r.G); });
}

static ct_status unsupported(const char *what, ct_dtype dtype) {
    return ct__set_error(CT_ERR_DTYPE, "%s: no CUDA kernel for %s tensors", what, ct_dtype_name(dtype));
}

extern "C" ct_status ct_cuda_softmax(ct_dtype dtype, bool take_log, int ndim, const int64_t *shape, const void *in,
                                     const int64_t *in_strides, int dim, void *out, ct_stream *stream) {
    CT_LAUNCH_STREAM(s, stream);
    switch (dtype) {
    case CT_F32: return softmax_launch<float>(take_log, ndim, shape, in, in_strides, dim, out, s);
    case CT_F16: return softmax_launch<__half>(take_log, ndim, shape, in, in_strides, dim, out, s);
    case CT_BF16: return softmax_launch<__nv_bfloat16>(take_log, ndim, shape, in, in_strides, dim, out, s);
    default: return unsupported("ct_cuda_softmax", dtype);
    }
}

extern "C" ct_status ct_cuda_softmax_backward(ct_dtype dtype, bool take_log, int ndim, const int64_t *shape,
                                              const void *y, const int64_t *y_strides, const void *g,
                                              const int64_t *g_strides, int dim, void *grad_in, ct_stream *stream) {
    CT_LAUNCH_STREAM(s, stream);
    switch (dtype) {
    case CT_F32:
        return backward_launch<float>(take_log, ndim, shape, y, y_strides, g, g_strides, dim, grad_in, s);
    case CT_F16:
        return backward_launch<__half>(take_log, ndim, shape, y, y_strides, g, g_strides, dim, grad_in, s);
    case CT_BF16:
        return backward_launch<__nv_bfloat16>(take_log, ndim, shape, y, y_strides, g, g_strides, dim, grad_in, s);
    default: return unsupported("ct_cuda_softmax_backward", dtype);
    }
}
