/* ctensor's CUDA emulator (tests/emu/README.md): the part of cuDNN that kernels/cuda/conv.cu,
 * norm.cu and dnn.cu call, on the host. 2-D cross-correlation (forward, backward data,
 * backward filter; padding, stride, dilation, groups) and spatial batch normalization
 * (training, inference, backward), NCHW, F32/F16/BF16 data with float parameters, computed in
 * double and rounded once.
 *
 * The algorithm lists are made up to exercise the caller (see algorithms() below): the faster
 * candidates (in Find's made-up times) need a 1 MiB workspace, are non-deterministic for the
 * backward passes, as cuDNN's atomics-based algorithms are, and the fastest uses tensor cores. A run with a
 * workspace smaller than its algorithm needs is CUDNN_STATUS_BAD_PARAM, as in cuDNN;
 * descriptors that do not fit together are BAD_PARAM too; a tensor past its device
 * allocation is fatal. */
#include "tests/emu/cuda_emu.h"

#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>

#define EMU_API extern "C" __attribute__((visibility("default")))

namespace {

const size_t FAST_WORKSPACE = 1 << 20;

struct handle_t {
    cudaStream_t stream;
};
struct tensor_t {
    cudnnDataType_t type;
    int n, c, h, w;
};
struct conv_t {
    int pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, groups;
    cudnnMathType_t math;
};

bool known_type(cudnnDataType_t t) {
    return t == CUDNN_DATA_FLOAT || t == CUDNN_DATA_HALF || t == CUDNN_DATA_BFLOAT16;
}
::ct_emu::element element_of(cudnnDataType_t t) {
    return t == CUDNN_DATA_FLOAT ? ::ct_emu::ELEM_F32 : t == CUDNN_DATA_HALF ? ::ct_emu::ELEM_F16 : ::ct_emu::ELEM_BF16;
}
size_t type_size(cudnnDataType_t t) { return ::ct_emu::element_size(element_of(t)); }
double load(const void *p, cudnnDataType_t t, int64_t i) { return ::ct_emu::load_element(p, element_of(t), i); }
void store(void *p, cudnnDataType_t t, int64_t i, double v) { ::ct_emu::store_element(p, element_of(t), i, v); }
int64_t numel(const tensor_t *t) { return (int64_t)t->n * t->c * t->h * t->w; }

void check_memory(const char *what, const void *p, const tensor_t *t) {
    size_t bytes = (size_t)numel(t) * type_size(t->type);
    if (bytes && !::ct_emu::device_accessible(p, bytes))
        ::ct_emu::fatal("cuDNN: %s (%p, %zu bytes) is not device memory", what, p, bytes);
}

int out_dim(int in, int pad, int k, int dil, int stride) { return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1; }

/* x, w and y fit together: channels over the groups, the output size, one data type. */
bool fits(const tensor_t *x, const tensor_t *w, const conv_t *c, const tensor_t *y) {
    if (!x || !w || !c || !y || x->type != w->type || x->type != y->type)
        return false;
    if (c->groups < 1 || x->c != w->c * c->groups || w->n % c->groups != 0 || y->n != x->n || y->c != w->n)
        return false;
    return y->h == out_dim(x->h, c->pad_h, w->h, c->dil_h, c->stride_h) &&
           y->w == out_dim(x->w, c->pad_w, w->w, c->dil_w, c->stride_w);
}

enum pass { FORWARD, BACKWARD_DATA, BACKWARD_FILTER };

/* The three passes over the same index space: for each output position of each image and
 * each tap of the filter inside the input. */
void convolve(pass p, const tensor_t x, const void *xp, const tensor_t w, const void *wp, const conv_t c,
              const tensor_t y, const void *yp, double alpha, double beta, void *out) {
    const tensor_t &ot = p == FORWARD ? y : p == BACKWARD_DATA ? x : w;
    std::vector<double> acc((size_t)numel(&ot), 0.0);
    const int cg = w.c, og = w.n / c.groups;
    for (int n = 0; n < x.n; n++)
        for (int o = 0; o < w.n; o++) {
            const int g = o / og;
            for (int i = 0; i < y.h; i++)
                for (int j = 0; j < y.w; j++) {
                    const int64_t yi = (((int64_t)n * y.c + o) * y.h + i) * y.w + j;
                    const double dy = p == FORWARD ? 0 : load(yp, y.type, yi);
                    double sum = 0;
                    for (int ci = 0; ci < cg; ci++)
                        for (int a = 0; a < w.h; a++) {
                            const int hh = i * c.stride_h - c.pad_h + a * c.dil_h;
                            if (hh < 0 || hh >= x.h)
                                continue;
                            for (int b = 0; b < w.w; b++) {
                                const int ww = j * c.stride_w - c.pad_w + b * c.dil_w;
                                if (ww < 0 || ww >= x.w)
                                    continue;
                                const int64_t xi = (((int64_t)n * x.c + g * cg + ci) * x.h + hh) * x.w + ww;
                                const int64_t wi = (((int64_t)o * w.c + ci) * w.h + a) * w.w + b;
                                if (p == FORWARD)
                                    sum += load(xp, x.type, xi) * load(wp, w.type, wi);
                                else if (p == BACKWARD_DATA)
                                    acc[(size_t)xi] += dy * load(wp, w.type, wi);
                                else
                                    acc[(size_t)wi] += dy * load(xp, x.type, xi);
                            }
                        }
                    if (p == FORWARD)
                        acc[(size_t)yi] = sum;
                }
        }
    for (int64_t i = 0; i < numel(&ot); i++)
        store(out, ot.type, i, alpha * acc[(size_t)i] + (beta != 0 ? beta * load(out, ot.type, i) : 0.0));
}

cudnnStatus_t run_conv(cudnnHandle_t handle, pass p, const void *alpha, const tensor_t *x, const void *xp,
                       const tensor_t *w, const void *wp, const conv_t *c, const tensor_t *y, const void *yp, int algo,
                       void *workspace, size_t workspace_bytes, const void *beta, void *out) {
    if (!handle || !alpha || !beta || !fits(x, w, c, y))
        return CUDNN_STATUS_BAD_PARAM;
    if (algo != 0 && algo != 1)
        return CUDNN_STATUS_BAD_PARAM;
    const size_t need = algo == 1 ? FAST_WORKSPACE : 0;
    if (workspace_bytes < need || (need && !workspace))
        return CUDNN_STATUS_BAD_PARAM;
    if (need && !::ct_emu::device_accessible(workspace, need))
        ::ct_emu::fatal("cuDNN: the workspace (%p, %zu bytes) is not device memory", workspace, need);
    check_memory(p == BACKWARD_DATA ? "dx" : "x", p == BACKWARD_DATA ? out : xp, x);
    check_memory(p == BACKWARD_FILTER ? "dw" : "w", p == BACKWARD_FILTER ? out : wp, w);
    check_memory(p == FORWARD ? "y" : "dy", p == FORWARD ? out : yp, y);
    const double a = *(const float *)alpha, b = *(const float *)beta;
    const tensor_t xs = *x, ws = *w, ys = *y;
    const conv_t cs = *c;
    ::ct_emu::run_on_stream(((handle_t *)handle)->stream,
                            [=]() { convolve(p, xs, xp, ws, wp, cs, ys, yp, a, b, out); });
    return CUDNN_STATUS_SUCCESS;
}

/* The made-up algorithm list (see the top), fastest first. */
template <typename Perf, typename Algo>
cudnnStatus_t algorithms(bool backward, const conv_t *c, int requested, int *returned, Perf *perf) {
    if (!c || requested < 1 || !returned || !perf)
        return CUDNN_STATUS_BAD_PARAM;
    /* The fastest needs a workspace, is non-deterministic for the backward passes, and uses
     * tensor cores even where the descriptor asks for FMA math (cuDNN lists such candidates
     * for F32 too); then the same with the descriptor's math; then a slow one, deterministic,
     * without a workspace. */
    const int count = requested < 3 ? requested : 3;
    for (int i = 0; i < count; i++) {
        memset(&perf[i], 0, sizeof perf[i]);
        perf[i].algo = (Algo)(i < 2 ? 1 : 0);
        perf[i].status = CUDNN_STATUS_SUCCESS;
        perf[i].time = i == 0 ? 0.5f : i == 1 ? 1.0f : 2.0f;
        perf[i].memory = i < 2 ? FAST_WORKSPACE : 0;
        perf[i].determinism = backward && i < 2 ? CUDNN_NON_DETERMINISTIC : CUDNN_DETERMINISTIC;
        perf[i].mathType = i == 0 ? CUDNN_TENSOR_OP_MATH : c->math;
    }
    *returned = count;
    return CUDNN_STATUS_SUCCESS;
}

} // namespace

