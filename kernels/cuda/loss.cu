// ctensor — losses on the GPU.
//
// Cross-entropy and NLL: one warp per sample (classes strided over the lanes), per-sample
// results in F32 like the CPU's doubles (kernels/cpu/loss.h); cross-entropy's forward is an
// online max/sum-exp pass and, with label smoothing, a second pass for sum w_c (lse - x_c);
// its backward recomputes softmax from the saved log-sum-exp. Pointwise losses: one thread
// per element with the CPU's formula (kernels/cpu/loss_point.h, in double). Reductions are
// two fixed-shape stages (blocks, then one block over the block sums), so results repeat
// bit for bit, and the mean's divisor never leaves the device.
#include "kernels/cpu/loss_point.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/device_error.cuh"
#include "kernels/cuda/launch.h"

static const int threads = 256;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Element i of a buffer of dtype F32, F16 or BF16, as a double.
__device__ __forceinline__ double load_any(const void *p, ct_dtype dt, int64_t i) {
    if (dt == CT_F16)
        return (double)__half2float(((const __half *)p)[i]);
    if (dt == CT_BF16)
        return (double)__bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return (double)((const float *)p)[i];
}

static bool check_dtype(const char *op, ct_dtype dtype) {
    if (dtype == CT_F32 || dtype == CT_F16 || dtype == CT_BF16)
        return true;
    ct__set_error(CT_ERR_DTYPE, "%s: %s is not supported on CUDA", op, ct_dtype_name(dtype));
    return false;
}

#define DISPATCH_FLOAT(dtype, T, ...)                                                                                  \
    switch (dtype) {                                                                                                   \
    case CT_F16: {                                                                                                     \
        typedef __half T;                                                                                              \
        __VA_ARGS__;                                                                                                   \
    } break;                                                                                                           \
    case CT_BF16: {                                                                                                    \
        typedef __nv_bfloat16 T;                                                                                       \
        __VA_ARGS__;                                                                                                   \
    } break;                                                                                                           \
    default: {                                                                                                         \
        typedef float T;                                                                                               \
        __VA_ARGS__;                                                                                                   \
    } break;                                                                                                           \
    }

// ---- targets ------------------------------------------------------------------------------

// Whether sample s's target t counts: not ignore_index and in [0, C). A target out of range
// is treated like ignore_index (no memory is read through it) and reported at the next
// synchronization (kernels/cuda/device_error.cuh).
__device__ __forceinline__ bool target_counts(int32_t t, int ignore_index, const ct_index_report &r, int64_t s) {
    return t != ignore_index && ct_index_ok(r, t, s);
}

static bool target_report(ct_stream *stream, const char *op, int64_t C, ct_index_report *r) {
    return ct__cuda_index_report(stream, op, "target", CT_ERR_DIM, -1, C, r) == CT_OK;
}

// ---- cross-entropy and NLL --------------------------------------------------------------------

// Warp `warp` of `warps` takes samples warp, warp + warps, ...
#define FOR_EACH_SAMPLE(s, count)                                                                                      \
    for (int64_t s = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; s < (count);                               \
         s += (int64_t)gridDim.x * blockDim.x / 32)

