/* Losses: cross-entropy and NLL over class dim 1, pointwise losses (BCE with logits, MSE,
 * L1, smooth L1, Huber, KL divergence), and distillation composed from them.
 *
 * The classification losses keep per-sample results (loss, weight of the target and, for
 * cross-entropy, the log-sum-exp) so that the reduction and the fused backward need no
 * second softmax. Class weights are constants, kept in the node as doubles (CPU) or as an
 * F32 device tensor (CUDA). On CUDA (kernels/cuda/loss.cu) the per-sample values are F32,
 * the reductions run in two fixed stages and the mean's divisor stays on the device, so
 * nothing waits for the GPU: a class target out of range is treated like ignore_index by
 * the kernels (never read through) and reported by the next synchronizing call
 * (kernels/cuda/device_error.cuh). */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/loss.h"

#include <math.h>
#include <string.h>

/* ---- shared helpers ---------------------------------------------------------------------- */

static bool is_half(ct_dtype dt) {
    return dt == CT_F16 || dt == CT_BF16;
}

static bool check_reduction(const char *op, ct_reduction r, bool batchmean_ok) {
    if (r == CT_REDUCTION_MEAN || r == CT_REDUCTION_SUM || r == CT_REDUCTION_NONE ||
        (batchmean_ok && r == CT_REDUCTION_BATCHMEAN))
        return true;
    ct__set_error(CT_ERR_VALUE, "%s: reduction %d is not one of MEAN, SUM, NONE%s", op, (int)r,
                  batchmean_ok ? ", BATCHMEAN" : " (BATCHMEAN is for ct_kl_div)");
    return false;
}

static bool check_floating(const char *op, const char *name, const ct_tensor *t) {
    if (ct_dtype_is_float(t->dtype))
        return true;
    ct__set_error(CT_ERR_DTYPE, "%s: %s must be a floating tensor, not %s", op, name, ct_dtype_name(t->dtype));
    return false;
}

/* A constant operand p (weight, pos_weight): on input's device, of input's dtype or F32 for
 * F16/BF16 input. */
static bool check_constant(const char *op, const char *name, const ct_tensor *p, const ct_tensor *input) {
    if (!ct__check(op, name, p))
        return false;
    if (!ct_device_equal(p->device, input->device)) {
        ct__set_error(CT_ERR_DEVICE, "%s: %s is on %s, the input on %s", op, name, ct_device_name(p->device),
                      ct_device_name(input->device));
        return false;
    }
    if (p->dtype != input->dtype && !(is_half(input->dtype) && p->dtype == CT_F32)) {
        ct__set_error(CT_ERR_DTYPE, "%s: %s is %s but the input is %s (use the input's dtype, or f32 for f16/bf16)", op,
                      name, ct_dtype_name(p->dtype), ct_dtype_name(input->dtype));
        return false;
    }
    return true;
}

/* t itself when contiguous, else a contiguous copy made outside the graph. */
static ct_tensor *contiguous_data(const ct_tensor *t) {
    if (ct__is_contiguous(t))
        return (ct_tensor *)t;
    ct_no_grad_begin();
    ct_tensor *c = ct_contiguous((ct_tensor *)t);
    ct_no_grad_end();
    return c;
}

static void release_copy(const ct_tensor *original, ct_tensor *copy) {
    if (copy != original)
        ct_tensor_free(copy);
}

/* A 0-dim result holding v, or the per-element/per-sample doubles as a tensor. */
static ct_tensor *result_of(ct_reduction r, double total, double divisor, const double *elems, ct_dtype dtype, int ndim,
                            const int64_t *shape) {
    if (r != CT_REDUCTION_NONE)
        return ct_scalar(r == CT_REDUCTION_SUM ? total : total / divisor, dtype, CT_CPU);
    ct_tensor *t = ct__new(dtype, CT_CPU, ndim, shape);
    if (t) {
        int64_t strides[CT_MAX_DIMS];
        ct__contiguous_strides(ndim, shape, strides);
        ct_cpu_copy_cast(ndim, shape, ct__data(t), dtype, t->strides, elems, CT_F64, strides);
    }
    return t;
}

/* ---- cross-entropy and NLL ------------------------------------------------------------------ */

