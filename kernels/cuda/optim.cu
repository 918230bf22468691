// ctensor — optimizer updates and gradient clipping fused over many tensors ("multi-tensor
// apply"). The pointers and sizes of up to CT_CUDA_OPTIM_TENSORS_PER_LAUNCH tensors travel in
// the kernel's argument struct (about 2 KB, under the 4 KB limit), so updating a model is
// one launch per 32 parameters instead of one (or several) per parameter. Each block takes
// one chunk of CHUNK elements of one tensor; the chunks of all tensors are numbered
// consecutively and a block finds its tensor in the table of first chunks.
//
// Only F32: F64 tensors are CPU-only. The update rules repeat nn/optim_cpu.c statement by
// statement (hyper-parameters rounded to float first, the same association), so a CUDA step
// matches the CPU step up to the contraction of multiply-adds into FMAs.
//
// Not yet measured on a GPU: CHUNK and the block size follow PyTorch's multi_tensor_apply
// (65536 elements per block there); ours is smaller so that a model with one large tensor
// still fills an H100.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

#include <math.h>

#define MAX_TENSORS CT_CUDA_OPTIM_TENSORS_PER_LAUNCH
#define CHUNK       16384
#define THREADS     512

// Kernels and their argument structs are private to this file.
namespace {

struct optim_batch {
    float *param[MAX_TENSORS];
    const float *grad[MAX_TENSORS];
    float *state[3][MAX_TENSORS];
    float scalar[2][MAX_TENSORS];
    int64_t numel[MAX_TENSORS];
    int first_chunk[MAX_TENSORS + 1]; // chunks of tensor t: [first_chunk[t], first_chunk[t + 1])
    int n;
};

// Hyper-parameters rounded to float, as the CPU loops round them.
struct optim_consts {
    float lr_neg, wd, mom, keep, b1, omb1, b2, omb2, shrink, alpha, oma, eps;
    bool decay, use_momentum, nesterov, amsgrad, centered;
};

template <int RULE> __global__ void __launch_bounds__(THREADS) optim_kernel(optim_batch b, optim_consts c) {
    int t = 0;
    while (t + 1 < b.n && b.first_chunk[t + 1] <= (int)blockIdx.x)
        t++;
    int64_t begin = (int64_t)((int)blockIdx.x - b.first_chunk[t]) * CHUNK;
    int64_t end = min(begin + CHUNK, b.numel[t]);
    float *p = b.param[t];
    const float *g = b.grad[t];
    float *s0 = b.state[0][t], *s1 = b.state[1][t], *s2 = b.state[2][t];
    const float k0 = b.scalar[0][t], k1 = b.scalar[1][t];
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
        if (RULE == CT_RULE_SGD) {
            float d = g[i];
            if (c.decay)
                d = d + c.wd * p[i];
            if (c.use_momentum) {
                float m = k0 != 0.0f ? d : s0[i] * c.mom + c.keep * d;
                s0[i] = m;
                d = c.nesterov ? d + c.mom * m : m;
            }
            p[i] = p[i] + c.lr_neg * d;
        } else if (RULE == CT_RULE_ADAM || RULE == CT_RULE_ADAMW) {
            float gi = g[i], pi = p[i];
            if (RULE == CT_RULE_ADAM && c.decay)
                gi = gi + c.wd * pi;
            if (RULE == CT_RULE_ADAMW)
                pi = pi * c.shrink;
            float mi = s0[i] * c.b1 + c.omb1 * gi;
            float vi = s1[i] * c.b2 + c.omb2 * gi * gi;
            s0[i] = mi;
            s1[i] = vi;
            if (c.amsgrad) {
                float old = s2[i];
                vi = old != old ? old : (vi != vi ? vi : fmaxf(old, vi));
                s2[i] = vi;
            }
            float denom = sqrtf(vi) / k1 + c.eps;
            p[i] = pi + (-k0) * (mi / denom);
        } else if (RULE == CT_RULE_RMSPROP) {
            float gi = g[i];
            if (c.decay)
                gi = gi + c.wd * p[i];
            float si = s0[i] * c.alpha + c.oma * gi * gi;
            s0[i] = si;
            float avg;
            if (c.centered) {
                float ai = s2[i] * c.alpha + c.oma * gi;
                s2[i] = ai;
                avg = sqrtf(si + -1.0f * ai * ai);
            } else {
                avg = sqrtf(si);
            }
            avg = avg + c.eps;
            if (c.use_momentum) {
                float m = s1[i] * c.mom + gi / avg;
                s1[i] = m;
                p[i] = p[i] + c.lr_neg * m;
            } else {
                p[i] = p[i] + c.lr_neg * (gi / avg);
            }
        } else { // Adagrad
            float gi = g[i];
            if (c.decay)
                gi = gi + c.wd * p[i];
            float si = s0[i] + gi * gi;
            s0[i] = si;
            p[i] = p[i] + (-k0) * (gi / (sqrtf(si) + c.eps));
        }
    }
}

