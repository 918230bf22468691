#include "tests/common.h"

#include <stdarg.h>
#include <string.h>

ct_tensor *t_rand(const int64_t *shape, int ndim, ct_dtype dtype, double lo, double hi) {
    ct_tensor *t = ct_uniform(shape, ndim, lo, hi, dtype, CT_CPU);
    cr_assert_not_null(t, "t_rand: %s", ct_last_error_message());
    return t;
}

double *t_values(const ct_tensor *t) {
    int64_t n = ct_tensor_numel(t);
    double *out = malloc((size_t)(n ? n : 1) * sizeof(double));
    cr_assert_not_null(out);
    ct_scope_begin();
    ct_no_grad_begin();
    ct_tensor *d = ct_cast(ct_to_device(t, CT_CPU), CT_F64); /* f64 is CPU-only: move first */
    cr_assert_not_null(d, "t_values: %s", ct_last_error_message());
    cr_assert_eq(ct_to_host(d, out, (size_t)n * sizeof(double)), CT_OK, "%s", ct_last_error_message());
    ct_no_grad_end();
    ct_scope_end();
    return out;
}

double t_max_abs_diff(const ct_tensor *t, const double *ref) {
    double *v = t_values(t), m = 0;
    for (int64_t i = 0; i < ct_tensor_numel(t); i++) {
        double d = fabs(v[i] - ref[i]);
        if (d > m || isnan(d))
            m = isnan(d) && !(isnan(v[i]) && isnan(ref[i])) ? INFINITY : (isnan(d) ? m : d);
    }
    free(v);
    return m;
}