/* ---- handles and descriptors ------------------------------------------------------------------ */

EMU_API cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    *handle = NULL;
    if (::ct_emu::capture_forbids_unsafe_call()) /* it allocates */
        return CUDNN_STATUS_NOT_SUPPORTED;
    *handle = (cudnnHandle_t) new handle_t{NULL};
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    delete (handle_t *)handle;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    if (!handle)
        return CUDNN_STATUS_BAD_PARAM;
    ((handle_t *)handle)->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    default: return "CUDNN_STATUS (ctensor CUDA emulator)";
    }
}

EMU_API cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    *d = (cudnnTensorDescriptor_t) new tensor_t{CUDNN_DATA_FLOAT, 0, 0, 0, 0};
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    delete (tensor_t *)d;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                                 cudnnDataType_t type, int n, int c, int h, int w) {
    if (!d || format != CUDNN_TENSOR_NCHW)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (!known_type(type))
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
        return CUDNN_STATUS_BAD_PARAM; /* as cuDNN: no empty tensors */
    *(tensor_t *)d = tensor_t{type, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    *d = (cudnnFilterDescriptor_t) new tensor_t{CUDNN_DATA_FLOAT, 0, 0, 0, 0};
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    delete (tensor_t *)d;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                                 cudnnTensorFormat_t format, int k, int c, int h, int w) {
    return cudnnSetTensor4dDescriptor((cudnnTensorDescriptor_t)d, format, type, k, c, h, w);
}
EMU_API cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    *d = (cudnnConvolutionDescriptor_t) new conv_t{0, 0, 1, 1, 1, 1, 1, CUDNN_DEFAULT_MATH};
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    delete (conv_t *)d;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u,
                                                      int v, int dil_h, int dil_w, cudnnConvolutionMode_t mode,
                                                      cudnnDataType_t compute) {
    if (!d || mode != CUDNN_CROSS_CORRELATION || compute != CUDNN_DATA_FLOAT)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dil_h <= 0 || dil_w <= 0)
        return CUDNN_STATUS_BAD_PARAM;
    conv_t *c = (conv_t *)d;
    c->pad_h = pad_h, c->pad_w = pad_w, c->stride_h = u, c->stride_w = v, c->dil_h = dil_h, c->dil_w = dil_w;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groups) {
    if (!d || groups < 1)
        return CUDNN_STATUS_BAD_PARAM;
    ((conv_t *)d)->groups = groups;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
    if (!d || (math != CUDNN_DEFAULT_MATH && math != CUDNN_TENSOR_OP_MATH && math != CUDNN_FMA_MATH &&
               math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
        return CUDNN_STATUS_BAD_PARAM;
    ((conv_t *)d)->math = math;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                            const cudnnTensorDescriptor_t xd,
                                                            const cudnnFilterDescriptor_t wd, int *n, int *c, int *h,
                                                            int *w) {
    const conv_t *cv = (const conv_t *)cd;
    const tensor_t *x = (const tensor_t *)xd, *f = (const tensor_t *)wd;
    if (!cv || !x || !f || x->c != f->c * cv->groups)
        return CUDNN_STATUS_BAD_PARAM;
    *n = x->n;
    *c = f->n;
    *h = out_dim(x->h, cv->pad_h, f->h, cv->dil_h, cv->stride_h);
    *w = out_dim(x->w, cv->pad_w, f->w, cv->dil_w, cv->stride_w);
    return *h > 0 && *w > 0 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
}

/* ---- algorithms ----------------------------------------------------------------------------------- */

EMU_API cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t h, int *count) {
    *count = 3;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t h, int *count) {
    *count = 3;
    return CUDNN_STATUS_SUCCESS;
}
EMU_API cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t h, int *count) {
    *count = 3;
    return CUDNN_STATUS_SUCCESS;
}
/* TIMED: cudnnFind, whose timing allocates, so that a capture forbids it. */
#define ALGO_QUERY(NAME, PERF, ALGO, BACKWARD, T1, T2, TIMED, T4, FITS)                                                   \
    EMU_API cudnnStatus_t NAME(cudnnHandle_t h, const T1 a, const T2 b, const cudnnConvolutionDescriptor_t cd,        \
                               const T4 d, const int requested, int *returned, PERF *perf) {                           \
        if (!h || !(FITS))                                                                                             \
            return CUDNN_STATUS_BAD_PARAM;                                                                             \
        if ((TIMED) && ::ct_emu::capture_forbids_unsafe_call())                                                        \
            return CUDNN_STATUS_NOT_SUPPORTED;                                                                         \
        return algorithms<PERF, ALGO>(BACKWARD, (const conv_t *)cd, requested, returned, perf);                        \
    }
