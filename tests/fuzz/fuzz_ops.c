/* libFuzzer harness: metamorphic tests of the CPU ops' handling of geometry.
 *
 * From the input it builds small operands (0 to 4 dims of sizes 0..5, rarely one big dim,
 * every dtype) as views of larger bases (a dim selected away, slices with a start and a
 * step, a permutation, dims expanded from size 1, a reshape round trip), picks an op and
 * checks:
 *   - op(views) equals op(ct_contiguous(views)): the same status, shape, dtype and values;
 *   - for broadcasting ops, op(views) equals op(operands expanded to the result shape and
 *     copied contiguous);
 *   - the gradients with respect to the bases are the same through both forms;
 *   - each operand, its contiguous copy and the gradient of its base through the view hold
 *     what the view's description says (an oracle of the view machinery itself);
 *   - in-place ops on a view equal the same on a copy, and on two views of one storage
 *     they are refused only when the views overlap;
 *   - a refusal has a message, and no tensor outlives the input.
 * Values are small multiples of 1/2, so that sums, products and means are exact whatever
 * the order of the additions: those results must match bit for bit. Ops that divide by a
 * computed statistic or sum exponentials (var, std, logsumexp, softmax, the norms, the
 * losses) may add in another order on a strided operand; they, and every gradient, are
 * compared within a few ulps of the dtype (see tolerance()). A mismatch aborts, so libFuzzer
 * keeps the input. */
#include "tests/fuzz/fuzz_common.h"

#include <math.h>
#include <stdarg.h>

/* ---- reading the input ------------------------------------------------------------------ */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

/* A number in [0, m), 0 once the input is used up. */
static int rd(reader *r, int m) {
    if (m <= 1 || r->n == 0)
        return 0;
    int v = r->p[0];
    r->p++;
    r->n--;
    return v % m;
}

/* Big dims left for this input: one, so that kernels' paths for long rows, many lanes
 * and several threads (thresholds of 64 to 1 << 16 elements) run too. */
static int big_dims_left;

/* A dim size in 0..5, mostly non-zero; rarely (once per input) a big one. */
static int64_t rd_size(reader *r) {
    static const int64_t sizes[8] = {0, 1, 1, 2, 3, 4, 5, 3};
    static const int64_t big[8] = {16, 63, 64, 65, 256, 257, 520, 1029};
    int g = rd(r, 128);
    if (g == 127 && big_dims_left > 0) {
        big_dims_left--;
        return big[rd(r, 8)];
    }
    return sizes[g % 8];
}

