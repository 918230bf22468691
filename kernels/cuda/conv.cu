// ctensor — convolution on cuDNN, and pooling, bias-sum and bias-add kernels.
//
// Convolution: the calling thread's cuDNN handle for the device (kernels/cuda/dnn.h), bound
// to the op's stream before every call. The algorithm of each pass is chosen once per
// geometry, dtype, device and determinism by timing the candidates with cudnnFind*, as
// torch.backends.cudnn.benchmark does, and cached; deterministic mode keeps only the
// algorithms cuDNN reports as deterministic. Workspace memory belongs to the caller (the op
// takes it from the caching allocator), so the cache holds only (algorithm, math, bytes). F32
// runs in FMA math (no TF32), so it matches the CPU to float rounding; F16 and BF16 use
// tensor-op math with f32 accumulation.
//
// Pooling has its own kernels rather than cudnnPooling*: cuDNN's average-with-padding
// divides by the full window where PyTorch (and the CPU kernels) clip it at the padded
// edge under ceil_mode, it has no dilated max pooling, and it cannot return the positions
// of the maxima that the op saves for backward. The kernels follow kernels/cpu/pool.c
// line for line, computing in double as the CPU does; the backward kernels gather (one
// thread per input element walks the windows that cover it), so no atomics are needed and
// results repeat bit for bit.
#include "kernels/cpu/conv.h"
#include "kernels/cpu/pool.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_cache.h"
#include "kernels/cuda/dnn.h"
#include "kernels/cuda/launch.h"
#include "runtime/allocator.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WORKSPACE_LIMIT ((size_t)1 << 30) // algorithms needing more are skipped
#define THREADS         256

static pthread_mutex_t dnn_lock = PTHREAD_MUTEX_INITIALIZER; // the algorithm cache

// ---- descriptors ---------------------------------------------------------------------------

typedef struct conv_descs {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
} conv_descs;

static cudnnDataType_t data_type(ct_dtype dtype) {
    return dtype == CT_F16 ? CUDNN_DATA_HALF : (dtype == CT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT);
}

static void descs_free(conv_descs *d) {
    if (d->x)
        cudnnDestroyTensorDescriptor(d->x);
    if (d->y)
        cudnnDestroyTensorDescriptor(d->y);
    if (d->w)
        cudnnDestroyFilterDescriptor(d->w);
    if (d->conv)
        cudnnDestroyConvolutionDescriptor(d->conv);
}

// Describe the convolution; CT_ERR_UNSUPPORTED when cuDNN's output size differs from the
// geometry's (a transposed convolution with output_padding >= stride, allowed when the
// dilation is larger, has rows that cuDNN's formula does not produce).
static ct_status descs_make(conv_descs *d, ct_dtype dtype, const ct_conv2d_geom *g) {
    memset(d, 0, sizeof *d);
    cudnnDataType_t dt = data_type(dtype);
    cudnnMathType_t math = dtype == CT_F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    int n, c, h, w;
    bool ok = CT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->x)) &&
              CT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->y)) &&
              CT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d->w)) &&
              CT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d->conv)) &&
              CT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, dt, (int)g->N, (int)g->C, (int)g->H,
                                                        (int)g->W)) &&
              CT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, dt, (int)g->N, (int)g->O, (int)g->oH,
                                                        (int)g->oW)) &&
              CT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(d->w, dt, CUDNN_TENSOR_NCHW, (int)g->O, (int)(g->C / g->groups),
                                                        (int)g->kH, (int)g->kW)) &&
              CT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d->conv, (int)g->pad_h, (int)g->pad_w, (int)g->stride_h,
                                                             (int)g->stride_w, (int)g->dilation_h, (int)g->dilation_w,
                                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)) &&
              CT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(d->conv, (int)g->groups)) &&
              CT_CUDNN_CHECK(cudnnSetConvolutionMathType(d->conv, math)) &&
              CT_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n, &c, &h, &w));
    if (!ok) {
        descs_free(d);
        return ct_last_error();
    }
    if (n != g->N || c != g->O || h != g->oH || w != g->oW) {
        descs_free(d);
        return ct__set_error(CT_ERR_UNSUPPORTED,
                             "cuDNN convolution: output %dx%d differs from the expected %lldx%lld (conv_transpose2d "
                             "with output_padding >= stride is not supported on CUDA)",
                             h, w, (long long)g->oH, (long long)g->oW);
    }
    return CT_OK;
}