typedef struct class_geometry {
    int64_t N, C, K;
    int ndim; /* of the targets and the unreduced loss */
    int64_t shape[CT_MAX_DIMS];
} class_geometry;

/* input (C) / (N, C, d...) with targets () / (N, d...) I32; weight (C) or NULL. */
static bool check_class_inputs(const char *op, const ct_tensor *input, const ct_tensor *targets,
                               const ct_tensor *weight, class_geometry *g) {
    if (!ct__check(op, "input", input) || !ct__check(op, "targets", targets))
        return false;
    if (!check_floating(op, "input", input))
        return false;
    if (targets->dtype != CT_I32) {
        ct__set_error(CT_ERR_DTYPE, "%s: targets must be i32 class indices, not %s", op, ct_dtype_name(targets->dtype));
        return false;
    }
    if (!ct_device_equal(targets->device, input->device)) {
        ct__set_error(CT_ERR_DEVICE, "%s: targets are on %s, the input on %s", op, ct_device_name(targets->device),
                      ct_device_name(input->device));
        return false;
    }
    if (input->ndim == 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: input must be (C), (N, C) or (N, C, d1, ...), got a 0-dim tensor", op);
        return false;
    }
    bool batched = input->ndim >= 2;
    g->N = batched ? input->shape[0] : 1;
    g->C = input->shape[batched ? 1 : 0];
    g->K = batched ? ct__numel(input->ndim - 2, input->shape + 2) : 1;
    g->ndim = batched ? input->ndim - 1 : 0;
    if (batched) {
        g->shape[0] = g->N;
        memcpy(g->shape + 1, input->shape + 2, sizeof(int64_t) * (size_t)(input->ndim - 2));
    }
    if (targets->ndim != g->ndim || memcmp(targets->shape, g->shape, sizeof(int64_t) * (size_t)g->ndim) != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: targets must have shape %s for input of shape %s, got %s", op,
                      ct__shape_fmt(g->ndim, g->shape), ct_shape_str(input), ct_shape_str(targets));
        return false;
    }
    if (weight) {
        if (!check_constant(op, "weight", weight, input))
            return false;
        if (weight->ndim != 1 || weight->shape[0] != g->C) {
            ct__set_error(CT_ERR_SHAPE, "%s: weight must have shape [%lld] (one per class), got %s", op,
                          (long long)g->C, ct_shape_str(weight));
            return false;
        }
    }
    return true;
}

/* The first target outside [0, C) that is not ignore_index (targets contiguous). On CUDA,
 * checking here would mean waiting for the GPU: the kernels treat such a target like
 * ignore_index and the next synchronizing call reports it (kernels/cuda/device_error.cuh). */
static bool check_target_values(const char *op, const ct_tensor *targets, int64_t n, int64_t C, int ignore_index) {
    if (targets->device.type == CT_DEVICE_CUDA)
        return true;
    const int32_t *t = ct__data(targets);
    for (int64_t i = 0; i < n; i++)
        if (t[i] != ignore_index && (t[i] < 0 || t[i] >= C)) {
            ct__set_error(CT_ERR_DIM,
                          "%s: target %d (sample %lld) is out of range for %lld classes and is not ignore_index %d",
                          op, (int)t[i], (long long)i, (long long)C, ignore_index);
            return false;
        }
    return true;
}

/* The node's ctx on the CPU: the class weights as doubles and the divisor of MEAN (the sum
 * of the weights of the targets that are not ignored). On CUDA both stay on the device, as
 * saved tensors. */
typedef struct class_ctx {
    double divisor;
    bool has_weight;
    double weight[];
} class_ctx;

/* What a classification loss's backward reads: iargs 0 cross-entropy?, 1 ignore_index,
 * 2 reduction, 3..5 N, C, K, 6 has weight; dargs[0] smoothing. Saved: 0 input, 1 targets
 * (both contiguous), then the log-sum-exp (cross-entropy), then on CUDA the F32 class
 * weights (when given) and the divisor (MEAN). */
typedef struct class_saved {
    ct_tensor *x, *t, *lse, *weight, *divisor;
} class_saved;