static optim_consts consts_of(const ct_optim_hyper *h) {
    optim_consts c;
    c.lr_neg = (float)-h->lr;
    c.wd = (float)h->weight_decay;
    c.mom = (float)h->momentum;
    c.keep = (float)(1.0 - h->dampening);
    c.b1 = (float)h->beta1;
    c.omb1 = (float)(1.0 - h->beta1);
    c.b2 = (float)h->beta2;
    c.omb2 = (float)(1.0 - h->beta2);
    c.shrink = (float)(1.0 - h->lr * h->weight_decay);
    c.alpha = (float)h->alpha;
    c.oma = (float)(1.0 - h->alpha);
    c.eps = (float)h->eps;
    c.decay = h->weight_decay != 0.0;
    c.use_momentum = h->rule == CT_RULE_SGD ? h->momentum != 0.0 : h->momentum > 0.0;
    c.nesterov = h->nesterov;
    c.amsgrad = h->amsgrad;
    c.centered = h->centered;
    return c;
}

static ct_status launch_batch(ct_optim_rule rule, const optim_batch &b, const optim_consts &c, cudaStream_t s) {
    int blocks = b.first_chunk[b.n];
    if (blocks == 0)
        return CT_OK;
    switch (rule) {
    case CT_RULE_SGD: optim_kernel<CT_RULE_SGD><<<blocks, THREADS, 0, s>>>(b, c); break;
    case CT_RULE_ADAM: optim_kernel<CT_RULE_ADAM><<<blocks, THREADS, 0, s>>>(b, c); break;
    case CT_RULE_ADAMW: optim_kernel<CT_RULE_ADAMW><<<blocks, THREADS, 0, s>>>(b, c); break;
    case CT_RULE_RMSPROP: optim_kernel<CT_RULE_RMSPROP><<<blocks, THREADS, 0, s>>>(b, c); break;
    case CT_RULE_ADAGRAD: optim_kernel<CT_RULE_ADAGRAD><<<blocks, THREADS, 0, s>>>(b, c); break;
    }
    return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
}

} // namespace

extern "C" ct_status ct_cuda_optim_step(const ct_optim_hyper *hyper, int n, const ct_optim_slot *slots,
                                        ct_stream *stream) {
    optim_consts c = consts_of(hyper);
    CT_LAUNCH_STREAM(s, stream);
    for (int first = 0; first < n; first += MAX_TENSORS) {
        optim_batch b;
        memset(&b, 0, sizeof b);
        b.n = n - first < MAX_TENSORS ? n - first : MAX_TENSORS;
        int64_t chunks = 0;
        for (int t = 0; t < b.n; t++) {
            const ct_optim_slot *slot = &slots[first + t];
            b.param[t] = (float *)slot->param;
            b.grad[t] = (const float *)slot->grad;
            for (int k = 0; k < 3; k++)
                b.state[k][t] = (float *)slot->state[k];
            b.scalar[0][t] = (float)slot->scalar[0];
            b.scalar[1][t] = (float)slot->scalar[1];
            b.numel[t] = slot->numel;
            b.first_chunk[t] = (int)chunks;
            chunks += (slot->numel + CHUNK - 1) / CHUNK;
        }
        if (chunks > INT32_MAX)
            return ct__set_error(CT_ERR_VALUE, "ct_cuda_optim_step: %lld chunks exceed one launch", (long long)chunks);
        b.first_chunk[b.n] = (int)chunks;
        ct_status st = launch_batch(hyper->rule, b, c, s);
        if (st != CT_OK)
            return st;
    }
    return CT_OK;
}