// ---- algorithm choice ----------------------------------------------------------------------

static ct_conv_cache algo_cache; // kernels/cuda/conv_cache.h, under dnn_lock

// cuDNN's calls for each pass, told apart by the type of their results: how many candidates
// they can return, and the candidates best first, timed by running them (cudnnFind*, which
// allocates its own buffers and workspace) or, without `timed`, from cuDNN's heuristics.
static cudnnStatus_t max_count(cudnnHandle_t h, const cudnnConvolutionFwdAlgoPerf_t *, int *n) {
    return cudnnGetConvolutionForwardAlgorithmMaxCount(h, n);
}
static cudnnStatus_t max_count(cudnnHandle_t h, const cudnnConvolutionBwdDataAlgoPerf_t *, int *n) {
    return cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, n);
}
static cudnnStatus_t max_count(cudnnHandle_t h, const cudnnConvolutionBwdFilterAlgoPerf_t *, int *n) {
    return cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, n);
}
static cudnnStatus_t candidates(cudnnHandle_t h, const conv_descs *d, bool timed, int n, int *count,
                                cudnnConvolutionFwdAlgoPerf_t *perf) {
    return timed ? cudnnFindConvolutionForwardAlgorithm(h, d->x, d->w, d->conv, d->y, n, count, perf)
                 : cudnnGetConvolutionForwardAlgorithm_v7(h, d->x, d->w, d->conv, d->y, n, count, perf);
}
static cudnnStatus_t candidates(cudnnHandle_t h, const conv_descs *d, bool timed, int n, int *count,
                                cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return timed ? cudnnFindConvolutionBackwardDataAlgorithm(h, d->w, d->y, d->conv, d->x, n, count, perf)
                 : cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d->w, d->y, d->conv, d->x, n, count, perf);
}
static cudnnStatus_t candidates(cudnnHandle_t h, const conv_descs *d, bool timed, int n, int *count,
                                cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return timed ? cudnnFindConvolutionBackwardFilterAlgorithm(h, d->x, d->y, d->conv, d->w, n, count, perf)
                 : cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d->x, d->y, d->conv, d->w, n, count, perf);
}
static const char *const find_names[] = {"cudnnFindConvolutionForwardAlgorithm",
                                         "cudnnFindConvolutionBackwardDataAlgorithm",
                                         "cudnnFindConvolutionBackwardFilterAlgorithm"};
static const char *const heuristic_names[] = {"cudnnGetConvolutionForwardAlgorithm_v7",
                                              "cudnnGetConvolutionBackwardDataAlgorithm_v7",
                                              "cudnnGetConvolutionBackwardFilterAlgorithm_v7"};