static bool load_saved(ct_node *node, class_saved *sv) {
    bool ce = node->iargs[0], cuda = node->device.type == CT_DEVICE_CUDA;
    int k = 0;
    memset(sv, 0, sizeof *sv);
    sv->x = ct__node_saved(node, k++);
    sv->t = ct__node_saved(node, k++);
    if (ce)
        sv->lse = ct__node_saved(node, k++);
    if (cuda && node->iargs[6])
        sv->weight = ct__node_saved(node, k++);
    if (cuda && node->iargs[2] == CT_REDUCTION_MEAN)
        sv->divisor = ct__node_saved(node, k++);
    return sv->x && sv->t && (!ce || sv->lse) && (!cuda || !node->iargs[6] || sv->weight) &&
           (!cuda || node->iargs[2] != CT_REDUCTION_MEAN || sv->divisor);
}

static ct_status class_backward_cpu(ct_node *node, const class_saved *sv, const ct_tensor *g, ct_tensor *dx) {
    bool ce = node->iargs[0];
    int ignore = (int)node->iargs[1];
    ct_reduction r = (ct_reduction)node->iargs[2];
    int64_t N = node->iargs[3], C = node->iargs[4], K = node->iargs[5];
    const class_ctx *cc = node->ctx;
    double *gs = malloc(sizeof(double) * (size_t)(N * K > 0 ? N * K : 1));
    if (!gs)
        return ct__set_error(CT_ERR_MEMORY, "%s backward: out of host memory", node->name);
    if (r == CT_REDUCTION_NONE) {
        int64_t strides[CT_MAX_DIMS];
        ct__contiguous_strides(g->ndim, g->shape, strides);
        ct_cpu_copy_cast(g->ndim, g->shape, gs, CT_F64, strides, ct__data(g), g->dtype, g->strides);
    } else {
        double v = ct_cpu_load(ct__data(g), g->dtype, 0) / (r == CT_REDUCTION_MEAN ? cc->divisor : 1.0);
        for (int64_t s = 0; s < N * K; s++)
            gs[s] = v;
    }
    const double *w = cc->has_weight ? cc->weight : NULL;
    if (ce)
        ct_cpu_cross_entropy_backward(dx->dtype, N, C, K, ct__data(sv->x), ct__data(sv->t), w, ignore, node->dargs[0],
                                      ct__data(sv->lse), gs, ct__data(dx));
    else
        ct_cpu_nll_backward(dx->dtype, N, C, K, ct__data(sv->t), w, ignore, gs, ct__data(dx));
    free(gs);
    return CT_OK;
}

static ct_status class_backward_cuda(ct_node *node, const class_saved *sv, ct_tensor *g, ct_tensor *dx) {
    bool ce = node->iargs[0];
    int ignore = (int)node->iargs[1];
    ct_reduction r = (ct_reduction)node->iargs[2];
    int64_t N = node->iargs[3], C = node->iargs[4], K = node->iargs[5];
    ct_tensor *gc = r == CT_REDUCTION_NONE ? ct_contiguous(g) : g;
    if (!gc)
        return ct_last_error();
    const float *w = sv->weight ? ct__data(sv->weight) : NULL, *divisor = sv->divisor ? ct__data(sv->divisor) : NULL;
    int64_t g_stride = r == CT_REDUCTION_NONE ? 1 : 0;
    if (ce)
        return CT_ON_CUDA(ct_cuda_cross_entropy_backward(dx->dtype, N, C, K, ct__data(sv->x), ct__data(sv->t), w,
                                                         ignore, node->dargs[0], ct__data(sv->lse), ct__data(gc),
                                                         g_stride, divisor, ct__data(dx), ct__stream_for(dx)));
    return CT_ON_CUDA(ct_cuda_nll_backward(dx->dtype, N, C, K, ct__data(sv->t), w, ignore, ct__data(gc), g_stride,
                                           divisor, ct__data(dx), ct__stream_for(dx)));
}

static ct_status class_loss_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    class_saved sv;
    if (!load_saved(node, &sv))
        return ct_last_error();
    ct_tensor *dx = ct__new(sv.x->dtype, sv.x->device, sv.x->ndim, sv.x->shape);
    if (!dx)
        return ct_last_error();
    gin[0] = dx;
    if (dx->device.type == CT_DEVICE_CUDA)
        return class_backward_cuda(node, &sv, gout[0], dx);
    return class_backward_cpu(node, &sv, gout[0], dx);
}

