/* Convolution: ct_conv2d and ct_conv_transpose2d, with their gradients.
 *
 * Both ops are described by one ct_conv2d_geom, that of a forward convolution: conv2d is
 * that convolution, and conv_transpose2d is its adjoint (the map from the convolution's
 * output back to its input). Three kernels serve both:
 *   forward       conv2d's output; conv_transpose2d's input gradient
 *   data grad     conv2d's input gradient; conv_transpose2d's output
 *   weight grad   the weight gradient of both (with the roles of x and gy exchanged)
 * and a per-channel sum gives the bias gradients. The CPU kernels take contiguous F32/F64
 * operands: others are copied, half types widened to F32 and the results rounded back.
 * On CUDA, cuDNN takes F32, F16 and BF16 as they are. Gradients are first order: the
 * backward functions call the kernels directly, not differentiable ops. */
#include "runtime/internal.h"
#include "kernels/cpu/conv.h"

#include <limits.h>
#include <string.h>


static ct_status no_scratch(const char *op) {
    return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory for convolution scratch", op);
}

static inline ct_stream *stream_of(const ct_tensor *t) {
    return t->device.type == CT_DEVICE_CUDA ? ct__stream_for(t) : NULL;
}

/* ---- the kernels on tensors -------------------------------------------------------- */

/* One cuDNN pass. cuDNN takes at most INT_MAX elements per tensor, so a larger batch runs in
 * chunks of CT_CUDNN_CHUNK_ELEMS (kernels/cpu/conv.h; an image larger than that alone, up to
 * INT_MAX: check_int_sizes refused larger ones) with ct_conv2d_split_batch: all chunks
 * but the last share one geometry and the last may have its own. The algorithm of each
 * geometry is chosen (once per geometry) with its workspace size; one workspace, as large as
 * the larger of the two needs, comes from the caching allocator as a scratch tensor; each
 * chunk runs with its geometry's plan as it is, so it uses the algorithm the workspace was
 * sized for. The forward and data passes write their chunk of the output; the weight
 * gradient sums the chunks' in F32 (below). Freeing the
 * workspace right after the calls is safe: the allocator reuses a block on the stream it was
 * allocated on, behind the work just queued. */
static int64_t chunk_elems = CT_CUDNN_CHUNK_ELEMS;

void ct__conv_set_chunk_elems(int64_t elems) { chunk_elems = elems > 0 ? elems : CT_CUDNN_CHUNK_ELEMS; }

