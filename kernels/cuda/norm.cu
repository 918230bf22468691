// ctensor — batch norm (cuDNN, spatial mode) and layer norm (hand-written) on the GPU.
//
// Batch norm sees x as (N, C, S, 1) NCHW for cuDNN; parameters and statistics are F32 (the
// type cuDNN derives for F32, F16 and BF16 data). cuDNN's training forward already updates
// the running statistics with the unbiased variance, as PyTorch does. The evaluation-mode
// backward (dx = g * weight * invstd) is not something cuDNN offers: two small kernels.
//
// Layer norm: one block per row, two passes over the row (mean, then the variance around
// it) in float, reading the row from L1/L2 the second time; the backward's dx is another
// block per row; the parameter gradients are column sums over fixed chunks of rows, then
// over the chunks in order, so they repeat bit for bit.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dnn.h"
#include "kernels/cuda/launch.h"

#include <climits>

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread. `shared` holds 33 floats.
__device__ float block_sum(float v, float *shared) {
    for (int o = 16; o > 0; o /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    __syncthreads(); // shared may still be read from a previous call
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? shared[lane] : 0.0f;
        for (int o = 16; o > 0; o /= 2)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0)
            shared[32] = v;
    }
    __syncthreads();
    return shared[32];
}

// ---- batch norm on cuDNN -----------------------------------------------------------------

typedef struct bn_descs {
    cudnnTensorDescriptor_t x, param;
} bn_descs;

static void destroy_descs(bn_descs *d) {
    if (d->x)
        cudnnDestroyTensorDescriptor(d->x);
    if (d->param)
        cudnnDestroyTensorDescriptor(d->param);
}

static bool make_descs(const char *op, ct_dtype dtype, int64_t N, int64_t C, int64_t S, bn_descs *d) {
    d->x = d->param = NULL;
    // cuDNN's legacy descriptors take int sizes and strides, and fail with a bare status past
    // INT_MAX elements. Splitting the batch would not do: training statistics span all of it.
    if (N > INT_MAX || C > INT_MAX || S > INT_MAX || N * C * S > INT_MAX) {
        ct__set_error(CT_ERR_UNSUPPORTED,
                      "%s: x (N, C, S) = (%lld, %lld, %lld) holds %lld elements; cuDNN's batch norm takes at most %d "
                      "(INT_MAX) elements per tensor",
                      op, (long long)N, (long long)C, (long long)S, (long long)(N * C * S), INT_MAX);
        return false;
    }
    cudnnDataType_t dt = dtype == CT_F16 ? CUDNN_DATA_HALF : dtype == CT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    if (!CT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->x)) ||
        !CT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, dt, (int)N, (int)C, (int)S, 1)) ||
        !CT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->param)) ||
        !CT_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(d->param, d->x, CUDNN_BATCHNORM_SPATIAL))) {
        destroy_descs(d);
        return false;
    }
    return true;
}

static bool check_bn(const char *op, ct_dtype dtype, double eps) {
    if (dtype != CT_F32 && dtype != CT_F16 && dtype != CT_BF16) {
        ct__set_error(CT_ERR_DTYPE, "%s: %s is not supported on CUDA", op, ct_dtype_name(dtype));
        return false;
    }
    if (eps < CUDNN_BN_MIN_EPSILON) {
        ct__set_error(CT_ERR_VALUE, "%s: cuDNN needs eps >= %g, got %g", op, (double)CUDNN_BN_MIN_EPSILON, eps);
        return false;
    }
    return true;
}

// Evaluation: the statistics backward needs, from the running ones.
__global__ void eval_stats_kernel(int64_t C, const float *running_mean, const float *running_var, float eps,
                                  float *mean, float *invstd) {
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C; c += (int64_t)blockDim.x * gridDim.x) {
        mean[c] = running_mean[c];
        invstd[c] = rsqrtf(running_var[c] + eps);
    }
}