/* The forward of a classification loss on one device: the result, and the tensors the node
 * keeps (lse; on CUDA the F32 weights and the divisor), which the caller releases. */
typedef struct class_forward {
    ct_tensor *out, *lse, *weight, *divisor;
} class_forward;

static ct_status class_forward_cpu(bool ce, const ct_tensor *xc, const ct_tensor *tc, const ct_tensor *weight,
                                   int ignore_index, ct_reduction reduction, double smoothing,
                                   const class_geometry *geo, class_ctx *cc, class_forward *f) {
    int64_t N = geo->N, C = geo->C, K = geo->K, n = N * K;
    double *loss = malloc(sizeof(double) * (size_t)(n ? n : 1)), *tw = malloc(sizeof(double) * (size_t)(n ? n : 1));
    f->lse = ce ? ct__new(CT_F64, CT_CPU, 1, &n) : NULL;
    ct_status st = CT_OK;
    if (!loss || !tw)
        st = ct__set_error(CT_ERR_MEMORY, "out of host memory for %lld samples", (long long)n);
    else if (ce && !f->lse)
        st = ct_last_error();
    if (st == CT_OK) {
        const double *w = weight ? cc->weight : NULL;
        if (ce)
            ct_cpu_cross_entropy_forward(xc->dtype, N, C, K, ct__data(xc), ct__data(tc), w, ignore_index, smoothing,
                                         ct__data(f->lse), loss, tw);
        else
            ct_cpu_nll_forward(xc->dtype, N, C, K, ct__data(xc), ct__data(tc), w, ignore_index, loss, tw);
        double total = 0, divisor = 0;
        for (int64_t s = 0; s < n; s++) {
            total += loss[s];
            divisor += tw[s];
        }
        cc->divisor = divisor;
        f->out = result_of(reduction, total, divisor, loss, xc->dtype, geo->ndim, geo->shape);
        st = f->out ? CT_OK : ct_last_error();
    }
    free(loss);
    free(tw);
    return st;
}

static ct_status class_forward_cuda(bool ce, const ct_tensor *xc, const ct_tensor *tc, const ct_tensor *weight,
                                    int ignore_index, ct_reduction reduction, double smoothing,
                                    const class_geometry *geo, class_forward *f) {
    int64_t N = geo->N, C = geo->C, K = geo->K, n = N * K, ws_size = 2 * CT_CUDA_LOSS_BLOCKS;
    ct_device dev = xc->device;
    ct_stream *stream = ct__stream_for(xc);
    if (weight) {
        ct_no_grad_begin();
        f->weight = ct_contiguous(ct_cast(weight, CT_F32));
        ct_no_grad_end();
        if (!f->weight)
            return ct_last_error();
    }
    f->lse = ce ? ct__new(CT_F32, dev, 1, &n) : NULL;
    ct_tensor *loss = ct__new(CT_F32, dev, geo->ndim, geo->shape), *tw = ct__new(CT_F32, dev, 1, &n);
    ct_status st = (ce && !f->lse) || !loss || !tw ? ct_last_error() : CT_OK;
    const float *w = f->weight ? ct__data(f->weight) : NULL;
    if (st == CT_OK)
        st = ce ? CT_ON_CUDA(ct_cuda_cross_entropy_forward(xc->dtype, N, C, K, ct__data(xc), ct__data(tc), w,
                                                           ignore_index, smoothing, ct__data(f->lse), ct__data(loss),
                                                           ct__data(tw), stream))
                : CT_ON_CUDA(ct_cuda_nll_forward(xc->dtype, N, C, K, ct__data(xc), ct__data(tc), w, ignore_index,
                                                 ct__data(loss), ct__data(tw), stream));
    if (st == CT_OK && reduction == CT_REDUCTION_NONE) {
        f->out = ct_cast(loss, xc->dtype);
        st = f->out ? CT_OK : ct_last_error();
    } else if (st == CT_OK) {
        bool mean = reduction == CT_REDUCTION_MEAN;
        ct_tensor *ws = ct__new(CT_F32, dev, 1, &ws_size);
        f->out = ws ? ct__new(xc->dtype, dev, 0, NULL) : NULL;
        f->divisor = f->out && mean ? ct__new(CT_F32, dev, 0, NULL) : NULL;
        st = !f->out || (mean && !f->divisor)
                 ? ct_last_error()
                 : CT_ON_CUDA(ct_cuda_loss_sum(xc->dtype, n, ct__data(loss), mean ? ct__data(tw) : NULL, 1.0,
                                               ct__data(f->out), mean ? ct__data(f->divisor) : NULL, ct__data(ws),
                                               stream));
        ct_tensor_free(ws);
    }
    ct_tensor_free(loss);
    ct_tensor_free(tw);
    return st;
}

