/* CUDA parity for the elementwise ops and activations (kernels/cuda/elementwise.cu): every
 * op and its backward is run on the same inputs on the CPU and on the GPU and compared, with
 * an error relative to max(1, |cpu|) of at most 1e-5 for F32 and 1e-2 for F16/BF16 (exact for
 * I32/U8 and comparisons). Shapes cover broadcasting, transposed, stepped and misaligned
 * views, odd sizes around the vector width, scalars and empty tensors; outputs are poisoned
 * first so that an element the GPU does not write fails. Each test reports itself skipped
 * where no GPU is usable. */
#include "tests/common.h"

#include <string.h>

static const ct_dtype float_dtypes[] = {CT_F32, CT_F16, CT_BF16};
#define N_FLOAT_DTYPES 3

static double tolerance(ct_dtype dtype) {
    return dtype == CT_F32 ? 1e-5 : (dtype == CT_I32 || dtype == CT_U8) ? 0 : 1e-2;
}

/* The GPU result matches the CPU one: shape, dtype, NaN where NaN, infinities exactly, and
 * |gpu - cpu| <= tol * max(1, |cpu|) elsewhere. */
static void assert_parity(const char *what, ct_tensor *cpu, ct_tensor *gpu, double tol) {
    cr_assert_not_null(cpu, "%s: CPU: %s", what, ct_last_error_message());
    cr_assert_not_null(gpu, "%s: CUDA: %s", what, ct_last_error_message());
    cr_assert_eq(ct_tensor_device(gpu).type, CT_DEVICE_CUDA, "%s: result not on the GPU", what);
    t_assert_shape(gpu, ct_tensor_shape(cpu), ct_tensor_ndim(cpu));
    cr_assert_eq(ct_tensor_dtype(gpu), ct_tensor_dtype(cpu), "%s: dtype %s, CPU %s", what,
                 ct_dtype_name(ct_tensor_dtype(gpu)), ct_dtype_name(ct_tensor_dtype(cpu)));
    double *c = t_values(cpu), *g = t_values(gpu);
    for (int64_t i = 0; i < ct_tensor_numel(cpu); i++) {
        if (isnan(c[i]))
            cr_assert(isnan(g[i]), "%s: element %lld of %s: CUDA %.9g, CPU NaN", what, (long long)i, ct_shape_str(cpu),
                      g[i]);
        else if (isinf(c[i]))
            cr_assert_eq(g[i], c[i], "%s: element %lld of %s: CUDA %.9g, CPU %g", what, (long long)i, ct_shape_str(cpu),
                         g[i], c[i]);
        else
            cr_assert(fabs(g[i] - c[i]) <= tol * fmax(1.0, fabs(c[i])),
                      "%s (%s): element %lld of %s: CUDA %.9g, CPU %.9g", what, ct_dtype_name(ct_tensor_dtype(cpu)),
                      (long long)i, ct_shape_str(cpu), g[i], c[i]);
    }
    free(c);
    free(g);
}

/* Fill the allocator's cache with a block of 0xff bytes (NaN in every floating dtype, 255 in
 * U8) of the size of the next output, so that the output very likely lands on it and an
 * element the kernel skips shows. */
static void poison_next(int64_t numel, ct_dtype dtype) {
    int64_t bytes = numel * (int64_t)ct_dtype_size(dtype);
    if (bytes == 0)
        return;
    ct_tensor *junk = ct_full(&bytes, 1, 255, CT_U8, CT_CUDA(0));
    cr_assert_not_null(junk, "%s", ct_last_error_message());
    ct_tensor_free(junk);
}

/* ---- inputs ------------------------------------------------------------------------------- */

/* How an input of a given (logical) shape lies in memory. */
typedef enum layout {
    CONTIGUOUS,
    TRANSPOSED, /* the last two dims swapped in memory */
    STEPPED,    /* every other element of the last dim */
    OFFSET,     /* starts one element into its storage: misaligned for vector accesses */
    EXPANDED,   /* dim 0 broadcast from size 1 (stride 0) */
} layout;

/* A pair of equal inputs, one per device: leaves (requiring grad when asked) and the views
 * of them that the ops get. */
typedef struct input {
    ct_tensor *cpu_leaf, *gpu_leaf, *cpu, *gpu;
} input;

static ct_tensor *view_as(ct_tensor *leaf, layout how, const int64_t *shape, int ndim) {
    switch (how) {
    case TRANSPOSED: return ct_transpose(leaf, ndim - 2, ndim - 1);
    case STEPPED: return ct_slice(leaf, ndim - 1, 0, 2 * shape[ndim - 1], 2);
    case OFFSET: return ct_slice(leaf, ndim - 1, 1, shape[ndim - 1] + 1, 1);
    case EXPANDED: return ct_expand(leaf, shape, ndim);
    default: return leaf;
    }
}

/* Values uniform in [lo, hi) (integers when `integral`, so that ties occur), cast to `dtype`. */
static input make_input(const int64_t *shape, int ndim, layout how, ct_dtype dtype, double lo, double hi, bool integral,
                        bool grad) {
    int64_t leaf_shape[CT_MAX_DIMS];
    memcpy(leaf_shape, shape, sizeof(int64_t) * (size_t)ndim);
    if (how == TRANSPOSED) {
        leaf_shape[ndim - 2] = shape[ndim - 1];
        leaf_shape[ndim - 1] = shape[ndim - 2];
    } else if (how == STEPPED) {
        leaf_shape[ndim - 1] = 2 * shape[ndim - 1];
    } else if (how == OFFSET) {
        leaf_shape[ndim - 1] = shape[ndim - 1] + 1;
    } else if (how == EXPANDED) {
        leaf_shape[0] = 1;
    }
    ct_tensor *base = t_rand(leaf_shape, ndim, CT_F32, lo, hi);
    if (integral || dtype == CT_I32 || dtype == CT_U8)
        base = ct_cast(base, CT_I32);
    input in;
    in.cpu_leaf = ct_cast(base, dtype);
    in.gpu_leaf = ct_to_device(in.cpu_leaf, CT_CUDA(0));
    cr_assert_not_null(in.gpu_leaf, "%s", ct_last_error_message());
    if (grad) {
        ct_requires_grad(in.cpu_leaf, true);
        ct_requires_grad(in.gpu_leaf, true);
    }
    in.cpu = view_as(in.cpu_leaf, how, shape, ndim);
    in.gpu = view_as(in.gpu_leaf, how, shape, ndim);
    cr_assert_not_null(in.gpu, "%s", ct_last_error_message());
    return in;
}