extern "C" ct_status ct_cuda_batch_norm_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x,
                                                const float *weight, const float *bias, float *running_mean,
                                                float *running_var, bool training, double momentum, double eps,
                                                float *save_mean, float *save_invstd, void *y, ct_stream *stream) {
    const char *op = "ct_cuda_batch_norm_forward";
    if (!check_bn(op, dtype, eps))
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    if (N * C * S == 0) {
        if (!training && C > 0) {
            eval_stats_kernel<<<ct_grid_for(C, 256), 256, 0, s>>>(
                C, running_mean, running_var, (float)eps, save_mean, save_invstd);
            return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
        }
        return CT_OK;
    }
    cudnnHandle_t h = ct__cudnn_handle(stream);
    bn_descs d;
    if (!h || !make_descs(op, dtype, N, C, S, &d))
        return ct_last_error();
    const float one = 1.0f, zero = 0.0f;
    bool ok;
    if (training) {
        ok = CT_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x, x, d.x,
                                                                   y, d.param, weight, bias, momentum, running_mean,
                                                                   running_var, eps, save_mean, save_invstd));
    } else {
        ok = CT_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x, x,
                                                                    d.x, y, d.param, weight, bias, running_mean,
                                                                    running_var, eps));
        if (ok) {
            eval_stats_kernel<<<ct_grid_for(C, 256), 256, 0, s>>>(
                C, running_mean, running_var, (float)eps, save_mean, save_invstd);
            ok = CT_CUDA_CHECK_LAUNCH();
        }
    }
    destroy_descs(&d);
    return ok ? CT_OK : ct_last_error();
}

// Evaluation backward, channel c = blockIdx.x: dweight = sum g (x - mean) invstd, dbias = sum g.
template <typename T>
__global__ void eval_param_grad_kernel(int64_t N, int64_t C, int64_t S, const T *x, const T *g, const float *mean,
                                       const float *invstd, float *dweight, float *dbias) {
    __shared__ float shared[33];
    int64_t c = blockIdx.x;
    float m = mean[c], sg = 0, sgx = 0;
    for (int64_t i = threadIdx.x; i < N * S; i += blockDim.x) {
        int64_t off = ((i / S) * C + c) * S + i % S;
        float gv = ct_widen(g[off]);
        sg += gv;
        sgx += gv * (ct_widen(x[off]) - m);
    }
    sg = block_sum(sg, shared);
    sgx = block_sum(sgx, shared);
    if (threadIdx.x == 0) {
        dweight[c] = sgx * invstd[c];
        dbias[c] = sg;
    }
}

template <typename T>
__global__ void eval_dx_kernel(int64_t n, int64_t C, int64_t S, const T *g, const float *weight, const float *invstd,
                               T *dx) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t c = (i / S) % C;
        dx[i] = ct_narrow<T>(ct_widen(g[i]) * weight[c] * invstd[c]);
    }
}

template <typename T>
static void eval_backward(int64_t N, int64_t C, int64_t S, const void *x, const void *g, const float *weight,
                          const float *mean, const float *invstd, void *dx, float *dweight, float *dbias,
                          cudaStream_t s) {
    eval_param_grad_kernel<T>
        <<<(unsigned)C, 256, 0, s>>>(N, C, S, (const T *)x, (const T *)g, mean, invstd, dweight, dbias);
    eval_dx_kernel<T>
        <<<ct_grid_for(N * C * S, 256), 256, 0, s>>>(N * C * S, C, S, (const T *)g, weight, invstd, (T *)dx);
}