static ct_tensor *class_loss(const char *op, bool ce, const ct_tensor *input, const ct_tensor *targets,
                             const ct_tensor *weight, int ignore_index, ct_reduction reduction, double smoothing) {
    class_geometry geo;
    if (!check_class_inputs(op, input, targets, weight, &geo) || !check_reduction(op, reduction, false))
        return NULL;
    if (!(smoothing >= 0 && smoothing <= 1)) {
        ct__set_error(CT_ERR_VALUE, "%s: label_smoothing must be in [0, 1], got %g", op, smoothing);
        return NULL;
    }
    int64_t C = geo.C, n = geo.N * geo.K;
    bool cuda = input->device.type == CT_DEVICE_CUDA;
    ct_tensor *tc = contiguous_data(targets);
    if (!tc || !check_target_values(op, tc, n, C, ignore_index)) {
        if (tc)
            release_copy(targets, tc);
        return NULL;
    }
    ct_tensor *xc = contiguous_data(input);
    class_ctx *cc = calloc(1, sizeof *cc + sizeof(double) * (size_t)(weight && !cuda ? C : 0));
    class_forward f = {NULL, NULL, NULL, NULL};
    ct_status st = !xc ? ct_last_error() : !cc ? ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op) : CT_OK;
    if (st == CT_OK && cuda) {
        st = class_forward_cuda(ce, xc, tc, weight, ignore_index, reduction, smoothing, &geo, &f);
    } else if (st == CT_OK) {
        if (weight) {
            cc->has_weight = true;
            ct_cpu_copy_cast(1, &C, cc->weight, CT_F64, (int64_t[]){1}, ct__data(weight), weight->dtype,
                             weight->strides);
        }
        st = class_forward_cpu(ce, xc, tc, weight, ignore_index, reduction, smoothing, &geo, cc, &f);
    }
    ct_node *node =
        st == CT_OK ? ct__record(op, class_loss_backward, f.out, 1, (const ct_tensor *const[]){input}) : NULL;
    if (node) {
        node->iargs[0] = ce;
        node->iargs[1] = ignore_index;
        node->iargs[2] = reduction;
        node->iargs[3] = geo.N;
        node->iargs[4] = C;
        node->iargs[5] = geo.K;
        node->iargs[6] = weight != NULL;
        node->dargs[0] = smoothing;
        node->ctx = cc;
        cc = NULL;
        ct__node_save(node, xc);
        ct__node_save(node, tc);
        ct__node_save(node, f.lse);
        ct__node_save(node, f.weight);
        ct__node_save(node, f.divisor);
    }
    free(cc);
    if (xc)
        release_copy(input, xc);
    release_copy(targets, tc);
    ct_tensor_free(f.lse);
    ct_tensor_free(f.weight);
    ct_tensor_free(f.divisor);
    if (st != CT_OK) {
        ct_tensor_free(f.out);
        return NULL;
    }
    return f.out;
}

ct_tensor *ct_cross_entropy(const ct_tensor *logits, const ct_tensor *targets, const ct_cross_entropy_opts *opts) {
    ct_cross_entropy_opts o = CT_CROSS_ENTROPY_OPTS_DEFAULT;
    if (opts)
        o = *opts;
    if (!ct__check("ct_cross_entropy", "logits", logits))
        return NULL;
    return class_loss("ct_cross_entropy", true, logits, targets, o.weight, o.ignore_index, o.reduction,
                      o.label_smoothing);
}

ct_tensor *ct_nll_loss(const ct_tensor *log_probs, const ct_tensor *targets, const ct_nll_loss_opts *opts) {
    ct_nll_loss_opts o = CT_NLL_LOSS_OPTS_DEFAULT;
    if (opts)
        o = *opts;
    if (!ct__check("ct_nll_loss", "log_probs", log_probs))
        return NULL;
    return class_loss("ct_nll_loss", false, log_probs, targets, o.weight, o.ignore_index, o.reduction, 0.0);
}