template <typename T>
__global__ void ce_forward_kernel(int64_t N, int64_t C, int64_t K, const T *x, const int32_t *targets,
                                  const float *weight, int ignore_index, float smoothing, float *lse, float *loss,
                                  float *tw, ct_index_report report) {
    int lane = threadIdx.x % 32;
    FOR_EACH_SAMPLE(s, N * K) {
        int64_t base = (s / K) * C * K + s % K;
        // online max and sum of exp(x - max); -inf adds nothing, NaN poisons the sum, and so
        // does +inf (exp(inf - inf), as on the CPU, which takes the max first)
        float m = -INFINITY, sum = 0;
        for (int64_t c = lane; c < C; c += 32) {
            float v = ct_widen(x[base + c * K]);
            if (v > m) {
                sum = sum * expf(m - v) + (isinf(v) ? NAN : 1.0f);
                m = v;
            } else if (v != -INFINITY) {
                sum += expf(v - m);
            }
        }
        for (int o = 16; o > 0; o /= 2) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, sum, o);
            float mm = fmaxf(m, m2);
            sum = mm == -INFINITY ? sum + s2 : sum * expf(m - mm) + s2 * expf(m2 - mm);
            m = mm;
        }
        float l = m + logf(sum), smooth = 0;
        if (smoothing > 0) {
            for (int64_t c = lane; c < C; c += 32)
                smooth += (weight ? weight[c] : 1.0f) * (l - ct_widen(x[base + c * K]));
            smooth = warp_sum(smooth);
        }
        if (lane == 0) {
            lse[s] = l;
            int32_t t = targets[s];
            if (!target_counts(t, ignore_index, report, s)) {
                loss[s] = tw[s] = 0;
            } else {
                float wt = weight ? weight[t] : 1.0f;
                float v = (1 - smoothing) * wt * (l - ct_widen(x[base + t * K]));
                loss[s] = smoothing > 0 ? v + smoothing / (float)C * smooth : v;
                tw[s] = wt;
            }
        }
    }
}

// grad_c = gs ((1 - e) w[t] (p_c - [c == t]) + e / C (W p_c - w[c])), gs = g[s * stride] / divisor.
template <typename T>
__global__ void ce_backward_kernel(int64_t N, int64_t C, int64_t K, const T *x, const int32_t *targets,
                                   const float *weight, int ignore_index, float smoothing, const float *lse, const T *g,
                                   int64_t g_stride, const float *divisor, T *grad, ct_index_report report) {
    int lane = threadIdx.x % 32;
    FOR_EACH_SAMPLE(s, N * K) {
        int64_t base = (s / K) * C * K + s % K;
        int32_t t = targets[s];
        if (!target_counts(t, ignore_index, report, s)) {
            for (int64_t c = lane; c < C; c += 32)
                grad[base + c * K] = ct_from_double<T>(0.0);
            continue;
        }
        float W = (float)C;
        if (weight && smoothing > 0) {
            W = 0;
            for (int64_t c = lane; c < C; c += 32)
                W += weight[c];
            W = warp_sum(W);
        }
        float gs = ct_widen(g[s * g_stride]) / (divisor ? *divisor : 1.0f);
        float hard = (1 - smoothing) * (weight ? weight[t] : 1.0f), soft = smoothing / (float)C, l = lse[s];
        for (int64_t c = lane; c < C; c += 32) {
            float p = expf(ct_widen(x[base + c * K]) - l);
            float d = hard * (p - (c == t ? 1.0f : 0.0f));
            if (smoothing > 0)
                d += soft * (W * p - (weight ? weight[c] : 1.0f));
            grad[base + c * K] = ct_from_double<T>((double)(gs * d));
        }
    }
}

template <typename T>
__global__ void nll_forward_kernel(int64_t N, int64_t C, int64_t K, const T *x, const int32_t *targets,
                                   const float *weight, int ignore_index, float *loss, float *tw,
                                   ct_index_report report) {
    for (int64_t s = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; s < N * K; s += (int64_t)blockDim.x * gridDim.x) {
        int32_t t = targets[s];
        if (!target_counts(t, ignore_index, report, s)) {
            loss[s] = tw[s] = 0;
            continue;
        }
        float wt = weight ? weight[t] : 1.0f;
        loss[s] = -wt * ct_widen(x[(s / K) * C * K + t * K + s % K]);
        tw[s] = wt;
    }
}

template <typename T>
__global__ void nll_backward_kernel(int64_t N, int64_t C, int64_t K, const int32_t *targets, const float *weight,
                                    int ignore_index, const T *g, int64_t g_stride, const float *divisor, T *grad) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * C * K;
         i += (int64_t)blockDim.x * gridDim.x) {
        int64_t n = i / (C * K), c = (i / K) % C, s = n * K + i % K;
        int32_t t = targets[s];
        float v = 0;
        if (c == t && t != ignore_index) // c is in [0, C): a bad target never matches, nothing to report twice
            v = -ct_widen(g[s * g_stride]) / (divisor ? *divisor : 1.0f) * (weight ? weight[t] : 1.0f);
        grad[i] = ct_from_double<T>((double)v);
    }
}

