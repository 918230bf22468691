// ctensor — reflect and replicate padding on the GPU, forward and backward.
//
// Same map as kernels/cpu/pad.c: output coordinate o on dim d reads input coordinate
// o - left[d], mirrored (reflect) or clamped (replicate) into [0, n).
// Forward: one thread per output element finds its source and copies elem_size bytes.
// Backward: a gather, not a scatter. Each thread owns one input element and sums the output
// gradients that read it. Per dim these positions are at most three single positions
// (reflect: the left mirror l - c, the direct c + l, the right mirror l + 2 (n - 1) - c) or
// one interval (replicate: the edge elements collect the whole pad); the thread walks their
// product in row-major output order, accumulating in float. There are no atomics, every
// element of grad_in is written once, and the sum runs in the CPU kernel's order (which adds
// in output order), so F32 results match the CPU's bit for bit.
#include "kernels/cpu/pad.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

static const int threads = 256;

// Dims with in == out (unpadded) next to each other are merged, so most tensors iterate
// over two or three dims.
struct pad_geom {
    int ndim;
    bool reflect;
    int64_t in_shape[CT_KMAX_DIMS], out_shape[CT_KMAX_DIMS], left[CT_KMAX_DIMS];
};

static bool make_geom(const char *op, bool reflect, int ndim, const int64_t *in_shape, const int64_t *out_shape,
                      const int64_t *left, pad_geom *g) {
    if (ndim < 1 || ndim > CT_KMAX_DIMS) {
        ct__set_error(CT_ERR_INTERNAL, "internal error: %s: %d dims", op, ndim);
        return false;
    }
    g->ndim = 0;
    g->reflect = reflect;
    for (int d = 0; d < ndim; d++) {
        bool unpadded = in_shape[d] == out_shape[d] && left[d] == 0;
        int k = g->ndim - 1;
        if (unpadded && k >= 0 && g->in_shape[k] == g->out_shape[k] && g->left[k] == 0) {
            g->in_shape[k] *= in_shape[d];
            g->out_shape[k] *= out_shape[d];
            continue;
        }
        g->in_shape[g->ndim] = in_shape[d];
        g->out_shape[g->ndim] = out_shape[d];
        g->left[g->ndim++] = left[d];
    }
    return true;
}

template <typename E>
__global__ void pad_forward_kernel(pad_geom g, int64_t n_out, const E *in, /* (in_shape) */
                                   E *out /* (out_shape) */) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_out; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t rest = i, src = 0, in_stride = 1;
        for (int d = g.ndim - 1; d >= 0; d--) {
            int64_t o = rest % g.out_shape[d];
            rest /= g.out_shape[d];
            src += ct_pad_source(o, g.left[d], g.in_shape[d], g.reflect) * in_stride;
            in_stride *= g.in_shape[d];
        }
        out[i] = in[src];
    }
}

// The output positions on dim d that read input coordinate c: up to three intervals
// [start, start + len), in increasing order. Returns their count.
__device__ __forceinline__ int pad_readers(const pad_geom &g, int d, int64_t c, int64_t *start, int64_t *len) {
    int64_t n = g.in_shape[d], l = g.left[d], r = g.out_shape[d] - n - l;
    if (!g.reflect) {
        int64_t lo = c == 0 ? 0 : c + l, hi = c == n - 1 ? l + n + r : c + l + 1;
        start[0] = lo;
        len[0] = hi - lo;
        return 1;
    }
    int k = 0;
    if (c >= 1 && c <= l) {
        start[k] = l - c;
        len[k++] = 1;
    }
    start[k] = c + l;
    len[k++] = 1;
    if (c <= n - 2 && c >= n - 1 - r) {
        start[k] = l + 2 * (n - 1) - c;
        len[k++] = 1;
    }
    return k;
}