#define T_ (const tensor_t *)
#define C_ (const conv_t *)cd
ALGO_QUERY(cudnnFindConvolutionForwardAlgorithm, cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t, false,
           cudnnTensorDescriptor_t, cudnnFilterDescriptor_t, true, cudnnTensorDescriptor_t, fits(T_ a, T_ b, C_, T_ d))
ALGO_QUERY(cudnnGetConvolutionForwardAlgorithm_v7, cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t, false,
           cudnnTensorDescriptor_t, cudnnFilterDescriptor_t, false, cudnnTensorDescriptor_t, fits(T_ a, T_ b, C_, T_ d))
ALGO_QUERY(cudnnFindConvolutionBackwardDataAlgorithm, cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t,
           true, cudnnFilterDescriptor_t, cudnnTensorDescriptor_t, true, cudnnTensorDescriptor_t, fits(T_ d, T_ a, C_, T_ b))
ALGO_QUERY(cudnnGetConvolutionBackwardDataAlgorithm_v7, cudnnConvolutionBwdDataAlgoPerf_t,
           cudnnConvolutionBwdDataAlgo_t, true, cudnnFilterDescriptor_t, cudnnTensorDescriptor_t, false,
           cudnnTensorDescriptor_t, fits(T_ d, T_ a, C_, T_ b))
