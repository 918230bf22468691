/* Activations. The forward is one pass of a unary kernel; the backward is one fused pass
 * over (grad, x), or (grad, y) where the derivative is cheapest from the output (relu,
 * sigmoid, tanh), so no intermediate tensors are made. Formulas follow PyTorch; see
 * kernels/cpu/elementwise.c (and kernels/cuda/elementwise.cu for CUDA tensors). */
#include "runtime/internal.h"
#include "kernels/cpu/elementwise.h"

#include <math.h>
#include <string.h>

/* The unary kernel `kop` from a into out (same shape), on out's device. */
static ct_status run_unary(ct_unary_op kop, ct_tensor *out, const ct_tensor *a, double p0, double p1) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_unary(kop, a->dtype, a->ndim, a->shape, ct__data(out), out->strides, ct__data(a),
                                        a->strides, p0, p1, ct__stream_for(out)));
    ct_cpu_unary(kop, a->dtype, a->ndim, a->shape, ct__data(out), out->strides, ct__data(a), a->strides, p0, p1);
    return CT_OK;
}

/* The fused backward kernel `kop` over (g, saved) into out (all the same shape). */
static ct_status run_backward(ct_binary_op kop, ct_tensor *out, const ct_tensor *g, const ct_tensor *saved, double p0,
                              double p1) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_binary(kop, g->dtype, g->ndim, g->shape, ct__data(out), out->strides, ct__data(g),
                                         g->strides, ct__data(saved), saved->strides, p0, p1, ct__stream_for(out)));
    ct_cpu_binary_ex(kop, g->dtype, g->ndim, g->shape, ct__data(out), out->strides, ct__data(g), g->strides,
                     ct__data(saved), saved->strides, p0, p1);
    return CT_OK;
}

/* node->iargs[0]: the fused backward kernel; dargs[0..1]: its parameters; saved 0: x or y. */
static ct_status activation_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *saved = ct__node_saved(node, 0), *g = gout[0];
    if (!saved)
        return ct_last_error();
    if (!ct__same_device_dtype("ct_backward", g, saved))
        return ct_last_error();
    CT_ASSERT(g->ndim == saved->ndim && memcmp(g->shape, saved->shape, sizeof(int64_t) * (size_t)g->ndim) == 0,
              CT_ERR_INTERNAL);
    ct_tensor *out = ct__new(g->dtype, g->device, g->ndim, g->shape);
    if (!out)
        return ct_last_error();
    ct_status st = run_backward((ct_binary_op)node->iargs[0], out, g, saved, node->dargs[0], node->dargs[1]);
    if (st != CT_OK) {
        ct_tensor_free(out);
        return st;
    }
    gin[0] = out;
    return CT_OK;
}

typedef struct activation {
    const char *op;
    ct_unary_op forward;
    ct_binary_op backward;
    bool saves_output; /* the backward kernel reads y rather than x */
    bool integer_ok;   /* defined on I32 / U8 (relu only): not differentiable there */
} activation;

static ct_tensor *activate(const activation *act, const ct_tensor *a, double p0, double p1) {
    if (!ct__check(act->op, "a", a))
        return NULL;
    if (!act->integer_ok && !ct_dtype_is_float(a->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: needs a floating tensor (f32, f64, f16 or bf16), not %s (cast it with ct_cast)",
                      act->op, ct_dtype_name(a->dtype));
        return NULL;
    }
    ct_tensor *out = ct__new(a->dtype, a->device, a->ndim, a->shape);
    if (!out)
        return NULL;
    if (run_unary(act->forward, out, a, p0, p1) != CT_OK) {
        ct_tensor_free(out);
        return NULL;
    }
    ct_node *node = ct__record(act->op, activation_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        node->iargs[0] = act->backward;
        node->dargs[0] = p0;
        node->dargs[1] = p1;
        ct__node_save(node, act->saves_output ? out : a);
    }
    return out;
}

ct_tensor *ct_relu(const ct_tensor *a) {
    static const activation act = {"ct_relu", CT_UN_RELU, CT_BIN_RELU_BW, true, true};
    return activate(&act, a, 0, 0);
}

ct_tensor *ct_leaky_relu(const ct_tensor *a, double negative_slope) {
    static const activation act = {"ct_leaky_relu", CT_UN_LEAKY_RELU, CT_BIN_LEAKY_RELU_BW, false, false};
    return activate(&act, a, negative_slope, 0);
}

ct_tensor *ct_elu(const ct_tensor *a, double alpha) {
    static const activation act = {"ct_elu", CT_UN_ELU, CT_BIN_ELU_BW, false, false};
    return activate(&act, a, alpha, 0);
}

ct_tensor *ct_gelu(const ct_tensor *a, ct_gelu_approx approximate) {
    static const activation erf_act = {"ct_gelu", CT_UN_GELU_ERF, CT_BIN_GELU_ERF_BW, false, false};
    static const activation tanh_act = {"ct_gelu", CT_UN_GELU_TANH, CT_BIN_GELU_TANH_BW, false, false};
    if (approximate != CT_GELU_ERF && approximate != CT_GELU_TANH) {
        if (ct__check("ct_gelu", "a", a))
            ct__set_error(CT_ERR_VALUE, "ct_gelu: approximate must be CT_GELU_ERF or CT_GELU_TANH, not %d",
                          (int)approximate);
        return NULL;
    }
    return activate(approximate == CT_GELU_TANH ? &tanh_act : &erf_act, a, 0, 0);
}

ct_tensor *ct_silu(const ct_tensor *a) {
    static const activation act = {"ct_silu", CT_UN_SILU, CT_BIN_SILU_BW, false, false};
    return activate(&act, a, 0, 0);
}

ct_tensor *ct_sigmoid(const ct_tensor *a) {
    static const activation act = {"ct_sigmoid", CT_UN_SIGMOID, CT_BIN_SIGMOID_BW, true, false};
    return activate(&act, a, 0, 0);
}

ct_tensor *ct_tanh(const ct_tensor *a) {
    static const activation act = {"ct_tanh", CT_UN_TANH, CT_BIN_TANH_BW, true, false};
    return activate(&act, a, 0, 0);
}

ct_tensor *ct_softplus(const ct_tensor *a, double beta, double threshold) {
    static const activation act = {"ct_softplus", CT_UN_SOFTPLUS, CT_BIN_SOFTPLUS_BW, false, false};
    if (beta == 0 || !isfinite(beta) || isnan(threshold)) {
        if (ct__check("ct_softplus", "a", a))
            ct__set_error(CT_ERR_VALUE, "ct_softplus: beta must be finite and nonzero and threshold not NaN (beta %g, "
                          "threshold %g)", beta, threshold);
        return NULL;
    }
    return activate(&act, a, beta, threshold);
}
