// ctensor — embedding lookup and its gradient on the GPU.
// Forward: one thread per output element copies weight[index[i], d] (any weight strides,
// any element size). Backward (atomic form): one thread per element of the output gradient
// adds it into the F32 weight gradient at its row, skipping padding_idx; the op accumulates
// half-precision gradients in F32 and rounds once. The deterministic form is the ordered
// scatter-add of index.cu. Indices outside [0, V) are never used to touch memory (the
// forward writes zeros, the backward skips them) and are reported at the next
// synchronization (kernels/cuda/device_error.cuh).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/device_error.cuh"
#include "kernels/cuda/launch.h"

static const int threads = 256;

template <typename E>
__global__ void embedding_forward_kernel(int64_t n, int64_t D, const E *weight, int64_t row_stride, int64_t col_stride,
                                         const int32_t *index, E *out, ct_index_report report) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * D; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t r = i / D, d = i % D;
        int32_t row = index[r];
        out[i] = ct_index_ok(report, row, r) ? weight[(int64_t)row * row_stride + d * col_stride] : (E)0;
    }
}

__global__ void embedding_backward_kernel(int64_t n, int64_t D, const int32_t *index, const float *g, int padding_idx,
                                          float *dweight, ct_index_report report) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * D; i += (int64_t)blockDim.x * gridDim.x) {
        int32_t row = index[i / D];
        if (padding_idx >= 0 && row == padding_idx) // -1 means none: an index of -1 is bad, not padding
            continue;
        if (ct_index_ok(report, row, i / D))
            atomicAdd(dweight + (int64_t)row * D + i % D, g[i]);
    }
}

extern "C" ct_status ct_cuda_embedding_forward(size_t elem_size, int64_t n, int64_t D, int64_t V, const void *weight,
                                               int64_t row_stride, int64_t col_stride, const int32_t *index, void *out,
                                               ct_stream *stream) {
    if (n * D == 0)
        return CT_OK;
    ct_index_report r;
    if (ct__cuda_index_report(stream, "ct_embedding", "index", CT_ERR_DIM, 0, V, &r) != CT_OK)
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    unsigned grid = ct_grid_for(n * D, threads);
    switch (elem_size) {
    case 1:
        embedding_forward_kernel<uint8_t>
            <<<grid, threads, 0, s>>>(n, D, (const uint8_t *)weight, row_stride, col_stride, index, (uint8_t *)out, r);
        break;
    case 2:
        embedding_forward_kernel<uint16_t>
            <<<grid, threads, 0, s>>>(n, D, (const uint16_t *)weight, row_stride, col_stride, index, (uint16_t *)out, r);
        break;
    case 4:
        embedding_forward_kernel<uint32_t>
            <<<grid, threads, 0, s>>>(n, D, (const uint32_t *)weight, row_stride, col_stride, index, (uint32_t *)out, r);
        break;
    default:
        return ct__set_error(CT_ERR_DTYPE, "ct_cuda_embedding_forward: elements of %zu bytes are not supported",
                             elem_size);
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_embedding_backward(int64_t n, int64_t D, int64_t V, const int32_t *index, const float *g,
                                                int padding_idx, float *dweight, ct_stream *stream) {
    if (n * D == 0)
        return CT_OK;
    ct_index_report r;
    if (ct__cuda_index_report(stream, "ct_embedding", "index", CT_ERR_DIM, 0, V, &r) != CT_OK)
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    embedding_backward_kernel<<<ct_grid_for(n * D, threads), threads, 0, s>>>(n, D, index, g, padding_idx, dweight,
                                                                              r);
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