ALGO_QUERY(cudnnFindConvolutionBackwardFilterAlgorithm, cudnnConvolutionBwdFilterAlgoPerf_t,
           cudnnConvolutionBwdFilterAlgo_t, true, cudnnTensorDescriptor_t, cudnnTensorDescriptor_t, true,
           cudnnFilterDescriptor_t, fits(T_ a, T_ d, C_, T_ b))
ALGO_QUERY(cudnnGetConvolutionBackwardFilterAlgorithm_v7, cudnnConvolutionBwdFilterAlgoPerf_t,
           cudnnConvolutionBwdFilterAlgo_t, true, cudnnTensorDescriptor_t, cudnnTensorDescriptor_t, false,
           cudnnFilterDescriptor_t, fits(T_ a, T_ d, C_, T_ b))
#undef T_
#undef C_

/* ---- convolutions -------------------------------------------------------------------------------- */

EMU_API cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                              const void *x, const cudnnFilterDescriptor_t wd, const void *w,
                                              const cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t algo,
                                              void *ws, size_t ws_bytes, const void *beta,
                                              const cudnnTensorDescriptor_t yd, void *y) {
    return run_conv(h, FORWARD, alpha, (const tensor_t *)xd, x, (const tensor_t *)wd, w, (const conv_t *)cd,
                    (const tensor_t *)yd, NULL, (int)algo, ws, ws_bytes, beta, y);
}
EMU_API cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, const cudnnFilterDescriptor_t wd,
                                                   const void *w, const cudnnTensorDescriptor_t dyd, const void *dy,
                                                   const cudnnConvolutionDescriptor_t cd,
                                                   cudnnConvolutionBwdDataAlgo_t algo, void *ws, size_t ws_bytes,
                                                   const void *beta, const cudnnTensorDescriptor_t dxd, void *dx) {
    return run_conv(h, BACKWARD_DATA, alpha, (const tensor_t *)dxd, NULL, (const tensor_t *)wd, w, (const conv_t *)cd,
                    (const tensor_t *)dyd, dy, (int)algo, ws, ws_bytes, beta, dx);
}
EMU_API cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
                                                     const cudnnTensorDescriptor_t xd, const void *x,
                                                     const cudnnTensorDescriptor_t dyd, const void *dy,
                                                     const cudnnConvolutionDescriptor_t cd,
                                                     cudnnConvolutionBwdFilterAlgo_t algo, void *ws, size_t ws_bytes,
                                                     const void *beta, const cudnnFilterDescriptor_t dwd, void *dw) {
    return run_conv(h, BACKWARD_FILTER, alpha, (const tensor_t *)xd, x, (const tensor_t *)dwd, NULL,
                    (const conv_t *)cd, (const tensor_t *)dyd, dy, (int)algo, ws, ws_bytes, beta, dw);
}

/* ---- batch normalization (spatial: per channel over N, H, W) ------------------------------------------ */