template <typename T>
__global__ void pad_backward_kernel(pad_geom g, int64_t n_in, const T *grad_out, /* (out_shape) */
                                    T *grad_in /* (in_shape) */) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_in; i += (int64_t)blockDim.x * gridDim.x) {
        int64_t start[CT_KMAX_DIMS][3], len[CT_KMAX_DIMS][3], pos[CT_KMAX_DIMS];
        int count[CT_KMAX_DIMS], interval[CT_KMAX_DIMS];
        int64_t rest = i;
        for (int d = g.ndim - 1; d >= 0; d--) {
            count[d] = pad_readers(g, d, rest % g.in_shape[d], start[d], len[d]);
            rest /= g.in_shape[d];
            interval[d] = 0;
            pos[d] = 0;
        }
        float acc = 0.0f;
        for (;;) {
            int64_t off = 0;
            for (int d = 0; d < g.ndim; d++)
                off = off * g.out_shape[d] + start[d][interval[d]] + pos[d];
            acc += ct_convert<float>(grad_out[off]);
            // the next position, the last dim fastest: row-major output order
            int d = g.ndim - 1;
            for (; d >= 0; d--) {
                if (++pos[d] < len[d][interval[d]])
                    break;
                pos[d] = 0;
                if (++interval[d] < count[d])
                    break;
                interval[d] = 0;
            }
            if (d < 0)
                break;
        }
        grad_in[i] = ct_convert<T>(acc);
    }
}

static int64_t numel_of(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

extern "C" ct_status ct_cuda_pad(bool reflect, size_t elem_size, int ndim, const int64_t *in_shape, const void *in,
                                 const int64_t *out_shape, void *out, const int64_t *left, ct_stream *stream) {
    const char *op = "ct_cuda_pad";
    pad_geom g;
    if (!make_geom(op, reflect, ndim, in_shape, out_shape, left, &g))
        return ct_last_error();
    int64_t n = numel_of(ndim, out_shape);
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    unsigned grid = ct_grid_for(n, threads);
    switch (elem_size) {
    case 1: pad_forward_kernel<uint8_t><<<grid, threads, 0, s>>>(g, n, (const uint8_t *)in, (uint8_t *)out); break;
    case 2: pad_forward_kernel<uint16_t><<<grid, threads, 0, s>>>(g, n, (const uint16_t *)in, (uint16_t *)out); break;
    case 4: pad_forward_kernel<uint32_t><<<grid, threads, 0, s>>>(g, n, (const uint32_t *)in, (uint32_t *)out); break;
    case 8: pad_forward_kernel<uint64_t><<<grid, threads, 0, s>>>(g, n, (const uint64_t *)in, (uint64_t *)out); break;
    default: return ct__set_error(CT_ERR_DTYPE, "%s: elements of %zu bytes are not supported", op, elem_size);
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

extern "C" ct_status ct_cuda_pad_backward(bool reflect, ct_dtype dtype, int ndim, const int64_t *in_shape,
                                          void *grad_in, const int64_t *out_shape, const void *grad_out,
                                          const int64_t *left, ct_stream *stream) {
    const char *op = "ct_cuda_pad_backward";
    if (dtype != CT_F32 && dtype != CT_F16 && dtype != CT_BF16)
        return ct__set_error(CT_ERR_DTYPE, "%s: %s is not supported (F32, F16, BF16)", op, ct_dtype_name(dtype));
    pad_geom g;
    if (!make_geom(op, reflect, ndim, in_shape, out_shape, left, &g))
        return ct_last_error();
    int64_t n = numel_of(ndim, in_shape);
    if (n == 0)
        return CT_OK;
    CT_LAUNCH_STREAM(s, stream);
    unsigned grid = ct_grid_for(n, threads);
    if (dtype == CT_F32)
        pad_backward_kernel<float><<<grid, threads, 0, s>>>(g, n, (const float *)grad_out, (float *)grad_in);
    else if (dtype == CT_F16)
        pad_backward_kernel<__half><<<grid, threads, 0, s>>>(g, n, (const __half *)grad_out, (__half *)grad_in);
    else
        pad_backward_kernel<__nv_bfloat16>
            <<<grid, threads, 0, s>>>(g, n, (const __nv_bfloat16 *)grad_out, (__nv_bfloat16 *)grad_in);
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}