/* Backward from both outputs with the same random output gradient; then the leaves' grads
 * must match. */
static void assert_backward_parity(const char *what, ct_tensor *cpu_out, ct_tensor *gpu_out, const input *inputs,
                                   int n_inputs, double tol) {
    if (ct_tensor_numel(cpu_out) == 0)
        return;
    ct_dtype dtype = ct_tensor_dtype(cpu_out);
    ct_tensor *w = ct_cast(t_rand(ct_tensor_shape(cpu_out), ct_tensor_ndim(cpu_out), CT_F32, -1, 1), dtype);
    ct_tensor *w_gpu = ct_to_device(w, CT_CUDA(0));
    cr_assert_eq(ct_backward_ex(cpu_out, w, false), CT_OK, "%s: CPU backward: %s", what, ct_last_error_message());
    cr_assert_eq(ct_backward_ex(gpu_out, w_gpu, false), CT_OK, "%s: CUDA backward: %s", what, ct_last_error_message());
    for (int i = 0; i < n_inputs; i++) {
        if (!ct_tensor_requires_grad(inputs[i].cpu_leaf))
            continue;
        char name[224];
        snprintf(name, sizeof name, "%s: gradient of input %d", what, i);
        assert_parity(name, ct_grad(inputs[i].cpu_leaf), ct_grad(inputs[i].gpu_leaf), tol);
    }
}

/* ---- binary ops ------------------------------------------------------------------------------ */

typedef struct binary_case {
    const char *name;
    ct_tensor *(*op)(const ct_tensor *a, const ct_tensor *b, double p);
    double p;
    double a_lo, a_hi, b_lo, b_hi;
    bool differentiable;
} binary_case;

static ct_tensor *op_add(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_add(a, b);
}
static ct_tensor *op_sub(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_sub(a, b);
}
static ct_tensor *op_mul(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_mul(a, b);
}
static ct_tensor *op_div(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_div(a, b);
}
static ct_tensor *op_pow(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_pow(a, b);
}
static ct_tensor *op_maximum(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_maximum(a, b);
}
static ct_tensor *op_minimum(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_minimum(a, b);
}
static ct_tensor *op_add_scaled(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_add_scaled(a, b, p);
}
static ct_tensor *op_eq(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_eq(a, b);
}
static ct_tensor *op_ne(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_ne(a, b);
}
static ct_tensor *op_lt(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_lt(a, b);
}
static ct_tensor *op_le(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_le(a, b);
}
static ct_tensor *op_gt(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_gt(a, b);
}
static ct_tensor *op_ge(const ct_tensor *a, const ct_tensor *b, double p) {
    return ct_ge(a, b);
}

static const binary_case binary_cases[] = {
    {"add", op_add, 0, -2, 2, -2, 2, true},
    {"sub", op_sub, 0, -2, 2, -2, 2, true},
    {"mul", op_mul, 0, -2, 2, -2, 2, true},
    {"div", op_div, 0, -2, 2, 0.5, 2, true},
    {"pow", op_pow, 0, 0.5, 2, -2, 2, true},
    {"maximum", op_maximum, 0, -2, 2, -2, 2, true},
    {"minimum", op_minimum, 0, -2, 2, -2, 2, true},
    {"add_scaled(0.5)", op_add_scaled, 0.5, -2, 2, -2, 2, true},
    {"add_scaled(1)", op_add_scaled, 1.0, -2, 2, -2, 2, true},
    {"eq", op_eq, 0, -3, 3, -3, 3, false},
    {"ne", op_ne, 0, -3, 3, -3, 3, false},
    {"lt", op_lt, 0, -3, 3, -3, 3, false},
    {"le", op_le, 0, -3, 3, -3, 3, false},
    {"gt", op_gt, 0, -3, 3, -3, 3, false},
    {"ge", op_ge, 0, -3, 3, -3, 3, false},
};
#define N_BINARY_CASES (int)(sizeof binary_cases / sizeof binary_cases[0])

/* Operand geometries: shapes of a and b (the output broadcasts them) and their layouts. */
typedef struct binary_shape {
    int a_ndim, b_ndim;
    int64_t a_shape[3], b_shape[3];
    layout a_layout, b_layout;
} binary_shape;

static const binary_shape binary_shapes[] = {
    {1, 1, {1}, {1}, CONTIGUOUS, CONTIGUOUS},
    {1, 1, {3}, {3}, CONTIGUOUS, CONTIGUOUS},
    {1, 1, {1023}, {1023}, CONTIGUOUS, CONTIGUOUS},
    {1, 1, {1025}, {1025}, CONTIGUOUS, CONTIGUOUS},
    {3, 3, {4, 5, 7}, {4, 5, 7}, CONTIGUOUS, CONTIGUOUS},
    {1, 0, {1025}, {0}, CONTIGUOUS, CONTIGUOUS},       /* scalar on the right */
    {0, 1, {0}, {1023}, CONTIGUOUS, CONTIGUOUS},       /* scalar on the left */
    {2, 1, {64, 33}, {33}, CONTIGUOUS, CONTIGUOUS},    /* a bias row */
    {3, 2, {4, 1, 7}, {5, 1}, CONTIGUOUS, CONTIGUOUS}, /* both broadcast */
    {2, 2, {33, 17}, {33, 17}, TRANSPOSED, CONTIGUOUS},
    {2, 2, {9, 40}, {9, 40}, STEPPED, TRANSPOSED},
    {1, 1, {1025}, {1025}, OFFSET, CONTIGUOUS}, /* misaligned: no vector path */
    {1, 1, {1023}, {1023}, CONTIGUOUS, OFFSET},
    {2, 2, {6, 35}, {6, 35}, EXPANDED, CONTIGUOUS},
    {2, 1, {0, 5}, {5}, CONTIGUOUS, CONTIGUOUS}, /* empty */
};
#define N_BINARY_SHAPES (int)(sizeof binary_shapes / sizeof binary_shapes[0])