static ct_status cuda_pass(ct_cuda_conv_pass pass, ct_dtype dtype, const ct_conv2d_geom *g, const ct_tensor *like,
                           const void *a, const void *b, void *out) {
    ct_conv2d_batch_split split;
    bool fits = ct_conv2d_split_batch(g, chunk_elems, &split) || ct_conv2d_split_batch(g, INT_MAX, &split);
    CT_ASSERT(fits, CT_ERR_INTERNAL);
    ct_conv2d_geom chunk = *g, last = *g;
    chunk.N = split.images;
    last.N = split.last;
    bool deterministic = ct_deterministic();
    ct_cuda_conv_plan plan = {0, 0, 0}, last_plan = {0, 0, 0};
    ct_status st = CT_ON_CUDA(ct_cuda_conv2d_workspace(pass, dtype, &chunk, deterministic, stream_of(like), &plan));
    if (st == CT_OK && split.chunks > 1)
        st = CT_ON_CUDA(ct_cuda_conv2d_workspace(pass, dtype, &last, deterministic, stream_of(like), &last_plan));
    size_t bytes = plan.workspace > last_plan.workspace ? plan.workspace : last_plan.workspace;
    ct_tensor *workspace = NULL;
    if (st == CT_OK && bytes > 0 && !(workspace = ct__new(CT_U8, like->device, 1, (const int64_t[]){(int64_t)bytes})))
        st = ct_last_error();
    /* The weight gradient over several chunks: each chunk's into `part` (cuDNN's beta = 0),
     * summed in F32 into `acc` and rounded once into out at the end, as PyTorch does, rather
     * than accumulated by cuDNN in the output dtype (a rounding per chunk for F16/BF16). */
    bool sum_chunks = pass == CT_CUDA_CONV_BACKWARD_FILTER && split.chunks > 1;
    int64_t gw_numel = g->O * (g->C / g->groups) * g->kH * g->kW;
    ct_tensor *part = NULL, *acc = NULL;
    if (st == CT_OK && sum_chunks &&
        !((part = ct__new(dtype, like->device, 1, &gw_numel)) && (acc = ct_zeros(&gw_numel, 1, CT_F32, like->device))))
        st = ct_last_error();
    /* the bytes of one image of x (N, C, H, W) and of y (N, O, oH, oW) */
    size_t es = ct_dtype_size(dtype), x_image = (size_t)(g->C * g->H * g->W) * es,
           y_image = (size_t)(g->O * g->oH * g->oW) * es;
    for (int64_t i = 0; st == CT_OK && i < split.chunks; i++) {
        bool is_last = i == split.chunks - 1 && split.chunks > 1;
        size_t n0 = (size_t)(i * split.images);
        const char *ca = a, *cb = b;
        char *co = out;
        if (n0 > 0) { /* past the first chunk (an empty batch's pointers may be NULL: no arithmetic on them) */
            if (pass == CT_CUDA_CONV_FORWARD) { /* a = x, b = w, out = y */
                ca += n0 * x_image;
                co += n0 * y_image;
            } else if (pass == CT_CUDA_CONV_BACKWARD_DATA) { /* a = gy, b = w, out = gx */
                ca += n0 * y_image;
                co += n0 * x_image;
            } else { /* a = x, b = gy, out = gw summed over the chunks */
                ca += n0 * x_image;
                cb += n0 * y_image;
            }
        }
        st = CT_ON_CUDA(ct_cuda_conv2d(pass, dtype, is_last ? &last : &chunk, is_last ? &last_plan : &plan, ca, cb,
                                       sum_chunks ? ct__data(part) : co, workspace ? ct__data(workspace) : NULL, bytes,
                                       stream_of(like)));
        if (st == CT_OK && sum_chunks) {
            ct_tensor *p32 = ct_cast(part, CT_F32);
            st = p32 ? ct_add_(acc, p32) : ct_last_error();
            ct_tensor_free(p32);
        }
    }
    if (st == CT_OK && sum_chunks)
        st = CT_ON_CUDA(ct_cuda_copy_cast(1, &gw_numel, out, dtype, (const int64_t[]){1}, ct__data(acc), CT_F32,
                                          (const int64_t[]){1}, stream_of(like)));
    ct_tensor_free(part);
    ct_tensor_free(acc);
    ct_tensor_free(workspace);
    return st;
}

/* y (N, C, H, W, compute dtype, contiguous) += bias (C) broadcast. */
static ct_status add_channel_bias(ct_tensor *y, const ct_tensor *bias) {
    ct_tensor *bk = ct__operand(bias, y->dtype);
    if (!bk)
        return ct_last_error();
    int64_t L = y->shape[2] * y->shape[3];
    ct_status st = CT_OK;
    if (y->device.type == CT_DEVICE_CUDA)
        st = CT_ON_CUDA(
            ct_cuda_conv2d_add_bias(y->dtype, y->shape[0], y->shape[1], L, ct__data(y), ct__data(bk), stream_of(y)));
    else
        ct_cpu_conv2d_add_bias(y->dtype, y->shape[0], y->shape[1], L, ct__data(y), ct__data(bk));
    ct__drop_operand(bk, bias);
    return st;
}

/* conv(x, w) + bias, of shape (N, O, oH, oW), in x's dtype. The CPU kernel adds the bias
 * in the same pass; on CUDA it is a second kernel. */
static ct_tensor *run_forward(const char *op, const ct_conv2d_geom *g, const ct_tensor *x, const ct_tensor *w,
                              const ct_tensor *bias) {
    ct_dtype cd = ct__compute_dtype(x);
    ct_tensor *xk = ct__operand(x, cd), *wk = ct__operand(w, cd), *bk = bias ? ct__operand(bias, cd) : NULL, *y = NULL;
    if (xk && wk && (bk || !bias))
        y = ct__new(cd, x->device, 4, (const int64_t[]){g->N, g->O, g->oH, g->oW});
    if (y) {
        ct_status st;
        if (x->device.type == CT_DEVICE_CUDA) {
            st = cuda_pass(CT_CUDA_CONV_FORWARD, cd, g, y, ct__data(xk), ct__data(wk), ct__data(y));
            if (st == CT_OK && bk)
                st = add_channel_bias(y, bk);
        } else {
            st = ct_cpu_conv2d_forward(cd, g, ct__data(xk), ct__data(wk), bk ? ct__data(bk) : NULL, ct__data(y))
                     ? CT_OK
                     : no_scratch(op);
        }
        if (st != CT_OK) {
            ct_tensor_free(y);
            y = NULL;
        }
    }
    ct__drop_operand(xk, x);
    ct__drop_operand(wk, w);
    if (bias)
        ct__drop_operand(bk, bias);
    return ct__finish_dtype(y, x->dtype);
}