// cuDNN 9 reports a failed cudaMalloc inside Find as a device allocation failure; the older
// ALLOC_FAILED (now the host allocation code) is taken as one too.
static bool allocation_failed(cudnnStatus_t st) {
    return st == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED ||
           st == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

// The fastest usable algorithm among cuDNN's candidates (sorted best first): one that ran,
// fits WORKSPACE_LIMIT, is deterministic when asked, and for F32 uses plain FMA math.
template <typename Perf>
static bool pick(const Perf *perf, int count, bool deterministic, bool fma_only, ct_cuda_conv_plan *plan) {
    for (int i = 0; i < count; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= WORKSPACE_LIMIT &&
            (!deterministic || perf[i].determinism == CUDNN_DETERMINISTIC) &&
            (!fma_only || perf[i].mathType == CUDNN_FMA_MATH)) {
            *plan = (ct_cuda_conv_plan){(int)perf[i].algo, (int)perf[i].mathType, perf[i].memory};
            return true;
        }
    return false;
}

// The plan of one pass (*found: whether any candidate is usable), timed when *timed. Each
// algorithm can come once per math type, and the usable ones (deterministic, FMA for F32) may
// be late in the list, so all of cuDNN's candidates are asked for (*AlgorithmMaxCount, as
// PyTorch does), not *_ALGO_COUNT. When Find cannot allocate its buffers (the caching
// allocator may hold most of the GPU), the allocator's cache goes back to the driver and Find
// runs once more; failing again, the heuristics choose, and *timed turns false.
template <typename Perf>
static ct_status plan_pass(ct_cuda_conv_pass pass, cudnnHandle_t h, const conv_descs *d, int device, bool deterministic,
                           bool fma_only, bool *timed, ct_cuda_conv_plan *plan, bool *found) {
    int n = 0, count = 0;
    if (!CT_CUDNN_CHECK(max_count(h, (const Perf *)NULL, &n)))
        return ct_last_error();
    Perf *perf = (Perf *)malloc((size_t)(n > 0 ? n : 1) * sizeof *perf);
    if (!perf)
        return ct__set_error(CT_ERR_MEMORY, "cuDNN convolution: out of host memory for %d algorithm results", n);
    cudnnStatus_t st = candidates(h, d, *timed, n, &count, perf);
    if (*timed && allocation_failed(st)) {
        cudaGetLastError(); // Find's failed cudaMalloc: not sticky, and not a launch error of ours
        ct__cuda_allocator_empty_cache(device);
        st = candidates(h, d, true, n, &count, perf);
    }
    if (*timed && allocation_failed(st)) {
        cudaGetLastError();
        *timed = false;
        st = candidates(h, d, false, n, &count, perf);
    }
    bool ok = ct__cudnn_ok(st, (*timed ? find_names : heuristic_names)[pass], __FILE__, __LINE__);
    *found = ok && pick(perf, count, deterministic, fma_only, plan);
    free(perf);
    return ok ? CT_OK : ct_last_error();
}

// The cached plan for the pass, or a new one timed by cudnnFind* (call with the device
// current). During a CUDA graph capture timing is impossible (it runs and waits for kernels),
// and while another thread captures on the device it would break that capture: an uncached
// pass takes cuDNN's heuristic choice instead, which is not cached, so that the pass is still
// timed when it next runs eagerly. A thread that timed a pass another thread
// cached meanwhile takes the cached plan, so that all run the same algorithm.
static ct_status choose(ct_cuda_conv_pass pass, ct_dtype dtype, const ct_conv2d_geom *g, bool deterministic, int device,
                        cudnnHandle_t h, bool capturing, ct_cuda_conv_plan *plan) {
    ct_conv_cache_key key = ct_conv_cache_key_of((int)pass, (int)dtype, deterministic, device, g);
    pthread_mutex_lock(&dnn_lock);
    bool cached = ct_conv_cache_find(&algo_cache, &key, plan);
    pthread_mutex_unlock(&dnn_lock);
    if (cached)
        return CT_OK;
    conv_descs d;
    ct_status st = descs_make(&d, dtype, g);
    if (st != CT_OK)
        return st;
    // cudnnFind allocates and frees (a cudaFree synchronizes the device): not while any thread
    // captures a CUDA graph on the device, whose capture it would invalidate; and the lock on
    // captures is held through it, so that none begins meanwhile.
    bool locked = false;
    if (!capturing) {
        locked = ct__cuda_captures_lock(device) == 0;
        if (!locked)
            ct__cuda_captures_unlock(device);
    }
    bool found = false, timed = locked, fma_only = dtype == CT_F32;
    if (pass == CT_CUDA_CONV_FORWARD)
        st = plan_pass<cudnnConvolutionFwdAlgoPerf_t>(pass, h, &d, device, deterministic, fma_only, &timed, plan,
                                                      &found);
    else if (pass == CT_CUDA_CONV_BACKWARD_DATA)
        st = plan_pass<cudnnConvolutionBwdDataAlgoPerf_t>(pass, h, &d, device, deterministic, fma_only, &timed, plan,
                                                          &found);
    else
        st = plan_pass<cudnnConvolutionBwdFilterAlgoPerf_t>(pass, h, &d, device, deterministic, fma_only, &timed, plan,
                                                            &found);
    if (locked)
        ct__cuda_captures_unlock(device);
    descs_free(&d);
    if (st != CT_OK)
        return st;
    if (!found)
        return ct__set_error(CT_ERR_CUDA,
                             "cuDNN found no %salgorithm for a %s convolution pass %d (N %lld, C %lld, %lldx%lld, O "
                             "%lld, kernel %lldx%lld, groups %lld)",
                             deterministic ? "deterministic " : "", ct_dtype_name(dtype), (int)pass, (long long)g->N,
                             (long long)g->C, (long long)g->H, (long long)g->W, (long long)g->O, (long long)g->kH,
                             (long long)g->kW, (long long)g->groups);
    // Cached when timing was allowed (locked), even if Find ran out of memory twice and cuDNN's
    // heuristics chose (timed turned false): re-running Find, and flushing the allocator's
    // cache for it, at every later pass would thrash.
    if (locked) {
        pthread_mutex_lock(&dnn_lock);
        ct_conv_cache_insert(&algo_cache, &key, plan);
        pthread_mutex_unlock(&dnn_lock);
    }
    return CT_OK;
}

static bool float_dtype(ct_dtype dtype) {
    return dtype == CT_F32 || dtype == CT_F16 || dtype == CT_BF16;
}

static ct_status unsupported(const char *what, ct_dtype dtype) {
    return ct__set_error(CT_ERR_DTYPE, "%s: %s is not supported on CUDA (f32, f16, bf16)", what, ct_dtype_name(dtype));
}

extern "C" ct_status ct_cuda_conv2d_workspace(ct_cuda_conv_pass pass, ct_dtype dtype, const ct_conv2d_geom *g,
                                              bool deterministic, ct_stream *stream, ct_cuda_conv_plan *plan) {
    *plan = (ct_cuda_conv_plan){0, 0, 0};
    if (!float_dtype(dtype))
        return unsupported("convolution", dtype);
    if (g->N == 0 || g->O == 0 || g->C == 0 || g->oH * g->oW == 0)
        return CT_OK;
    if (!stream) // the algorithm search runs kernels: it needs the op's stream too
        return ct__cuda_no_stream(__func__);
    int device = stream->device;
    ct_device_guard guard(device);
    if (!guard.ok)
        return ct_last_error();
    cudnnHandle_t h = ct__cudnn_handle(stream);
    return h ? choose(pass, dtype, g, deterministic, device, h, stream->capture != NULL, plan) : ct_last_error();
}

extern "C" ct_status ct_cuda_conv2d(ct_cuda_conv_pass pass, ct_dtype dtype, const ct_conv2d_geom *g,
                                    const ct_cuda_conv_plan *plan, const void *a, const void *b, void *out,
                                    void *workspace, size_t workspace_bytes, ct_stream *stream) {
    if (!float_dtype(dtype))
        return unsupported("convolution", dtype);
    CT_LAUNCH_STREAM(s, stream);
    size_t es = ct_dtype_size(dtype);
    int64_t out_elems = pass == CT_CUDA_CONV_FORWARD         ? g->N * g->O * g->oH * g->oW
                        : pass == CT_CUDA_CONV_BACKWARD_DATA ? g->N * g->C * g->H * g->W
                                                             : g->O * (g->C / g->groups) * g->kH * g->kW;
    if (out_elems == 0)
        return CT_OK;
    int device = stream->device;
    ct_device_guard guard(device);
    if (!guard.ok)
        return ct_last_error();
    // Nothing to sum over (an empty batch or no channels on the other side): zeros.
    if (g->N == 0 || g->O == 0 || g->C == 0 || g->oH * g->oW == 0)
        return CT_CUDA_CHECK(cudaMemsetAsync(out, 0, (size_t)out_elems * es, s)) ? CT_OK : ct_last_error();
    cudnnHandle_t h = ct__cudnn_handle(stream);
    if (!h)
        return ct_last_error();
    if (plan->workspace > workspace_bytes)
        return ct__set_error(CT_ERR_INTERNAL, "ct_cuda_conv2d: workspace of %zu bytes, %zu needed", workspace_bytes,
                             plan->workspace);
    conv_descs d;
    ct_status st = descs_make(&d, dtype, g);
    if (st != CT_OK)
        return st;
    // The scaling factors of float-compute convolutions (float for F16 and BF16 data too):
    // out = 1 * result + 0 * out.
    const float one = 1.0f, beta = 0.0f;
    bool ok = CT_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, (cudnnMathType_t)plan->math));
    if (ok && pass == CT_CUDA_CONV_FORWARD)
        ok = CT_CUDNN_CHECK(cudnnConvolutionForward(h, &one, d.x, a, d.w, b, d.conv,
                                                    (cudnnConvolutionFwdAlgo_t)plan->algo, workspace, plan->workspace,
                                                    &beta, d.y, out));
    else if (ok && pass == CT_CUDA_CONV_BACKWARD_DATA)
        ok = CT_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, d.w, b, d.y, a, d.conv,
                                                         (cudnnConvolutionBwdDataAlgo_t)plan->algo, workspace,
                                                         plan->workspace, &beta, d.x, out));
    else if (ok)
        ok = CT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, d.x, a, d.y, b, d.conv,
                                                           (cudnnConvolutionBwdFilterAlgo_t)plan->algo, workspace,
                                                           plan->workspace, &beta, d.w, out));
    descs_free(&d);
    return ok ? CT_OK : ct_last_error();
}

