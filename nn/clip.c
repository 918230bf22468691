/* Gradient clipping by global norm and by value, over the gradients of a list of parameters.
 * CPU gradients are reduced in fixed blocks of BLOCK elements whose partial results are then
 * combined in order, so the norm does not depend on the number of threads; CUDA gradients are
 * reduced by one fused launch per device (kernels/cuda/optim.cu), also in a fixed order. */
#include "runtime/internal.h"

#include <math.h>

#define BLOCK        8192
#define PARALLEL_MIN 32768

typedef enum norm_mode { NORM_INF, NORM_GENERAL, NORM_TWO } norm_mode;

static double nan_max(double a, double b) {
    return a != a ? a : (b != b ? b : (a > b ? a : b));
}

static double combine(norm_mode mode, double a, double b) {
    return mode == NORM_INF ? nan_max(a, b) : a + b;
}

/* Sum of |x|^p (or max |x|) over a contiguous CPU tensor, in double. */
static double cpu_norm_part(const ct_tensor *g, norm_mode mode, double p) {
    int64_t n = ct__numel(g->ndim, g->shape), blocks = (n + BLOCK - 1) / BLOCK;
    double *partial = malloc(sizeof(double) * (size_t)(blocks > 0 ? blocks : 1));
    if (!partial) {
        ct__set_error(CT_ERR_MEMORY, "ct_clip_grad_norm: out of host memory");
        return NAN;
    }
    const void *data = ct__data(g);
    bool f64 = g->dtype == CT_F64;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        double acc = 0.0;
        for (int64_t i = b * BLOCK; i < end; i++) {
            double a = fabs(f64 ? ((const double *)data)[i] : (double)((const float *)data)[i]);
            acc = mode == NORM_INF ? nan_max(acc, a) : acc + (mode == NORM_TWO ? a * a : pow(a, p));
        }
        partial[b] = acc;
    }
    double total = 0.0;
    for (int64_t b = 0; b < blocks; b++)
        total = combine(mode, total, partial[b]);
    free(partial);
    return total;
}

/* x = clamp(x * scale, -clip, clip) over a contiguous CPU tensor, in its dtype. */
static void cpu_scale_clamp(ct_tensor *g, double scale, double clip) {
    int64_t n = ct__numel(g->ndim, g->shape);
    if (g->dtype == CT_F64) {
        double *x = ct__data(g);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            double v = x[i] * scale;
            x[i] = v > clip ? clip : (v < -clip ? -clip : v);
        }
    } else {
        float *x = ct__data(g);
        const float s = (float)scale, c = (float)clip;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = x[i] * s;
            x[i] = v > c ? c : (v < -c ? -c : v);
        }
    }
}

/* The gradients of `params` that exist, checked: F32/F64 (F32 only on CUDA), contiguous. */
static int collect_grads(const char *op, ct_tensor *const *params, int n, ct_tensor **grads) {
    if (!params && n > 0)
        return ct__null_arg(op, "params"), -1;
    if (n < 0)
        return ct__set_error(CT_ERR_VALUE, "%s: n is %d", op, n), -1;
    int count = 0;
    for (int i = 0; i < n; i++) {
        char label[32];
        snprintf(label, sizeof label, "params[%d]", i);
        if (!params[i])
            return ct__set_error(CT_ERR_NULL, "%s: params[%d] is NULL", op, i), -1;
        if (!ct__check(op, label, params[i]))
            return -1;
        ct_tensor *g = params[i]->grad;
        if (!g)
            continue;
        if ((g->dtype != CT_F32 && g->dtype != CT_F64) || !ct__is_contiguous(g))
            return ct__set_error(CT_ERR_DTYPE, "%s: the gradient of params[%d] is %s%s (F32 or F64, contiguous)", op, i,
                                 ct_dtype_name(g->dtype), ct__is_contiguous(g) ? "" : ", not contiguous"),
                   -1;
        grads[count++] = g;
    }
    return count;
}

/* The CUDA gradients among grads[0..n) on one device, as pointer and size arrays. Returns the
 * count and marks them taken (NULL). */
static int take_device(ct_tensor **grads, int n, int device, void **ptrs, int64_t *numel, ct_tensor **taken) {
    int count = 0;
    for (int i = 0; i < n; i++) {
        ct_tensor *g = grads[i];
        if (!g || g->device.type != CT_DEVICE_CUDA || g->device.index != device)
            continue;
        ptrs[count] = ct__data(g);
        numel[count] = ct__numel(g->ndim, g->shape);
        taken[count++] = g;
        grads[i] = NULL;
    }
    return count;
}

#ifdef CT_HAVE_CUDA
/* Sum of |x|^p (or max |x|) over the gradients on one device: one launch, one read-back. */
static double cuda_norm_part(int count, void **ptrs, const int64_t *numel, ct_device device, norm_mode mode, double p) {
    int64_t slots = (int64_t)count * CT_CUDA_NORM_BLOCKS;
    ct_tensor *scratch = ct_empty((int64_t[]){slots * (int64_t)sizeof(double)}, 1, CT_U8, device);
    double *host = malloc(sizeof(double) * (size_t)slots);
    double total = NAN;
    if (scratch && host &&
        ct_cuda_multi_norm(count, (const void *const *)ptrs, numel, mode == NORM_INF ? INFINITY : p,
                           (double *)ct__data(scratch), ct__stream_for(scratch)) == CT_OK &&
        ct_to_host(scratch, host, sizeof(double) * (size_t)slots) == CT_OK) {
        total = 0.0;
        for (int64_t i = 0; i < slots; i++)
            total = combine(mode, total, host[i]);
    } else if (!host) {
        ct__set_error(CT_ERR_MEMORY, "ct_clip_grad_norm: out of host memory");
    }
    free(host);
    ct_tensor_free(scratch);
    return total;
}
#endif

