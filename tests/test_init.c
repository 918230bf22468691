/* Parameter initialization: gains, fans, and the statistics of each fill. */
#include "tests/common.h"
#include "ctensor/init.h"

typedef struct stats {
    double mean, std, min, max;
} stats;

static stats stats_of(const ct_tensor *t) {
    double *v = t_values(t);
    int64_t n = ct_tensor_numel(t);
    stats s = {0, 0, INFINITY, -INFINITY};
    for (int64_t i = 0; i < n; i++) {
        s.mean += v[i];
        s.min = fmin(s.min, v[i]);
        s.max = fmax(s.max, v[i]);
    }
    s.mean /= (double)n;
    for (int64_t i = 0; i < n; i++)
        s.std += (v[i] - s.mean) * (v[i] - s.mean);
    s.std = sqrt(s.std / (double)(n - 1));
    free(v);
    return s;
}

/* 2^17 elements: the sample mean and std are within ~1% of their expectations. */
static ct_tensor *big(const int64_t *shape, int ndim) {
    ct_tensor *t = ct_zeros(shape, ndim, CT_F32, CT_CPU);
    cr_assert_not_null(t);
    return t;
}

static void assert_uniform(const ct_tensor *t, double lo, double hi) {
    stats s = stats_of(t);
    cr_assert(s.min >= lo && s.max <= hi, "values in [%g, %g], got [%g, %g]", lo, hi, s.min, s.max);
    double width = hi - lo;
    cr_assert(s.min < lo + 0.01 * width && s.max > hi - 0.01 * width, "the range is covered: [%g, %g]", s.min, s.max);
    cr_assert_float_eq(s.mean, (lo + hi) / 2, 0.01 * width, "mean %g", s.mean);
    cr_assert_float_eq(s.std, width / sqrt(12.0), 0.01 * width, "std %g", s.std);
}

static void assert_normal(const ct_tensor *t, double mean, double std) {
    stats s = stats_of(t);
    cr_assert_float_eq(s.mean, mean, 0.015 * std, "mean %g, expected %g", s.mean, mean);
    cr_assert_float_eq(s.std, std, 0.015 * std, "std %g, expected %g", s.std, std);
}

Test(init, gains_like_torch) {
    cr_assert_float_eq(ct_init_calculate_gain(CT_NONLINEARITY_LINEAR, 0), 1.0, 1e-15);
    cr_assert_float_eq(ct_init_calculate_gain(CT_NONLINEARITY_SIGMOID, 0), 1.0, 1e-15);
    cr_assert_float_eq(ct_init_calculate_gain(CT_NONLINEARITY_TANH, 0), 5.0 / 3.0, 1e-15);
    cr_assert_float_eq(ct_init_calculate_gain(CT_NONLINEARITY_RELU, 0), sqrt(2.0), 1e-15);
    cr_assert_float_eq(ct_init_calculate_gain(CT_NONLINEARITY_SELU, 0), 0.75, 1e-15);
    cr_assert_float_eq(ct_init_calculate_gain(CT_NONLINEARITY_LEAKY_RELU, 0.01), sqrt(2.0 / 1.0001), 1e-15);
    /* kaiming's default a = sqrt(5) on Linear/Conv: gain sqrt(1/3) */
    cr_assert_float_eq(ct_init_calculate_gain(CT_NONLINEARITY_LEAKY_RELU, sqrt(5.0)), sqrt(1.0 / 3.0), 1e-15);
    ct_clear_error();
    cr_assert(isnan(ct_init_calculate_gain((ct_nonlinearity)42, 0)));
    t_assert_error(CT_ERR_VALUE, "unknown nonlinearity", NULL);
    cr_assert(isnan(ct_init_calculate_gain(CT_NONLINEARITY_LEAKY_RELU, NAN)));
    t_assert_error(CT_ERR_VALUE, "slope", NULL);
}

Test(init, fans_like_torch) {
    T_NO_LEAK({
        int64_t fan_in = -1, fan_out = -1;
        /* nn.Linear(784, 128).weight */
        cr_assert_eq(ct_init_calculate_fans(ct_empty((int64_t[]){128, 784}, 2, CT_F32, CT_CPU), &fan_in, &fan_out),
                     CT_OK);
        cr_assert(fan_in == 784 && fan_out == 128);
        /* nn.Conv2d(1, 32, 3).weight */
        cr_assert_eq(ct_init_calculate_fans(ct_empty((int64_t[]){32, 1, 3, 3}, 4, CT_F32, CT_CPU), &fan_in, &fan_out),
                     CT_OK);
        cr_assert(fan_in == 9 && fan_out == 288, "%lld %lld", (long long)fan_in, (long long)fan_out);
        /* nn.Conv2d(32, 64, 5, groups=4).weight is [64, 8, 5, 5]: fan_in = 32/4 * 25 */
        cr_assert_eq(ct_init_calculate_fans(ct_empty((int64_t[]){64, 8, 5, 5}, 4, CT_F32, CT_CPU), &fan_in, &fan_out),
                     CT_OK);
        cr_assert(fan_in == 200 && fan_out == 1600);
        /* nn.ConvTranspose2d(16, 8, 4).weight is [16, 8, 4, 4]: fan_in = 8 * 16 */
        cr_assert_eq(ct_init_calculate_fans(ct_empty((int64_t[]){16, 8, 4, 4}, 4, CT_F32, CT_CPU), &fan_in, NULL),
                     CT_OK);
        cr_assert_eq(fan_in, 128);
        /* 3-D: Conv1d(5, 4, 6) */
        cr_assert_eq(ct_init_calculate_fans(ct_empty((int64_t[]){4, 5, 6}, 3, CT_F32, CT_CPU), NULL, &fan_out), CT_OK);
        cr_assert_eq(fan_out, 24);
        cr_assert_eq(ct_init_calculate_fans(ct_empty((int64_t[]){7}, 1, CT_F32, CT_CPU), &fan_in, &fan_out),
                     CT_ERR_SHAPE);
        t_assert_error(CT_ERR_SHAPE, "at least 2 dims", "[7]", NULL);
    });
}