// Call the F32 / F16 / BF16 instance of a templated launch.
#define DISPATCH_FLOAT(dtype, T, what, ...)                                                                            \
    switch (dtype) {                                                                                                   \
    case CT_F32: {                                                                                                     \
        typedef float T;                                                                                               \
        __VA_ARGS__;                                                                                                   \
    } break;                                                                                                           \
    case CT_F16: {                                                                                                     \
        typedef __half T;                                                                                              \
        __VA_ARGS__;                                                                                                   \
    } break;                                                                                                           \
    case CT_BF16: {                                                                                                    \
        typedef __nv_bfloat16 T;                                                                                       \
        __VA_ARGS__;                                                                                                   \
    } break;                                                                                                           \
    default: return unsupported(what, dtype);                                                                          \
    }

// ---- bias --------------------------------------------------------------------------------

// One block per channel: each thread sums a fixed stride of the channel's N * L elements,
// then a fixed tree in shared memory.
template <typename T> __global__ void channel_sum_kernel(int64_t N, int64_t C, int64_t L, const T *t, T *out) {
    __shared__ double partial[THREADS];
    int64_t c = blockIdx.x;
    double sum = 0;
    for (int64_t i = threadIdx.x; i < N * L; i += blockDim.x)
        sum += ct_to_double<T>(t[(i / L * C + c) * L + i % L]);
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[c] = ct_from_double<T>(partial[0]);
}