/* ---- pointwise losses ------------------------------------------------------------------------- */

/* Saved: 0 x, 1 y (contiguous), then weight and pos_weight when present (iargs[2], [3]),
 * broadcast and contiguous. iargs: 0 kind, 1 reduction; dargs: 0 param, 1 scale of a
 * reduced loss (1/n for MEAN, 1/size(0) for BATCHMEAN). */
static ct_status pointwise_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_pointwise_loss kind = (ct_pointwise_loss)node->iargs[0];
    bool reduced = node->iargs[1] != CT_REDUCTION_NONE, has_w = node->iargs[2], has_pw = node->iargs[3];
    ct_tensor *x = ct__node_saved(node, 0), *y = ct__node_saved(node, 1);
    ct_tensor *w = has_w ? ct__node_saved(node, 2) : NULL, *pw = has_pw ? ct__node_saved(node, 2 + has_w) : NULL;
    if (!x || !y || (has_w && !w) || (has_pw && !pw))
        return ct_last_error();
    ct_tensor *g = reduced ? gout[0] : contiguous_data(gout[0]);
    ct_tensor *dx = node->needs_grad[0] ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    ct_tensor *dy = node->needs_grad[1] ? ct__new(y->dtype, y->device, y->ndim, y->shape) : NULL;
    if (!g || (node->needs_grad[0] && !dx) || (node->needs_grad[1] && !dy))
        return ct_last_error();
    gin[0] = dx;
    gin[1] = dy;
    ct_dtype wdtype = w ? w->dtype : (pw ? pw->dtype : x->dtype);
    int64_t n = ct__numel(x->ndim, x->shape), g_stride = reduced ? 0 : 1;
    double scale = reduced ? node->dargs[1] : 1.0;
    const void *wd = w ? ct__data(w) : NULL, *pwd = pw ? ct__data(pw) : NULL;
    void *dxd = dx ? ct__data(dx) : NULL, *dyd = dy ? ct__data(dy) : NULL;
    if (x->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_pointwise_loss_backward(kind, x->dtype, n, ct__data(x), ct__data(y), wdtype, wd, pwd,
                                                          node->dargs[0], ct__data(g), g_stride, scale, dxd, dyd,
                                                          ct__stream_for(x)));
    ct_cpu_pointwise_loss_backward(kind, x->dtype, n, ct__data(x), ct__data(y), wdtype, wd, pwd, node->dargs[0],
                                   ct__data(g), g_stride, scale, dxd, dyd);
    return CT_OK;
}

/* `c` broadcast to x's shape and made contiguous, outside the graph (NULL stays NULL). */
static ct_tensor *broadcast_constant(const char *op, const char *name, const ct_tensor *c, const ct_tensor *x,
                                     bool *ok) {
    if (!c || !*ok)
        return NULL;
    int nd;
    int64_t shape[CT_MAX_DIMS];
    if (!check_constant(op, name, c, x) || !ct__broadcast_shape(op, c->ndim, c->shape, x->ndim, x->shape, &nd, shape)) {
        *ok = false;
        return NULL;
    }
    if (nd != x->ndim || memcmp(shape, x->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: %s of shape %s does not broadcast to the input's shape %s", op, name,
                      ct_shape_str(c), ct_shape_str(x));
        *ok = false;
        return NULL;
    }
    ct_no_grad_begin();
    ct_tensor *expanded = ct_expand((ct_tensor *)c, x->shape, x->ndim);
    ct_tensor *out = ct_contiguous(expanded);
    ct_no_grad_end();
    ct_tensor_free(expanded);
    *ok = out != NULL;
    return out;
}