static void run_binary(const binary_case *c, const binary_shape *s, ct_dtype dtype) {
    bool cmp = !c->differentiable;
    bool grad = c->differentiable && ct_dtype_is_float(dtype);
    double a_lo = c->a_lo, a_hi = c->a_hi, b_lo = c->b_lo, b_hi = c->b_hi;
    if (dtype == CT_U8) { /* non-negative, and room for saturation both ways */
        a_lo = fmax(a_lo, 0) * 60;
        a_hi *= 60;
        b_lo = fmax(b_lo, 0) * 60;
        b_hi *= 60;
    }
    if (c->op == op_pow && (dtype == CT_I32 || dtype == CT_U8)) {
        a_lo = dtype == CT_U8 ? 0 : -5;
        a_hi = 6;
        b_lo = dtype == CT_U8 ? 0 : -2;
        b_hi = 7;
    }
    input in[2] = {make_input(s->a_shape, s->a_ndim, s->a_layout, dtype, a_lo, a_hi, cmp, grad),
                   make_input(s->b_shape, s->b_ndim, s->b_layout, dtype, b_lo, b_hi, cmp, grad)};
    char what[160];
    snprintf(what, sizeof what, "%s %s (%s) with %s (%s)", c->name, ct_dtype_name(dtype), ct_shape_str(in[0].cpu),
             ct_shape_str(in[1].cpu), s->a_layout == OFFSET || s->b_layout == OFFSET ? "misaligned" : "view");
    ct_tensor *cpu_out = c->op(in[0].cpu, in[1].cpu, c->p);
    cr_assert_not_null(cpu_out, "%s: %s", what, ct_last_error_message());
    poison_next(ct_tensor_numel(cpu_out), ct_tensor_dtype(cpu_out));
    ct_tensor *gpu_out = c->op(in[0].gpu, in[1].gpu, c->p);
    assert_parity(what, cpu_out, gpu_out, cmp ? 0 : tolerance(dtype));
    if (grad)
        assert_backward_parity(what, cpu_out, gpu_out, in, 2, tolerance(dtype));
}

Test(cuda_elementwise, binary_ops_and_their_gradients_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(11);
    T_NO_LEAK({
        for (int k = 0; k < N_FLOAT_DTYPES; k++)
            for (int c = 0; c < N_BINARY_CASES; c++)
                for (int s = 0; s < N_BINARY_SHAPES; s++) {
                    ct_scope_begin();
                    run_binary(&binary_cases[c], &binary_shapes[s], float_dtypes[k]);
                    ct_scope_end();
                }
    });
}

Test(cuda_elementwise, integer_binary_ops_match_the_cpu_exactly) {
    T_REQUIRE_GPU();
    ct_manual_seed(12);
    const ct_dtype dtypes[] = {CT_I32, CT_U8};
    T_NO_LEAK({
        for (int k = 0; k < 2; k++)
            for (int c = 0; c < N_BINARY_CASES; c++)
                for (int s = 0; s < N_BINARY_SHAPES; s++) {
                    ct_scope_begin();
                    run_binary(&binary_cases[c], &binary_shapes[s], dtypes[k]);
                    ct_scope_end();
                }
    });
}

Test(cuda_elementwise, division_by_zero_saturates_integers_like_the_cpu) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        const int32_t av[] = {7, -7, 0, 5, INT32_MAX, INT32_MIN, 9, -9};
        const int32_t bv[] = {0, 0, 0, 2, -1, -1, 4, 4};
        ct_tensor *a = ct_from_host(av, (int64_t[]){8}, 1, CT_I32, CT_CPU);
        ct_tensor *b = ct_from_host(bv, (int64_t[]){8}, 1, CT_I32, CT_CPU);
        ct_tensor *ag = ct_to_device(a, CT_CUDA(0)), *bg = ct_to_device(b, CT_CUDA(0));
        assert_parity("i32 div", ct_div(a, b), ct_div(ag, bg), 0);
        assert_parity("i32 mul", ct_mul(a, a), ct_mul(ag, ag), 0);
        assert_parity("i32 neg", ct_neg(a), ct_neg(ag), 0);
        assert_parity("i32 pow", ct_pow(b, a), ct_pow(bg, ag), 0);
    });
}

/* a + alpha * b rounds the product before the sum on both devices, where nvcc would fuse
 * them into one FMA (and a CPU build with -mfma would too): on I32, computed in double and
 * truncated, the fused sum of each of these pairs truncates to one nearer zero than `want`
 * (alpha 0.7). Out of place and in place, on the GPU and on the CPU. */
Test(cuda_elementwise, add_scaled_rounds_the_product_before_the_sum) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        const int32_t av[] = {500, -296, 16, -555, 301, -117, 571, 239};
        const int32_t bv[] = {-940, 950, -30, 970, -980, 230, -850, -980};
        const double want[] = {-158, 369, -5, 124, -385, 44, -24, -447};
        ct_tensor *a = ct_from_host(av, (int64_t[]){8}, 1, CT_I32, CT_CPU);
        ct_tensor *b = ct_from_host(bv, (int64_t[]){8}, 1, CT_I32, CT_CPU);
        ct_tensor *ag = ct_to_device(a, CT_CUDA(0)), *bg = ct_to_device(b, CT_CUDA(0));
        ct_tensor *c = ct_add_scaled(a, b, 0.7), *g = ct_add_scaled(ag, bg, 0.7);
        cr_assert_eq(ct_add_scaled_(ag, bg, 0.7), CT_OK, "%s", ct_last_error_message());
        ct_tensor *results[] = {c, g, ag};
        for (int r = 0; r < 3; r++) {
            double *v = t_values(results[r]);
            for (int i = 0; i < 8; i++)
                cr_expect_eq(v[i], want[i], "%s: %d + 0.7 * %d is %g, not %g",
                             r == 0 ? "CPU" : r == 1 ? "GPU" : "GPU in place", av[i], bv[i], v[i], want[i]);
            free(v);
        }
    });
}

