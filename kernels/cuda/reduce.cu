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
// partials) and write (the output); the accumulators, the plans and each thread's walk are in
// kernels/cuda/reduce_plan.cuh, host code too, tested on the CPU. Semantics are the CPU's: NaN propagates through
// max/min/sum/logsumexp/var, argmax/argmin take the first NaN or else the first extreme
// (ties resolve to the lowest index whatever the merge order), logsumexp adds equal maxima
// directly so that infinities never meet in exp(inf - inf). Empty reductions are filled
// by the launcher before any kernel runs.
#include "kernels/cuda/reduce_plan.cuh"
#include "kernels/cuda/launch.h"

#include <math.h>

// ---- merging across threads -------------------------------------------------------------

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

// Inner layout: unit u = (output u / slices, slice u % slices), G threads each.
// (tests/test_reduce_plan.cu emulates these three kernels' merge trees: keep them in step.)
template <typename T, typename Op, int VEC>
__global__ void __launch_bounds__(BLOCK) reduce_inner_kernel(reduce_job<T, Op> job, int G) {
    const Op &op = job.op;
    int lane = threadIdx.x % G;
    int64_t unit = (int64_t)blockIdx.x * (BLOCK / G) + threadIdx.x / G;
    bool live = unit < job.K * job.slices; // no early return: every lane joins the shuffles
    typename Op::acc a = live ? inner_lane<T, Op, VEC>(job, unit, lane, G) : op.identity();
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
    if (live)
        outer_walk<T, Op, VEC>(job, row, col, r0, r1, ty, by, a);
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

// ---- launches -----------------------------------------------------------------------------

template <typename T, typename Op>
static ct_status launch(const reduce_plan &p, const void *in, const Op &op, void *out, int32_t *indices,
                        void *workspace, cudaStream_t stream) {
    if (p.slices > 1 && !workspace)
        return ct__set_error(CT_ERR_INTERNAL, "reduction: the plan needs a workspace and none was given");
    if (p.blocks > INT32_MAX)
        return ct__set_error(CT_ERR_UNSUPPORTED, "reduction: %lld blocks exceed the grid", (long long)p.blocks);
    constexpr int VEC = 16 / sizeof(T);
    static_assert(sizeof(typename Op::acc) <= PARTIAL_BYTES, "a partial must fit its workspace slot");
    reduce_job<T, Op> job = make_job<T>(p, in, op, out, indices, workspace);
    if (p.outer) {
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
        reduce_finish_kernel<T, Op><<<(unsigned)ct_ceil_div(p.K * 32, BLOCK), BLOCK, 0, stream>>>(job);
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