Test(init, uniform_and_normal) {
    ct_manual_seed(7);
    T_NO_LEAK({
        ct_tensor *t = big((int64_t[]){256, 512}, 2);
        cr_assert_eq(ct_init_uniform(t, -2, 3), CT_OK);
        assert_uniform(t, -2, 3);
        cr_assert_eq(ct_init_normal(t, 1, 2), CT_OK);
        assert_normal(t, 1, 2);
        ct_tensor *d = ct_zeros((int64_t[]){1 << 16}, 1, CT_F64, CT_CPU);
        cr_assert_eq(ct_init_normal(d, -3, 0.5), CT_OK);
        assert_normal(d, -3, 0.5);
    });
}

Test(init, xavier) {
    ct_manual_seed(8);
    T_NO_LEAK({
        ct_tensor *t = big((int64_t[]){256, 512}, 2);
        double gain = 2.0, a = gain * sqrt(6.0 / (256 + 512));
        cr_assert_eq(ct_init_xavier_uniform(t, gain), CT_OK);
        assert_uniform(t, -a, a);
        /* conv weight: fans include the receptive field */
        ct_tensor *w = big((int64_t[]){64, 32, 8, 8}, 4);
        cr_assert_eq(ct_init_xavier_normal(w, 1.0), CT_OK);
        assert_normal(w, 0, sqrt(2.0 / (32 * 64 + 64 * 64)));
    });
}

Test(init, kaiming) {
    ct_manual_seed(9);
    T_NO_LEAK({
        ct_tensor *w = big((int64_t[]){128, 64, 4, 4}, 4); /* fan_in 1024, fan_out 2048 */
        cr_assert_eq(ct_init_kaiming_normal(w, 0, CT_FAN_OUT, CT_NONLINEARITY_RELU), CT_OK);
        assert_normal(w, 0, sqrt(2.0 / 2048));
        cr_assert_eq(ct_init_kaiming_normal(w, 0.2, CT_FAN_IN, CT_NONLINEARITY_LEAKY_RELU), CT_OK);
        assert_normal(w, 0, sqrt(2.0 / (1 + 0.04)) / sqrt(1024.0));
        /* torch's default call kaiming_uniform_(w) = a 0, fan_in, leaky_relu: the ReLU gain */
        cr_assert_eq(ct_init_kaiming_uniform(w, 0, CT_FAN_IN, CT_NONLINEARITY_LEAKY_RELU), CT_OK);
        assert_uniform(w, -sqrt(6.0 / 1024), sqrt(6.0 / 1024));
        /* what Linear and Conv2d use: a = sqrt(5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
        cr_assert_eq(ct_init_kaiming_uniform(w, sqrt(5.0), CT_FAN_IN, CT_NONLINEARITY_LEAKY_RELU), CT_OK);
        assert_uniform(w, -1.0 / 32, 1.0 / 32);
        cr_assert_eq(ct_init_kaiming_uniform(w, 0, CT_FAN_OUT, CT_NONLINEARITY_TANH), CT_OK);
        double bound = sqrt(3.0) * (5.0 / 3.0) / sqrt(2048.0);
        assert_uniform(w, -bound, bound);
    });
}

Test(init, constants_any_dtype) {
    T_NO_LEAK({
        ct_tensor *t = ct_empty((int64_t[]){3, 4}, 2, CT_F32, CT_CPU);
        cr_assert_eq(ct_init_zeros(t), CT_OK);
        stats s = stats_of(t);
        cr_assert(s.min == 0 && s.max == 0);
        cr_assert_eq(ct_init_ones(t), CT_OK);
        s = stats_of(t);
        cr_assert(s.min == 1 && s.max == 1);
        ct_tensor *i = ct_empty((int64_t[]){5}, 1, CT_I32, CT_CPU);
        cr_assert_eq(ct_init_constant(i, 7), CT_OK);
        s = stats_of(i);
        cr_assert(s.min == 7 && s.max == 7);
        /* a strided view: only its elements change */
        ct_tensor *col = ct_select(t, 1, 2);
        cr_assert_eq(ct_init_constant(col, -1), CT_OK);
        double *v = t_values(t);
        for (int k = 0; k < 12; k++)
            cr_assert_eq(v[k], k % 4 == 2 ? -1.0 : 1.0);
        free(v);
    });
}