Test(cuda_elementwise, nan_propagates_like_on_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(13);
    T_NO_LEAK({
        for (int k = 0; k < N_FLOAT_DTYPES; k++) {
            ct_dtype dtype = float_dtypes[k];
            int64_t n = 1030;
            input a = make_input(&n, 1, CONTIGUOUS, dtype, -2, 2, true, true);
            input b = make_input(&n, 1, CONTIGUOUS, dtype, -2, 2, true, true);
            /* NaN in a at every 5th element, in b at every 7th (both at every 35th); ties elsewhere */
            ct_no_grad_begin();
            cr_assert_eq(ct_fill_(ct_slice(a.cpu_leaf, 0, 0, n, 5), NAN), CT_OK);
            cr_assert_eq(ct_fill_(ct_slice(a.gpu_leaf, 0, 0, n, 5), NAN), CT_OK);
            cr_assert_eq(ct_fill_(ct_slice(b.cpu_leaf, 0, 0, n, 7), NAN), CT_OK);
            cr_assert_eq(ct_fill_(ct_slice(b.gpu_leaf, 0, 0, n, 7), NAN), CT_OK);
            ct_no_grad_end();
            input both[2] = {a, b};
            ct_tensor *c = ct_maximum(a.cpu, b.cpu), *g = ct_maximum(a.gpu, b.gpu);
            assert_parity("maximum with NaN", c, g, tolerance(dtype));
            assert_backward_parity("maximum with NaN", c, g, both, 2, tolerance(dtype));
            c = ct_minimum(b.cpu, a.cpu), g = ct_minimum(b.gpu, a.gpu);
            assert_parity("minimum with NaN", c, g, tolerance(dtype));
            assert_backward_parity("minimum with NaN", c, g, both, 2, tolerance(dtype));
            c = ct_clamp(a.cpu, -1, 1), g = ct_clamp(a.gpu, -1, 1);
            assert_parity("clamp with NaN", c, g, tolerance(dtype));
            assert_backward_parity("clamp with NaN", c, g, both, 1, tolerance(dtype));
            c = ct_relu(a.cpu), g = ct_relu(a.gpu);
            assert_parity("relu with NaN", c, g, tolerance(dtype));
            assert_backward_parity("relu with NaN", c, g, both, 1, tolerance(dtype));
            assert_parity("eq with NaN", ct_eq(a.cpu, b.cpu), ct_eq(a.gpu, b.gpu), 0);
            assert_parity("ne with NaN", ct_ne(a.cpu, b.cpu), ct_ne(a.gpu, b.gpu), 0);
        }
    });
}

/* ---- unary ops and activations ------------------------------------------------------------ */

typedef struct unary_case {
    const char *name;
    ct_tensor *(*op)(const ct_tensor *a, const double *p);
    double p[2];
    double lo, hi;
    bool integers; /* also defined on I32 / U8 */
} unary_case;

static ct_tensor *op_neg(const ct_tensor *a, const double *p) {
    return ct_neg(a);
}
static ct_tensor *op_exp(const ct_tensor *a, const double *p) {
    return ct_exp(a);
}
static ct_tensor *op_log(const ct_tensor *a, const double *p) {
    return ct_log(a);
}
static ct_tensor *op_sqrt(const ct_tensor *a, const double *p) {
    return ct_sqrt(a);
}
static ct_tensor *op_rsqrt(const ct_tensor *a, const double *p) {
    return ct_rsqrt(a);
}
static ct_tensor *op_abs(const ct_tensor *a, const double *p) {
    return ct_abs(a);
}
static ct_tensor *op_add_scalar(const ct_tensor *a, const double *p) {
    return ct_add_scalar(a, p[0]);
}
static ct_tensor *op_mul_scalar(const ct_tensor *a, const double *p) {
    return ct_mul_scalar(a, p[0]);
}
static ct_tensor *op_pow_scalar(const ct_tensor *a, const double *p) {
    return ct_pow_scalar(a, p[0]);
}
static ct_tensor *op_clamp(const ct_tensor *a, const double *p) {
    return ct_clamp(a, p[0], p[1]);
}
static ct_tensor *op_relu(const ct_tensor *a, const double *p) {
    return ct_relu(a);
}
static ct_tensor *op_leaky_relu(const ct_tensor *a, const double *p) {
    return ct_leaky_relu(a, p[0]);
}
static ct_tensor *op_elu(const ct_tensor *a, const double *p) {
    return ct_elu(a, p[0]);
}
static ct_tensor *op_gelu_erf(const ct_tensor *a, const double *p) {
    return ct_gelu(a, CT_GELU_ERF);
}
static ct_tensor *op_gelu_tanh(const ct_tensor *a, const double *p) {
    return ct_gelu(a, CT_GELU_TANH);
}
static ct_tensor *op_silu(const ct_tensor *a, const double *p) {
    return ct_silu(a);
}
static ct_tensor *op_sigmoid(const ct_tensor *a, const double *p) {
    return ct_sigmoid(a);
}
static ct_tensor *op_tanh(const ct_tensor *a, const double *p) {
    return ct_tanh(a);
}
static ct_tensor *op_softplus(const ct_tensor *a, const double *p) {
    return ct_softplus(a, p[0], p[1]);
}

static const unary_case unary_cases[] = {
    {"neg", op_neg, {0, 0}, -2, 2, true},
    {"exp", op_exp, {0, 0}, -3, 3, true},
    {"log", op_log, {0, 0}, 0.1, 5, true},
    {"sqrt", op_sqrt, {0, 0}, 0.1, 5, true},
    {"rsqrt", op_rsqrt, {0, 0}, 0.1, 5, false},
    {"abs", op_abs, {0, 0}, -2, 2, true},
    {"add_scalar", op_add_scalar, {1.5, 0}, -2, 2, true},
    {"mul_scalar", op_mul_scalar, {-2.5, 0}, -2, 2, true},
    {"pow_scalar(2)", op_pow_scalar, {2, 0}, -2, 2, true},
    {"pow_scalar(3)", op_pow_scalar, {3, 0}, -2, 2, true},
    {"pow_scalar(0.5)", op_pow_scalar, {0.5, 0}, 0.1, 5, false},
    {"clamp", op_clamp, {-0.5, 0.7}, -2, 2, true},
    {"relu", op_relu, {0, 0}, -3, 3, true},
    {"leaky_relu", op_leaky_relu, {0.01, 0}, -3, 3, false},
    {"leaky_relu(-0.3)", op_leaky_relu, {-0.3, 0}, -3, 3, false},
    {"elu", op_elu, {1.0, 0}, -4, 4, false},
    {"elu(0.5)", op_elu, {0.5, 0}, -4, 4, false},
    {"gelu", op_gelu_erf, {0, 0}, -6, 6, false},
    {"gelu(tanh)", op_gelu_tanh, {0, 0}, -6, 6, false},
    {"silu", op_silu, {0, 0}, -8, 8, false},
    {"sigmoid", op_sigmoid, {0, 0}, -12, 12, false},
    {"tanh", op_tanh, {0, 0}, -5, 5, false},
    {"softplus", op_softplus, {1, 20}, -30, 30, false},
    {"softplus(2, 1.5)", op_softplus, {2, 1.5}, -4, 4, false},
};
#define N_UNARY_CASES (int)(sizeof unary_cases / sizeof unary_cases[0])