EMU_API cudnnStatus_t cudnnDeriveBNTensorDescriptor(cudnnTensorDescriptor_t d, const cudnnTensorDescriptor_t xd,
                                                    cudnnBatchNormMode_t mode) {
    const tensor_t *x = (const tensor_t *)xd;
    if (!d || !x || mode != CUDNN_BATCHNORM_SPATIAL)
        return CUDNN_STATUS_NOT_SUPPORTED;
    *(tensor_t *)d = tensor_t{CUDNN_DATA_FLOAT, 1, x->c, 1, 1};
    return CUDNN_STATUS_SUCCESS;
}

namespace {
bool bn_fits(const tensor_t *x, const tensor_t *y, const tensor_t *p) {
    return x && y && p && x->n == y->n && x->c == y->c && x->h == y->h && x->w == y->w && x->type == y->type &&
           p->type == CUDNN_DATA_FLOAT && p->c == x->c && p->n == 1 && p->h == 1 && p->w == 1;
}
void check_params(const tensor_t *p, std::initializer_list<const void *> ptrs) {
    for (const void *q : ptrs)
        if (q)
            check_memory("a batch-norm parameter", q, p);
}
/* x[n, c, s] with s over H*W. */
int64_t at(const tensor_t &x, int n, int c, int64_t s) { return ((int64_t)n * x.c + c) * x.h * x.w + s; }
/* Channel c's mean and biased variance over N, H, W (two passes, in double). */
void channel_stats(const void *x, const tensor_t &X, int c, double *mean, double *var) {
    const int64_t S = (int64_t)X.h * X.w, count = X.n * S;
    double sum = 0, sq = 0;
    for (int n = 0; n < X.n; n++)
        for (int64_t s = 0; s < S; s++)
            sum += load(x, X.type, at(X, n, c, s));
    *mean = sum / count;
    for (int n = 0; n < X.n; n++)
        for (int64_t s = 0; s < S; s++) {
            double d = load(x, X.type, at(X, n, c, s)) - *mean;
            sq += d * d;
        }
    *var = sq / count;
}
} // namespace

