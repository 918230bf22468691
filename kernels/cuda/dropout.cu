// ctensor — dropout on the GPU, bit for bit the CPU's (kernels/cpu/dropout.c): thread b
// computes Philox block b of the stream at (seed, offset), i.e. the keep decisions of
// elements 4b .. 4b + 3, and multiplies in float (F64 is CPU only).
#include "kernels/cpu/philox.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

template <typename T>
__global__ void dropout_kernel(int64_t n, const T *x, T *y, uint64_t seed, uint64_t offset, const uint64_t *base,
                               double keep_prob, float scale) {
    ct_philox_rebase(base, &seed, &offset);
    int64_t blocks = (n + 3) / 4;
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < blocks; b += (int64_t)blockDim.x * gridDim.x) {
        uint32_t w[4];
        ct_philox_stream_block(seed, offset + (uint64_t)b, w);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int64_t i = 4 * b + k;
            if (i >= n)
                break;
            bool keep = (double)ct_philox_uniform_f32(w[k]) < keep_prob;
            y[i] = ct_narrow<T>(keep ? ct_widen(x[i]) * scale : 0.0f);
        }
    }
}

extern "C" ct_status ct_cuda_dropout(ct_dtype dtype, int64_t n, const void *x, void *y, uint64_t seed, uint64_t offset,
                                     double keep_prob, double scale, ct_stream *stream) {
    if (n == 0)
        return CT_OK;
    const int threads = 256;
    CT_LAUNCH_STREAM(s, stream);
    const uint64_t *base = NULL;
    if (ct__cuda_philox_for(stream, seed, &offset, &base) != CT_OK)
        return ct_last_error();
    unsigned grid = ct_grid_for((n + 3) / 4, threads);
    switch (dtype) {
    case CT_F32:
        dropout_kernel<float>
            <<<grid, threads, 0, s>>>(n, (const float *)x, (float *)y, seed, offset, base, keep_prob, (float)scale);
        break;
    case CT_F16:
        dropout_kernel<__half>
            <<<grid, threads, 0, s>>>(n, (const __half *)x, (__half *)y, seed, offset, base, keep_prob, (float)scale);
        break;
    case CT_BF16:
        dropout_kernel<__nv_bfloat16><<<grid, threads, 0, s>>>(n, (const __nv_bfloat16 *)x, (__nv_bfloat16 *)y, seed,
                                                               offset, base, keep_prob, (float)scale);
        break;
    default: return ct__set_error(CT_ERR_DTYPE, "ct_cuda_dropout: %s is not supported on CUDA", ct_dtype_name(dtype));
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
