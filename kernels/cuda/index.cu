// ctensor — indexing on the GPU: index validation, gather, scatter-add, one-hot.
//
// Same shapes, strides and rules as kernels/cpu/index.h (I32 indices), except for bad
// indices: checking them on the host would mean waiting for the GPU, so every kernel here
// checks each index it uses against `limit` (ct_index_ok, kernels/cuda/device_error.cuh),
// never touches memory through a bad one (gather writes 0, scatter-add and one-hot skip
// it) and records it for the next synchronization to report. Gather and one-hot are one
// thread per element. Scatter-add has two forms:
//   - atomic (the default): one thread per source element, atomicAdd into the destination;
//     the order of the additions to one element varies from run to run, so float results
//     may differ in the last bits;
//   - ordered (deterministic mode): one thread per destination slice, i.e. per position of
//     the coordinates other than `dim`, walking the source along `dim` in order, exactly as
//     the CPU kernel does, so the results equal the CPU's. Slower when there are few slices
//     (the gradient of an embedding of width C has C of them).
// F64 is CPU-only in ctensor: these launchers refuse it.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/device_error.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cpu/copy.h"

static const int threads = 256;

// ---- gather -----------------------------------------------------------------------------

// Operands of the iteration: 0 the operand addressed by p, 1 the one addressed through the
// index (its stride on `dim` is 0 here: the index value times `indexed_dim_stride` adds
// it), 2 the index. Coalescing the dims keeps every operand's offsets, so `dim` need not
// be known inside the kernels.
static int64_t make_index_iter(ct_iter<3> *it, int ndim, const int64_t *shape, int dim, const int64_t *direct,
                               const int64_t *indexed, const int64_t *index) {
    int64_t indexed_no_dim[CT_KMAX_DIMS];
    for (int d = 0; d < ndim; d++)
        indexed_no_dim[d] = d == dim ? 0 : indexed[d];
    const int64_t *strides[3] = {direct, indexed_no_dim, index};
    return ct_iter_make(it, ndim, shape, strides);
}

template <typename T>
__global__ void gather_kernel(ct_iter<3> it, int64_t n, T *out, const T *src, const int32_t *index,
                              int64_t src_dim_stride, ct_index_report report) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t off[3];
        ct_iter_offsets(it, i, off);
        int32_t k = index[off[2]];
        out[off[0]] = ct_index_ok(report, k, i) ? src[off[1] + (int64_t)k * src_dim_stride] : (T)0;
    }
}

