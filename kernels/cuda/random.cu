// ctensor — Philox distributions on the GPU, following the scheme documented in random.h
// word for word, so a CUDA tensor holds the same numbers as a CPU tensor made from the
// same (seed, offset).
#include "kernels/cpu/philox.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

#include <cub/device/device_radix_sort.cuh>

// Thread b makes Philox block b: the elements that read its four words (ct_philox_dist_block,
// the CPU's code too), so each block is computed once.
template <typename T>
__global__ void random_kernel(int kind, T *out, int64_t n, uint64_t seed, uint64_t offset, const uint64_t *base,
                              double p0, double p1, bool f64) {
    ct_philox_rebase(base, &seed, &offset);
    const int per = ct_philox_per_block(kind, f64);
    const int64_t blocks = (n + per - 1) / per;
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < blocks; b += (int64_t)blockDim.x * gridDim.x) {
        double v[4];
        int count = ct_philox_dist_block(kind, f64, seed, offset, (uint64_t)b, n, p0, p1, v);
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (k < count)
                out[b * per + k] = ct_from_double<T>(v[k]);
    }
}

extern "C" ct_status ct_cuda_random(int kind, void *out, ct_dtype dtype, int64_t n, uint64_t seed, uint64_t offset,
                                    double p0, double p1, ct_stream *stream) {
    if (n == 0)
        return CT_OK;
    const int threads = 256;
    CT_LAUNCH_STREAM(s, stream);
    const uint64_t *base = NULL;
    if (ct__cuda_philox_for(stream, seed, &offset, &base) != CT_OK)
        return ct_last_error();
    const bool f64 = dtype == CT_F64;
    const int per = ct_philox_per_block(kind, f64);
    const int64_t blocks = (n + per - 1) / per;
    CT_DISPATCH_DTYPE(dtype, T,
        random_kernel<T><<<ct_grid_for(blocks, threads), threads, 0, s>>>(kind, (T *)out, n, seed, offset, base, p0,
                                                                           p1, f64));
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

// ---- randperm --------------------------------------------------------------------------
// The CPU (runtime/random.c) sorts (Philox word i, i) pairs by key, then index. CUB's radix
// sort is stable, so sorting the words with the indices in ascending order as values gives
// the same permutation, bit for bit. Workspace: keys in, keys out, indices in, each rounded
// to 256 bytes, then CUB's temporary storage.

__global__ void randperm_keys_kernel(uint32_t *keys, int32_t *index, int64_t n, uint64_t seed, uint64_t offset,
                                     const uint64_t *base) {
    ct_philox_rebase(base, &seed, &offset);
    const int64_t blocks = (n + 3) / 4; // thread b: keys 4b .. 4b + 3, the words of Philox block b
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < blocks; b += (int64_t)blockDim.x * gridDim.x) {
        uint32_t w[4];
        ct_philox_stream_block(seed, offset + (uint64_t)b, w);
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (4 * b + k < n) {
                keys[4 * b + k] = w[k];
                index[4 * b + k] = (int32_t)(4 * b + k);
            }
    }
}

static size_t randperm_part(int64_t n) { return ((size_t)n * 4 + 255) & ~(size_t)255; }

static ct_status randperm_sort_bytes(int64_t n, size_t *bytes) {
    *bytes = 0;
    return CT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, *bytes, (const uint32_t *)nullptr,
                                                         (uint32_t *)nullptr, (const int32_t *)nullptr,
                                                         (int32_t *)nullptr, n))
               ? CT_OK
               : ct_last_error();
}

extern "C" ct_status ct_cuda_randperm_workspace(int64_t n, size_t *bytes) {
    *bytes = 0;
    if (n <= 0)
        return CT_OK;
    size_t sort = 0;
    if (randperm_sort_bytes(n, &sort) != CT_OK)
        return ct_last_error();
    *bytes = 3 * randperm_part(n) + sort;
    return CT_OK;
}

extern "C" ct_status ct_cuda_randperm(int32_t *out, int64_t n, uint64_t seed, uint64_t offset, void *workspace,
                                      size_t workspace_bytes, ct_stream *stream) {
    if (n <= 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    // CUB's part is what ct_cuda_randperm_workspace added after the three arrays; CUB itself
    // refuses a part too small, so its size is not queried again here.
    const size_t part = randperm_part(n);
    if (!workspace || workspace_bytes <= 3 * part)
        return ct__set_error(CT_ERR_INTERNAL, "ct_cuda_randperm: workspace of %zu bytes, more than %zu needed",
                             workspace_bytes, 3 * part);
    size_t sort = workspace_bytes - 3 * part;
    char *w = (char *)workspace;
    uint32_t *keys_in = (uint32_t *)w, *keys_out = (uint32_t *)(w + part);
    int32_t *index = (int32_t *)(w + 2 * part);
    const uint64_t *base = NULL;
    if (ct__cuda_philox_for(stream, seed, &offset, &base) != CT_OK)
        return ct_last_error();
    const int threads = 256;
    randperm_keys_kernel<<<ct_grid_for((n + 3) / 4, threads), threads, 0, s>>>(keys_in, index, n, seed, offset, base);
    if (!CT_CUDA_CHECK_LAUNCH())
        return ct_last_error();
    return CT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(w + 3 * part, sort, keys_in, keys_out, index, out, n, 0, 32,
                                                         s))
               ? CT_OK
               : ct_last_error();
}