extern "C" ct_status ct_cuda_cross_entropy_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                                   const int32_t *targets, const float *weight, int ignore_index,
                                                   double smoothing, float *lse, float *loss, float *tw,
                                                   ct_stream *stream) {
    if (!check_dtype("ct_cuda_cross_entropy_forward", dtype))
        return ct_last_error();
    if (N * K == 0)
        return CT_OK;
    ct_index_report r;
    if (!target_report(stream, "ct_cross_entropy", C, &r))
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    unsigned grid = ct_grid_for(N * K * 32, threads);
    DISPATCH_FLOAT(dtype, T,
                   ce_forward_kernel<T><<<grid, threads, 0, s>>>(N, C, K, (const T *)logits, targets, weight,
                                                                 ignore_index, (float)smoothing, lse, loss, tw, r));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_cross_entropy_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                                    const int32_t *targets, const float *weight, int ignore_index,
                                                    double smoothing, const float *lse, const void *g, int64_t g_stride,
                                                    const float *divisor, void *grad, ct_stream *stream) {
    if (!check_dtype("ct_cuda_cross_entropy_backward", dtype))
        return ct_last_error();
    if (N * K == 0 || C == 0)
        return CT_OK;
    ct_index_report r;
    if (!target_report(stream, "ct_cross_entropy", C, &r))
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    unsigned grid = ct_grid_for(N * K * 32, threads);
    DISPATCH_FLOAT(dtype, T,
                   ce_backward_kernel<T>
                   <<<grid, threads, 0, s>>>(N, C, K, (const T *)logits, targets, weight, ignore_index,
                                             (float)smoothing, lse, (const T *)g, g_stride, divisor, (T *)grad, r));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_nll_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *input,
                                         const int32_t *targets, const float *weight, int ignore_index, float *loss,
                                         float *tw, ct_stream *stream) {
    if (!check_dtype("ct_cuda_nll_forward", dtype))
        return ct_last_error();
    if (N * K == 0)
        return CT_OK;
    ct_index_report r;
    if (!target_report(stream, "ct_nll_loss", C, &r))
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T,
                   nll_forward_kernel<T><<<ct_grid_for(N * K, threads), threads, 0, s>>>(
                       N, C, K, (const T *)input, targets, weight, ignore_index, loss, tw, r));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_nll_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const int32_t *targets,
                                          const float *weight, int ignore_index, const void *g, int64_t g_stride,
                                          const float *divisor, void *grad, ct_stream *stream) {
    if (!check_dtype("ct_cuda_nll_backward", dtype))
        return ct_last_error();
    if (N * C * K == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T,
                   nll_backward_kernel<T><<<ct_grid_for(N * C * K, threads), threads, 0, s>>>(
                       N, C, K, targets, weight, ignore_index, (const T *)g, g_stride, divisor, (T *)grad));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

// ---- pointwise losses ------------------------------------------------------------------------

template <typename T>
__global__ void pointwise_kernel(ct_pointwise_loss kind, int64_t n, const T *x, const T *y, ct_dtype wdtype,
                                 const void *w, const void *pw, double param, T *out, float *values) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        double dx, dy;
        double l = ct_loss_point(kind, ct_to_double<T>(x[i]), ct_to_double<T>(y[i]), w ? load_any(w, wdtype, i) : 1.0,
                                 pw ? load_any(pw, wdtype, i) : 1.0, param, &dx, &dy);
        if (out)
            out[i] = ct_from_double<T>(l);
        if (values)
            values[i] = (float)l;
    }
}

template <typename T>
__global__ void pointwise_backward_kernel(ct_pointwise_loss kind, int64_t n, const T *x, const T *y, ct_dtype wdtype,
                                          const void *w, const void *pw, double param, const T *g, int64_t g_stride,
                                          double scale, T *dx, T *dy) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        double gx, gy, gi = scale * ct_to_double<T>(g[i * g_stride]);
        ct_loss_point(kind, ct_to_double<T>(x[i]), ct_to_double<T>(y[i]), w ? load_any(w, wdtype, i) : 1.0,
                      pw ? load_any(pw, wdtype, i) : 1.0, param, &gx, &gy);
        if (dx)
            dx[i] = ct_from_double<T>(gi * gx);
        if (dy)
            dy[i] = ct_from_double<T>(gi * gy);
    }
}