typedef struct unary_shape {
    int ndim;
    int64_t shape[3];
    layout how;
} unary_shape;

static const unary_shape unary_shapes[] = {
    {1, {1}, CONTIGUOUS},       {1, {3}, CONTIGUOUS},   {1, {1023}, CONTIGUOUS},   {1, {1025}, CONTIGUOUS},
    {3, {4, 5, 7}, CONTIGUOUS}, {0, {0}, CONTIGUOUS},   {2, {33, 17}, TRANSPOSED}, {2, {9, 40}, STEPPED},
    {1, {1025}, OFFSET},        {2, {6, 35}, EXPANDED}, {2, {3, 0}, CONTIGUOUS},
};
#define N_UNARY_SHAPES (int)(sizeof unary_shapes / sizeof unary_shapes[0])

static void run_unary(const unary_case *c, const unary_shape *s, ct_dtype dtype) {
    bool grad = ct_dtype_is_float(dtype);
    double lo = c->lo, hi = c->hi;
    if (dtype == CT_U8) {
        lo = fmax(lo, 0) * 50;
        hi *= 50;
    } else if (dtype == CT_I32) {
        lo *= 20;
        hi *= 20;
    }
    input in = make_input(s->shape, s->ndim, s->how, dtype, lo, hi, false, grad);
    char what[160];
    snprintf(what, sizeof what, "%s %s %s%s", c->name, ct_dtype_name(dtype), ct_shape_str(in.cpu),
             s->how == OFFSET ? " misaligned" : (ct_tensor_is_contiguous(in.cpu) ? "" : " view"));
    ct_tensor *cpu_out = c->op(in.cpu, c->p);
    cr_assert_not_null(cpu_out, "%s: %s", what, ct_last_error_message());
    poison_next(ct_tensor_numel(cpu_out), dtype);
    ct_tensor *gpu_out = c->op(in.gpu, c->p);
    assert_parity(what, cpu_out, gpu_out, tolerance(dtype));
    if (grad)
        assert_backward_parity(what, cpu_out, gpu_out, &in, 1, tolerance(dtype));
}

Test(cuda_elementwise, unary_ops_activations_and_their_gradients_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(21);
    T_NO_LEAK({
        for (int k = 0; k < N_FLOAT_DTYPES; k++)
            for (int c = 0; c < N_UNARY_CASES; c++)
                for (int s = 0; s < N_UNARY_SHAPES; s++) {
                    ct_scope_begin();
                    run_unary(&unary_cases[c], &unary_shapes[s], float_dtypes[k]);
                    ct_scope_end();
                }
    });
}

Test(cuda_elementwise, integer_unary_ops_match_the_cpu_exactly) {
    T_REQUIRE_GPU();
    ct_manual_seed(22);
    const ct_dtype dtypes[] = {CT_I32, CT_U8};
    T_NO_LEAK({
        for (int k = 0; k < 2; k++)
            for (int c = 0; c < N_UNARY_CASES; c++) {
                if (!unary_cases[c].integers)
                    continue;
                for (int s = 0; s < N_UNARY_SHAPES; s++) {
                    ct_scope_begin();
                    run_unary(&unary_cases[c], &unary_shapes[s], dtypes[k]);
                    ct_scope_end();
                }
            }
    });
}

/* ---- where and masked_fill ---------------------------------------------------------------- */

Test(cuda_elementwise, where_and_masked_fill_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(31);
    const ct_dtype dtypes[] = {CT_F32, CT_F16, CT_BF16, CT_I32, CT_U8};
    const struct {
        int c_ndim, a_ndim, b_ndim;
        int64_t c_shape[2], a_shape[2], b_shape[2];
        layout a_layout;
    } shapes[] = {
        {1, 1, 1, {1025}, {1025}, {1025}, CONTIGUOUS},  {2, 2, 1, {5, 1}, {5, 7}, {7}, CONTIGUOUS},
        {2, 2, 0, {33, 17}, {33, 17}, {0}, TRANSPOSED}, {1, 1, 1, {1023}, {1023}, {1023}, OFFSET},
        {2, 2, 2, {9, 40}, {9, 40}, {1, 40}, STEPPED},  {2, 2, 2, {0, 3}, {0, 3}, {0, 3}, CONTIGUOUS},
    };
    T_NO_LEAK({
        for (int k = 0; k < 5; k++)
            for (unsigned s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                ct_scope_begin();
                ct_dtype dtype = dtypes[k];
                double tol = tolerance(dtype);
                bool grad = ct_dtype_is_float(dtype);
                input cond_src =
                    make_input(shapes[s].c_shape, shapes[s].c_ndim, CONTIGUOUS, CT_F32, -1, 1, false, false);
                ct_tensor *cond = ct_gt(cond_src.cpu, ct_scalar(0, CT_F32, CT_CPU));
                ct_tensor *cond_gpu = ct_to_device(cond, CT_CUDA(0));
                input in[2] = {
                    make_input(shapes[s].a_shape, shapes[s].a_ndim, shapes[s].a_layout, dtype, 0, 100, false, grad),
                    make_input(shapes[s].b_shape, shapes[s].b_ndim, CONTIGUOUS, dtype, 0, 100, false, grad)};
                char what[160];
                snprintf(what, sizeof what, "where %s cond %s a %s b %s", ct_dtype_name(dtype), ct_shape_str(cond),
                         ct_shape_str(in[0].cpu), ct_shape_str(in[1].cpu));
                ct_tensor *c = ct_where(cond, in[0].cpu, in[1].cpu);
                cr_assert_not_null(c, "%s: %s", what, ct_last_error_message());
                poison_next(ct_tensor_numel(c), dtype);
                ct_tensor *g = ct_where(cond_gpu, in[0].gpu, in[1].gpu);
                assert_parity(what, c, g, tol);
                if (grad)
                    assert_backward_parity(what, c, g, in, 2, tol);

                /* masked_fill: the mask broadcasts to t in every case above */
                input t =
                    make_input(shapes[s].a_shape, shapes[s].a_ndim, shapes[s].a_layout, dtype, -50, 50, false, grad);
                double fill = grad ? -INFINITY : 77;
                snprintf(what, sizeof what, "masked_fill %s t %s mask %s", ct_dtype_name(dtype), ct_shape_str(t.cpu),
                         ct_shape_str(cond));
                c = ct_masked_fill(t.cpu, cond, fill);
                cr_assert_not_null(c, "%s: %s", what, ct_last_error_message());
                poison_next(ct_tensor_numel(c), dtype);
                g = ct_masked_fill(t.gpu, cond_gpu, fill);
                assert_parity(what, c, g, tol);
                if (grad)
                    assert_backward_parity(what, c, g, &t, 1, tol);
                ct_scope_end();
            }
    });
}