static const ct_dtype dtypes[] = {CT_F32, CT_F64, CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
static ct_dtype rd_dtype(reader *r) {
    return dtypes[rd(r, 8)];
}

/* ---- operand geometry --------------------------------------------------------------------- */

enum { VALUES_HALVES, VALUES_INDEX, VALUES_MASK, VALUES_PROB };

/* How one operand of shape `shape` is cut from its base. The base holds the dims in layout
 * order: layout position j holds logical dim perm[j], of size start + (shape-1)*step + 1 +
 * tail (1 when expanded), and an extra dim at sel_pos that is selected away. */
typedef struct spec {
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    ct_dtype dtype;
    int perm[CT_MAX_DIMS];
    int64_t step[CT_MAX_DIMS], start[CT_MAX_DIMS], tail[CT_MAX_DIMS];
    bool expanded[CT_MAX_DIMS];
    int sel_pos;
    int64_t sel_size, sel_index;
    int post; /* 0: none; 1: flatten and reshape back; 2: unsqueeze then squeeze; 3: transpose twice */
    int values;
    int64_t lo, hi; /* VALUES_INDEX: integers in [lo, hi] */
    uint32_t seed;
} spec;

static void spec_init(spec *s, reader *r, int ndim, const int64_t *shape, ct_dtype dtype, bool allow_expand) {
    memset(s, 0, sizeof *s);
    s->ndim = ndim;
    s->dtype = dtype;
    s->values = VALUES_HALVES;
    memcpy(s->shape, shape, sizeof(int64_t) * (size_t)ndim);
    for (int d = 0; d < ndim; d++)
        s->perm[d] = d;
    int plain = rd(r, 4) == 0; /* a quarter of the operands are contiguous */
    if (!plain) {
        for (int d = ndim - 1; d > 0; d--) { /* Fisher-Yates */
            int j = rd(r, d + 1), t = s->perm[d];
            s->perm[d] = s->perm[j];
            s->perm[j] = t;
        }
    }
    int64_t numel = 1;
    for (int j = 0; j < ndim; j++) {
        int d = s->perm[j];
        s->step[j] = 1;
        if (!plain) {
            int g = rd(r, 8);
            s->expanded[j] = allow_expand && g == 7 && shape[d] != 1;
            if (!s->expanded[j]) {
                s->step[j] = g < 4 ? 1 : g - 2;
                s->start[j] = rd(r, 3);
                s->tail[j] = rd(r, 2);
            }
        }
        numel *= s->expanded[j] ? 1 : s->start[j] + (shape[d] ? (shape[d] - 1) * s->step[j] + 1 : 0) + s->tail[j];
    }
    s->sel_pos = -1;
    if (!plain && ndim < CT_MAX_DIMS && rd(r, 3) == 0) {
        s->sel_pos = rd(r, ndim + 1);
        s->sel_size = 1 + rd(r, 3);
        s->sel_index = rd(r, (int)s->sel_size);
        numel *= s->sel_size;
    }
    if (numel > 8192) { /* keep the bases small: plain steps */
        for (int j = 0; j < ndim; j++)
            s->step[j] = 1;
    }
    s->post = plain ? 0 : rd(r, 6);
    if (s->post > 3)
        s->post = 0;
    s->seed = 0x9e3779b9u * (uint32_t)(rd(r, 256) + 1) + (uint32_t)rd(r, 256);
}

static uint32_t next_random(uint32_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static double make_value(const spec *s, uint32_t *x) {
    uint32_t v = next_random(x) >> 8;
    switch (s->values) {
    case VALUES_INDEX: return (double)(s->lo + (int64_t)(v % (uint32_t)(s->hi - s->lo + 1)));
    case VALUES_MASK: return (double)(v % 3 == 0 ? 0 : v % 4);
    case VALUES_PROB: return (double)(v % 5) / 4.0;
    default:
        if (s->dtype == CT_U8)
            return (double)(v % 7);
        if (s->dtype == CT_I32)
            return (double)((int)(v % 13) - 6);
        return (double)((int)(v % 13) - 6) / 2.0;
    }
}

/* The shape of the spec's base; returns its ndim. */
static int spec_base_shape(const spec *s, int64_t *bshape) {
    int bn = 0;
    for (int j = 0; j < s->ndim; j++) {
        if (j == s->sel_pos)
            bshape[bn++] = s->sel_size;
        int d = s->perm[j];
        bshape[bn++] =
            s->expanded[j] ? 1 : s->start[j] + (s->shape[d] ? (s->shape[d] - 1) * s->step[j] + 1 : 0) + s->tail[j];
    }
    if (s->sel_pos == s->ndim)
        bshape[bn++] = s->sel_size;
    return bn;
}

static int64_t spec_base_numel(const spec *s) {
    int64_t bshape[CT_MAX_DIMS + 1], numel = 1;
    int bn = spec_base_shape(s, bshape);
    for (int d = 0; d < bn; d++)
        numel *= bshape[d];
    return numel;
}

/* A new base of the spec's dtype, filled from its seed (the same values on every call). */
static ct_tensor *spec_base(const spec *s) {
    int64_t bshape[CT_MAX_DIMS + 1];
    int bn = spec_base_shape(s, bshape);
    int64_t numel = 1;
    for (int d = 0; d < bn; d++)
        numel *= bshape[d];
    double *values = malloc(sizeof(double) * (size_t)(numel ? numel : 1));
    if (!values)
        abort();
    uint32_t x = s->seed | 1u;
    for (int64_t i = 0; i < numel; i++)
        values[i] = make_value(s, &x);
    ct_tensor *base = ct_from_host(values, bshape, bn, CT_F64, CT_CPU);
    free(values);
    if (base && s->dtype != CT_F64)
        base = ct_cast(base, s->dtype);
    if (!base) {
        fprintf(stderr, "making a base failed: %s\n", ct_last_error_message());
        abort();
    }
    return base;
}

/* A value as the spec's dtype holds it (the halves are exact in every floating dtype). */
static double as_dtype(ct_dtype dtype, double v) {
    if (dtype == CT_I32)
        return trunc(v);
    if (dtype == CT_U8)
        return v < 0 ? 0 : trunc(v);
    return v;
}

/* For each element of the spec's view, in row-major order, its position in the base
 * (row-major), computed from the spec alone: the oracle of the view machinery itself.
 * Returns the view's numel; *base_numel receives the base's. */
static int64_t *spec_positions(const spec *s, int64_t *numel_out, int64_t *base_numel) {
    int64_t bshape[CT_MAX_DIMS + 1], bstrides[CT_MAX_DIMS + 1];
    int bn = spec_base_shape(s, bshape);
    int64_t bnumel = 1;
    for (int d = bn - 1; d >= 0; d--) {
        bstrides[d] = bnumel;
        bnumel *= bshape[d];
    }
    int64_t numel = 1;
    for (int d = 0; d < s->ndim; d++)
        numel *= s->shape[d];
    int64_t *out = malloc(sizeof(int64_t) * (size_t)(numel ? numel : 1));
    if (!out)
        abort();
    for (int64_t i = 0; i < numel; i++) {
        int64_t coord[CT_MAX_DIMS], rest = i;
        for (int d = s->ndim - 1; d >= 0; d--) {
            coord[d] = rest % s->shape[d];
            rest /= s->shape[d];
        }
        int64_t at = 0;
        int b = 0;
        for (int j = 0; j < s->ndim; j++) {
            if (j == s->sel_pos)
                at += s->sel_index * bstrides[b++];
            if (!s->expanded[j])
                at += (s->start[j] + coord[s->perm[j]] * s->step[j]) * bstrides[b];
            b++;
        }
        if (s->sel_pos == s->ndim)
            at += s->sel_index * bstrides[b];
        out[i] = at;
    }
    *numel_out = numel;
    *base_numel = bnumel;
    return out;
}

/* The values of the spec's view in row-major order, from the spec alone. */
static double *spec_expected(const spec *s, int64_t *numel_out) {
    int64_t bnumel;
    int64_t *at = spec_positions(s, numel_out, &bnumel);
    double *base = malloc(sizeof(double) * (size_t)(bnumel ? bnumel : 1));
    double *out = malloc(sizeof(double) * (size_t)(*numel_out ? *numel_out : 1));
    if (!base || !out)
        abort();
    uint32_t x = s->seed | 1u;
    for (int64_t i = 0; i < bnumel; i++)
        base[i] = as_dtype(s->dtype, make_value(s, &x));
    for (int64_t i = 0; i < *numel_out; i++)
        out[i] = base[at[i]];
    free(base);
    free(at);
    return out;
}

static ct_tensor *must(ct_tensor *t, const char *what) {
    if (!t) {
        fprintf(stderr, "view step %s refused: %s\n", what, ct_last_error_message());
        abort();
    }
    return t;
}

/* The operand: the spec's view of `base`. */
static ct_tensor *spec_view(const spec *s, ct_tensor *base) {
    ct_tensor *t = base;
    if (s->sel_pos >= 0)
        t = must(ct_select(t, s->sel_pos, s->sel_index), "select");
    for (int j = 0; j < s->ndim; j++) {
        int64_t n = s->shape[s->perm[j]];
        if (!s->expanded[j])
            t = must(ct_slice(t, j, s->start[j], s->start[j] + (n ? (n - 1) * s->step[j] + 1 : 0), s->step[j]),
                     "slice");
    }
    if (s->ndim > 0) {
        int q[CT_MAX_DIMS];
        for (int j = 0; j < s->ndim; j++)
            q[s->perm[j]] = j;
        t = must(ct_permute(t, q, s->ndim), "permute");
    }
    bool any_expanded = false;
    for (int j = 0; j < s->ndim; j++)
        any_expanded |= s->expanded[j];
    if (any_expanded)
        t = must(ct_expand(t, s->shape, s->ndim), "expand");
    if (s->post == 1 && s->ndim > 0) {
        t = must(ct_flatten(t, 0, -1), "flatten");
        t = must(ct_reshape(t, s->shape, s->ndim), "reshape");
    } else if (s->post == 2) {
        int at = (int)(s->seed % (uint32_t)(s->ndim + 1));
        t = must(ct_unsqueeze(t, at), "unsqueeze");
        t = must(ct_squeeze(t, at), "squeeze");
    } else if (s->post == 3 && s->ndim > 1) {
        t = must(ct_transpose(t, 0, s->ndim - 1), "transpose");
        t = must(ct_transpose(t, 0, s->ndim - 1), "transpose");
    }
    return t;
}

/* ---- comparing -------------------------------------------------------------------------- */

static const char *current_op = "";
static const spec *current_specs;
static int current_nspecs;

static void describe_and_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void describe_and_abort(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_ops: %s: ", current_op);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    for (int i = 0; i < current_nspecs; i++) {
        const spec *s = &current_specs[i];
        fprintf(stderr, "  operand %d: %s [", i, ct_dtype_name(s->dtype));
        for (int d = 0; d < s->ndim; d++)
            fprintf(stderr, "%s%lld", d ? ", " : "", (long long)s->shape[d]);
        fprintf(stderr, "] layout");
        for (int j = 0; j < s->ndim; j++)
            fprintf(stderr, " d%d:%s%lld+%lld*k+%lld", s->perm[j], s->expanded[j] ? "expanded " : "",
                    (long long)s->start[j], (long long)s->step[j], (long long)s->tail[j]);
        fprintf(stderr, " select %d/%lld post %d values %d\n", s->sel_pos, (long long)s->sel_size, s->post, s->values);
    }
    abort();
}

/* Relative tolerance of a result: 0 (bit for bit) for the exact ops. */
static double tolerance(ct_dtype dtype, bool exact) {
    if (exact)
        return 0;
    switch (dtype) {
    case CT_F64: return 1e-12;
    case CT_F16: return 4e-3;
    case CT_BF16: return 3e-2;
    default: return 2e-5;
    }
}

static double *to_doubles(ct_tensor *t) {
    int64_t n = ct_tensor_numel(t);
    double *out = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!out)
        abort();
    ct_no_grad_begin();
    ct_tensor *c = ct_cast(t, CT_F64);
    ct_no_grad_end();
    if (!c || ct_to_host(c, out, sizeof(double) * (size_t)n) != CT_OK)
        describe_and_abort("reading a result back failed: %s", ct_last_error_message());
    return out;
}

static void expect_same(const char *what, ct_tensor *x, ct_tensor *y, bool exact) {
    if (ct_tensor_ndim(x) != ct_tensor_ndim(y) || ct_tensor_dtype(x) != ct_tensor_dtype(y))
        describe_and_abort("%s: %s %s vs %s %s", what, ct_dtype_name(ct_tensor_dtype(x)), ct_shape_str(x),
                           ct_dtype_name(ct_tensor_dtype(y)), ct_shape_str(y));
    for (int d = 0; d < ct_tensor_ndim(x); d++)
        if (ct_tensor_shape(x)[d] != ct_tensor_shape(y)[d])
            describe_and_abort("%s: shape %s vs %s", what, ct_shape_str(x), ct_shape_str(y));
    double tol = tolerance(ct_tensor_dtype(x), exact);
    int64_t n = ct_tensor_numel(x);
    double *a = to_doubles(x), *b = to_doubles(y);
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i]))
            continue;
        if (a[i] == b[i])
            continue;
        double scale = fmax(1.0, fmax(fabs(a[i]), fabs(b[i])));
        if (isfinite(a[i]) && isfinite(b[i]) && fabs(a[i] - b[i]) <= tol * scale)
            continue;
        describe_and_abort("%s: element %lld of %s: %.17g vs %.17g", what, (long long)i, ct_shape_str(x), a[i], b[i]);
    }
    free(a);
    free(b);
}