extern "C" ct_status ct_cuda_batch_norm_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x,
                                                 const void *g, const float *weight, const float *save_mean,
                                                 const float *save_invstd, bool training, double eps, void *dx,
                                                 float *dweight, float *dbias, ct_stream *stream) {
    const char *op = "ct_cuda_batch_norm_backward";
    if (!check_bn(op, dtype, eps))
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    if (C == 0)
        return CT_OK;
    if (!training || N * S == 0) {
        if (C > INT_MAX)
            return ct__set_error(CT_ERR_UNSUPPORTED, "%s: %lld channels is too many", op, (long long)C);
        if (dtype == CT_F32)
            eval_backward<float>(N, C, S, x, g, weight, save_mean, save_invstd, dx, dweight, dbias, s);
        else if (dtype == CT_F16)
            eval_backward<__half>(N, C, S, x, g, weight, save_mean, save_invstd, dx, dweight, dbias, s);
        else
            eval_backward<__nv_bfloat16>(N, C, S, x, g, weight, save_mean, save_invstd, dx, dweight, dbias, s);
        return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
    }
    cudnnHandle_t h = ct__cudnn_handle(stream);
    bn_descs d;
    if (!h || !make_descs(op, dtype, N, C, S, &d))
        return ct_last_error();
    const float one = 1.0f, zero = 0.0f;
    bool ok = CT_CUDNN_CHECK(cudnnBatchNormalizationBackward(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, d.x,
                                                             x, d.x, g, d.x, dx, d.param, weight, dweight, dbias, eps,
                                                             save_mean, save_invstd));
    destroy_descs(&d);
    return ok ? CT_OK : ct_last_error();
}

// ---- layer norm ---------------------------------------------------------------------------

static const int ln_threads = 256;

template <typename T>
__global__ void ln_forward_kernel(int64_t D, const T *x, const float *weight, const float *bias, float eps, float *mean,
                                  float *rstd, T *y) {
    __shared__ float shared[33];
    int64_t r = blockIdx.x;
    const T *xr = x + r * D;
    T *yr = y + r * D;
    float s = 0, q = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        s += ct_widen(xr[j]);
    float m = block_sum(s, shared) / (float)D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float d = ct_widen(xr[j]) - m;
        q += d * d;
    }
    float rs = rsqrtf(block_sum(q, shared) / (float)D + eps);
    if (threadIdx.x == 0) {
        mean[r] = m;
        rstd[r] = rs;
    }
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float h = (ct_widen(xr[j]) - m) * rs;
        yr[j] = ct_narrow<T>((weight ? h * weight[j] : h) + (bias ? bias[j] : 0.0f));
    }
}

template <typename T>
__global__ void ln_backward_dx_kernel(int64_t D, const T *x, const T *g, const float *mean, const float *rstd,
                                      const float *weight, T *dx) {
    __shared__ float shared[33];
    int64_t r = blockIdx.x;
    const T *xr = x + r * D, *gr = g + r * D;
    T *dr = dx + r * D;
    float m = mean[r], rs = rstd[r], sg = 0, sgx = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float gw = weight ? ct_widen(gr[j]) * weight[j] : ct_widen(gr[j]);
        sg += gw;
        sgx += gw * (ct_widen(xr[j]) - m);
    }
    sg = block_sum(sg, shared) / (float)D;
    sgx = block_sum(sgx, shared) / (float)D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float gw = weight ? ct_widen(gr[j]) * weight[j] : ct_widen(gr[j]);
        dr[j] = ct_narrow<T>(rs * (gw - sg - (ct_widen(xr[j]) - m) * rs * rs * sgx));
    }
}

// Chunk blockIdx.y of the rows, columns blockIdx.x * blockDim.x + threadIdx.x: partial sums
// of g * xhat and g into workspace[0][chunk][j] and workspace[1][chunk][j].
template <typename T>
__global__ void ln_param_partial_kernel(int64_t R, int64_t D, const T *x, const T *g, const float *mean,
                                        const float *rstd, float *workspace) {
    int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
    if (j >= D)
        return;
    int64_t r0 = R * chunk / chunks, r1 = R * (chunk + 1) / chunks;
    float sw = 0, sb = 0;
    for (int64_t r = r0; r < r1; r++) {
        float gv = ct_widen(g[r * D + j]);
        sw += gv * (ct_widen(x[r * D + j]) - mean[r]) * rstd[r];
        sb += gv;
    }
    workspace[chunk * D + j] = sw;
    workspace[(chunks + chunk) * D + j] = sb;
}

__global__ void ln_param_final_kernel(int64_t D, int chunks, const float *workspace, float *dweight, float *dbias) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < D; j += (int64_t)blockDim.x * gridDim.x) {
        float sw = 0, sb = 0;
        for (int c = 0; c < chunks; c++) {
            sw += workspace[c * D + j];
            sb += workspace[(chunks + c) * D + j];
        }
        if (dweight)
            dweight[j] = sw;
        if (dbias)
            dbias[j] = sb;
    }
}