extern "C" ct_status ct_cuda_gather(const char *op, size_t elem_size, int ndim, const int64_t *shape, int dim,
                                    void *out, const int64_t *out_strides, const void *src,
                                    const int64_t *src_strides, const int32_t *index, const int64_t *index_strides,
                                    int64_t limit, ct_stream *stream) {
    ct_iter<3> it;
    int64_t n = make_index_iter(&it, ndim, shape, dim, out_strides, src_strides, index_strides);
    if (n == 0)
        return CT_OK;
    ct_index_report r;
    if (ct__cuda_index_report(stream, op, "index", CT_ERR_DIM, dim, limit, &r) != CT_OK)
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    unsigned grid = ct_grid_for(n, threads);
    int64_t sd = src_strides[dim];
    switch (elem_size) {
    case 1: gather_kernel<<<grid, threads, 0, s>>>(it, n, (uint8_t *)out, (const uint8_t *)src, index, sd, r); break;
    case 2: gather_kernel<<<grid, threads, 0, s>>>(it, n, (uint16_t *)out, (const uint16_t *)src, index, sd, r); break;
    case 4: gather_kernel<<<grid, threads, 0, s>>>(it, n, (uint32_t *)out, (const uint32_t *)src, index, sd, r); break;
    default:
        return ct__set_error(CT_ERR_DTYPE, "ct_cuda_gather: %zu-byte elements are not supported on CUDA", elem_size);
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

// ---- scatter-add --------------------------------------------------------------------------

// *p += v atomically. F16 and BF16 use cuda_fp16 / cuda_bf16's atomicAdd (a hardware
// atomic, except BF16 before sm_90, which those headers emulate with a compare-and-swap);
// I32 wraps around like the CPU (unsigned add); U8 has no byte atomic and goes through a
// compare-and-swap on its aligned 32-bit word (inside the allocation: storage comes in
// 512-byte blocks).
__device__ __forceinline__ void atomic_add_to(float *p, float v) {
    atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add_to(__half *p, __half v) {
    atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add_to(__nv_bfloat16 *p, __nv_bfloat16 v) {
    atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add_to(int32_t *p, int32_t v) {
    atomicAdd((unsigned int *)p, (unsigned int)v);
}
__device__ __forceinline__ void atomic_add_to(uint8_t *p, uint8_t v) {
    unsigned int *word = (unsigned int *)((uintptr_t)p & ~(uintptr_t)3);
    unsigned int shift = (unsigned int)((uintptr_t)p & 3) * 8; // little-endian
    unsigned int old = *word, assumed;
    do {
        assumed = old;
        unsigned int sum = ((assumed >> shift) + v) & 0xffu;
        old = atomicCAS(word, assumed, (assumed & ~(0xffu << shift)) | (sum << shift));
    } while (old != assumed);
}

// a + b rounded as the CPU kernel rounds it (half types add in f32, then round to nearest even).
__device__ __forceinline__ float add_like_cpu(float a, float b) {
    return a + b;
}
__device__ __forceinline__ __half add_like_cpu(__half a, __half b) {
    return __float2half_rn(__half2float(a) + __half2float(b));
}
__device__ __forceinline__ __nv_bfloat16 add_like_cpu(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16_rn(__bfloat162float(a) + __bfloat162float(b));
}
__device__ __forceinline__ int32_t add_like_cpu(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)a + (uint32_t)b);
}
__device__ __forceinline__ uint8_t add_like_cpu(uint8_t a, uint8_t b) {
    return (uint8_t)(a + b);
}

// Atomic: one thread per source element. Operands of `it`: 0 src, 1 dst, 2 index.
template <typename T>
__global__ void scatter_add_atomic_kernel(ct_iter<3> it, int64_t n, T *dst, const T *src, const int32_t *index,
                                          int64_t dst_dim_stride, ct_index_report report) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t off[3];
        ct_iter_offsets(it, i, off);
        int32_t k = index[off[2]];
        if (ct_index_ok(report, k, i))
            atomic_add_to(dst + off[1] + (int64_t)k * dst_dim_stride, src[off[0]]);
    }
}

// Ordered: one thread per position of the free coordinates (all but `dim`), walking `dim`
// in increasing order. Two source elements that reach the same destination element share
// their free coordinates, so they are added by one thread, in the CPU's order, and no two
// threads write the same element. Operands of `free_it`: 0 src, 1 dst, 2 index.
template <typename T>
__global__ void scatter_add_ordered_kernel(ct_iter<3> free_it, int64_t n_free, int64_t n_along, int64_t src_along,
                                           int64_t index_along, T *dst, const T *src, const int32_t *index,
                                           int64_t dst_dim_stride, ct_index_report report) {
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < n_free; c += (int64_t)blockDim.x * gridDim.x) {
        int64_t off[3];
        ct_iter_offsets(free_it, c, off);
        for (int64_t j = 0; j < n_along; j++) {
            int32_t k = index[off[2] + j * index_along];
            if (!ct_index_ok(report, k, -1))
                continue;
            T *d = dst + off[1] + (int64_t)k * dst_dim_stride;
            *d = add_like_cpu(*d, src[off[0] + j * src_along]);
        }
    }
}

template <typename T>
static void launch_scatter_add(bool deterministic, int ndim, const int64_t *shape, int dim, T *dst,
                               const int64_t *dst_strides, const T *src, const int64_t *src_strides,
                               const int32_t *index, const int64_t *index_strides, const ct_index_report &r,
                               cudaStream_t s) {
    int64_t dst_dim_stride = dst_strides[dim];
    if (!deterministic) {
        ct_iter<3> it;
        int64_t n = make_index_iter(&it, ndim, shape, dim, src_strides, dst_strides, index_strides);
        if (n > 0)
            scatter_add_atomic_kernel<<<ct_grid_for(n, threads), threads, 0, s>>>(it, n, dst, src, index,
                                                                                  dst_dim_stride, r);
        return;
    }
    // The free coordinates: every dim but `dim`.
    int64_t free_shape[CT_KMAX_DIMS], free_src[CT_KMAX_DIMS], free_dst[CT_KMAX_DIMS], free_index[CT_KMAX_DIMS];
    int nfree = 0;
    for (int d = 0; d < ndim; d++) {
        if (d == dim)
            continue;
        free_shape[nfree] = shape[d];
        free_src[nfree] = src_strides[d];
        free_dst[nfree] = dst_strides[d];
        free_index[nfree] = index_strides[d];
        nfree++;
    }
    ct_iter<3> free_it;
    const int64_t *strides[3] = {free_src, free_dst, free_index};
    int64_t n_free = ct_iter_make(&free_it, nfree, free_shape, strides);
    if (n_free == 0 || shape[dim] == 0)
        return;
    scatter_add_ordered_kernel<<<ct_grid_for(n_free, threads), threads, 0, s>>>(
        free_it, n_free, shape[dim], src_strides[dim], index_strides[dim], dst, src, index, dst_dim_stride, r);
}