/* ---- in place ----------------------------------------------------------------------------- */

typedef enum inplace_op { ADD_, ADD_SCALED_, MUL_, MUL_SCALAR_ } inplace_op;

static ct_status run_inplace(inplace_op op, ct_tensor *a, const ct_tensor *b) {
    switch (op) {
    case ADD_: return ct_add_(a, b);
    case ADD_SCALED_: return ct_add_scaled_(a, b, -0.75);
    case MUL_: return ct_mul_(a, b);
    default: return ct_mul_scalar_(a, 1.25);
    }
}

/* In-place ops on views inside NaN-filled buffers: every element of the view must be updated
 * like on the CPU, and every element outside it must still be NaN. */
Test(cuda_elementwise, in_place_ops_write_exactly_their_view) {
    T_REQUIRE_GPU();
    ct_manual_seed(41);
    const struct {
        int64_t base[2];
        int64_t b_shape[2];
        int b_ndim;
        int how; /* 0: rows 1..4 (contiguous), 1: every other column, 2: 1-D from offset 1 */
    } cases[] = {
        {{6, 1025}, {1025}, 1, 0}, {{6, 64}, {6, 32}, 2, 1}, {{1, 1027}, {0}, 0, 2},
        {{6, 16}, {0}, 0, 0},      {{6, 3}, {1, 3}, 2, 0},
    };
    T_NO_LEAK({
        for (int k = 0; k < N_FLOAT_DTYPES; k++)
            for (int op = ADD_; op <= MUL_SCALAR_; op++)
                for (unsigned s = 0; s < sizeof cases / sizeof cases[0]; s++) {
                    ct_scope_begin();
                    ct_dtype dtype = float_dtypes[k];
                    const int64_t *base_shape = cases[s].base;
                    ct_tensor *base_cpu = ct_full(base_shape, 2, NAN, dtype, CT_CPU);
                    ct_tensor *base_gpu = ct_full(base_shape, 2, NAN, dtype, CT_CUDA(0));
                    ct_tensor *view_cpu, *view_gpu;
                    if (cases[s].how == 0) {
                        view_cpu = ct_slice(base_cpu, 0, 1, 5, 1);
                        view_gpu = ct_slice(base_gpu, 0, 1, 5, 1);
                    } else if (cases[s].how == 1) {
                        view_cpu = ct_slice(base_cpu, 1, 0, base_shape[1], 2);
                        view_gpu = ct_slice(base_gpu, 1, 0, base_shape[1], 2);
                    } else {
                        view_cpu = ct_slice(ct_select(base_cpu, 0, 0), 0, 1, base_shape[1] - 1, 1);
                        view_gpu = ct_slice(ct_select(base_gpu, 0, 0), 0, 1, base_shape[1] - 1, 1);
                    }
                    ct_tensor *start =
                        ct_cast(t_rand(ct_tensor_shape(view_cpu), ct_tensor_ndim(view_cpu), CT_F32, -2, 2), dtype);
                    cr_assert_eq(ct_copy_(view_cpu, start), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(ct_copy_(view_gpu, start), CT_OK, "%s", ct_last_error_message());
                    ct_tensor *b = ct_cast(t_rand(cases[s].b_shape, cases[s].b_ndim, CT_F32, -2, 2), dtype);
                    ct_tensor *b_gpu = ct_to_device(b, CT_CUDA(0));
                    cr_assert_eq(run_inplace((inplace_op)op, view_cpu, b), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(run_inplace((inplace_op)op, view_gpu, b_gpu), CT_OK, "%s", ct_last_error_message());
                    char what[160];
                    snprintf(what, sizeof what, "in-place op %d on %s view %d of %s", op, ct_dtype_name(dtype),
                             cases[s].how, ct_shape_str(base_cpu));
                    /* the whole buffer: NaN outside the view on both, equal values inside */
                    assert_parity(what, base_cpu, base_gpu, tolerance(dtype));
                    double *v = t_values(base_gpu);
                    int64_t nan_count = 0;
                    for (int64_t i = 0; i < ct_tensor_numel(base_gpu); i++)
                        nan_count += isnan(v[i]);
                    free(v);
                    cr_assert_eq(nan_count, ct_tensor_numel(base_gpu) - ct_tensor_numel(view_gpu), "%s: %lld NaN left",
                                 what, (long long)nan_count);
                    ct_scope_end();
                }
    });
}

/* ct_copy_ into a stepped view of a poisoned buffer, from every dtype to every dtype: a
 * broadcast row, a transposed source, and a CPU source (copied across devices). Conversions
 * are exact on both devices, so the whole buffer must equal the CPU's: the view converted,
 * everything else untouched (NaN, or 77 in the integer dtypes). */
Test(cuda_elementwise, copy_casts_and_broadcasts_into_views_like_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(61);
    const ct_dtype dtypes[] = {CT_F32, CT_F16, CT_BF16, CT_I32, CT_U8};
    T_NO_LEAK({
        for (int d = 0; d < 5; d++)
            for (int s = 0; s < 5; s++)
                for (int how = 0; how < 3; how++) {
                    ct_scope_begin();
                    ct_dtype dst = dtypes[d], src_dtype = dtypes[s];
                    double fill = ct_dtype_is_float(dst) ? NAN : 77;
                    ct_tensor *base = ct_full((int64_t[]){6, 41}, 2, fill, dst, CT_CPU);
                    ct_tensor *base_gpu = ct_full((int64_t[]){6, 41}, 2, fill, dst, CT_CUDA(0));
                    cr_assert_not_null(base_gpu, "%s", ct_last_error_message());
                    ct_tensor *view = ct_slice(base, 1, 1, 41, 2), *view_gpu = ct_slice(base_gpu, 1, 1, 41, 2);
                    /* (1, 20) broadcast, (20, 6) transposed, or (6, 20) left on the CPU */
                    const int64_t shapes[3][2] = {{1, 20}, {20, 6}, {6, 20}};
                    ct_tensor *src = ct_cast(t_rand(shapes[how], 2, CT_F32, -300, 300), src_dtype);
                    ct_tensor *src_gpu = how == 2 ? src : ct_to_device(src, CT_CUDA(0));
                    if (how == 1) {
                        src = ct_transpose(src, 0, 1);
                        src_gpu = ct_transpose(src_gpu, 0, 1);
                    }
                    cr_assert_eq(ct_copy_(view, src), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(ct_copy_(view_gpu, src_gpu), CT_OK, "%s", ct_last_error_message());
                    char what[96];
                    const char *source[3] = {"broadcast", "transposed", "CPU"};
                    snprintf(what, sizeof what, "copy_ %s -> %s view (%s source)", ct_dtype_name(src_dtype),
                             ct_dtype_name(dst), source[how]);
                    assert_parity(what, base, base_gpu, 0);
                    ct_scope_end();
                }
    });
}

/* The in-place ops on I32 and U8 views (truncation toward zero, saturation), exactly like the
 * CPU; the rest of the buffer keeps its 77s. */
Test(cuda_elementwise, integer_in_place_ops_match_the_cpu_exactly) {
    T_REQUIRE_GPU();
    ct_manual_seed(62);
    const ct_dtype dtypes[] = {CT_I32, CT_U8};
    T_NO_LEAK({
        for (int k = 0; k < 2; k++)
            for (int op = ADD_; op <= MUL_SCALAR_; op++)
                for (int b_rows = 1; b_rows <= 6; b_rows += 5) {
                    ct_scope_begin();
                    ct_dtype dtype = dtypes[k];
                    double lo = dtype == CT_U8 ? 0 : -1000, hi = dtype == CT_U8 ? 200 : 1000;
                    ct_tensor *base = ct_full((int64_t[]){6, 64}, 2, 77, dtype, CT_CPU);
                    ct_tensor *base_gpu = ct_full((int64_t[]){6, 64}, 2, 77, dtype, CT_CUDA(0));
                    ct_tensor *view = ct_slice(base, 1, 0, 64, 2), *view_gpu = ct_slice(base_gpu, 1, 0, 64, 2);
                    ct_tensor *start = ct_cast(t_rand((int64_t[]){6, 32}, 2, CT_F32, lo, hi), dtype);
                    cr_assert_eq(ct_copy_(view, start), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(ct_copy_(view_gpu, start), CT_OK, "%s", ct_last_error_message());
                    ct_tensor *b = ct_cast(t_rand((int64_t[]){b_rows, 32}, 2, CT_F32, lo, hi), dtype);
                    cr_assert_eq(run_inplace((inplace_op)op, view, b), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(run_inplace((inplace_op)op, view_gpu, ct_to_device(b, CT_CUDA(0))), CT_OK, "%s",
                                 ct_last_error_message());
                    char what[96];
                    snprintf(what, sizeof what, "in-place op %d on a %s view, b of %d rows", op, ct_dtype_name(dtype),
                             b_rows);
                    assert_parity(what, base, base_gpu, 0);
                    ct_scope_end();
                }
    });
}

/* ---- the vector path's edges ------------------------------------------------------------ */

/* "add of 17 from offset 1" into what[96]. */
static const char *label(char *what, const char *op, int64_t n, int64_t offset) {
    snprintf(what, 96, "%s of %lld from offset %lld", op, (long long)n, (long long)offset);
    return what;
}

/* Sizes around every pack width (4 F32, 8 F16/BF16, 4-byte U8 outputs of comparisons), from
 * the start of an allocation (aligned: vector path) and from element 1, 2 and 4 (misaligned
 * for all but F32 at 4, which is 16-byte aligned again). */
Test(cuda_elementwise, odd_sizes_and_offsets_around_the_vector_width) {
    T_REQUIRE_GPU();
    ct_manual_seed(51);
    const int64_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 1023, 1024, 1025, 4099};
    const int64_t offsets[] = {0, 1, 2, 4};
    T_NO_LEAK({
        for (int k = 0; k < N_FLOAT_DTYPES; k++)
            for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
                for (unsigned o = 0; o < sizeof offsets / sizeof offsets[0]; o++) {
                    ct_scope_begin();
                    ct_dtype dtype = float_dtypes[k];
                    double tol = tolerance(dtype);
                    int64_t n = sizes[s], off = offsets[o], total = n + off;
                    ct_tensor *a_all = ct_cast(t_rand(&total, 1, CT_F32, -3, 3), dtype);
                    ct_tensor *b_all = ct_cast(t_rand(&total, 1, CT_F32, -3, 3), dtype);
                    ct_tensor *a = ct_slice(a_all, 0, off, total, 1), *b = ct_slice(b_all, 0, off, total, 1);
                    ct_tensor *ag = ct_slice(ct_to_device(a_all, CT_CUDA(0)), 0, off, total, 1);
                    ct_tensor *bg = ct_slice(ct_to_device(b_all, CT_CUDA(0)), 0, off, total, 1);
                    cr_assert_not_null(bg, "%s", ct_last_error_message());
                    ct_tensor *scalar = ct_scalar(0.75, dtype, CT_CPU), *scalar_g = ct_scalar(0.75, dtype, CT_CUDA(0));
                    char what[96];
                    ct_tensor *c = ct_add(a, b);
                    poison_next(n, dtype);
                    assert_parity(label(what, "add", n, off), c, ct_add(ag, bg), tol);
                    c = ct_mul(a, scalar);
                    poison_next(n, dtype);
                    assert_parity(label(what, "mul by a scalar", n, off), c, ct_mul(ag, scalar_g), tol);
                    c = ct_sub(scalar, b);
                    poison_next(n, dtype);
                    assert_parity(label(what, "scalar minus", n, off), c, ct_sub(scalar_g, bg), tol);
                    c = ct_lt(a, b);
                    poison_next(n, CT_U8);
                    assert_parity(label(what, "lt", n, off), c, ct_lt(ag, bg), 0);
                    c = ct_gelu(a, CT_GELU_TANH);
                    poison_next(n, dtype);
                    assert_parity(label(what, "gelu", n, off), c, ct_gelu(ag, CT_GELU_TANH), tol);
                    ct_scope_end();
                }
    });
}

/* ---- empty tensors, errors ------------------------------------------------------------------ */

Test(cuda_elementwise, empty_tensors_give_empty_results) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        const int64_t shape[] = {3, 0};
        ct_tensor *a = ct_empty(shape, 2, CT_F16, CT_CUDA(0)), *b = ct_empty(shape + 1, 1, CT_F16, CT_CUDA(0));
        ct_tensor *mask = ct_empty(shape, 2, CT_U8, CT_CUDA(0));
        t_assert_shape(ct_add(a, b), shape, 2);
        t_assert_shape(ct_gelu(a, CT_GELU_ERF), shape, 2);
        t_assert_shape(ct_gt(a, b), shape, 2);
        t_assert_shape(ct_where(mask, a, b), shape, 2);
        t_assert_shape(ct_masked_fill(a, mask, 1.0), shape, 2);
        cr_assert_eq(ct_add_(a, b), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_mul_scalar_(a, 2.0), CT_OK, "%s", ct_last_error_message());
    });
}

Test(cuda_elementwise, operands_on_different_devices_are_refused) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *cpu = ct_ones((int64_t[]){4}, 1, CT_F32, CT_CPU);
        ct_tensor *gpu = ct_ones((int64_t[]){4}, 1, CT_F32, CT_CUDA(0));
        cr_assert_null(ct_add(cpu, gpu));
        t_assert_error(CT_ERR_DEVICE, "ct_add", NULL);
        cr_assert_eq(ct_mul_(gpu, cpu), CT_ERR_DEVICE);
        t_assert_error(CT_ERR_DEVICE, "ct_mul_", NULL);
        cr_assert_null(ct_where(ct_gt(cpu, cpu), gpu, gpu));
        t_assert_error(CT_ERR_DEVICE, "ct_where", NULL);
    });
}

