/* ctensor — parameter initialization, as torch.nn.init does it.
 *
 * Every ct_init_* function fills an existing floating tensor in place, under no-grad (so
 * it works on parameters that require grad), draws from the global Philox generator
 * (random.h) and returns CT_OK or an error status: CT_ERR_NULL for a NULL tensor,
 * CT_ERR_DTYPE for a non-floating one (except zeros/ones/constant, which fill any dtype),
 * CT_ERR_VALUE for a bad bound or deviation, CT_ERR_SHAPE when fans are needed and the
 * tensor has fewer than 2 dims. A tensor with no elements is left as it is (CT_OK).
 *
 * Fans follow torch.nn.init._calculate_fan_in_and_fan_out: for a weight of shape
 * (out, in, *kernel), fan_in = in * prod(kernel) and fan_out = out * prod(kernel). A
 * convolution weight (out_ch, in_ch / groups, kH, kW) thus has fan_in = in_ch / groups *
 * kH * kW; a linear weight (out, in) has fan_in = in. A transposed convolution's weight is
 * (in_ch, out_ch / groups, kH, kW), so its "fan_in" is out_ch / groups * kH * kW, exactly
 * as in PyTorch.
 */
#ifndef CTENSOR_INIT_H
#define CTENSOR_INIT_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ct_nonlinearity {
    CT_NONLINEARITY_LINEAR = 0, /* also the convolutions and the identity: gain 1 */
    CT_NONLINEARITY_SIGMOID,    /* 1 */
    CT_NONLINEARITY_TANH,       /* 5 / 3 */
    CT_NONLINEARITY_RELU,       /* sqrt(2) */
    CT_NONLINEARITY_LEAKY_RELU, /* sqrt(2 / (1 + slope^2)) */
    CT_NONLINEARITY_SELU,       /* 3 / 4 */
} ct_nonlinearity;

typedef enum ct_fan_mode {
    CT_FAN_IN = 0,  /* preserves the variance of activations in the forward pass */
    CT_FAN_OUT = 1, /* preserves the variance of gradients in the backward pass */
} ct_fan_mode;

/* The recommended gain for a nonlinearity (torch.nn.init.calculate_gain). `param` is the
 * negative slope for CT_NONLINEARITY_LEAKY_RELU (PyTorch's default is 0.01) and is ignored
 * otherwise. NaN (with CT_ERR_VALUE) for an unknown nonlinearity or a non-finite slope. */
double ct_init_calculate_gain(ct_nonlinearity nonlinearity, double param);

/* fan_in and fan_out of a tensor with at least 2 dims (see the top of this file). Either
 * output pointer may be NULL. */
ct_status ct_init_calculate_fans(const ct_tensor *t, int64_t *fan_in, int64_t *fan_out);

/* U(lo, hi), lo <= hi, both finite. */
ct_status ct_init_uniform(ct_tensor *t, double lo, double hi);
/* N(mean, std^2), std >= 0. */
ct_status ct_init_normal(ct_tensor *t, double mean, double std);
ct_status ct_init_constant(ct_tensor *t, double value);
ct_status ct_init_zeros(ct_tensor *t);
ct_status ct_init_ones(ct_tensor *t);

/* Glorot & Bengio (2010): U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)), or
 * N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)). */
ct_status ct_init_xavier_uniform(ct_tensor *t, double gain);
ct_status ct_init_xavier_normal(ct_tensor *t, double gain);

/* He et al. (2015): std = gain / sqrt(fan), gain = ct_init_calculate_gain(nonlinearity, a),
 * fan = fan_in or fan_out by `mode`; uniform draws U(-sqrt(3) std, sqrt(3) std), normal
 * draws N(0, std^2). `a` is the negative slope of the rectifier that follows (used only with
 * CT_NONLINEARITY_LEAKY_RELU; PyTorch's default call is a = 0, fan_in, leaky_relu, which
 * gives the ReLU gain sqrt(2)). Linear and Conv2d initialize their weights with
 * ct_init_kaiming_uniform(w, sqrt(5), CT_FAN_IN, CT_NONLINEARITY_LEAKY_RELU), which gives
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
ct_status ct_init_kaiming_uniform(ct_tensor *t, double a, ct_fan_mode mode, ct_nonlinearity nonlinearity);
ct_status ct_init_kaiming_normal(ct_tensor *t, double a, ct_fan_mode mode, ct_nonlinearity nonlinearity);

#ifdef __cplusplus
}
#endif
#endif
