// ctensor — copy, cast and fill on the GPU over strided memory.
// Same-dtype contiguous copies are cudaMemcpyAsync; contiguous, aligned casts move packs of
// up to 16 bytes; everything else is one strided grid-stride kernel. Conversions are
// ct_convert's, so the results match the CPU's bit for bit.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cpu/copy.h"

template <typename D, typename S>
__global__ void copy_cast_kernel(ct_iter<2> it, int64_t n, D *dst, const S *src) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t off[2];
        ct_iter_offsets(it, i, off);
        dst[off[0]] = ct_convert<D, S>(src[off[1]]);
    }
}

// Contiguous data, both pointers aligned to their pack: N elements per pack, the last
// n % N elements by the first threads of block 0.
template <typename D, typename S, int N>
__global__ void cast_flat_kernel(int64_t packs, int64_t n, D *dst, const S *src) {
    for (int64_t v = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; v < packs; v += (int64_t)blockDim.x * gridDim.x) {
        S x[N];
        D y[N];
        load_pack<S, N>(src, v, x);
#pragma unroll
        for (int j = 0; j < N; j++)
            y[j] = ct_convert<D, S>(x[j]);
        store_pack<D, N>(dst, v, y);
    }
    int64_t tail = packs * N + threadIdx.x;
    if (blockIdx.x == 0 && tail < n)
        dst[tail] = ct_convert<D, S>(src[tail]);
}

template <typename D, typename S>
static ct_status cast_flat(int64_t n, D *dst, const S *src, cudaStream_t s) {
    constexpr int N = 16 / (sizeof(D) > sizeof(S) ? sizeof(D) : sizeof(S));
    const int threads = 256;
    int64_t packs = n / N;
    cast_flat_kernel<D, S, N><<<ct_grid_for(packs > 0 ? packs : 1, threads), threads, 0, s>>>(packs, n, dst, src);
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

template <typename T>
__global__ void fill_kernel(ct_iter<1> it, int64_t n, T *dst, T value) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t off[1];
        ct_iter_offsets(it, i, off);
        dst[off[0]] = value;
    }
}

extern "C" ct_status ct_cuda_copy_cast(int ndim, const int64_t *shape, void *dst, ct_dtype dst_dtype,
                                       const int64_t *dst_strides, const void *src, ct_dtype src_dtype,
                                       const int64_t *src_strides, ct_stream *stream) {
    ct_iter<2> it;
    const int64_t *strides[2] = {dst_strides, src_strides};
    int64_t n = ct_iter_make(&it, ndim, shape, strides);
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    bool contiguous = it.ndim == 0 || (it.ndim == 1 && it.strides[0][0] == 1 && it.strides[1][0] == 1);
    if (dst_dtype == src_dtype && contiguous) {
        return CT_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * ct_dtype_size(dst_dtype), cudaMemcpyDeviceToDevice, s))
                   ? CT_OK
                   : ct_last_error();
    }
    if (contiguous) {
        size_t pack = 16 / (ct_dtype_size(dst_dtype) > ct_dtype_size(src_dtype) ? ct_dtype_size(dst_dtype)
                                                                                  : ct_dtype_size(src_dtype));
        if ((uintptr_t)dst % (pack * ct_dtype_size(dst_dtype)) == 0 &&
            (uintptr_t)src % (pack * ct_dtype_size(src_dtype)) == 0) {
            ct_status st = CT_OK;
            CT_DISPATCH_DTYPE(dst_dtype, D, CT_DISPATCH_DTYPE(src_dtype, S,
                st = cast_flat<D, S>(n, (D *)dst, (const S *)src, s)));
            return st;
        }
    }
    if (it.ndim == 0) {
        it.ndim = 1;
        it.shape[0] = 1;
        it.strides[0][0] = it.strides[1][0] = 0;
    }
    const int threads = 256;
    CT_DISPATCH_DTYPE(dst_dtype, D, CT_DISPATCH_DTYPE(src_dtype, S,
        copy_cast_kernel<D, S><<<ct_grid_for(n, threads), threads, 0, s>>>(it, n, (D *)dst, (const S *)src)));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_fill(int ndim, const int64_t *shape, void *dst, ct_dtype dtype, const int64_t *strides,
                                  double value, ct_stream *stream) {
    ct_iter<1> it;
    const int64_t *sp[1] = {strides};
    int64_t n = ct_iter_make(&it, ndim, shape, sp);
    if (n == 0)
        return CT_OK;
    if (it.ndim == 0) {
        it.ndim = 1;
        it.shape[0] = 1;
        it.strides[0][0] = 0;
    }
    // The value is rounded on the host with the CPU's rules, then written as raw bits.
    uint64_t bits = 0;
    ct_cpu_store(&bits, dtype, 0, value);
    const int threads = 256;
    CT_LAUNCH_STREAM(s, stream);
    switch (ct_dtype_size(dtype)) {
    case 1: fill_kernel<uint8_t><<<ct_grid_for(n, threads), threads, 0, s>>>(it, n, (uint8_t *)dst, (uint8_t)bits); break;
    case 2: fill_kernel<uint16_t><<<ct_grid_for(n, threads), threads, 0, s>>>(it, n, (uint16_t *)dst, (uint16_t)bits); break;
    case 4: fill_kernel<uint32_t><<<ct_grid_for(n, threads), threads, 0, s>>>(it, n, (uint32_t *)dst, (uint32_t)bits); break;
    default: fill_kernel<uint64_t><<<ct_grid_for(n, threads), threads, 0, s>>>(it, n, (uint64_t *)dst, bits); break;
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