/* ---- the ops ---------------------------------------------------------------------------- */

enum op_kind {
    OP_UNARY,
    OP_BINARY,
    OP_WHERE,
    OP_MASKED_FILL,
    OP_REDUCE,
    OP_MAXMIN,
    OP_MAX_ALL,
    OP_SOFTMAX,
    OP_MATMUL,
    OP_BMM,
    OP_CAT,
    OP_STACK,
    OP_SPLIT,
    OP_INDEX_SELECT,
    OP_GATHER,
    OP_SCATTER_ADD,
    OP_ONE_HOT,
    OP_EMBEDDING,
    OP_PAD,
    OP_LAYER_NORM,
    OP_BATCH_NORM,
    OP_LOSS,
    OP_CLASS_LOSS,
    OP_CONV2D,
    OP_POOL,
    OP_RESHAPE,
    OP_CAST,
    OP_DROPOUT,
    OP_CONV_TRANSPOSE2D,
    OP_DISTILLATION,
    OP_INPLACE,
    OP_ALIASED,
    OP_COUNT
};

#define MAX_OPERANDS 4
#define MAX_OUTPUTS  8

typedef struct op_case {
    enum op_kind kind;
    int which; /* the op within its kind */
    int nops;  /* operands */
    spec specs[MAX_OPERANDS];
    bool diff[MAX_OPERANDS]; /* operands whose bases get requires_grad in the gradient pass */
    bool exact;
    bool broadcasts; /* elementwise over the broadcast of every operand */
    int iarg[8];
    int64_t shape2[CT_MAX_DIMS]; /* a second shape (reshape's target) */
    int ndim2;
    double farg[4];
} op_case;

/* Run the case on `in`; writes the outputs and returns their number, or -1 on a refusal. */
static int run_case(const op_case *c, ct_tensor **in, ct_tensor **out) {
    ct_tensor *a = in[0], *b = in[1];
    const int *ia = c->iarg;
    const double *fa = c->farg;
    out[0] = NULL;
    int n = 1;
    switch (c->kind) {
    case OP_UNARY: {
        ct_tensor *(*const fns[])(const ct_tensor *) = {ct_neg,  ct_exp,  ct_log,  ct_sqrt,    ct_rsqrt, ct_abs,
                                                        ct_relu, ct_silu, ct_tanh, ct_sigmoid, ct_clone};
        int nfns = (int)(sizeof fns / sizeof fns[0]);
        if (c->which < nfns)
            out[0] = fns[c->which](a);
        else
            switch (c->which - nfns) {
            case 0: out[0] = ct_contiguous(a); break;
            case 1: out[0] = ct_clamp(a, fa[0], fa[1]); break;
            case 2: out[0] = ct_leaky_relu(a, fa[0]); break;
            case 3: out[0] = ct_elu(a, fa[1]); break;
            case 4: out[0] = ct_gelu(a, CT_GELU_ERF); break;
            case 5: out[0] = ct_gelu(a, CT_GELU_TANH); break;
            case 6: out[0] = ct_softplus(a, fa[2], fa[3]); break;
            case 7: out[0] = ct_add_scalar(a, fa[0]); break;
            case 8: out[0] = ct_mul_scalar(a, fa[0]); break;
            default: out[0] = ct_pow_scalar(a, fa[2]); break;
            }
        break;
    }
    case OP_BINARY: {
        ct_tensor *(*const fns[])(const ct_tensor *, const ct_tensor *) = {
            ct_add, ct_sub, ct_mul, ct_div, ct_pow, ct_maximum, ct_minimum, ct_eq, ct_ne, ct_lt, ct_le, ct_gt, ct_ge};
        int nfns = (int)(sizeof fns / sizeof fns[0]);
        out[0] = c->which < nfns ? fns[c->which](a, b) : ct_add_scaled(a, b, fa[0]);
        break;
    }
    case OP_WHERE: out[0] = ct_where(a, b, in[2]); break;
    case OP_MASKED_FILL: out[0] = ct_masked_fill(a, b, fa[0]); break;
    case OP_REDUCE: {
        const int *dims = ia[0] ? &ia[1] : NULL;
        bool keepdim = ia[5];
        switch (c->which) {
        case 0: out[0] = ct_sum(a, dims, ia[0], keepdim); break;
        case 1: out[0] = ct_mean(a, dims, ia[0], keepdim); break;
        case 2: out[0] = ct_var(a, dims, ia[0], ia[6], keepdim); break;
        case 3: out[0] = ct_std(a, dims, ia[0], ia[6], keepdim); break;
        default: out[0] = ct_logsumexp(a, dims, ia[0], keepdim); break;
        }
        break;
    }
    case OP_MAXMIN:
        switch (c->which) {
        case 0: out[0] = ct_max(a, ia[0], ia[1], &out[1]), n = 2; break;
        case 1: out[0] = ct_min(a, ia[0], ia[1], &out[1]), n = 2; break;
        case 2: out[0] = ct_argmax(a, ia[0], ia[1]); break;
        default: out[0] = ct_argmin(a, ia[0], ia[1]); break;
        }
        break;
    case OP_MAX_ALL: out[0] = c->which ? ct_min_all(a) : ct_max_all(a); break;
    case OP_SOFTMAX: out[0] = c->which ? ct_log_softmax(a, ia[0]) : ct_softmax(a, ia[0]); break;
    case OP_MATMUL: out[0] = ct_matmul(a, b); break;
    case OP_BMM: out[0] = ct_bmm(a, b); break;
    case OP_CAT: out[0] = ct_cat(in, c->nops, ia[0]); break;
    case OP_STACK: out[0] = ct_stack(in, c->nops, ia[0]); break;
    case OP_SPLIT:
        n = c->which ? ct_chunk(a, ia[1], ia[0], out, MAX_OUTPUTS) : ct_split(a, ia[1], ia[0], out, MAX_OUTPUTS);
        return n < MAX_OUTPUTS ? n : MAX_OUTPUTS; /* the pieces written */
    case OP_INDEX_SELECT: out[0] = ct_index_select(a, ia[0], b); break;
    case OP_GATHER: out[0] = ct_gather(a, ia[0], b); break;
    case OP_SCATTER_ADD: out[0] = ct_scatter_add(a, ia[0], b, in[2]); break;
    case OP_ONE_HOT: out[0] = ct_one_hot(a, ia[0], (ct_dtype)ia[1]); break;
    case OP_EMBEDDING: out[0] = ct_embedding(a, b, ia[0]); break;
    case OP_PAD: out[0] = ct_pad(a, c->shape2, c->ndim2, (ct_pad_mode)ia[0], fa[0]); break;
    case OP_LAYER_NORM:
        out[0] = ct_layer_norm(a, ia[0], ia[1] >= 0 ? in[ia[1]] : NULL, ia[2] >= 0 ? in[ia[2]] : NULL, 1e-5);
        break;
    case OP_BATCH_NORM: {
        ct_tensor *rm = NULL, *rv = NULL;
        if (ia[3]) {
            int64_t C = ct_tensor_ndim(a) > 1 ? ct_tensor_shape(a)[1] : 0;
            ct_dtype dt = ct_tensor_dtype(a) == CT_F64 ? CT_F64 : CT_F32;
            rm = ct_zeros(&C, 1, dt, CT_CPU);
            rv = ct_ones(&C, 1, dt, CT_CPU);
        }
        out[0] =
            ct_batch_norm(a, rm, rv, ia[1] >= 0 ? in[ia[1]] : NULL, ia[2] >= 0 ? in[ia[2]] : NULL, true, 0.25, 1e-5);
        if (out[0] && rm) {
            out[1] = rm;
            out[2] = rv;
            n = 3;
        }
        break;
    }
    case OP_LOSS: {
        ct_reduction red = (ct_reduction)ia[0];
        switch (c->which) {
        case 0: out[0] = ct_mse_loss(a, b, red); break;
        case 1: out[0] = ct_l1_loss(a, b, red); break;
        case 2: out[0] = ct_smooth_l1_loss(a, b, red, fa[0]); break;
        case 3: out[0] = ct_huber_loss(a, b, red, fa[0]); break;
        case 4: out[0] = ct_kl_div(a, b, red, ia[1]); break;
        default: out[0] = ct_bce_with_logits(a, b, ia[2] >= 0 ? in[ia[2]] : NULL, NULL, red); break;
        }
        break;
    }
    case OP_CLASS_LOSS: {
        const ct_tensor *weight = ia[2] >= 0 ? in[ia[2]] : NULL;
        if (c->which == 0) {
            ct_cross_entropy_opts o = CT_CROSS_ENTROPY_OPTS_DEFAULT;
            o.weight = weight;
            o.ignore_index = ia[1];
            o.reduction = (ct_reduction)ia[0];
            o.label_smoothing = fa[0];
            out[0] = ct_cross_entropy(a, b, &o);
        } else {
            ct_nll_loss_opts o = CT_NLL_LOSS_OPTS_DEFAULT;
            o.weight = weight;
            o.ignore_index = ia[1];
            o.reduction = (ct_reduction)ia[0];
            out[0] = ct_nll_loss(a, b, &o);
        }
        break;
    }
    case OP_CONV2D: {
        ct_conv2d_opts o = {{ia[0], ia[1]}, {ia[2], ia[3]}, {ia[4], ia[5]}, ia[6]};
        out[0] = ct_conv2d(a, b, ia[7] ? in[2] : NULL, &o);
        break;
    }
    case OP_POOL: {
        ct_pool2d_opts o = {{ia[0], ia[1]}, {ia[2], ia[3]}, {ia[4], ia[5]}, {ia[6], ia[6]}, ia[7] & 1, ia[7] & 2};
        if (c->which == 0)
            out[0] = ct_max_pool2d(a, &o, &out[1]), n = 2;
        else if (c->which == 1)
            out[0] = ct_avg_pool2d(a, &o);
        else
            out[0] = ct_global_avg_pool2d(a);
        break;
    }
    case OP_RESHAPE:
        switch (c->which) {
        case 0: out[0] = ct_reshape(a, c->shape2, c->ndim2); break;
        case 1: out[0] = ct_flatten(a, ia[0], ia[1]); break;
        case 2: out[0] = ct_squeeze(a, ia[0]); break;
        case 3: out[0] = ct_unsqueeze(a, ia[0]); break;
        case 4: out[0] = ct_transpose(a, ia[0], ia[1]); break;
        case 5: out[0] = ct_select(a, ia[0], ia[1]); break;
        case 6: out[0] = ct_slice(a, ia[0], ia[1], ia[2], ia[3]); break;
        default: out[0] = ct_expand(a, c->shape2, c->ndim2); break;
        }
        break;
    case OP_CAST: out[0] = ct_cast(a, (ct_dtype)ia[0]); break;
    case OP_DROPOUT: /* the same mask for the same seed: element i of the row-major order */
        ct_manual_seed((uint64_t)ia[0]);
        out[0] = ct_dropout(a, fa[3], ia[1]);
        break;
    case OP_CONV_TRANSPOSE2D: {
        ct_conv_transpose2d_opts o = {{ia[0], ia[1]}, {ia[2], ia[3]}, {ia[4], ia[5]}, {ia[6], ia[6]}, ia[7]};
        out[0] = ct_conv_transpose2d(a, b, c->ndim2 ? in[2] : NULL, &o);
        break;
    }
    case OP_DISTILLATION: out[0] = ct_distillation_loss(a, b, fa[0]); break;
    default: return -1;
    }
    if (!out[0])
        return -1;
    for (int k = 1; k < n; k++)
        if (!out[k])
            describe_and_abort("output %d missing", k);
    return n;
}