// ---- gradient clipping -------------------------------------------------------------------

namespace {

struct tensor_batch {
    float *data[MAX_TENSORS];
    int64_t numel[MAX_TENSORS];
};

// The larger of a and b, NaN when either is (like torch.max).
__device__ __forceinline__ double nan_max(double a, double b) {
    return a != a ? a : (b != b ? b : fmax(a, b));
}

// Block (blockIdx.x, blockIdx.y) reduces slice blockIdx.x of tensor blockIdx.y (a grid-stride
// loop over CT_CUDA_NORM_BLOCKS blocks) in double and writes one partial.
__global__ void __launch_bounds__(THREADS) norm_kernel(tensor_batch b, double p, int mode, double *partials) {
    __shared__ double shared[THREADS / 32];
    const float *x = b.data[blockIdx.y];
    int64_t n = b.numel[blockIdx.y];
    double acc = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double a = fabs((double)x[i]);
        if (mode == 0)
            acc = nan_max(acc, a);
        else if (mode == 2)
            acc += a * a;
        else
            acc += pow(a, p);
    }
    for (int offset = 16; offset > 0; offset /= 2) {
        double other = __shfl_down_sync(0xffffffffu, acc, offset);
        acc = mode == 0 ? nan_max(acc, other) : acc + other;
    }
    if (threadIdx.x % 32 == 0)
        shared[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = shared[0];
        for (int w = 1; w < (int)blockDim.x / 32; w++)
            total = mode == 0 ? nan_max(total, shared[w]) : total + shared[w];
        partials[(int64_t)blockIdx.y * gridDim.x + blockIdx.x] = total;
    }
}

__global__ void __launch_bounds__(THREADS) scale_clamp_kernel(tensor_batch b, float scale, float clip) {
    float *x = b.data[blockIdx.y];
    int64_t n = b.numel[blockIdx.y];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i] * scale;
        x[i] = v > clip ? clip : (v < -clip ? -clip : v);
    }
}

} // namespace

extern "C" ct_status ct_cuda_multi_norm(int n, const void *const *tensors, const int64_t *numel, double norm_type,
                                        double *partials, ct_stream *stream) {
    int mode = isinf(norm_type) ? 0 : norm_type == 2.0 ? 2 : 1;
    CT_LAUNCH_STREAM(s, stream);
    for (int first = 0; first < n; first += MAX_TENSORS) {
        tensor_batch b;
        memset(&b, 0, sizeof b);
        int count = n - first < MAX_TENSORS ? n - first : MAX_TENSORS;
        for (int t = 0; t < count; t++) {
            b.data[t] = (float *)tensors[first + t];
            b.numel[t] = numel[first + t];
        }
        dim3 grid(CT_CUDA_NORM_BLOCKS, count);
        norm_kernel<<<grid, THREADS, 0, s>>>(b, norm_type, mode, partials + (int64_t)first * CT_CUDA_NORM_BLOCKS);
        if (!CT_CUDA_CHECK_LAUNCH())
            return ct_last_error();
    }
    return CT_OK;
}

extern "C" ct_status ct_cuda_multi_scale_clamp(int n, void *const *tensors, const int64_t *numel, double scale,
                                               double clip, ct_stream *stream) {
    CT_LAUNCH_STREAM(s, stream);
    for (int first = 0; first < n; first += MAX_TENSORS) {
        tensor_batch b;
        memset(&b, 0, sizeof b);
        int count = n - first < MAX_TENSORS ? n - first : MAX_TENSORS;
        int64_t largest = 0;
        for (int t = 0; t < count; t++) {
            b.data[t] = (float *)tensors[first + t];
            b.numel[t] = numel[first + t];
            largest = numel[first + t] > largest ? numel[first + t] : largest;
        }
        if (largest == 0)
            continue;
        dim3 grid(ct_grid_for(largest, THREADS) < 1024 ? ct_grid_for(largest, THREADS) : 1024, count);
        scale_clamp_kernel<<<grid, THREADS, 0, s>>>(b, (float)scale, (float)clip);
        if (!CT_CUDA_CHECK_LAUNCH())
            return ct_last_error();
    }
    return CT_OK;
}