double t_max_rel_diff(const ct_tensor *t, const double *ref) {
    double *v = t_values(t), m = 0;
    for (int64_t i = 0; i < ct_tensor_numel(t); i++) {
        if (isnan(v[i]) && isnan(ref[i]))
            continue;
        double d = fabs(v[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    free(v);
    return m;
}

void t_assert_shape(const ct_tensor *t, const int64_t *shape, int ndim) {
    cr_assert_not_null(t, "tensor is NULL: %s", ct_last_error_message());
    cr_assert_eq(ct_tensor_ndim(t), ndim, "ndim %d, expected %d (shape %s)", ct_tensor_ndim(t), ndim, ct_shape_str(t));
    for (int d = 0; d < ndim; d++)
        cr_assert_eq(ct_tensor_shape(t)[d], shape[d], "shape %s, dim %d expected %lld", ct_shape_str(t), d,
                     (long long)shape[d]);
}

void t_assert_close(const ct_tensor *t, const double *ref, double atol, double rtol) {
    cr_assert_not_null(t, "tensor is NULL: %s", ct_last_error_message());
    double *v = t_values(t);
    for (int64_t i = 0; i < ct_tensor_numel(t); i++) {
        if (isnan(ref[i])) {
            cr_assert(isnan(v[i]), "element %lld: got %.17g, expected NaN", (long long)i, v[i]);
            continue;
        }
        if (isinf(ref[i])) {
            cr_assert_eq(v[i], ref[i], "element %lld: got %.17g, expected %g", (long long)i, v[i], ref[i]);
            continue;
        }
        cr_assert(fabs(v[i] - ref[i]) <= atol + rtol * fabs(ref[i]),
                  "element %lld of %s: got %.17g, expected %.17g (diff %.3g)", (long long)i, ct_shape_str(t), v[i],
                  ref[i], fabs(v[i] - ref[i]));
    }
    free(v);
}

void t_assert_error(ct_status status, const char *fragment, ...) {
    cr_assert_eq(ct_last_error(), status, "error %s (\"%s\"), expected %s", ct_status_name(ct_last_error()),
                 ct_last_error_message(), ct_status_name(status));
    va_list ap;
    va_start(ap, fragment);
    for (const char *f = fragment; f; f = va_arg(ap, const char *))
        cr_assert(strstr(ct_last_error_message(), f) != NULL, "message \"%s\" lacks \"%s\"", ct_last_error_message(),
                  f);
    va_end(ap);
    ct_clear_error();
}

static double weighted_sum(t_grad_fn fn, ct_tensor **inputs, void *ctx, const ct_tensor *w) {
    ct_scope_begin();
    ct_tensor *out = fn(inputs, ctx);
    cr_assert_not_null(out, "gradcheck forward failed: %s", ct_last_error_message());
    double v = ct_item(ct_sum(ct_mul(ct_cast(out, CT_F64), w), NULL, 0, false));
    ct_scope_end();
    return v;
}

void t_gradcheck(t_grad_fn fn, ct_tensor **inputs, int n, void *ctx, double eps, double atol, double rtol) {
    ct_scope_begin();
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ct_tensor_dtype(inputs[i]), CT_F64, "gradcheck needs f64 inputs");
        cr_assert(ct_tensor_is_contiguous(inputs[i]), "gradcheck needs contiguous inputs");
        ct_zero_grad(inputs[i]);
    }
    ct_tensor *out = fn(inputs, ctx);
    cr_assert_not_null(out, "gradcheck forward failed: %s", ct_last_error_message());
    ct_tensor *w = t_rand(ct_tensor_shape(out), ct_tensor_ndim(out), CT_F64, -1.0, 1.0);
    ct_tensor *loss = ct_sum(ct_mul(ct_cast(out, CT_F64), w), NULL, 0, false);
    cr_assert_not_null(loss, "%s", ct_last_error_message());
    cr_assert_eq(ct_backward(loss), CT_OK, "backward failed: %s", ct_last_error_message());
    ct_no_grad_begin();
    for (int i = 0; i < n; i++) {
        if (!ct_tensor_requires_grad(inputs[i]))
            continue;
        ct_tensor *g = ct_grad(inputs[i]);
        int64_t numel = ct_tensor_numel(inputs[i]);
        cr_assert(g != NULL || numel == 0, "input %d has no gradient", i);
        if (!g)
            continue;
        double *analytic = t_values(g);
        double *x = ct_tensor_data(inputs[i]);
        for (int64_t j = 0; j < numel; j++) {
            double saved = x[j];
            x[j] = saved + eps;
            double fp = weighted_sum(fn, inputs, ctx, w);
            x[j] = saved - eps;
            double fm = weighted_sum(fn, inputs, ctx, w);
            x[j] = saved;
            double numeric = (fp - fm) / (2 * eps);
            cr_assert(fabs(numeric - analytic[j]) <= atol + rtol * fabs(numeric),
                      "gradient of input %d element %lld: analytic %.10g, numeric %.10g", i, (long long)j,
                      analytic[j], numeric);
        }
        free(analytic);
    }
    ct_no_grad_end();
    ct_scope_end();
}

void t_unravel(int64_t linear, int ndim, const int64_t *shape, int64_t *coords) {
    for (int d = ndim - 1; d >= 0; d--) {
        coords[d] = shape[d] ? linear % shape[d] : 0;
        linear = shape[d] ? linear / shape[d] : 0;
    }
}

int64_t t_ravel_broadcast(const int64_t *coords, int ndim, int src_ndim, const int64_t *src_shape) {
    int64_t idx = 0;
    for (int d = 0; d < src_ndim; d++) {
        int64_t c = coords[ndim - src_ndim + d];
        idx = idx * src_shape[d] + (src_shape[d] == 1 ? 0 : c);
    }
    return idx;
}

ct_tensor *t_to_gpu(const ct_tensor *t) {
    /* A GPU leaf holding t's values: a CPU tensor that requires grad would otherwise give a
     * non-leaf copy, and the parity tests make their own GPU leaves from it. */
    ct_tensor *g = ct_detach(ct_to_device(t, T_GPU));
    cr_assert_not_null(g, "%s", ct_last_error_message());
    return g;
}

ct_tensor *t_rand_dtype(const int64_t *shape, int ndim, ct_dtype dtype, double lo, double hi) {
    ct_tensor *t = ct_cast(t_rand(shape, ndim, CT_F32, lo, hi), dtype);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

void t_poison_gpu_cache(int64_t numel, ct_dtype dtype) {
    ct_tensor *blocks[4];
    for (int i = 0; i < 4; i++) {
        blocks[i] = ct_full((int64_t[]){numel > 0 ? numel : 1}, 1, NAN, dtype, T_GPU);
        cr_assert_not_null(blocks[i], "%s", ct_last_error_message());
    }
    for (int i = 0; i < 4; i++)
        ct_tensor_free(blocks[i]);
}

static void assert_parity(const ct_tensor *gpu, const ct_tensor *cpu, double tol, const char *what, bool normwise) {
    cr_assert_not_null(gpu, "%s: %s", what, ct_last_error_message());
    cr_assert_not_null(cpu, "%s (CPU): %s", what, ct_last_error_message());
    cr_assert(ct_device_equal(ct_tensor_device(gpu), T_GPU), "%s: result is not on the GPU", what);
    cr_assert_eq(ct_tensor_dtype(gpu), ct_tensor_dtype(cpu), "%s: dtype differs", what);
    t_assert_shape(gpu, ct_tensor_shape(cpu), ct_tensor_ndim(cpu));
    double *g = t_values(gpu), *c = t_values(cpu);
    double scale = 1.0;
    for (int64_t i = 0; normwise && i < ct_tensor_numel(cpu); i++)
        scale = fmax(scale, fabs(c[i]));
    for (int64_t i = 0; i < ct_tensor_numel(cpu); i++) {
        cr_assert(!isnan(g[i]) || isnan(c[i]), "%s: element %lld of %s is NaN (never written?)", what, (long long)i,
                  ct_shape_str(cpu));
        double err = fabs(g[i] - c[i]) / (normwise ? scale : fmax(1.0, fabs(c[i])));
        cr_assert(err <= tol || (isnan(g[i]) && isnan(c[i])),
                  "%s (%s): element %lld of %s: gpu %.9g, cpu %.9g (error %.3g > %.3g)", what,
                  ct_dtype_name(ct_tensor_dtype(cpu)), (long long)i, ct_shape_str(cpu), g[i], c[i], err, tol);
    }
    free(g);
    free(c);
}

void t_assert_parity(const ct_tensor *gpu, const ct_tensor *cpu, double tol, const char *what) {
    assert_parity(gpu, cpu, tol, what, false);
}

void t_assert_parity_normwise(const ct_tensor *gpu, const ct_tensor *cpu, double tol, const char *what) {
    assert_parity(gpu, cpu, tol, what, true);
}

void t_assert_graph_null_arguments(void) {
    cr_assert_eq(ct_graph_capture_end(NULL), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_graph_capture_end", NULL);
    cr_assert_eq(ct_graph_replay(NULL), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_graph_replay", NULL);
    cr_assert_eq(ct_graph_device(NULL), -1);
    ct_graph_free(NULL);
}