template <typename T> __global__ void add_bias_kernel(int64_t n, int64_t C, int64_t L, T *y, const T *bias) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
        y[i] = ct_from_double<T>(ct_to_double<T>(y[i]) + ct_to_double<T>(bias[i / L % C]));
}

extern "C" ct_status ct_cuda_conv2d_channel_sum(ct_dtype dtype, int64_t N, int64_t C, int64_t L, const void *t,
                                                void *out, ct_stream *stream) {
    if (C == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    if (C > INT32_MAX)
        return ct__set_error(CT_ERR_UNSUPPORTED, "bias gradient: %lld channels are too many", (long long)C);
    DISPATCH_FLOAT(dtype, T, "bias gradient",
                   channel_sum_kernel<T><<<(unsigned)C, THREADS, 0, s>>>(N, C, L, (const T *)t, (T *)out));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_conv2d_add_bias(ct_dtype dtype, int64_t N, int64_t C, int64_t L, void *y, const void *bias,
                                             ct_stream *stream) {
    int64_t n = N * C * L;
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T, "bias",
                   add_bias_kernel<T><<<ct_grid_for(n, THREADS), THREADS, 0, s>>>(n, C, L, (T *)y, (const T *)bias));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

// ---- pooling --------------------------------------------------------------------------------

// floor(a / b) and ceil(a / b) for b > 0.
__device__ __forceinline__ int64_t div_floor(int64_t a, int64_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}
__device__ __forceinline__ int64_t div_ceil(int64_t a, int64_t b) {
    return -div_floor(-a, b);
}

// The outputs (oh) whose window covers input row ih: a window starts at oh * stride - pad
// and spans (k - 1) * dilation + 1 rows. [*lo, *hi) clipped to [0, out).
__device__ __forceinline__ void covering(int64_t i, int64_t out, int64_t k, int64_t stride, int64_t pad,
                                         int64_t dilation, int64_t *lo, int64_t *hi) {
    int64_t first = div_ceil(i + pad - (k - 1) * dilation, stride), last = div_floor(i + pad, stride);
    *lo = first > 0 ? first : 0;
    *hi = last + 1 < out ? last + 1 : out;
}

template <typename T> __global__ void max_pool_kernel(ct_pool2d_geom g, int64_t n, const T *x, T *y, int32_t *indices) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t ow = i % g.oW, oh = i / g.oW % g.oH, plane = i / (g.oW * g.oH);
        const T *xp = x + plane * g.H * g.W;
        int64_t ih0 = oh * g.stride_h - g.pad_h, iw0 = ow * g.stride_w - g.pad_w;
        int64_t ih1 = ih0 + (g.kH - 1) * g.dilation_h + 1, iw1 = iw0 + (g.kW - 1) * g.dilation_w + 1;
        ih1 = ih1 < g.H ? ih1 : g.H;
        iw1 = iw1 < g.W ? iw1 : g.W;
        while (ih0 < 0)
            ih0 += g.dilation_h;
        while (iw0 < 0)
            iw0 += g.dilation_w;
        int64_t best_at = ih0 * g.W + iw0;
        double best = -INFINITY;
        for (int64_t ih = ih0; ih < ih1; ih += g.dilation_h)
            for (int64_t iw = iw0; iw < iw1; iw += g.dilation_w) {
                double v = ct_to_double<T>(xp[ih * g.W + iw]);
                if (v > best || isnan(v)) {
                    best = v;
                    best_at = ih * g.W + iw;
                }
            }
        y[i] = ct_from_double<T>(best);
        if (indices)
            indices[i] = (int32_t)best_at;
    }
}