/* ---- over 2^31 bytes and 2^31 elements ---------------------------------------------------- */

/* `count` new CUDA tensors of n elements, or false (nothing kept) when the device lacks the
 * memory. */
static bool try_gpu_tensors(ct_tensor **out, int count, int64_t n, ct_dtype dtype) {
    for (int i = 0; i < count; i++) {
        out[i] = ct_empty(&n, 1, dtype, CT_CUDA(0));
        if (!out[i]) {
            cr_assert_eq(ct_last_error(), CT_ERR_MEMORY, "%s", ct_last_error_message());
            ct_clear_error();
            for (int j = 0; j < i; j++)
                ct_tensor_free(out[j]);
            return false;
        }
    }
    return true;
}

/* Copy n host elements into the CUDA tensor t. */
static void upload(ct_tensor *t, const void *host, int64_t n, ct_dtype dtype) {
    ct_scope_begin();
    ct_tensor *src = ct_from_host(host, &n, 1, dtype, CT_CPU);
    cr_assert_not_null(src, "%s", ct_last_error_message());
    cr_assert_eq(ct_copy_(t, src), CT_OK, "%s", ct_last_error_message());
    ct_scope_end();
}

/* 600M F32 elements (2.4 GB per tensor): the vector path with byte offsets past 2^31. */
Test(cuda_elementwise, add_over_2_gib_on_the_vector_path) {
    T_REQUIRE_GPU();
    const int64_t n = 600000000;
    ct_tensor *t[3];
    float *host = malloc((size_t)n * sizeof(float));
    if (!host || !try_gpu_tensors(t, 3, n, CT_F32)) {
        free(host);
        cr_skip_test("not enough memory for 3 x %lld f32 elements", (long long)n);
    }
    ct_tensor_free(t[2]); /* room for the sum */
    for (int64_t i = 0; i < n; i++)
        host[i] = (float)(i % 1000);
    upload(t[0], host, n, CT_F32);
    for (int64_t i = 0; i < n; i++)
        host[i] = (float)(i % 997) * 0.5f;
    upload(t[1], host, n, CT_F32);
    ct_tensor *sum = ct_add(t[0], t[1]);
    cr_assert_not_null(sum, "%s", ct_last_error_message());
    cr_assert_eq(ct_to_host(sum, host, (size_t)n * sizeof(float)), CT_OK, "%s", ct_last_error_message());
    for (int64_t i = 0; i < n; i++)
        if (host[i] != (float)(i % 1000) + (float)(i % 997) * 0.5f)
            cr_assert_fail("element %lld: %g, expected %g", (long long)i, host[i],
                           (float)(i % 1000) + (float)(i % 997) * 0.5f);
    free(host);
    ct_tensor_free(sum);
    ct_tensor_free(t[0]);
    ct_tensor_free(t[1]);
}