/* The loss of contiguous x and y (and w, pw): per element, or scale * the sum. */
static ct_tensor *pointwise_forward(ct_pointwise_loss kind, const ct_tensor *x, const ct_tensor *y, const ct_tensor *w,
                                    const ct_tensor *pw, double param, ct_reduction reduction, double scale) {
    int64_t n = ct__numel(x->ndim, x->shape), ws_size = 2 * CT_CUDA_LOSS_BLOCKS;
    ct_dtype wdtype = w ? w->dtype : (pw ? pw->dtype : x->dtype);
    const void *wd = w ? ct__data(w) : NULL, *pwd = pw ? ct__data(pw) : NULL;
    bool none = reduction == CT_REDUCTION_NONE;
    if (x->device.type == CT_DEVICE_CPU) {
        if (none) {
            ct_tensor *out = ct__new(x->dtype, x->device, x->ndim, x->shape);
            if (out)
                ct_cpu_pointwise_loss(kind, x->dtype, n, ct__data(x), ct__data(y), wdtype, wd, pwd, param,
                                      ct__data(out), NULL);
            return out;
        }
        double total;
        ct_cpu_pointwise_loss(kind, x->dtype, n, ct__data(x), ct__data(y), wdtype, wd, pwd, param, NULL, &total);
        return ct_scalar(total * scale, x->dtype, x->device);
    }
    ct_stream *stream = ct__stream_for(x);
    ct_tensor *out = ct__new(x->dtype, x->device, none ? x->ndim : 0, x->shape);
    ct_tensor *values = out && !none ? ct__new(CT_F32, x->device, 1, &n) : NULL;
    ct_tensor *ws = values ? ct__new(CT_F32, x->device, 1, &ws_size) : NULL;
    ct_status st =
        !out || (!none && !ws)
            ? ct_last_error()
            : CT_ON_CUDA(ct_cuda_pointwise_loss(kind, x->dtype, n, ct__data(x), ct__data(y), wdtype, wd, pwd, param,
                                                none ? ct__data(out) : NULL, none ? NULL : ct__data(values), stream));
    if (st == CT_OK && !none)
        st = CT_ON_CUDA(
            ct_cuda_loss_sum(x->dtype, n, ct__data(values), NULL, scale, ct__data(out), NULL, ct__data(ws), stream));
    ct_tensor_free(values);
    ct_tensor_free(ws);
    if (st != CT_OK) {
        ct_tensor_free(out);
        return NULL;
    }
    return out;
}

static ct_tensor *pointwise_loss(const char *op, ct_pointwise_loss kind, const ct_tensor *x, const ct_tensor *y,
                                 const ct_tensor *weight, const ct_tensor *pos_weight, double param,
                                 ct_reduction reduction) {
    if (!ct__check(op, "input", x) || !ct__check(op, "target", y))
        return NULL;
    if (!check_floating(op, "input", x) || !ct__same_device_dtype(op, x, y) ||
        !check_reduction(op, reduction, kind == CT_PLOSS_KL || kind == CT_PLOSS_KL_LOG_TARGET))
        return NULL;
    if (x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim) != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: input is %s but target is %s (they must have the same shape)", op,
                      ct_shape_str(x), ct_shape_str(y));
        return NULL;
    }
    bool ok = true;
    ct_tensor *w = broadcast_constant(op, "weight", weight, x, &ok);
    ct_tensor *pw = broadcast_constant(op, "pos_weight", pos_weight, x, &ok);
    if (ok && w && pw && w->dtype != pw->dtype)
        ok = !ct__set_error(CT_ERR_DTYPE, "%s: weight is %s but pos_weight is %s", op, ct_dtype_name(w->dtype),
                            ct_dtype_name(pw->dtype));
    ct_tensor *xc = ok ? contiguous_data(x) : NULL, *yc = xc ? contiguous_data(y) : NULL, *out = NULL;
    int64_t n = ct__numel(x->ndim, x->shape);
    double scale = 1.0;
    if (reduction == CT_REDUCTION_MEAN)
        scale = 1.0 / (double)n;
    else if (reduction == CT_REDUCTION_BATCHMEAN && x->ndim > 0)
        scale = 1.0 / (double)x->shape[0];
    if (yc)
        out = pointwise_forward(kind, xc, yc, w, pw, param, reduction, reduction == CT_REDUCTION_SUM ? 1.0 : scale);
    ct_node *node = ct__record(op, pointwise_backward, out, 2, (const ct_tensor *const[]){x, y});
    if (node) {
        node->iargs[0] = kind;
        node->iargs[1] = reduction;
        node->iargs[2] = w != NULL;
        node->iargs[3] = pw != NULL;
        node->dargs[0] = param;
        node->dargs[1] = reduction == CT_REDUCTION_SUM ? 1.0 : scale;
        ct__node_save(node, xc);
        ct__node_save(node, yc);
        ct__node_save(node, w);
        ct__node_save(node, pw);
    }
    if (xc)
        release_copy(x, xc);
    if (yc)
        release_copy(y, yc);
    ct_tensor_free(w);
    ct_tensor_free(pw);
    return out;
}