// gx at each input element: the sum of gy over the windows whose maximum it is.
template <typename T>
__global__ void max_pool_backward_kernel(ct_pool2d_geom g, int64_t n, const T *gy, const int32_t *indices, T *gx) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t iw = i % g.W, ih = i / g.W % g.H, plane = i / (g.W * g.H), at = ih * g.W + iw;
        int64_t oh0, oh1, ow0, ow1;
        covering(ih, g.oH, g.kH, g.stride_h, g.pad_h, g.dilation_h, &oh0, &oh1);
        covering(iw, g.oW, g.kW, g.stride_w, g.pad_w, g.dilation_w, &ow0, &ow1);
        double sum = 0;
        for (int64_t oh = oh0; oh < oh1; oh++)
            for (int64_t ow = ow0; ow < ow1; ow++) {
                int64_t o = (plane * g.oH + oh) * g.oW + ow;
                if (indices[o] == at)
                    sum += ct_to_double<T>(gy[o]);
            }
        gx[i] = ct_from_double<T>(sum);
    }
}

// The input rows [*h0, *h1) and columns [*w0, *w1) of average window (oh, ow) and its
// divisor (0 for a window with no input element), as avg_window in kernels/cpu/pool.c.
__device__ __forceinline__ double avg_window(const ct_pool2d_geom &g, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1,
                                             int64_t *w0, int64_t *w1) {
    int64_t ih0 = oh * g.stride_h - g.pad_h, iw0 = ow * g.stride_w - g.pad_w;
    int64_t ih1 = ih0 + g.kH, iw1 = iw0 + g.kW;
    if (ih1 > g.H + g.pad_h)
        ih1 = g.H + g.pad_h;
    if (iw1 > g.W + g.pad_w)
        iw1 = g.W + g.pad_w;
    int64_t padded_size = (ih1 - ih0) * (iw1 - iw0);
    *h0 = ih0 > 0 ? ih0 : 0;
    *w0 = iw0 > 0 ? iw0 : 0;
    *h1 = ih1 < g.H ? ih1 : g.H;
    *w1 = iw1 < g.W ? iw1 : g.W;
    if (*h0 >= *h1 || *w0 >= *w1)
        return 0;
    return (double)(g.count_include_pad ? padded_size : (*h1 - *h0) * (*w1 - *w0));
}