static bool check_ln(const char *op, ct_dtype dtype, int64_t R) {
    if (dtype != CT_F32 && dtype != CT_F16 && dtype != CT_BF16) {
        ct__set_error(CT_ERR_DTYPE, "%s: %s is not supported on CUDA", op, ct_dtype_name(dtype));
        return false;
    }
    if (R > INT_MAX) {
        ct__set_error(CT_ERR_UNSUPPORTED, "%s: %lld rows is too many (one block per row)", op, (long long)R);
        return false;
    }
    return true;
}

extern "C" ct_status ct_cuda_layer_norm_forward(ct_dtype dtype, int64_t R, int64_t D, const void *x,
                                                const float *weight, const float *bias, double eps, float *mean,
                                                float *rstd, void *y, ct_stream *stream) {
    if (!check_ln("ct_cuda_layer_norm_forward", dtype, R))
        return ct_last_error();
    if (R * D == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    unsigned grid = (unsigned)R;
    if (dtype == CT_F32)
        ln_forward_kernel<float>
            <<<grid, ln_threads, 0, s>>>(D, (const float *)x, weight, bias, (float)eps, mean, rstd, (float *)y);
    else if (dtype == CT_F16)
        ln_forward_kernel<__half>
            <<<grid, ln_threads, 0, s>>>(D, (const __half *)x, weight, bias, (float)eps, mean, rstd, (__half *)y);
    else
        ln_forward_kernel<__nv_bfloat16><<<grid, ln_threads, 0, s>>>(D, (const __nv_bfloat16 *)x, weight, bias,
                                                                     (float)eps, mean, rstd, (__nv_bfloat16 *)y);
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

template <typename T>
static void ln_backward(int64_t R, int64_t D, const void *x, const void *g, const float *mean, const float *rstd,
                        const float *weight, void *dx, float *dweight, float *dbias, float *workspace, cudaStream_t s) {
    if (dx)
        ln_backward_dx_kernel<T>
            <<<(unsigned)R, ln_threads, 0, s>>>(D, (const T *)x, (const T *)g, mean, rstd, weight, (T *)dx);
    if (!dweight && !dbias)
        return;
    int chunks = (int)(R < CT_CUDA_LN_CHUNKS ? R : CT_CUDA_LN_CHUNKS);
    dim3 grid((unsigned)((D + ln_threads - 1) / ln_threads), (unsigned)chunks);
    ln_param_partial_kernel<T><<<grid, ln_threads, 0, s>>>(R, D, (const T *)x, (const T *)g, mean, rstd, workspace);
    ln_param_final_kernel<<<ct_grid_for(D, ln_threads), ln_threads, 0, s>>>(D, chunks, workspace, dweight, dbias);
}

extern "C" ct_status ct_cuda_layer_norm_backward(ct_dtype dtype, int64_t R, int64_t D, const void *x, const void *g,
                                                 const float *mean, const float *rstd, const float *weight, void *dx,
                                                 float *dweight, float *dbias, float *workspace, ct_stream *stream) {
    if (!check_ln("ct_cuda_layer_norm_backward", dtype, R))
        return ct_last_error();
    if (D == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    if (R == 0) {
        bool ok = (!dweight || CT_CUDA_CHECK(cudaMemsetAsync(dweight, 0, sizeof(float) * (size_t)D, s))) &&
                  (!dbias || CT_CUDA_CHECK(cudaMemsetAsync(dbias, 0, sizeof(float) * (size_t)D, s)));
        return ok ? CT_OK : ct_last_error();
    }
    if (dtype == CT_F32)
        ln_backward<float>(R, D, x, g, mean, rstd, weight, dx, dweight, dbias, workspace, s);
    else if (dtype == CT_F16)
        ln_backward<__half>(R, D, x, g, mean, rstd, weight, dx, dweight, dbias, workspace, s);
    else
        ln_backward<__nv_bfloat16>(R, D, x, g, mean, rstd, weight, dx, dweight, dbias, workspace, s);
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