EMU_API cudnnStatus_t cudnnBatchNormalizationForwardTraining(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha, const void *beta, const cudnnTensorDescriptor_t xd,
    const void *x, const cudnnTensorDescriptor_t yd, void *y, const cudnnTensorDescriptor_t pd, const void *scale,
    const void *bias, double factor, void *running_mean, void *running_var, double eps, void *save_mean,
    void *save_invstd) {
    const tensor_t *xt = (const tensor_t *)xd, *yt = (const tensor_t *)yd, *pt = (const tensor_t *)pd;
    if (!h || mode != CUDNN_BATCHNORM_SPATIAL || !bn_fits(xt, yt, pt) || !scale || !bias || eps < CUDNN_BN_MIN_EPSILON ||
        (!running_mean) != (!running_var) || (!save_mean) != (!save_invstd))
        return CUDNN_STATUS_BAD_PARAM;
    check_memory("x", x, xt);
    check_memory("y", y, yt);
    check_params(pt, {scale, bias, running_mean, running_var, save_mean, save_invstd});
    const double a = *(const float *)alpha, b = *(const float *)beta;
    const tensor_t X = *xt;
    ::ct_emu::run_on_stream(((handle_t *)h)->stream, [=]() {
        const int64_t S = (int64_t)X.h * X.w, count = X.n * S;
        for (int c = 0; c < X.c; c++) {
            double mean, var;
            channel_stats(x, X, c, &mean, &var);
            const double invstd = 1.0 / sqrt(var + eps);
            const double g = ((const float *)scale)[c], be = ((const float *)bias)[c];
            for (int n = 0; n < X.n; n++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = at(X, n, c, s);
                    double v = a * ((load(x, X.type, i) - mean) * invstd * g + be);
                    store(y, X.type, i, v + (b != 0 ? b * load(y, X.type, i) : 0.0));
                }
            if (running_mean) {
                float *rm = (float *)running_mean, *rv = (float *)running_var;
                rm[c] = (float)((1 - factor) * rm[c] + factor * mean);
                rv[c] = (float)((1 - factor) * rv[c] + factor * (count > 1 ? var * count / (count - 1) : var));
            }
            if (save_mean) {
                ((float *)save_mean)[c] = (float)mean;
                ((float *)save_invstd)[c] = (float)invstd;
            }
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

EMU_API cudnnStatus_t cudnnBatchNormalizationForwardInference(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha, const void *beta, const cudnnTensorDescriptor_t xd,
    const void *x, const cudnnTensorDescriptor_t yd, void *y, const cudnnTensorDescriptor_t pd, const void *scale,
    const void *bias, const void *mean, const void *var, double eps) {
    const tensor_t *xt = (const tensor_t *)xd, *yt = (const tensor_t *)yd, *pt = (const tensor_t *)pd;
    if (!h || mode != CUDNN_BATCHNORM_SPATIAL || !bn_fits(xt, yt, pt) || !scale || !bias || !mean || !var ||
        eps < CUDNN_BN_MIN_EPSILON)
        return CUDNN_STATUS_BAD_PARAM;
    check_memory("x", x, xt);
    check_memory("y", y, yt);
    check_params(pt, {scale, bias, mean, var});
    const double a = *(const float *)alpha, b = *(const float *)beta;
    const tensor_t X = *xt;
    ::ct_emu::run_on_stream(((handle_t *)h)->stream, [=]() {
        const int64_t S = (int64_t)X.h * X.w;
        for (int c = 0; c < X.c; c++) {
            const double m = ((const float *)mean)[c], invstd = 1.0 / sqrt(((const float *)var)[c] + eps);
            const double g = ((const float *)scale)[c], be = ((const float *)bias)[c];
            for (int n = 0; n < X.n; n++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = at(X, n, c, s);
                    double v = a * ((load(x, X.type, i) - m) * invstd * g + be);
                    store(y, X.type, i, v + (b != 0 ? b * load(y, X.type, i) : 0.0));
                }
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

EMU_API cudnnStatus_t cudnnBatchNormalizationBackward(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha_data, const void *beta_data, const void *alpha_param,
    const void *beta_param, const cudnnTensorDescriptor_t xd, const void *x, const cudnnTensorDescriptor_t dyd,
    const void *dy, const cudnnTensorDescriptor_t dxd, void *dx, const cudnnTensorDescriptor_t pd, const void *scale,
    void *dscale, void *dbias, double eps, const void *saved_mean, const void *saved_invstd) {
    const tensor_t *xt = (const tensor_t *)xd, *dyt = (const tensor_t *)dyd, *dxt = (const tensor_t *)dxd,
                   *pt = (const tensor_t *)pd;
    if (!h || mode != CUDNN_BATCHNORM_SPATIAL || !bn_fits(xt, dyt, pt) || !bn_fits(xt, dxt, pt) || !scale ||
        !dscale || !dbias || eps < CUDNN_BN_MIN_EPSILON || (!saved_mean) != (!saved_invstd))
        return CUDNN_STATUS_BAD_PARAM;
    check_memory("x", x, xt);
    check_memory("dy", dy, dyt);
    check_memory("dx", dx, dxt);
    check_params(pt, {scale, dscale, dbias, saved_mean, saved_invstd});
    const double ad = *(const float *)alpha_data, bd = *(const float *)beta_data, ap = *(const float *)alpha_param,
                 bp = *(const float *)beta_param;
    const tensor_t X = *xt;
    ::ct_emu::run_on_stream(((handle_t *)h)->stream, [=]() {
        const int64_t S = (int64_t)X.h * X.w, count = X.n * S;
        for (int c = 0; c < X.c; c++) {
            double mean, invstd;
            if (saved_mean) {
                mean = ((const float *)saved_mean)[c];
                invstd = ((const float *)saved_invstd)[c];
            } else {
                double var;
                channel_stats(x, X, c, &mean, &var);
                invstd = 1.0 / sqrt(var + eps);
            }
            double sdy = 0, sdyx = 0;
            for (int n = 0; n < X.n; n++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = at(X, n, c, s);
                    double g = load(dy, X.type, i);
                    sdy += g;
                    sdyx += g * (load(x, X.type, i) - mean) * invstd;
                }
            const double gamma = ((const float *)scale)[c];
            for (int n = 0; n < X.n; n++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = at(X, n, c, s);
                    double xhat = (load(x, X.type, i) - mean) * invstd;
                    double v = gamma * invstd / count * (count * load(dy, X.type, i) - sdy - xhat * sdyx);
                    store(dx, X.type, i, ad * v + (bd != 0 ? bd * load(dx, X.type, i) : 0.0));
                }
            float *ds = (float *)dscale, *db = (float *)dbias;
            ds[c] = (float)(ap * sdyx + (bp != 0 ? bp * ds[c] : 0.0));
            db[c] = (float)(ap * sdy + (bp != 0 ? bp * db[c] : 0.0));
        }
    });
    return CUDNN_STATUS_SUCCESS;
}