template <typename T> __global__ void avg_pool_kernel(ct_pool2d_geom g, int64_t n, const T *x, T *y) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t ow = i % g.oW, oh = i / g.oW % g.oH, plane = i / (g.oW * g.oH);
        const T *xp = x + plane * g.H * g.W;
        int64_t h0, h1, w0, w1;
        double divisor = avg_window(g, oh, ow, &h0, &h1, &w0, &w1), sum = 0;
        for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = w0; iw < w1; iw++)
                sum += ct_to_double<T>(xp[ih * g.W + iw]);
        y[i] = ct_from_double<T>(divisor > 0 ? sum / divisor : 0);
    }
}

template <typename T> __global__ void avg_pool_backward_kernel(ct_pool2d_geom g, int64_t n, const T *gy, T *gx) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t iw = i % g.W, ih = i / g.W % g.H, plane = i / (g.W * g.H);
        int64_t oh0, oh1, ow0, ow1;
        covering(ih, g.oH, g.kH, g.stride_h, g.pad_h, 1, &oh0, &oh1);
        covering(iw, g.oW, g.kW, g.stride_w, g.pad_w, 1, &ow0, &ow1);
        double sum = 0;
        for (int64_t oh = oh0; oh < oh1; oh++)
            for (int64_t ow = ow0; ow < ow1; ow++) {
                int64_t h0, h1, w0, w1;
                double divisor = avg_window(g, oh, ow, &h0, &h1, &w0, &w1);
                if (divisor > 0 && ih >= h0 && ih < h1 && iw >= w0 && iw < w1)
                    sum += ct_to_double<T>(gy[(plane * g.oH + oh) * g.oW + ow]) / divisor;
            }
        gx[i] = ct_from_double<T>(sum);
    }
}

extern "C" ct_status ct_cuda_max_pool2d_forward(ct_dtype dtype, const ct_pool2d_geom *g, const void *x, void *y,
                                                int32_t *indices, ct_stream *stream) {
    int64_t n = g->N * g->C * g->oH * g->oW;
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T, "ct_max_pool2d",
                   max_pool_kernel<T>
                   <<<ct_grid_for(n, THREADS), THREADS, 0, s>>>(*g, n, (const T *)x, (T *)y, indices));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_max_pool2d_backward(ct_dtype dtype, const ct_pool2d_geom *g, const void *gy,
                                                 const int32_t *indices, void *gx, ct_stream *stream) {
    int64_t n = g->N * g->C * g->H * g->W;
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T, "ct_max_pool2d",
                   max_pool_backward_kernel<T>
                   <<<ct_grid_for(n, THREADS), THREADS, 0, s>>>(*g, n, (const T *)gy, indices, (T *)gx));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_avg_pool2d_forward(ct_dtype dtype, const ct_pool2d_geom *g, const void *x, void *y,
                                                ct_stream *stream) {
    int64_t n = g->N * g->C * g->oH * g->oW;
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T, "ct_avg_pool2d",
                   avg_pool_kernel<T><<<ct_grid_for(n, THREADS), THREADS, 0, s>>>(*g, n, (const T *)x, (T *)y));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_avg_pool2d_backward(ct_dtype dtype, const ct_pool2d_geom *g, const void *gy, void *gx,
                                                 ct_stream *stream) {
    int64_t n = g->N * g->C * g->H * g->W;
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    DISPATCH_FLOAT(dtype, T, "ct_avg_pool2d",
                   avg_pool_backward_kernel<T>
                   <<<ct_grid_for(n, THREADS), THREADS, 0, s>>>(*g, n, (const T *)gy, (T *)gx));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