extern "C" ct_status ct_cuda_pointwise_loss(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x,
                                            const void *y, ct_dtype wdtype, const void *w, const void *pw, double param,
                                            void *out, float *values, ct_stream *stream) {
    if (!check_dtype("ct_cuda_pointwise_loss", dtype))
        return ct_last_error();
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T,
                   pointwise_kernel<T><<<ct_grid_for(n, threads), threads, 0, s>>>(
                       kind, n, (const T *)x, (const T *)y, wdtype, w, pw, param, (T *)out, values));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_pointwise_loss_backward(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x,
                                                     const void *y, ct_dtype wdtype, const void *w, const void *pw,
                                                     double param, const void *g, int64_t g_stride, double scale,
                                                     void *dx, void *dy, ct_stream *stream) {
    if (!check_dtype("ct_cuda_pointwise_loss_backward", dtype))
        return ct_last_error();
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T,
                   pointwise_backward_kernel<T><<<ct_grid_for(n, threads), threads, 0, s>>>(
                       kind, n, (const T *)x, (const T *)y, wdtype, w, pw, param, (const T *)g, g_stride, scale,
                       (T *)dx, (T *)dy));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

// ---- reduction ---------------------------------------------------------------------------------

// Block sum (blockDim.x == threads), the result in thread 0.
__device__ float block_sum(float v) {
    __shared__ float partial[threads / 32];
    v = warp_sum(v);
    if (threadIdx.x % 32 == 0)
        partial[threadIdx.x / 32] = v;
    __syncthreads();
    v = threadIdx.x < threads / 32 ? partial[threadIdx.x] : 0.0f;
    if (threadIdx.x < 32)
        v = warp_sum(v);
    __syncthreads();
    return v;
}

// Block b sums its slice [n b / B, n (b + 1) / B) of values (and weights) into workspace.
__global__ void loss_sum_partial_kernel(int64_t n, const float *values, const float *weights, float *workspace) {
    int64_t B = gridDim.x, b = blockIdx.x, lo = n * b / B, hi = n * (b + 1) / B;
    float v = 0, w = 0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        v += values[i];
        if (weights)
            w += weights[i];
    }
    v = block_sum(v);
    w = block_sum(w);
    if (threadIdx.x == 0) {
        workspace[b] = v;
        workspace[B + b] = w;
    }
}

__global__ void loss_sum_final_kernel(int blocks, const float *workspace, bool weighted, double scale,
                                      ct_dtype out_dtype, void *out, float *weight_sum) {
    float v = 0, w = 0;
    for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
        v += workspace[b];
        w += workspace[blocks + b];
    }
    v = block_sum(v);
    w = block_sum(w);
    if (threadIdx.x != 0)
        return;
    double r = scale * (double)v / (weighted ? (double)w : 1.0);
    if (out_dtype == CT_F16)
        *(__half *)out = ct_from_double<__half>(r);
    else if (out_dtype == CT_BF16)
        *(__nv_bfloat16 *)out = ct_from_double<__nv_bfloat16>(r);
    else
        *(float *)out = (float)r;
    if (weight_sum)
        *weight_sum = w;
}

extern "C" ct_status ct_cuda_loss_sum(ct_dtype out_dtype, int64_t n, const float *values, const float *weights,
                                      double scale, void *out, float *weight_sum, float *workspace, ct_stream *stream) {
    if (!check_dtype("ct_cuda_loss_sum", out_dtype))
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    int64_t blocks = (n + 4 * threads - 1) / (4 * threads);
    blocks = blocks < 1 ? 1 : (blocks > CT_CUDA_LOSS_BLOCKS ? CT_CUDA_LOSS_BLOCKS : blocks);
    loss_sum_partial_kernel<<<(unsigned)blocks, threads, 0, s>>>(n, values, weights, workspace);
    loss_sum_final_kernel<<<1, threads, 0, s>>>((int)blocks, workspace, weights != NULL, scale, out_dtype, out,
                                                weight_sum);
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