/* The gradients of conv(x, w) from gy, in the compute dtype (the caller rounds them):
 * *gx (N, C, H, W) when want_x (needs w), *gw (O, C / groups, kH, kW) when want_w (needs x). */
static ct_status run_backward(const char *op, const ct_conv2d_geom *g, const ct_tensor *x, const ct_tensor *w,
                              const ct_tensor *gy, bool want_x, bool want_w, ct_tensor **gx, ct_tensor **gw) {
    ct_dtype cd = ct__compute_dtype(gy);
    *gx = *gw = NULL;
    ct_tensor *gyk = ct__operand(gy, cd), *xk = want_w ? ct__operand(x, cd) : NULL, *wk = want_x ? ct__operand(w, cd) : NULL;
    ct_status st = CT_OK;
    if (!gyk || (want_w && !xk) || (want_x && !wk))
        st = ct_last_error();
    if (st == CT_OK && want_x && !(*gx = ct__new(cd, gy->device, 4, (const int64_t[]){g->N, g->C, g->H, g->W})))
        st = ct_last_error();
    if (st == CT_OK && want_w &&
        !(*gw = ct__new(cd, gy->device, 4, (const int64_t[]){g->O, g->C / g->groups, g->kH, g->kW})))
        st = ct_last_error();
    if (st == CT_OK) {
        void *gxd = *gx ? ct__data(*gx) : NULL, *gwd = *gw ? ct__data(*gw) : NULL;
        const void *xd = xk ? ct__data(xk) : NULL, *wd = wk ? ct__data(wk) : NULL;
        if (gy->device.type == CT_DEVICE_CUDA) {
            if (want_x)
                st = cuda_pass(CT_CUDA_CONV_BACKWARD_DATA, cd, g, gy, ct__data(gyk), wd, gxd);
            if (st == CT_OK && want_w)
                st = cuda_pass(CT_CUDA_CONV_BACKWARD_FILTER, cd, g, gy, xd, ct__data(gyk), gwd);
        } else if (!ct_cpu_conv2d_backward(cd, g, xd, wd, ct__data(gyk), gxd, gwd)) {
            st = no_scratch(op);
        }
    }
    ct__drop_operand(gyk, gy);
    if (xk)
        ct__drop_operand(xk, x);
    if (wk)
        ct__drop_operand(wk, w);
    if (st != CT_OK) {
        ct_tensor_free(*gx);
        ct_tensor_free(*gw);
        *gx = *gw = NULL;
    }
    return st;
}

/* The sum of t (N, C, H, W) over N, H and W: (C), in t's dtype. */
static ct_tensor *channel_sum(const ct_tensor *t) {
    ct_dtype cd = ct__compute_dtype(t);
    ct_tensor *tk = ct__operand(t, cd), *out = tk ? ct__new(cd, t->device, 1, &t->shape[1]) : NULL;
    if (out) {
        int64_t L = t->shape[2] * t->shape[3];
        ct_status st = CT_OK;
        if (t->device.type == CT_DEVICE_CUDA)
            st = CT_ON_CUDA(
                ct_cuda_conv2d_channel_sum(cd, t->shape[0], t->shape[1], L, ct__data(tk), ct__data(out), stream_of(t)));
        else
            ct_cpu_conv2d_channel_sum(cd, t->shape[0], t->shape[1], L, ct__data(tk), ct__data(out));
        if (st != CT_OK) {
            ct_tensor_free(out);
            out = NULL;
        }
    }
    if (tk)
        ct__drop_operand(tk, t);
    return ct__finish_dtype(out, t->dtype);
}

/* ---- checks ------------------------------------------------------------------------- */

/* The options both ops share, as one set of pairs. */
typedef struct conv_spec {
    int stride[2], padding[2], dilation[2], output_padding[2], groups;
} conv_spec;