extern "C" ct_status ct_cuda_scatter_add(const char *op, ct_dtype dtype, int ndim, const int64_t *shape, int dim,
                                         void *dst, const int64_t *dst_strides, const void *src,
                                         const int64_t *src_strides, const int32_t *index,
                                         const int64_t *index_strides, int64_t limit, bool deterministic,
                                         ct_stream *stream) {
    ct_index_report r;
    if (ct__cuda_index_report(stream, op, "index", CT_ERR_DIM, dim, limit, &r) != CT_OK)
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    switch (dtype) {
    case CT_F32:
        launch_scatter_add(deterministic, ndim, shape, dim, (float *)dst, dst_strides, (const float *)src, src_strides,
                           index, index_strides, r, s);
        break;
    case CT_F16:
        launch_scatter_add(deterministic, ndim, shape, dim, (__half *)dst, dst_strides, (const __half *)src,
                           src_strides, index, index_strides, r, s);
        break;
    case CT_BF16:
        launch_scatter_add(deterministic, ndim, shape, dim, (__nv_bfloat16 *)dst, dst_strides,
                           (const __nv_bfloat16 *)src, src_strides, index, index_strides, r, s);
        break;
    case CT_I32:
        launch_scatter_add(deterministic, ndim, shape, dim, (int32_t *)dst, dst_strides, (const int32_t *)src,
                           src_strides, index, index_strides, r, s);
        break;
    case CT_U8:
        launch_scatter_add(deterministic, ndim, shape, dim, (uint8_t *)dst, dst_strides, (const uint8_t *)src,
                           src_strides, index, index_strides, r, s);
        break;
    default:
        return ct__set_error(CT_ERR_DTYPE, "ct_scatter_add: %s is not supported on CUDA (f32, f16, bf16, i32, u8)",
                             ct_dtype_name(dtype));
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

// ---- one-hot ------------------------------------------------------------------------------

template <typename T>
__global__ void one_hot_kernel(ct_iter<1> it, int64_t n, const int32_t *labels, int64_t num_classes, T *out, T one,
                               ct_index_report report) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t off[1];
        ct_iter_offsets(it, i, off);
        int32_t k = labels[off[0]];
        if (ct_index_ok(report, k, i))
            out[i * num_classes + k] = one;
    }
}

extern "C" ct_status ct_cuda_one_hot(ct_dtype dtype, int ndim, const int64_t *shape, const int32_t *labels,
                                     const int64_t *strides, int64_t num_classes, void *out, ct_stream *stream) {
    if (dtype == CT_F64)
        return ct__set_error(CT_ERR_DTYPE, "ct_one_hot: f64 is not supported on CUDA (CPU only)");
    ct_iter<1> it;
    const int64_t *sp[1] = {strides};
    int64_t n = ct_iter_make(&it, ndim, shape, sp);
    if (n == 0)
        return CT_OK;
    ct_index_report r;
    if (ct__cuda_index_report(stream, "ct_one_hot", "index", CT_ERR_DIM, ndim, num_classes, &r) != CT_OK)
        return ct_last_error();
    CT_LAUNCH_STREAM(s, stream);
    size_t es = ct_dtype_size(dtype);
    // Zero bits are 0 in every dtype; the one is rounded on the host with the CPU's rules.
    if (!CT_CUDA_CHECK(cudaMemsetAsync(out, 0, (size_t)(n * num_classes) * es, s)))
        return ct_last_error();
    uint32_t bits = 0;
    ct_cpu_store(&bits, dtype, 0, 1.0);
    unsigned grid = ct_grid_for(n, threads);
    switch (es) {
    case 1: one_hot_kernel<<<grid, threads, 0, s>>>(it, n, labels, num_classes, (uint8_t *)out, (uint8_t)bits, r); break;
    case 2: one_hot_kernel<<<grid, threads, 0, s>>>(it, n, labels, num_classes, (uint16_t *)out, (uint16_t)bits, r); break;
    default: one_hot_kernel<<<grid, threads, 0, s>>>(it, n, labels, num_classes, (uint32_t *)out, bits, r); break;
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