/* ---- building the cases ------------------------------------------------------------------- */

static int rd_shape(reader *r, int min_ndim, int max_ndim, int64_t *shape) {
    int nd = min_ndim + rd(r, max_ndim - min_ndim + 1);
    for (int d = 0; d < nd; d++)
        shape[d] = rd_size(r);
    return nd;
}

/* A shape that broadcasts to (rn, rs): trailing dims of it, some of them 1; rarely one that
 * does not fit. */
static int rd_broadcast_shape(reader *r, int rn, const int64_t *rs, int64_t *out) {
    int drop = rd(r, 3) == 0 ? rd(r, rn + 1) : 0;
    int n = rn - drop;
    for (int d = 0; d < n; d++) {
        out[d] = rs[drop + d];
        int g = rd(r, 32);
        if (g < 8)
            out[d] = 1;
        else if (g == 31)
            out[d] = rs[drop + d] + 1;
    }
    return n;
}

/* A dim in [-ndim, ndim) (or 0 for a 0-D tensor); rarely one out of range. */
static int rd_dim(reader *r, int ndim) {
    if (rd(r, 32) == 0)
        return ndim + rd(r, 2);
    if (ndim == 0)
        return 0;
    int d = rd(r, ndim);
    return rd(r, 2) ? d - ndim : d;
}

static void add_operand(op_case *c, reader *r, int ndim, const int64_t *shape, ct_dtype dtype, bool diff) {
    spec *s = &c->specs[c->nops];
    spec_init(s, r, ndim, shape, dtype, true);
    c->diff[c->nops++] = diff;
}

static void add_index_operand(op_case *c, reader *r, int ndim, const int64_t *shape, int64_t lo, int64_t hi) {
    if (rd(r, 32) == 0) { /* rarely, out of range */
        lo--;
        hi++;
    }
    if (hi < lo)
        hi = lo;
    add_operand(c, r, ndim, shape, CT_I32, false);
    spec *s = &c->specs[c->nops - 1];
    s->values = VALUES_INDEX;
    s->lo = lo;
    s->hi = hi;
}

