/* Parameter initialization (torch.nn.init): fans, gains, and in-place fills. */
#include "ctensor/init.h"
#include "runtime/internal.h"

#include <math.h>

double ct_init_calculate_gain(ct_nonlinearity nonlinearity, double param) {
    switch (nonlinearity) {
    case CT_NONLINEARITY_LINEAR:
    case CT_NONLINEARITY_SIGMOID: return 1.0;
    case CT_NONLINEARITY_TANH: return 5.0 / 3.0;
    case CT_NONLINEARITY_RELU: return sqrt(2.0);
    case CT_NONLINEARITY_LEAKY_RELU:
        if (!isfinite(param)) {
            ct__set_error(CT_ERR_VALUE, "ct_init_calculate_gain: the negative slope must be finite, got %g", param);
            return NAN;
        }
        return sqrt(2.0 / (1.0 + param * param));
    case CT_NONLINEARITY_SELU: return 0.75;
    }
    ct__set_error(CT_ERR_VALUE, "ct_init_calculate_gain: unknown nonlinearity %d", (int)nonlinearity);
    return NAN;
}

static ct_status fans(const char *op, const ct_tensor *t, int64_t *fan_in, int64_t *fan_out) {
    if (!ct__check(op, "t", t))
        return ct_last_error();
    if (t->ndim < 2)
        return ct__set_error(CT_ERR_SHAPE, "%s: fan in and fan out need a tensor of at least 2 dims, got %s", op,
                             ct__shape_fmt(t->ndim, t->shape));
    int64_t receptive = 1;
    for (int d = 2; d < t->ndim; d++)
        receptive *= t->shape[d];
    if (fan_in)
        *fan_in = t->shape[1] * receptive;
    if (fan_out)
        *fan_out = t->shape[0] * receptive;
    return CT_OK;
}

ct_status ct_init_calculate_fans(const ct_tensor *t, int64_t *fan_in, int64_t *fan_out) {
    return fans("ct_init_calculate_fans", t, fan_in, fan_out);
}

static bool check_float(const char *op, const ct_tensor *t) {
    if (!ct__check(op, "t", t))
        return false;
    if (!ct_dtype_is_float(t->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: needs a floating tensor, not %s", op, ct_dtype_name(t->dtype));
        return false;
    }
    return true;
}

typedef enum { FILL_UNIFORM, FILL_NORMAL } fill_kind;

/* Draw a tensor of t's geometry and copy it into t, outside the autograd graph. The draw
 * lives in a private scope, so nothing outlives the call. */
static ct_status fill_random(ct_tensor *t, fill_kind kind, double p0, double p1) {
    if (ct__numel(t->ndim, t->shape) == 0)
        return CT_OK;
    ct_status st = CT_OK;
    ct_no_grad_begin();
    ct_scope_begin();
    ct_tensor *draw = kind == FILL_UNIFORM ? ct_uniform(t->shape, t->ndim, p0, p1, t->dtype, t->device)
                                           : ct_normal(t->shape, t->ndim, p0, p1, t->dtype, t->device);
    st = draw ? ct_copy_(t, draw) : ct_last_error();
    ct_scope_end();
    ct_no_grad_end();
    return st;
}

ct_status ct_init_uniform(ct_tensor *t, double lo, double hi) {
    if (!check_float("ct_init_uniform", t))
        return ct_last_error();
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        return ct__set_error(CT_ERR_VALUE, "ct_init_uniform: need finite lo <= hi, got [%g, %g)", lo, hi);
    return fill_random(t, FILL_UNIFORM, lo, hi);
}

ct_status ct_init_normal(ct_tensor *t, double mean, double std) {
    if (!check_float("ct_init_normal", t))
        return ct_last_error();
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
        return ct__set_error(CT_ERR_VALUE, "ct_init_normal: need finite mean and std >= 0, got mean %g std %g", mean,
                             std);
    return fill_random(t, FILL_NORMAL, mean, std);
}

ct_status ct_init_constant(ct_tensor *t, double value) {
    if (!ct__check("ct_init_constant", "t", t))
        return ct_last_error();
    ct_no_grad_begin();
    ct_status st = ct_fill_(t, value);
    ct_no_grad_end();
    return st;
}
ct_status ct_init_zeros(ct_tensor *t) {
    return ct_init_constant(t, 0.0);
}
ct_status ct_init_ones(ct_tensor *t) {
    return ct_init_constant(t, 1.0);
}

static ct_status check_gain(const char *op, double gain) {
    if (!isfinite(gain) || gain < 0)
        return ct__set_error(CT_ERR_VALUE, "%s: the gain must be finite and >= 0, got %g", op, gain);
    return CT_OK;
}

static ct_status xavier(const char *op, ct_tensor *t, double gain, fill_kind kind) {
    int64_t fan_in = 0, fan_out = 0;
    if (!check_float(op, t) || check_gain(op, gain) != CT_OK || fans(op, t, &fan_in, &fan_out) != CT_OK)
        return ct_last_error();
    if (fan_in + fan_out == 0)
        return CT_OK; /* no elements */
    double std = gain * sqrt(2.0 / (double)(fan_in + fan_out));
    return kind == FILL_UNIFORM ? fill_random(t, FILL_UNIFORM, -sqrt(3.0) * std, sqrt(3.0) * std)
                                : fill_random(t, FILL_NORMAL, 0.0, std);
}

ct_status ct_init_xavier_uniform(ct_tensor *t, double gain) {
    return xavier("ct_init_xavier_uniform", t, gain, FILL_UNIFORM);
}
ct_status ct_init_xavier_normal(ct_tensor *t, double gain) {
    return xavier("ct_init_xavier_normal", t, gain, FILL_NORMAL);
}

static ct_status kaiming(const char *op, ct_tensor *t, double a, ct_fan_mode mode, ct_nonlinearity nonlinearity,
                         fill_kind kind) {
    int64_t fan_in = 0, fan_out = 0;
    if (!check_float(op, t) || fans(op, t, &fan_in, &fan_out) != CT_OK)
        return ct_last_error();
    if (mode != CT_FAN_IN && mode != CT_FAN_OUT)
        return ct__set_error(CT_ERR_VALUE, "%s: mode must be CT_FAN_IN or CT_FAN_OUT, got %d", op, (int)mode);
    double gain = ct_init_calculate_gain(nonlinearity, a);
    if (isnan(gain))
        return ct_last_error();
    int64_t fan = mode == CT_FAN_IN ? fan_in : fan_out;
    if (fan == 0)
        return CT_OK; /* no elements */
    double std = gain / sqrt((double)fan);
    return kind == FILL_UNIFORM ? fill_random(t, FILL_UNIFORM, -sqrt(3.0) * std, sqrt(3.0) * std)
                                : fill_random(t, FILL_NORMAL, 0.0, std);
}

ct_status ct_init_kaiming_uniform(ct_tensor *t, double a, ct_fan_mode mode, ct_nonlinearity nonlinearity) {
    return kaiming("ct_init_kaiming_uniform", t, a, mode, nonlinearity, FILL_UNIFORM);
}
ct_status ct_init_kaiming_normal(ct_tensor *t, double a, ct_fan_mode mode, ct_nonlinearity nonlinearity) {
    return kaiming("ct_init_kaiming_normal", t, a, mode, nonlinearity, FILL_NORMAL);
}