Test(init, parameters_under_grad_mode_stay_leaves) {
    ct_manual_seed(10);
    T_NO_LEAK({
        ct_tensor *w = ct_requires_grad(ct_zeros((int64_t[]){16, 16}, 2, CT_F32, CT_CPU), true);
        cr_assert(ct_grad_enabled());
        cr_assert_eq(ct_init_xavier_uniform(w, 1.0), CT_OK, "%s", ct_last_error_message());
        cr_assert(ct_tensor_is_leaf(w) && ct_tensor_requires_grad(w));
        cr_assert_null(ct_grad_fn_name(w));
        cr_assert(ct_grad_enabled(), "grad mode restored");
        stats s = stats_of(w);
        cr_assert(s.max > 0 && s.min < 0);
    });
}

Test(init, seeded_fills_repeat) {
    T_NO_LEAK({
        ct_tensor *a = ct_empty((int64_t[]){40, 30}, 2, CT_F32, CT_CPU);
        ct_tensor *b = ct_empty((int64_t[]){40, 30}, 2, CT_F32, CT_CPU);
        ct_manual_seed(123);
        cr_assert_eq(ct_init_kaiming_normal(a, 0, CT_FAN_IN, CT_NONLINEARITY_RELU), CT_OK);
        ct_manual_seed(123);
        cr_assert_eq(ct_init_kaiming_normal(b, 0, CT_FAN_IN, CT_NONLINEARITY_RELU), CT_OK);
        double *va = t_values(a);
        t_assert_close(b, va, 0, 0);
        free(va);
        /* it matches ct_normal with the theoretical std, drawn at the same offset */
        ct_manual_seed(123);
        ct_tensor *ref = ct_normal((int64_t[]){40, 30}, 2, 0, sqrt(2.0 / 30), CT_F32, CT_CPU);
        double *vr = t_values(ref);
        t_assert_close(a, vr, 0, 0);
        free(vr);
    });
}

Test(init, empty_tensors_are_left_alone) {
    T_NO_LEAK({
        ct_tensor *e = ct_empty((int64_t[]){0, 5}, 2, CT_F32, CT_CPU);
        cr_assert_eq(ct_init_uniform(e, 0, 1), CT_OK);
        cr_assert_eq(ct_init_xavier_normal(e, 1), CT_OK);
        cr_assert_eq(ct_init_kaiming_uniform(e, 0, CT_FAN_OUT, CT_NONLINEARITY_RELU), CT_OK);
    });
}

Test(init, bad_arguments) {
    ct_clear_error();
    T_NO_LEAK({
        cr_assert_eq(ct_init_uniform(NULL, 0, 1), CT_ERR_NULL);
        t_assert_error(CT_ERR_NULL, "ct_init_uniform", NULL);
        cr_assert_eq(ct_init_zeros(NULL), CT_ERR_NULL);
        t_assert_error(CT_ERR_NULL, "ct_init_constant", NULL);
        ct_tensor *t = ct_empty((int64_t[]){4, 4}, 2, CT_F32, CT_CPU);
        cr_assert_eq(ct_init_uniform(t, 1, 0), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "lo <= hi", NULL);
        cr_assert_eq(ct_init_uniform(t, 0, INFINITY), CT_ERR_VALUE);
        ct_clear_error();
        cr_assert_eq(ct_init_normal(t, 0, -1), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "std >= 0", NULL);
        cr_assert_eq(ct_init_xavier_uniform(t, -1), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "gain", NULL);
        cr_assert_eq(ct_init_kaiming_normal(t, 0, (ct_fan_mode)5, CT_NONLINEARITY_RELU), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "CT_FAN_IN", NULL);
        cr_assert_eq(ct_init_kaiming_normal(t, 0, CT_FAN_IN, (ct_nonlinearity)-3), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "nonlinearity", NULL);
        ct_tensor *ints = ct_zeros((int64_t[]){4, 4}, 2, CT_I32, CT_CPU);
        cr_assert_eq(ct_init_normal(ints, 0, 1), CT_ERR_DTYPE);
        t_assert_error(CT_ERR_DTYPE, "floating", "i32", NULL);
        cr_assert_eq(ct_init_xavier_normal(ints, 1), CT_ERR_DTYPE);
        ct_clear_error();
        ct_tensor *vec = ct_empty((int64_t[]){4}, 1, CT_F32, CT_CPU);
        cr_assert_eq(ct_init_kaiming_uniform(vec, 0, CT_FAN_IN, CT_NONLINEARITY_RELU), CT_ERR_SHAPE);
        t_assert_error(CT_ERR_SHAPE, "ct_init_kaiming_uniform", "at least 2 dims", NULL);
        cr_assert_eq(ct_init_uniform(vec, 0, 1), CT_OK, "1-D tensors need no fans");
    });
}