static void setup_case(reader *r, op_case *c) {
    memset(c, 0, sizeof *c);
    c->kind = (enum op_kind)rd(r, OP_COUNT);
    c->exact = true;
    int64_t s0[CT_MAX_DIMS], s1[CT_MAX_DIMS], s2[CT_MAX_DIMS];
    int n0, n1, n2;
    ct_dtype dt = rd_dtype(r);
    static const double exponents[8] = {0, 1, 2, 3, 0.5, -1, -0.5, 2.5};
    c->farg[0] = (rd(r, 9) - 4) / 2.0;
    c->farg[1] = c->farg[0] + rd(r, 6) / 2.0;
    c->farg[2] = exponents[rd(r, 8)];
    c->farg[3] = rd(r, 8) / 2.0;
    switch (c->kind) {
    case OP_UNARY:
        c->which = rd(r, 21);
        if (c->which == 17)
            c->farg[2] = 0.5 + rd(r, 4) / 2.0; /* softplus beta */
        n0 = rd_shape(r, 0, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        break;
    case OP_BINARY:
    case OP_WHERE:
    case OP_MASKED_FILL:
        c->which = rd(r, 14);
        c->broadcasts = true;
        n0 = rd_shape(r, 0, 4, s0);
        if (c->kind == OP_WHERE) {
            n1 = rd_broadcast_shape(r, n0, s0, s1);
            add_operand(c, r, n1, s1, rd(r, 16) ? CT_U8 : dt, false);
            c->specs[0].values = VALUES_MASK;
        }
        n1 = rd_broadcast_shape(r, n0, s0, s1);
        add_operand(c, r, c->kind == OP_MASKED_FILL ? n0 : n1, c->kind == OP_MASKED_FILL ? s0 : s1, dt,
                    c->which < 7 || c->which == 13);
        n2 = rd_broadcast_shape(r, n0, s0, s2);
        add_operand(c, r, n2, s2, c->kind == OP_MASKED_FILL || rd(r, 16) == 0 ? CT_U8 : dt,
                    c->kind != OP_MASKED_FILL && (c->which < 7 || c->which == 13));
        if (c->kind == OP_MASKED_FILL)
            c->specs[1].values = VALUES_MASK;
        break;
    case OP_REDUCE: {
        c->which = rd(r, 5);
        c->exact = c->which < 2;
        n0 = rd_shape(r, 0, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        int nd = rd(r, n0 + 1);
        bool used[CT_MAX_DIMS] = {0};
        for (int k = 0; k < nd; k++) {
            int d = rd(r, n0);
            if (rd(r, 16))
                while (used[d])
                    d = (d + 1) % n0;
            used[d] = true;
            c->iarg[1 + k] = rd(r, 2) ? d - n0 : d;
        }
        if (nd == 0 && n0 == 0 && rd(r, 2)) { /* a 0-D tensor reduced over dim 0 */
            nd = 1;
            c->iarg[1] = rd(r, 2) - 1;
        }
        c->iarg[0] = nd;
        c->iarg[5] = rd(r, 2);
        c->iarg[6] = rd(r, 2);
        break;
    }
    case OP_MAXMIN:
    case OP_MAX_ALL:
    case OP_SOFTMAX:
        c->which = rd(r, 4);
        if (c->kind != OP_MAXMIN)
            c->which &= 1;
        c->exact = c->kind != OP_SOFTMAX;
        n0 = rd_shape(r, 0, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        c->iarg[0] = rd_dim(r, n0);
        c->iarg[1] = rd(r, 2);
        break;
    case OP_MATMUL:
    case OP_BMM: {
        int64_t M = rd_size(r), K = rd_size(r), N = rd_size(r), batch[2];
        int nb = c->kind == OP_BMM ? 1 : rd(r, 3);
        for (int d = 0; d < nb; d++)
            batch[d] = rd_size(r);
        for (int k = 0; k < 2; k++) {
            int64_t bs[CT_MAX_DIMS];
            int n = c->kind == OP_BMM ? 1 : rd_broadcast_shape(r, nb, batch, bs);
            if (c->kind == OP_BMM)
                bs[0] = batch[0] + (rd(r, 32) == 0);
            bool vector = c->kind == OP_MATMUL && rd(r, 5) == 0;
            if (vector)
                n = 0;
            bs[n++] = k == 0 ? (vector ? K : M) : K + (rd(r, 32) == 0);
            if (!vector)
                bs[n++] = k == 0 ? K : N;
            add_operand(c, r, n, bs, k == 0 || rd(r, 32) ? dt : CT_F64, true);
        }
        break;
    }
    case OP_CAT:
    case OP_STACK: {
        n0 = rd_shape(r, c->kind == OP_CAT, 4, s0);
        int count = 1 + rd(r, 3);
        c->iarg[0] = rd_dim(r, n0 + (c->kind == OP_STACK));
        int d = c->iarg[0] < 0 ? c->iarg[0] + n0 : c->iarg[0];
        for (int k = 0; k < count; k++) {
            memcpy(s1, s0, sizeof s0);
            if (c->kind == OP_CAT && d >= 0 && d < n0)
                s1[d] = rd_size(r);
            if (rd(r, 32) == 0 && n0 > 0)
                s1[rd(r, n0)]++;
            add_operand(c, r, n0, s1, rd(r, 32) ? dt : CT_I32, true);
        }
        break;
    }
    case OP_SPLIT:
        c->which = rd(r, 2);
        n0 = rd_shape(r, 1, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        c->iarg[0] = rd_dim(r, n0);
        c->iarg[1] = rd(r, 5);
        break;
    case OP_INDEX_SELECT:
    case OP_GATHER:
    case OP_SCATTER_ADD: {
        n0 = rd_shape(r, c->kind != OP_INDEX_SELECT, 3, s0);
        add_operand(c, r, n0, s0, dt, true);
        c->iarg[0] = rd_dim(r, n0);
        int d = c->iarg[0] < 0 ? c->iarg[0] + n0 : c->iarg[0];
        int64_t size = d >= 0 && d < n0 ? s0[d] : 1;
        if (c->kind == OP_INDEX_SELECT) {
            n1 = rd(r, 8) ? 1 : rd(r, 3);
            for (int k = 0; k < n1; k++)
                s1[k] = rd_size(r);
        } else {
            n1 = n0;
            for (int k = 0; k < n0; k++)
                s1[k] = k == d ? rd_size(r) : rd(r, (int)s0[k] + 1 + (rd(r, 32) == 0));
        }
        add_index_operand(c, r, n1, s1, 0, size - 1);
        if (c->kind == OP_SCATTER_ADD) {
            for (int k = 0; k < n1; k++)
                s2[k] = s1[k] + rd(r, 2);
            add_operand(c, r, n1, s2, dt, true);
        }
        break;
    }
    case OP_ONE_HOT: {
        n0 = rd_shape(r, 0, 3, s0);
        int classes = rd(r, 6);
        add_index_operand(c, r, n0, s0, 0, classes - 1);
        c->iarg[0] = classes;
        c->iarg[1] = (int)dt;
        break;
    }
    case OP_EMBEDDING: {
        int64_t w[2] = {1 + rd(r, 5), rd_size(r)};
        add_operand(c, r, 2, w, dt, true);
        n1 = rd_shape(r, 0, 3, s1);
        add_index_operand(c, r, n1, s1, 0, w[0] - 1);
        c->iarg[0] = rd(r, 2) ? -1 : rd(r, (int)w[0]);
        break;
    }
    case OP_PAD: {
        n0 = rd_shape(r, 1, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        c->iarg[0] = rd(r, 3);
        c->ndim2 = 2 * rd(r, n0 + 1);
        for (int k = 0; k < c->ndim2; k++) {
            int64_t size = s0[n0 - 1 - k / 2];
            c->shape2[k] = c->iarg[0] == CT_PAD_CONSTANT  ? rd(r, 6) - 2
                           : c->iarg[0] == CT_PAD_REFLECT ? rd(r, (int)size + (rd(r, 16) == 0))
                                                          : rd(r, 4);
        }
        break;
    }
    case OP_LAYER_NORM:
    case OP_BATCH_NORM: {
        c->exact = false;
        n0 = rd_shape(r, 1 + (c->kind == OP_BATCH_NORM), 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        int k = c->kind == OP_LAYER_NORM ? 1 + rd(r, n0) : 1;
        c->iarg[0] = k;
        const int64_t *pshape = c->kind == OP_LAYER_NORM ? s0 + n0 - k : s0 + 1;
        ct_dtype pdt = dt == CT_F16 || dt == CT_BF16 ? CT_F32 : dt;
        c->iarg[1] = c->iarg[2] = -1;
        for (int p = 1; p <= 2; p++)
            if (rd(r, 3)) {
                c->iarg[p] = c->nops;
                add_operand(c, r, k, pshape, pdt, true);
            }
        c->iarg[3] = rd(r, 2);
        break;
    }
    case OP_LOSS:
        c->exact = false;
        c->which = rd(r, 6);
        n0 = rd_shape(r, 0, 3, s0);
        c->iarg[0] = rd(r, c->which == 4 ? 4 : 3);
        c->iarg[1] = rd(r, 2);
        c->iarg[2] = -1;
        c->farg[0] = rd(r, 4) / 2.0;
        add_operand(c, r, n0, s0, dt, true);
        add_operand(c, r, n0, s0, dt, true);
        if (c->which >= 4)
            c->specs[1].values = VALUES_PROB;
        if (c->which == 5 && rd(r, 2)) {
            n2 = rd_broadcast_shape(r, n0, s0, s2);
            c->iarg[2] = c->nops;
            add_operand(c, r, n2, s2, dt, false);
        }
        break;
    case OP_CLASS_LOSS: {
        c->exact = false;
        c->which = rd(r, 2);
        int64_t N = rd_size(r), C = 1 + rd(r, 5);
        int extra = rd(r, 4) == 0 ? 1 + rd(r, 2) : 0;
        s0[0] = N;
        s0[1] = C;
        s1[0] = N;
        for (int k = 0; k < extra; k++)
            s0[2 + k] = s1[1 + k] = rd_size(r);
        add_operand(c, r, 2 + extra, s0, dt, true);
        c->iarg[0] = rd(r, 3);
        c->iarg[1] = rd(r, 2) ? -100 : -1;
        add_index_operand(c, r, 1 + extra, s1, rd(r, 4) == 0 ? -1 : 0, C - 1);
        c->iarg[2] = -1;
        if (rd(r, 3) == 0) {
            c->iarg[2] = c->nops;
            add_operand(c, r, 1, &C, dt, false);
            c->specs[c->nops - 1].values = VALUES_PROB;
        }
        c->farg[0] = rd(r, 3) == 0 ? 0.25 : 0;
        break;
    }
    case OP_CONV2D: {
        int groups = 1 + rd(r, 2);
        int64_t x[4] = {rd(r, 3), groups * (1 + rd(r, 2)), 1 + rd(r, 5), 1 + rd(r, 5)};
        int64_t w[4] = {groups * (1 + rd(r, 2)), x[1] / groups, 1 + rd(r, 3), 1 + rd(r, 3)};
        int64_t bias = w[0];
        add_operand(c, r, 4, x, dt, true);
        add_operand(c, r, 4, w, dt, true);
        add_operand(c, r, 1, &bias, dt, true);
        for (int k = 0; k < 2; k++) {
            c->iarg[k] = 1 + rd(r, 2);
            c->iarg[2 + k] = rd(r, 2);
            c->iarg[4 + k] = 1 + rd(r, 2);
        }
        c->iarg[6] = groups;
        c->iarg[7] = rd(r, 2);
        break;
    }
    case OP_POOL: {
        c->which = rd(r, 3);
        int64_t x[4] = {rd(r, 3), 1 + rd(r, 3), 1 + rd(r, 5), 1 + rd(r, 5)};
        n0 = rd(r, 4) ? 4 : 3;
        add_operand(c, r, n0, n0 == 4 ? x : x + 1, dt, true);
        for (int k = 0; k < 2; k++) {
            c->iarg[k] = 1 + rd(r, 3);
            c->iarg[2 + k] = rd(r, 3);
            c->iarg[4 + k] = rd(r, c->iarg[k] / 2 + 1);
        }
        c->iarg[6] = c->which == 0 ? 1 + rd(r, 2) : 1;
        c->iarg[7] = rd(r, 4);
        break;
    }
    case OP_RESHAPE: {
        c->which = rd(r, 8);
        n0 = rd_shape(r, 0, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        c->iarg[0] = rd_dim(r, n0 + (c->which == 3));
        c->iarg[1] = c->which == 5 ? rd(r, 6) : rd_dim(r, n0);
        c->iarg[2] = rd(r, 7) - 1;
        c->iarg[3] = 1 + rd(r, 3);
        if (c->which == 6)
            c->iarg[1] = rd(r, 7) - 3;
        if (c->which == 0) { /* merge two neighbours, add a 1, maybe a -1 */
            int n = 0, merge = n0 > 1 ? rd(r, n0 - 1) : -1;
            for (int d = 0; d < n0; d++) {
                if (d == merge) {
                    c->shape2[n++] = s0[d] * s0[d + 1];
                    d++;
                } else {
                    c->shape2[n++] = s0[d];
                }
            }
            if (n < CT_MAX_DIMS && rd(r, 2)) {
                int at = rd(r, n + 1);
                memmove(&c->shape2[at + 1], &c->shape2[at], sizeof(int64_t) * (size_t)(n - at));
                c->shape2[at] = 1;
                n++;
            }
            if (n > 0 && rd(r, 3) == 0)
                c->shape2[rd(r, n)] = -1;
            c->ndim2 = n;
        } else if (c->which == 7) {
            int lead = rd(r, 2);
            c->ndim2 = n0 + lead;
            if (lead)
                c->shape2[0] = rd_size(r);
            for (int d = 0; d < n0; d++)
                c->shape2[lead + d] = s0[d] == 1 ? rd_size(r) : rd(r, 4) ? s0[d] : -1;
        }
        break;
    }
    case OP_DROPOUT:
        n0 = rd_shape(r, 0, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        c->iarg[0] = rd(r, 256);
        c->iarg[1] = rd(r, 4) != 0;
        c->farg[3] = rd(r, 5) / 4.0;
        break;
    case OP_CONV_TRANSPOSE2D: {
        int groups = 1 + rd(r, 2);
        int64_t x[4] = {rd(r, 3), groups * (1 + rd(r, 2)), 1 + rd(r, 4), 1 + rd(r, 4)};
        int64_t w[4] = {x[1], 1 + rd(r, 2), 1 + rd(r, 3), 1 + rd(r, 3)};
        int64_t bias = w[1] * groups;
        add_operand(c, r, 4, x, dt, true);
        add_operand(c, r, 4, w, dt, true);
        add_operand(c, r, 1, &bias, dt, true);
        for (int k = 0; k < 2; k++) {
            c->iarg[k] = 1 + rd(r, 2); /* stride */
            c->iarg[2 + k] = rd(r, 2); /* padding */
            c->iarg[4 + k] = rd(r, 2); /* output padding */
        }
        c->iarg[6] = 1 + rd(r, 2); /* dilation */
        c->iarg[7] = groups;
        c->ndim2 = rd(r, 2);
        break;
    }
    case OP_DISTILLATION:
        c->exact = false;
        n0 = rd_shape(r, 1, 3, s0);
        add_operand(c, r, n0, s0, dt, true);
        add_operand(c, r, n0, s0, dt, true);
        c->farg[0] = 0.5 + rd(r, 4);
        break;
    case OP_CAST:
        n0 = rd_shape(r, 0, 4, s0);
        add_operand(c, r, n0, s0, dt, true);
        c->iarg[0] = (int)rd_dtype(r);
        break;
    case OP_ALIASED:
        c->which = rd(r, 4);
        c->which += c->which == 3 ? 2 : 0; /* add_, add_scaled_, mul_ and copy_ */
        c->iarg[0] = rd(r, 16);
        /* fall through */
    case OP_INPLACE:
        if (c->kind == OP_INPLACE)
            c->which = rd(r, 6);
        n0 = rd_shape(r, 0, 4, s0);
        spec_init(&c->specs[0], r, n0, s0, dt, false);
        n1 = rd_broadcast_shape(r, n0, s0, s1);
        spec_init(&c->specs[1], r, n1, s1,
                  c->kind == OP_INPLACE && (c->which == 5 || rd(r, 32) == 0) ? rd_dtype(r) : dt, true);
        c->nops = 2;
        break;
    default: break;
    }
}

/* ---- the checks ------------------------------------------------------------------------------ */

/* Run the case; on a refusal check that it says why and return its status. */
static int run_checked(const op_case *c, ct_tensor **in, ct_tensor **out, ct_status *status, const char *form) {
    ct_clear_error();
    int n = run_case(c, in, out);
    *status = ct_last_error();
    if (n < 0) {
        if (*status == CT_OK || !*ct_last_error_message())
            describe_and_abort("refused %s without an error message", form);
        if (*status == CT_ERR_INTERNAL)
            describe_and_abort("internal error %s: %s", form, ct_last_error_message());
        if (getenv("FUZZ_OPS_VERBOSE"))
            fprintf(stderr, "refused %s: %s\n", form, ct_last_error_message());
    } else if (*status != CT_OK) {
        describe_and_abort("succeeded %s with an error recorded: %s", form, ct_last_error_message());
    }
    ct_clear_error();
    return n;
}

static void expect_same_outcome(int n1, ct_status st1, int n2, ct_status st2, const char *forms) {
    if ((n1 < 0) != (n2 < 0) || st1 != st2 || n1 != n2)
        describe_and_abort("%s: %d outputs (%s) vs %d outputs (%s)", forms, n1, ct_status_name(st1), n2,
                           ct_status_name(st2));
}

/* The operand holds the values its spec says, in its spec's shape. */
static void expect_spec_values(const spec *s, ct_tensor *t) {
    if (ct_tensor_ndim(t) != s->ndim || ct_tensor_dtype(t) != s->dtype)
        describe_and_abort("an operand is %s %s", ct_dtype_name(ct_tensor_dtype(t)), ct_shape_str(t));
    for (int d = 0; d < s->ndim; d++)
        if (ct_tensor_shape(t)[d] != s->shape[d])
            describe_and_abort("an operand has shape %s", ct_shape_str(t));
    int64_t n;
    double *want = spec_expected(s, &n), *got = to_doubles(t);
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i] && !(isnan(got[i]) && isnan(want[i])))
            describe_and_abort("operand element %lld is %.17g, its view says %.17g (strides of the view:%s)",
                               (long long)i, got[i], want[i], ct_tensor_is_contiguous(t) ? " contiguous" : "");
    free(want);
    free(got);
}

/* The weights of the loss of output k: a fixed pattern. */
static double loss_weight(int64_t i, int k) {
    return (double)((i * 7 + k) % 5 - 2) / 2.0;
}

/* The gradient of sum(view * w) with respect to the base is w scattered (and, where the
 * view repeats an element, summed) into the base: the oracle of the views' backward. */
static void check_view_backward(const spec *s) {
    if (s->dtype != CT_F32 && s->dtype != CT_F64)
        return;
    ct_tensor *base = must(ct_requires_grad(spec_base(s), true), "requires_grad");
    ct_tensor *view = spec_view(s, base);
    int64_t n, bnumel;
    int64_t *at = spec_positions(s, &n, &bnumel);
    double *w = malloc(sizeof(double) * (size_t)(n ? n : 1)),
           *want = calloc((size_t)(bnumel ? bnumel : 1), sizeof(double));
    if (!w || !want)
        abort();
    for (int64_t i = 0; i < n; i++) {
        w[i] = loss_weight(i, 0);
        want[at[i]] += w[i];
    }
    ct_tensor *weights = ct_cast(ct_from_host(w, s->shape, s->ndim, CT_F64, CT_CPU), s->dtype);
    ct_tensor *loss = ct_sum(ct_mul(view, weights), NULL, 0, false);
    if (!loss || ct_backward(loss) != CT_OK)
        describe_and_abort("backward through a view failed: %s", ct_last_error_message());
    ct_tensor *grad = ct_grad(base);
    if (!grad)
        describe_and_abort("no gradient through a view");
    double *got = to_doubles(grad);
    for (int64_t i = 0; i < bnumel; i++)
        if (got[i] != want[i])
            describe_and_abort("gradient of base element %lld through its view: %.17g, expected %.17g", (long long)i,
                               got[i], want[i]);
    free(got);
    free(want);
    free(w);
    free(at);
}

static void check_forward(const op_case *c) {
    ct_tensor *views[MAX_OPERANDS] = {0}, *conts[MAX_OPERANDS] = {0};
    ct_tensor *out1[MAX_OUTPUTS] = {0}, *out2[MAX_OUTPUTS] = {0}, *out3[MAX_OUTPUTS] = {0};
    for (int i = 0; i < c->nops; i++) {
        views[i] = spec_view(&c->specs[i], spec_base(&c->specs[i]));
        conts[i] = must(ct_contiguous(views[i]), "contiguous");
        expect_spec_values(&c->specs[i], views[i]);
        expect_spec_values(&c->specs[i], conts[i]);
        if (!ct_tensor_is_contiguous(conts[i]))
            describe_and_abort("ct_contiguous of operand %d is not contiguous", i);
    }
    if (c->nops > 0)
        check_view_backward(&c->specs[0]);
    ct_status st1, st2, st3;
    int n1 = run_checked(c, views, out1, &st1, "on views");
    int n2 = run_checked(c, conts, out2, &st2, "on contiguous copies");
    expect_same_outcome(n1, st1, n2, st2, "views vs contiguous copies");
    for (int k = 0; k < n1; k++)
        expect_same("views vs contiguous copies", out1[k], out2[k], c->exact);
    for (int i = 0; i < c->nops; i++)
        expect_same("an input after the op", views[i], conts[i], true);
    if (!c->broadcasts || n1 < 0)
        return;
    ct_tensor *expanded[MAX_OPERANDS] = {0};
    for (int i = 0; i < c->nops; i++)
        expanded[i] = must(ct_contiguous(must(ct_expand(conts[i], ct_tensor_shape(out1[0]), ct_tensor_ndim(out1[0])),
                                              "expand to the result")),
                           "contiguous");
    int n3 = run_checked(c, expanded, out3, &st3, "on expanded copies");
    expect_same_outcome(n1, st1, n3, st3, "broadcast vs expanded copies");
    expect_same("broadcast vs expanded copies", out1[0], out3[0], c->exact);
}

/* sum(out * w) over the floating outputs, w a fixed pattern of the output's shape. */
static ct_tensor *weighted_loss(ct_tensor **out, int n) {
    ct_tensor *loss = NULL;
    for (int k = 0; k < n; k++) {
        if (!ct_tensor_requires_grad(out[k]))
            continue;
        int64_t numel = ct_tensor_numel(out[k]);
        double *w = malloc(sizeof(double) * (size_t)(numel ? numel : 1));
        if (!w)
            abort();
        for (int64_t i = 0; i < numel; i++)
            w[i] = loss_weight(i, k);
        ct_tensor *weights = ct_from_host(w, ct_tensor_shape(out[k]), ct_tensor_ndim(out[k]), CT_F64, CT_CPU);
        free(w);
        weights = ct_cast(weights, ct_tensor_dtype(out[k]));
        ct_tensor *term = ct_sum(ct_mul(out[k], weights), NULL, 0, false);
        if (term && ct_tensor_dtype(term) != CT_F64)
            term = ct_cast(term, CT_F64);
        loss = loss ? ct_add(loss, term) : term;
        if (!loss)
            describe_and_abort("building the loss failed: %s", ct_last_error_message());
    }
    return loss;
}

static void check_backward(const op_case *c) {
    bool any = false;
    for (int i = 0; i < c->nops; i++)
        any |= c->diff[i] && ct_dtype_is_float(c->specs[i].dtype);
    if (!any)
        return;
    ct_tensor *grads[2][MAX_OPERANDS] = {{0}};
    int count[2];
    ct_status status[2];
    bool have_loss[2];
    for (int form = 0; form < 2; form++) {
        ct_tensor *bases[MAX_OPERANDS] = {0}, *in[MAX_OPERANDS] = {0}, *out[MAX_OUTPUTS] = {0};
        for (int i = 0; i < c->nops; i++) {
            bases[i] = spec_base(&c->specs[i]);
            if (c->diff[i] && ct_dtype_is_float(c->specs[i].dtype))
                must(ct_requires_grad(bases[i], true), "requires_grad");
            in[i] = spec_view(&c->specs[i], bases[i]);
            if (form == 1)
                in[i] = must(ct_contiguous(in[i]), "contiguous");
        }
        count[form] = run_checked(c, in, out, &status[form], form ? "on contiguous copies" : "on views");
        have_loss[form] = false;
        if (count[form] < 0)
            continue;
        ct_tensor *loss = weighted_loss(out, count[form]);
        if (!loss)
            continue;
        have_loss[form] = true;
        if (ct_backward(loss) != CT_OK)
            describe_and_abort("backward failed %s: %s", form ? "on contiguous copies" : "on views",
                               ct_last_error_message());
        for (int i = 0; i < c->nops; i++)
            grads[form][i] = ct_grad(bases[i]);
    }
    expect_same_outcome(count[0], status[0], count[1], status[1], "views vs contiguous copies, with grad");
    if (have_loss[0] != have_loss[1])
        describe_and_abort("an output requires grad in one form only");
    for (int i = 0; i < c->nops; i++) {
        if (!grads[0][i] != !grads[1][i])
            describe_and_abort("operand %d has a gradient in one form only", i);
        if (grads[0][i])
            expect_same("gradients through views vs contiguous copies", grads[0][i], grads[1][i], false);
    }
}

static ct_status run_inplace(const op_case *c, ct_tensor *dest, ct_tensor *src) {
    switch (c->which) {
    case 0: return ct_add_(dest, src);
    case 1: return ct_add_scaled_(dest, src, c->farg[0]);
    case 2: return ct_mul_(dest, src);
    case 3: return ct_mul_scalar_(dest, c->farg[0]);
    case 4: return ct_fill_(dest, c->farg[0]);
    default: return ct_copy_(dest, src);
    }
}

/* dest op= src on a view of a base, against the same on a contiguous copy of the view,
 * which is then copied into a second base: both bases must end up equal. */
static void check_inplace(const op_case *c) {
    ct_tensor *base = spec_base(&c->specs[0]), *dest = spec_view(&c->specs[0], base);
    ct_tensor *src = spec_view(&c->specs[1], spec_base(&c->specs[1]));
    ct_tensor *ref = must(ct_clone(dest), "clone"), *ref_src = must(ct_contiguous(src), "contiguous");
    ct_clear_error();
    ct_status st1 = run_inplace(c, dest, src);
    if (st1 != CT_OK && (ct_last_error() != st1 || !*ct_last_error_message()))
        describe_and_abort("refused on a view without an error message");
    ct_clear_error();
    ct_status st2 = run_inplace(c, ref, ref_src);
    if (st2 != CT_OK && (ct_last_error() != st2 || !*ct_last_error_message()))
        describe_and_abort("refused on a contiguous copy without an error message");
    ct_clear_error();
    expect_same_outcome(st1 ? -1 : 1, st1, st2 ? -1 : 1, st2, "in place on views vs contiguous copies");
    if (st1 != CT_OK)
        return;
    expect_same("in place on views vs contiguous copies", dest, ref, true);
    expect_same("the source after the op", src, ref_src, true);
    ct_tensor *base2 = spec_base(&c->specs[0]), *dest2 = spec_view(&c->specs[0], base2);
    if (ct_copy_(dest2, ref) != CT_OK)
        describe_and_abort("copy_ into a view failed: %s", ct_last_error_message());
    expect_same("the base after the op vs after copy_ of the result", base, base2, true);
}

/* The spec's view of the elements [offset, offset + its base's numel) of a 1-D `flat`. */
static ct_tensor *spec_view_at(const spec *s, ct_tensor *flat, int64_t offset) {
    int64_t bshape[CT_MAX_DIMS + 1];
    int bn = spec_base_shape(s, bshape);
    ct_tensor *t = must(ct_slice(flat, 0, offset, offset + spec_base_numel(s), 1), "slice");
    return spec_view(s, must(ct_view(t, bshape, bn), "view"));
}

static int compare_offsets(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* Whether some element of a is also an element of b (by enumeration). */
static bool views_overlap(ct_tensor *a, ct_tensor *b) {
    ct_tensor *t[2] = {a, b};
    int64_t total = ct_tensor_numel(a) + ct_tensor_numel(b) + 1;
    int64_t *offs[2];
    int64_t count[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        offs[k] = malloc(sizeof(int64_t) * (size_t)total);
        if (!offs[k])
            abort();
        int nd = ct_tensor_ndim(t[k]);
        const int64_t *shape = ct_tensor_shape(t[k]), *strides = ct_tensor_strides(t[k]);
        int64_t n = ct_tensor_numel(t[k]);
        for (int64_t i = 0; i < n; i++) {
            int64_t rest = i, off = ct_tensor_offset(t[k]);
            for (int d = nd - 1; d >= 0; d--) {
                off += rest % shape[d] * strides[d];
                rest /= shape[d];
            }
            offs[k][count[k]++] = off;
        }
    }
    qsort(offs[0], (size_t)count[0], sizeof(int64_t), compare_offsets);
    qsort(offs[1], (size_t)count[1], sizeof(int64_t), compare_offsets);
    bool meet = false;
    for (int64_t i = 0, j = 0; i < count[0] && j < count[1] && !meet;) {
        meet = offs[0][i] == offs[1][j];
        if (offs[0][i] < offs[1][j])
            i++;
        else
            j++;
    }
    free(offs[0]);
    free(offs[1]);
    return meet;
}

/* dest op= src with both views of one storage: either refused (CT_ERR_VALUE) because they
 * overlap without being the same elements in the same order, or the result of dest op=
 * clone(src), and nothing outside dest written. */
static void check_aliased(const op_case *c) {
    int64_t n0 = spec_base_numel(&c->specs[0]), n1 = spec_base_numel(&c->specs[1]);
    int64_t shift = c->iarg[0] % 4 - 1, off1 = shift < 0 ? 0 : shift;
    int64_t len = n0 > off1 + n1 ? n0 : off1 + n1;
    spec flat_spec = c->specs[0];
    flat_spec.ndim = 1;
    flat_spec.shape[0] = len;
    flat_spec.perm[0] = 0;
    flat_spec.step[0] = 1;
    flat_spec.start[0] = flat_spec.tail[0] = 0;
    flat_spec.expanded[0] = false;
    flat_spec.sel_pos = -1;
    flat_spec.post = 0;
    ct_tensor *flat = spec_base(&flat_spec);
    ct_tensor *dest = spec_view_at(&c->specs[0], flat, 0);
    ct_tensor *src = c->iarg[0] == 15 ? dest : spec_view_at(&c->specs[1], flat, off1);
    if (!ct_tensor_shares_storage(dest, src))
        return; /* a reshape copied */
    ct_tensor *ref = must(ct_clone(dest), "clone"), *ref_src = must(ct_clone(src), "clone");
    ct_clear_error();
    ct_status st = run_inplace(c, dest, src);
    if (st != CT_OK) {
        if (ct_last_error() != st || !*ct_last_error_message())
            describe_and_abort("refused without an error message");
        ct_status st2 = run_inplace(c, ref, ref_src);
        ct_clear_error();
        if (st2 != CT_OK)
            return; /* refused for another reason too */
        if (st != CT_ERR_VALUE || !views_overlap(dest, src))
            describe_and_abort("refused views that do not overlap: %s", ct_last_error_message());
        return;
    }
    if (run_inplace(c, ref, ref_src) != CT_OK)
        describe_and_abort("accepted aliased views but refused copies: %s", ct_last_error_message());
    expect_same("in place on aliased views vs on copies", dest, ref, true);
    ct_tensor *flat2 = spec_base(&flat_spec), *dest2 = spec_view_at(&c->specs[0], flat2, 0);
    if (ct_copy_(dest2, ref) != CT_OK)
        describe_and_abort("copy_ into a view failed: %s", ct_last_error_message());
    expect_same("the storage after the op vs after copy_ of the result", flat, flat2, true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[OP_COUNT] = {"unary",
                                          "binary",
                                          "where",
                                          "masked_fill",
                                          "reduce",
                                          "max/min",
                                          "max_all",
                                          "softmax",
                                          "matmul",
                                          "bmm",
                                          "cat",
                                          "stack",
                                          "split",
                                          "index_select",
                                          "gather",
                                          "scatter_add",
                                          "one_hot",
                                          "embedding",
                                          "pad",
                                          "layer_norm",
                                          "batch_norm",
                                          "loss",
                                          "class loss",
                                          "conv2d",
                                          "pool",
                                          "reshape",
                                          "cast",
                                          "in place",
                                          "in place, aliased"};
    reader r = {data, size};
    big_dims_left = 1;
    op_case c;
    setup_case(&r, &c);
    char name[64];
    snprintf(name, sizeof name, "%s #%d", names[c.kind], c.which);
    current_op = name;
    current_specs = c.specs;
    current_nspecs = c.nops;
    if (getenv("FUZZ_OPS_VERBOSE"))
        fprintf(stderr, "case: %s\n", name);
    int64_t live = ct_live_tensors();
    ct_scope_begin();
    if (c.kind == OP_INPLACE) {
        check_inplace(&c);
    } else if (c.kind == OP_ALIASED) {
        check_aliased(&c);
    } else {
        check_forward(&c);
        check_backward(&c);
    }
    ct_scope_end();
    ct_clear_error();
    fuzz_expect_no_live_tensors(live, name);
    return 0;
}