static bool check_pair(const char *op, const char *name, const int *v, int min) {
    if (v[0] >= min && v[1] >= min)
        return true;
    ct__set_error(CT_ERR_VALUE, "%s: %s must be >= %d: got (%d, %d)", op, name, min, v[0], v[1]);
    return false;
}

static bool check_operands(const char *op, const ct_tensor *x, const ct_tensor *w, const ct_tensor *bias,
                           const conv_spec *s, bool transposed) {
    if (!ct__check(op, "x", x) || !ct__check(op, "w", w) || (bias && !ct__check(op, "bias", bias)))
        return false;
    if (!ct_dtype_is_float(x->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: dtype %s is not supported (floating dtypes only; cast with ct_cast)", op,
                      ct_dtype_name(x->dtype));
        return false;
    }
    if (!ct__same_device_dtype(op, x, w) || (bias && !ct__same_device_dtype(op, x, bias)))
        return false;
    if (x->device.type == CT_DEVICE_CUDA && x->dtype == CT_F64) {
        ct__set_error(CT_ERR_DTYPE, "%s: f64 is not supported on CUDA (f32, f16, bf16)", op);
        return false;
    }
    if (x->ndim != 4) {
        ct__set_error(CT_ERR_SHAPE, "%s: x must be 4-D (N, C, H, W): x is %s", op, ct_shape_str(x));
        return false;
    }
    if (w->ndim != 4) {
        ct__set_error(CT_ERR_SHAPE, "%s: w must be 4-D %s: w is %s", op,
                      transposed ? "(C, O / groups, kH, kW)" : "(O, C / groups, kH, kW)", ct_shape_str(w));
        return false;
    }
    if (!check_pair(op, "stride", s->stride, 1) || !check_pair(op, "padding", s->padding, 0) ||
        !check_pair(op, "dilation", s->dilation, 1) || !check_pair(op, "output_padding", s->output_padding, 0))
        return false;
    if (s->groups < 1) {
        ct__set_error(CT_ERR_VALUE, "%s: groups must be >= 1: got %d", op, s->groups);
        return false;
    }
    int64_t C = x->shape[1], out_channels = transposed ? w->shape[1] * s->groups : w->shape[0];
    if (C % s->groups != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: groups %d does not divide the input channels: x is %s", op, s->groups,
                      ct_shape_str(x));
        return false;
    }
    if (transposed ? w->shape[0] != C : w->shape[1] * s->groups != C) {
        ct__set_error(CT_ERR_SHAPE,
                      "%s: channel mismatch: x is %s (%lld channels, groups %d) but w is %s (expected %s)", op,
                      ct_shape_str(x), (long long)C, s->groups, ct_shape_str(w),
                      transposed ? "w.shape[0] == C" : "w.shape[1] == C / groups");
        return false;
    }
    if (!transposed && out_channels % s->groups != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: groups %d does not divide the output channels: w is %s", op, s->groups,
                      ct_shape_str(w));
        return false;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != out_channels)) {
        ct__set_error(CT_ERR_SHAPE, "%s: bias must be 1-D with one value per output channel (%lld): bias is %s", op,
                      (long long)out_channels, ct_shape_str(bias));
        return false;
    }
    if (w->shape[2] < 1 || w->shape[3] < 1) {
        ct__set_error(CT_ERR_SHAPE, "%s: kernel must be at least 1x1: w is %s", op, ct_shape_str(w));
        return false;
    }
    return true;
}

/* BLAS and cuDNN take int sizes. cuDNN also takes at most INT_MAX elements per tensor: on
 * CUDA the batch is split to fit (cuda_pass), which cannot help an image too large alone. */
static bool check_int_sizes(const char *op, const ct_conv2d_geom *g, const ct_tensor *x, const ct_tensor *w) {
    int64_t sizes[] = {g->N, g->C * g->kH * g->kW, g->oH * g->oW, g->H * g->W, g->O};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i] > INT_MAX) {
            ct__set_error(CT_ERR_UNSUPPORTED,
                          "%s: x is %s, w is %s: N, O, H * W, oH * oW and C * kH * kW must each be at most %d "
                          "(INT_MAX: BLAS and cuDNN take int sizes)",
                          op, ct_shape_str(x), ct_shape_str(w), INT_MAX);
            return false;
        }
    ct_conv2d_batch_split split;
    if (x->device.type == CT_DEVICE_CUDA && !ct_conv2d_split_batch(g, INT_MAX, &split)) {
        int64_t in = g->C * g->H * g->W, out = g->O * g->oH * g->oW;
        ct__set_error(CT_ERR_UNSUPPORTED,
                      "%s: x is %s, w is %s: one image of x or of the result holds %lld elements, more than %d "
                      "(INT_MAX), cuDNN's limit per tensor; the batch is split to fit, an image cannot be",
                      op, ct_shape_str(x), ct_shape_str(w), (long long)(in > out ? in : out), INT_MAX);
        return false;
    }
    return true;
}