ct_tensor *ct_bce_with_logits(const ct_tensor *logits, const ct_tensor *targets, const ct_tensor *weight,
                              const ct_tensor *pos_weight, ct_reduction reduction) {
    return pointwise_loss("ct_bce_with_logits", CT_PLOSS_BCE_LOGITS, logits, targets, weight, pos_weight, 0.0,
                          reduction);
}

ct_tensor *ct_mse_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction) {
    return pointwise_loss("ct_mse_loss", CT_PLOSS_MSE, input, target, NULL, NULL, 0.0, reduction);
}

ct_tensor *ct_l1_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction) {
    return pointwise_loss("ct_l1_loss", CT_PLOSS_L1, input, target, NULL, NULL, 0.0, reduction);
}

ct_tensor *ct_smooth_l1_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction, double beta) {
    if (!(beta >= 0 && isfinite(beta))) {
        ct__set_error(CT_ERR_VALUE, "ct_smooth_l1_loss: beta must be finite and >= 0, got %g", beta);
        return NULL;
    }
    /* beta = 0 is the L1 loss (PyTorch's convention), without a division by zero. */
    return pointwise_loss("ct_smooth_l1_loss", beta > 0 ? CT_PLOSS_SMOOTH_L1 : CT_PLOSS_L1, input, target, NULL, NULL,
                          beta, reduction);
}

ct_tensor *ct_huber_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction, double delta) {
    if (!(delta > 0 && isfinite(delta))) {
        ct__set_error(CT_ERR_VALUE, "ct_huber_loss: delta must be finite and > 0, got %g", delta);
        return NULL;
    }
    return pointwise_loss("ct_huber_loss", CT_PLOSS_HUBER, input, target, NULL, NULL, delta, reduction);
}

ct_tensor *ct_kl_div(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction, bool log_target) {
    return pointwise_loss("ct_kl_div", log_target ? CT_PLOSS_KL_LOG_TARGET : CT_PLOSS_KL, input, target, NULL, NULL,
                          0.0, reduction);
}

/* ---- distillation ------------------------------------------------------------------------------ */

ct_tensor *ct_distillation_loss(const ct_tensor *student_logits, const ct_tensor *teacher_logits, double temperature) {
    const char *op = "ct_distillation_loss";
    if (!ct__check(op, "student_logits", student_logits) || !ct__check(op, "teacher_logits", teacher_logits))
        return NULL;
    if (!(temperature > 0 && isfinite(temperature))) {
        ct__set_error(CT_ERR_VALUE, "%s: temperature must be finite and > 0, got %g", op, temperature);
        return NULL;
    }
    if (student_logits->ndim < 2) {
        ct__set_error(CT_ERR_SHAPE, "%s: logits must be (N, C) or (N, C, d1, ...), got %s", op,
                      ct_shape_str(student_logits));
        return NULL;
    }
    if (student_logits->ndim != teacher_logits->ndim ||
        memcmp(student_logits->shape, teacher_logits->shape, sizeof(int64_t) * (size_t)student_logits->ndim) != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: student logits are %s but teacher logits are %s", op,
                      ct_shape_str(student_logits), ct_shape_str(teacher_logits));
        return NULL;
    }
    /* The intermediates live in a scope of their own; the result is kept. */
    ct_scope_begin();
    ct_tensor *s = ct_log_softmax(ct_mul_scalar(student_logits, 1.0 / temperature), 1);
    ct_tensor *t = ct_log_softmax(ct_mul_scalar(teacher_logits, 1.0 / temperature), 1);
    ct_tensor *loss = ct_mul_scalar(ct_kl_div(s, t, CT_REDUCTION_BATCHMEAN, true), temperature * temperature);
    if (loss)
        ct_keep(loss);
    ct_scope_end();
    return loss;
}