/* 2^31 + 4097 U8 elements: integers take the strided path, which indexes in 32 bits and so
 * runs in pieces; each piece must start where the previous one ended. */
Test(cuda_elementwise, add_over_2_pow_31_elements_in_pieces) {
    T_REQUIRE_GPU();
    const int64_t n = ((int64_t)1 << 31) + 4097;
    ct_tensor *t[2];
    uint8_t *host = malloc((size_t)n);
    if (!host || !try_gpu_tensors(t, 2, n, CT_U8)) {
        free(host);
        cr_skip_test("not enough memory for 2 x %lld u8 elements", (long long)n);
    }
    for (int64_t i = 0; i < n; i++)
        host[i] = (uint8_t)(i % 251);
    upload(t[0], host, n, CT_U8);
    for (int64_t i = 0; i < n; i++)
        host[i] = (uint8_t)(i % 13);
    upload(t[1], host, n, CT_U8);
    cr_assert_eq(ct_add_(t[0], t[1]), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_to_host(t[0], host, (size_t)n), CT_OK, "%s", ct_last_error_message());
    for (int64_t i = 0; i < n; i++) {
        int expected = (int)(i % 251) + (int)(i % 13);
        if (host[i] != (expected > 255 ? 255 : expected))
            cr_assert_fail("element %lld: %d, expected %d", (long long)i, host[i], expected > 255 ? 255 : expected);
    }
    free(host);
    for (int i = 0; i < 2; i++)
        ct_tensor_free(t[i]);
}