/* ---- autograd ------------------------------------------------------------------------ */

static bool attach_geom(ct_node *node, const ct_conv2d_geom *g) {
    ct_conv2d_geom *copy = malloc(sizeof *copy);
    if (!copy) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory recording the autograd graph", node->name);
        return false;
    }
    *copy = *g;
    node->ctx = copy;
    return true;
}

/* Record the node of either op: inputs (x, w[, bias]), saved (x, w). */
static ct_tensor *record(const char *op, ct_backward_fn backward, ct_tensor *y, const ct_tensor *x, const ct_tensor *w,
                         const ct_tensor *bias, const ct_conv2d_geom *g) {
    ct_node *node = ct__record(op, backward, y, bias ? 3 : 2, (const ct_tensor *const[]){x, w, bias});
    if (!node)
        return y;
    ct__node_save(node, x);
    ct__node_save(node, w);
    if (!attach_geom(node, g)) {
        ct_tensor_free(y);
        return NULL;
    }
    return y;
}

static ct_status give(ct_tensor **slot, ct_tensor *grad, ct_dtype dtype) {
    *slot = ct__finish_dtype(grad, dtype);
    return *slot ? CT_OK : ct_last_error();
}

static ct_status conv2d_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    const ct_conv2d_geom *g = node->ctx;
    ct_tensor *x = ct__node_saved(node, 0), *w = ct__node_saved(node, 1), *gx, *gw;
    if (!x || !w)
        return ct_last_error();
    ct_status st = CT_OK;
    if (node->needs_grad[0] || node->needs_grad[1]) {
        st = run_backward(node->name, g, x, w, gout[0], node->needs_grad[0], node->needs_grad[1], &gx, &gw);
        if (st == CT_OK && gx)
            st = give(&gin[0], gx, x->dtype);
        else
            ct_tensor_free(gx);
        if (st == CT_OK && gw)
            st = give(&gin[1], gw, w->dtype);
        else
            ct_tensor_free(gw);
    }
    if (st == CT_OK && node->n_inputs > 2 && node->needs_grad[2])
        st = (gin[2] = channel_sum(gout[0])) ? CT_OK : ct_last_error();
    return st;
}

/* conv_transpose2d(x) is the data gradient of the convolution g from (N, O, oH, oW) to x's
 * (N, C, H, W): its gradient in x is that convolution of gy, and its weight gradient is
 * the convolution's weight gradient with gy as the input and x as the output gradient. */
static ct_status conv_transpose2d_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    const ct_conv2d_geom *g = node->ctx;
    ct_tensor *x = ct__node_saved(node, 0), *w = ct__node_saved(node, 1), *unused, *gw;
    if (!x || !w)
        return ct_last_error();
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = (gin[0] = run_forward(node->name, g, gout[0], w, NULL)) ? CT_OK : ct_last_error();
    if (st == CT_OK && node->needs_grad[1]) {
        st = run_backward(node->name, g, gout[0], NULL, x, false, true, &unused, &gw);
        if (st == CT_OK)
            st = give(&gin[1], gw, w->dtype);
    }
    if (st == CT_OK && node->n_inputs > 2 && node->needs_grad[2])
        st = (gin[2] = channel_sum(gout[0])) ? CT_OK : ct_last_error();
    return st;
}

/* ---- the ops ------------------------------------------------------------------------ */