/* Apply x = clamp(x * scale, -clip, clip) to every gradient in grads[0..n). */
static ct_status scale_clamp_all(const char *op, ct_tensor **grads, int n, double scale, double clip) {
    void **ptrs = malloc(sizeof(void *) * (size_t)(n > 0 ? n : 1));
    int64_t *numel = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    ct_tensor **taken = malloc(sizeof(ct_tensor *) * (size_t)(n > 0 ? n : 1));
    ct_status st = ptrs && numel && taken ? CT_OK : ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
    for (int i = 0; i < n && st == CT_OK; i++) {
        ct_tensor *g = grads[i];
        if (!g)
            continue;
        if (g->device.type == CT_DEVICE_CPU) {
            cpu_scale_clamp(g, scale, clip);
            ct__bump_version(g);
            continue;
        }
        int count = take_device(grads, n, g->device.index, ptrs, numel, taken);
        st = CT_ON_CUDA(ct_cuda_multi_scale_clamp(count, ptrs, numel, scale, clip, ct__stream_for(taken[0])));
        for (int k = 0; k < count; k++)
            ct__bump_version(taken[k]);
    }
    free(ptrs);
    free(numel);
    free(taken);
    return st;
}

double ct_clip_grad_norm(ct_tensor *const *params, int n, double max_norm, double norm_type) {
    const char *op = "ct_clip_grad_norm";
    if (!(max_norm >= 0.0)) {
        ct__set_error(CT_ERR_VALUE, "%s: max_norm must be >= 0, got %g", op, max_norm);
        return NAN;
    }
    if (!(norm_type > 0.0)) {
        ct__set_error(CT_ERR_VALUE, "%s: norm_type must be > 0 (or INFINITY), got %g", op, norm_type);
        return NAN;
    }
    ct_tensor **grads = malloc(sizeof(ct_tensor *) * (size_t)(n > 0 ? n : 1));
    if (!grads) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        return NAN;
    }
    int count = collect_grads(op, params, n, grads);
    if (count <= 0) {
        free(grads);
        return count == 0 ? 0.0 : NAN;
    }
    norm_mode mode = isinf(norm_type) ? NORM_INF : norm_type == 2.0 ? NORM_TWO : NORM_GENERAL;
    /* Reduce per device, keeping the gradients for the scaling below. */
    ct_tensor **pending = malloc(sizeof(ct_tensor *) * (size_t)count);
    void **ptrs = malloc(sizeof(void *) * (size_t)count);
    int64_t *numel = malloc(sizeof(int64_t) * (size_t)count);
    ct_tensor **taken = malloc(sizeof(ct_tensor *) * (size_t)count);
    double total = 0.0;
    if (!pending || !ptrs || !numel || !taken) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        total = NAN;
    }
    for (int i = 0; pending && i < count; i++)
        pending[i] = grads[i];
    for (int i = 0; i < count && !isnan(total) && pending; i++) {
        ct_tensor *g = pending[i];
        if (!g)
            continue;
        if (g->device.type == CT_DEVICE_CPU) {
            total = combine(mode, total, cpu_norm_part(g, mode, norm_type));
            continue;
        }
        int k = take_device(pending, count, g->device.index, ptrs, numel, taken);
#ifdef CT_HAVE_CUDA
        total = combine(mode, total, cuda_norm_part(k, ptrs, numel, g->device, mode, norm_type));
#else
        (void)k;
        ct__set_error(CT_ERR_DEVICE, "this ctensor was built without CUDA");
        total = NAN;
#endif
    }
    free(pending);
    free(ptrs);
    free(numel);
    free(taken);
    /* NaN: an error, or a NaN gradient; either way nothing is scaled (an infinite norm scales
     * by 0, as PyTorch does). */
    if (!isnan(total)) {
        if (mode == NORM_TWO)
            total = sqrt(total);
        else if (mode == NORM_GENERAL)
            total = pow(total, 1.0 / norm_type);
        double coef = max_norm / (total + 1e-6);
        if (coef < 1.0 && scale_clamp_all(op, grads, count, coef, INFINITY) != CT_OK)
            total = NAN;
    }
    free(grads);
    return total;
}

ct_status ct_clip_grad_value(ct_tensor *const *params, int n, double clip) {
    const char *op = "ct_clip_grad_value";
    if (!(clip >= 0.0))
        return ct__set_error(CT_ERR_VALUE, "%s: clip must be >= 0, got %g", op, clip);
    ct_tensor **grads = malloc(sizeof(ct_tensor *) * (size_t)(n > 0 ? n : 1));
    if (!grads)
        return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
    int count = collect_grads(op, params, n, grads);
    ct_status st = count < 0 ? ct_last_error() : scale_clamp_all(op, grads, count, 1.0, clip);
    free(grads);
    return st;
}