ct_tensor *ct_conv2d(const ct_tensor *x, const ct_tensor *w, const ct_tensor *bias, const ct_conv2d_opts *opts) {
    const char *op = "ct_conv2d";
    ct_conv2d_opts o = opts ? *opts : CT_CONV2D_OPTS_DEFAULT;
    conv_spec s = {
        {o.stride[0], o.stride[1]}, {o.padding[0], o.padding[1]}, {o.dilation[0], o.dilation[1]}, {0, 0}, o.groups};
    if (!check_operands(op, x, w, bias, &s, false))
        return NULL;
    ct_conv2d_geom g = {x->shape[0],
                        x->shape[1],
                        x->shape[2],
                        x->shape[3],
                        w->shape[0],
                        0,
                        0,
                        w->shape[2],
                        w->shape[3],
                        s.stride[0],
                        s.stride[1],
                        s.padding[0],
                        s.padding[1],
                        s.dilation[0],
                        s.dilation[1],
                        s.groups};
    int64_t span_h = g.dilation_h * (g.kH - 1) + 1, span_w = g.dilation_w * (g.kW - 1) + 1;
    if (g.H + 2 * g.pad_h < span_h || g.W + 2 * g.pad_w < span_w) {
        ct__set_error(CT_ERR_SHAPE,
                      "%s: kernel larger than the padded input: x is %s with padding (%d, %d), w is %s with "
                      "dilation (%d, %d) (a %lldx%lld window)",
                      op, ct_shape_str(x), s.padding[0], s.padding[1], ct_shape_str(w), s.dilation[0], s.dilation[1],
                      (long long)span_h, (long long)span_w);
        return NULL;
    }
    g.oH = (g.H + 2 * g.pad_h - span_h) / g.stride_h + 1;
    g.oW = (g.W + 2 * g.pad_w - span_w) / g.stride_w + 1;
    if (!check_int_sizes(op, &g, x, w))
        return NULL;
    return record(op, conv2d_backward, run_forward(op, &g, x, w, bias), x, w, bias, &g);
}

ct_tensor *ct_conv_transpose2d(const ct_tensor *x, const ct_tensor *w, const ct_tensor *bias,
                               const ct_conv_transpose2d_opts *opts) {
    const char *op = "ct_conv_transpose2d";
    ct_conv_transpose2d_opts o = opts ? *opts : CT_CONV_TRANSPOSE2D_OPTS_DEFAULT;
    conv_spec s = {{o.stride[0], o.stride[1]},
                   {o.padding[0], o.padding[1]},
                   {o.dilation[0], o.dilation[1]},
                   {o.output_padding[0], o.output_padding[1]},
                   o.groups};
    if (!check_operands(op, x, w, bias, &s, true))
        return NULL;
    for (int i = 0; i < 2; i++)
        if (s.output_padding[i] >= s.stride[i] && s.output_padding[i] >= s.dilation[i]) {
            ct__set_error(CT_ERR_VALUE,
                          "%s: output_padding must be smaller than stride or dilation: got output_padding (%d, %d), "
                          "stride (%d, %d), dilation (%d, %d)",
                          op, s.output_padding[0], s.output_padding[1], s.stride[0], s.stride[1], s.dilation[0],
                          s.dilation[1]);
            return NULL;
        }
    /* The convolution whose adjoint this is maps (N, O, oH, oW) to x's (N, C, H, W). */
    ct_conv2d_geom g = {x->shape[0],
                        w->shape[1] * s.groups,
                        0,
                        0,
                        x->shape[1],
                        x->shape[2],
                        x->shape[3],
                        w->shape[2],
                        w->shape[3],
                        s.stride[0],
                        s.stride[1],
                        s.padding[0],
                        s.padding[1],
                        s.dilation[0],
                        s.dilation[1],
                        s.groups};
    g.H = (g.oH - 1) * g.stride_h - 2 * g.pad_h + g.dilation_h * (g.kH - 1) + s.output_padding[0] + 1;
    g.W = (g.oW - 1) * g.stride_w - 2 * g.pad_w + g.dilation_w * (g.kW - 1) + s.output_padding[1] + 1;
    if (g.H < 1 || g.W < 1) {
        ct__set_error(CT_ERR_SHAPE,
                      "%s: the output would be empty (%lldx%lld): x is %s, w is %s, padding (%d, %d) is too large", op,
                      (long long)g.H, (long long)g.W, ct_shape_str(x), ct_shape_str(w), s.padding[0], s.padding[1]);
        return NULL;
    }
    if (!check_int_sizes(op, &g, x, w))
        return NULL;
    ct_tensor *y, *unused;
    if (run_backward(op, &g, NULL, w, x, true, false, &y, &unused) != CT_OK)
        return NULL;
    if (bias && add_channel_bias(y, bias) != CT_OK) {
        ct_tensor_free(y);
        return NULL;
    }
    return record(op, conv_transpose2d_backward, ct__finish_dtype(y, x->dtype), x, w, bias, &g);
}
