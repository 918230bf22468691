/* CUDA parity for the nn ops: batch norm (and the BatchNorm2d module), layer norm, dropout,
 * embedding, pad and the losses, forward and gradients against the CPU (F32 within 1e-5
 * absolute / 1e-4 relative, F16 and BF16 within 1e-2), the dropout mask and padding bit for
 * bit; the loader's batches on the GPU and the metrics of GPU tensors. Every test reports
 * itself skipped where no GPU is usable. The caching allocator is poisoned with NaN before
 * each op, so that an element a kernel forgets to write shows up. */
#include "tests/common.h"

#include <string.h>

#define GPU CT_CUDA(0)

static const ct_dtype float_dtypes[3] = {CT_F32, CT_F16, CT_BF16};

static double tol_of(ct_dtype dt) {
    return dt == CT_F32 ? 1e-5 : 1e-2;
}
static double rtol_of(ct_dtype dt) {
    return dt == CT_F32 ? 1e-4 : 1e-2;
}

/* Fill a large block with NaN and give it back to the allocator: the next allocations are
 * likely carved from it. */
static void poison_cache(void) {
    ct_tensor *p = ct_full((int64_t[]){1 << 22}, 1, NAN, CT_F32, GPU);
    cr_assert_not_null(p, "%s", ct_last_error_message());
    ct_tensor_free(p);
}

/* A GPU leaf with t's values (requires grad like t). */
static ct_tensor *to_gpu(ct_tensor *t) {
    if (!t)
        return NULL;
    ct_tensor *g = ct_detach(ct_to_device(t, GPU));
    cr_assert_not_null(g, "%s", ct_last_error_message());
    if (ct_tensor_requires_grad(t))
        ct_requires_grad(g, true);
    return g;
}

static void assert_same(const ct_tensor *gpu, const ct_tensor *cpu, double atol, double rtol, const char *what) {
    cr_assert_not_null(gpu, "%s on CUDA: %s", what, ct_last_error_message());
    cr_assert_not_null(cpu, "%s on the CPU: %s", what, ct_last_error_message());
    cr_assert_eq(ct_tensor_ndim(gpu), ct_tensor_ndim(cpu), "%s: rank differs", what);
    cr_assert_eq(ct_tensor_dtype(gpu), ct_tensor_dtype(cpu), "%s: dtype differs", what);
    double *ref = t_values(cpu);
    t_assert_close(gpu, ref, atol, rtol);
    free(ref);
}

/* fn builds one output from n inputs (ctx[0] for the CPU run, ctx[1] for the GPU run); the
 * outputs must agree, and so must the gradients of sum(out * w) for inputs requiring grad. */
typedef ct_tensor *(*nn_fn)(ct_tensor **in, void *ctx);

static void parity(nn_fn fn, ct_tensor **cpu_in, int n, void *cpu_ctx, void *gpu_ctx, double atol, double rtol) {
    ct_tensor *gpu_in[8];
    for (int i = 0; i < n; i++)
        gpu_in[i] = to_gpu(cpu_in[i]);
    poison_cache();
    ct_tensor *out_c = fn(cpu_in, cpu_ctx), *out_g = fn(gpu_in, gpu_ctx);
    assert_same(out_g, out_c, atol, rtol, "output");
    if (!ct_tensor_requires_grad(out_c))
        return;
    ct_tensor *w =
        ct_cast(t_rand(ct_tensor_shape(out_c), ct_tensor_ndim(out_c), CT_F32, -1, 1), ct_tensor_dtype(out_c));
    cr_assert_eq(ct_backward_ex(out_c, w, false), CT_OK, "%s", ct_last_error_message());
    poison_cache();
    cr_assert_eq(ct_backward_ex(out_g, to_gpu(w), false), CT_OK, "%s", ct_last_error_message());
    for (int i = 0; i < n; i++)
        if (cpu_in[i] && ct_tensor_requires_grad(cpu_in[i]))
            assert_same(ct_grad(gpu_in[i]), ct_grad(cpu_in[i]), atol * 10, rtol * 10, "gradient");
}

/* ---- batch norm and layer norm ------------------------------------------------------------- */

typedef struct bn_ctx {
    bool training;
    ct_tensor *rm, *rv;
} bn_ctx;

static ct_tensor *f_bn(ct_tensor **in, void *ctx) {
    bn_ctx *c = ctx;
    return ct_batch_norm(in[0], c->rm, c->rv, in[1], in[2], c->training, 0.1, 1e-5);
}

Test(cuda_nn, batch_norm) {
    T_REQUIRE_GPU();
    ct_manual_seed(1);
    static const int64_t shapes[3][4] = {{16, 5, 1, 1}, {8, 3, 7, 9}, {4, 32, 28, 28}};
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 3; k++)
            for (int training = 0; training < 2; training++)
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[k];
                    int64_t C = shapes[s][1];
                    int nd = s == 0 ? 2 : 4;
                    ct_tensor *in[3] = {ct_requires_grad(ct_cast(t_rand(shapes[s], nd, CT_F32, -2, 3), dt), true),
                                        ct_requires_grad(t_rand(&C, 1, CT_F32, 0.5, 2), true),
                                        ct_requires_grad(t_rand(&C, 1, CT_F32, -1, 1), true)};
                    bn_ctx c = {training, t_rand(&C, 1, CT_F32, -0.5, 0.5), t_rand(&C, 1, CT_F32, 0.5, 2)};
                    bn_ctx g = {training, to_gpu(c.rm), to_gpu(c.rv)};
                    parity(f_bn, in, 3, &c, &g, tol_of(dt), rtol_of(dt));
                    /* the running statistics moved the same way */
                    assert_same(g.rm, c.rm, 1e-5, 1e-4, "running_mean");
                    assert_same(g.rv, c.rv, 1e-5, 1e-4, "running_var");
                });
}

/* BatchNorm2d modules on the GPU against the same modules on the CPU, in PyTorch's
 * momentum=None mode (cuDNN's exponentialAverageFactor is then 1 / num_batches_tracked) with
 * and without affine parameters: three training steps on different batches (outputs,
 * gradients, running statistics, count), then an eval step. */
Test(cuda_nn, batchnorm_module_cumulative_average) {
    T_REQUIRE_GPU();
    ct_manual_seed(5);
    for (int affine = 0; affine < 2; affine++)
        for (int k = 0; k < 3; k++) {
            ct_dtype dt = float_dtypes[k];
            ct_batchnorm_opts o = CT_BATCHNORM_OPTS_DEFAULT;
            o.cumulative_average = true;
            o.affine = affine;
            ct_module *cpu = ct_batchnorm2d_ex(5, &o), *gpu = ct_batchnorm2d_ex(5, &o);
            cr_assert(cpu && gpu, "%s", ct_last_error_message());
            cr_assert_eq(ct_module_to(gpu, GPU), CT_OK, "%s", ct_last_error_message());
            T_NO_LEAK({
                for (int step = 0; step < 4; step++) {
                    bool training = step < 3;
                    ct_module_train(cpu, training);
                    ct_module_train(gpu, training);
                    ct_tensor *x = ct_requires_grad(
                        ct_cast(t_rand((int64_t[]){4 + step, 5, 6, 7}, 4, CT_F32, -2 + step, 3 + 2 * step), dt), true);
                    ct_tensor *xg = to_gpu(x);
                    poison_cache();
                    ct_tensor *yc = ct_module_forward(cpu, x), *yg = ct_module_forward(gpu, xg);
                    assert_same(yg, yc, tol_of(dt), rtol_of(dt), "output");
                    ct_tensor *w = ct_cast(t_rand(ct_tensor_shape(yc), 4, CT_F32, -1, 1), dt);
                    cr_assert_eq(ct_backward_ex(yc, w, false), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(ct_backward_ex(yg, to_gpu(w), false), CT_OK, "%s", ct_last_error_message());
                    assert_same(ct_grad(xg), ct_grad(x), tol_of(dt) * 10, rtol_of(dt) * 10, "dx");
                    for (int p = 0; affine && p < 2; p++) {
                        const char *name = p ? "bias" : "weight";
                        ct_tensor *pc = ct_module_param(cpu, name), *pg = ct_module_param(gpu, name);
                        assert_same(ct_grad(pg), ct_grad(pc), tol_of(dt) * 10, rtol_of(dt) * 10, name);
                        ct_zero_grad(pc);
                        ct_zero_grad(pg);
                    }
                    assert_same(ct_module_buffer(gpu, "running_mean"), ct_module_buffer(cpu, "running_mean"), 1e-5,
                                1e-4, "running_mean");
                    assert_same(ct_module_buffer(gpu, "running_var"), ct_module_buffer(cpu, "running_var"), 1e-5, 1e-4,
                                "running_var");
                    cr_assert_eq(ct_item(ct_module_buffer(gpu, "num_batches_tracked")), training ? step + 1 : 3);
                    cr_assert_eq(ct_item(ct_module_buffer(cpu, "num_batches_tracked")), training ? step + 1 : 3);
                }
            });
            ct_module_free(cpu);
            ct_module_free(gpu);
        }
}

typedef struct ln_ctx {
    int nd;
    bool affine;
} ln_ctx;

static ct_tensor *f_ln(ct_tensor **in, void *ctx) {
    ln_ctx *c = ctx;
    return ct_layer_norm(in[0], c->nd, c->affine ? in[1] : NULL, c->affine ? in[2] : NULL, 1e-5);
}

Test(cuda_nn, layer_norm) {
    T_REQUIRE_GPU();
    ct_manual_seed(2);
    static const int64_t shapes[3][3] = {{4, 6, 10}, {3, 2, 1000}, {130, 2, 3}};
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 3; k++)
            for (int v = 0; v < 2; v++)
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[k];
                    ln_ctx c = {1 + v, v == 0};
                    const int64_t *ps = shapes[s] + 3 - c.nd;
                    ct_tensor *in[3] = {ct_requires_grad(ct_cast(t_rand(shapes[s], 3, CT_F32, -2, 3), dt), true),
                                        ct_requires_grad(t_rand(ps, c.nd, CT_F32, 0.5, 2), true),
                                        ct_requires_grad(t_rand(ps, c.nd, CT_F32, -1, 1), true)};
                    parity(f_ln, in, c.affine ? 3 : 1, &c, &c, tol_of(dt), rtol_of(dt));
                });
}

/* ---- dropout --------------------------------------------------------------------------------- */

Test(cuda_nn, dropout_mask_matches_the_cpu) {
    T_REQUIRE_GPU();
    for (int k = 0; k < 3; k++)
        T_NO_LEAK({
            ct_dtype dt = float_dtypes[k];
            ct_tensor *x = ct_requires_grad(ct_cast(t_rand((int64_t[]){33, 77}, 2, CT_F32, -1, 1), dt), true);
            ct_tensor *xg = to_gpu(x);
            ct_manual_seed(99);
            ct_random_set_offset(3);
            ct_tensor *yc = ct_dropout(x, 0.35, true);
            uint64_t after_cpu = ct_random_offset();
            ct_random_set_offset(3);
            poison_cache();
            ct_tensor *yg = ct_dropout(xg, 0.35, true);
            cr_assert_eq(ct_random_offset(), after_cpu);
            size_t bytes = 33 * 77 * ct_dtype_size(dt);
            char *hc = malloc(bytes), *hg = malloc(bytes);
            cr_assert_eq(ct_to_host(yc, hc, bytes), CT_OK);
            cr_assert_eq(ct_to_host(yg, hg, bytes), CT_OK, "%s", ct_last_error_message());
            cr_assert(memcmp(hc, hg, bytes) == 0, "%s: the CUDA mask or values differ from the CPU's",
                      ct_dtype_name(dt));
            /* the backward regenerates the same mask on both */
            ct_tensor *w = ct_cast(t_rand((int64_t[]){33, 77}, 2, CT_F32, -1, 1), dt);
            cr_assert_eq(ct_backward_ex(yc, w, false), CT_OK);
            cr_assert_eq(ct_backward_ex(yg, to_gpu(w), false), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_to_host(ct_grad(x), hc, bytes), CT_OK);
            cr_assert_eq(ct_to_host(ct_grad(xg), hg, bytes), CT_OK);
            cr_assert(memcmp(hc, hg, bytes) == 0, "%s: the CUDA gradient differs", ct_dtype_name(dt));
            free(hc);
            free(hg);
        });
}

/* ---- embedding and pad ---------------------------------------------------------------------------- */

static ct_tensor *f_embedding(ct_tensor **in, void *ctx) {
    return ct_embedding(in[0], ctx, 3);
}

Test(cuda_nn, embedding) {
    T_REQUIRE_GPU();
    ct_manual_seed(3);
    for (int det = 0; det < 2; det++)
        for (int k = 0; k < 3; k++)
            T_NO_LEAK({
                ct_set_deterministic(det);
                ct_dtype dt = float_dtypes[k];
                int32_t iv[24];
                for (int i = 0; i < 24; i++)
                    iv[i] = (i * 7) % 10;
                ct_tensor *idx = ct_from_host(iv, (int64_t[]){4, 6}, 2, CT_I32, CT_CPU);
                ct_tensor *in[1] = {ct_requires_grad(ct_cast(t_rand((int64_t[]){10, 17}, 2, CT_F32, -1, 1), dt), true)};
                parity(f_embedding, in, 1, idx, ct_to_device(idx, GPU), tol_of(dt), rtol_of(dt));
                ct_set_deterministic(false);
            });
    T_NO_LEAK({
        /* A bad index on CUDA: the op returns, its row is zeros (nothing read through it), the
         * backward adds nothing through it, and the next synchronization reports it. */
        ct_tensor *w = ct_requires_grad(ct_ones((int64_t[]){4, 3}, 2, CT_F32, GPU), true);
        ct_tensor *bad = ct_from_host((int32_t[]){1, 7}, (int64_t[]){2}, 1, CT_I32, GPU);
        ct_tensor *e = ct_embedding(w, bad, -1);
        cr_assert_not_null(e, "%s", ct_last_error_message());
        float ev[6];
        cr_assert_eq(ct_to_host(e, ev, sizeof ev), CT_ERR_DIM);
        t_assert_error(CT_ERR_DIM, "ct_embedding: index 7 out of range [0, 4)", "reported by cuda:0", NULL);
        cr_assert_eq(ct_to_host(e, ev, sizeof ev), CT_OK, "%s", ct_last_error_message());
        for (int i = 0; i < 6; i++)
            cr_assert_eq(ev[i], i < 3 ? 1.0f : 0.0f);
        for (int det = 0; det < 2; det++) {
            ct_set_deterministic(det);
            ct_zero_grad(w);
            cr_assert_eq(ct_backward(ct_sum(ct_embedding(w, bad, -1), NULL, 0, false)), CT_OK, "%s",
                         ct_last_error_message());
            float gv[12];
            cr_assert_eq(ct_to_host(ct_grad(w), gv, sizeof gv), CT_ERR_DIM);
            t_assert_error(CT_ERR_DIM, "ct_embedding: index 7", NULL);
            cr_assert_eq(ct_to_host(ct_grad(w), gv, sizeof gv), CT_OK, "%s", ct_last_error_message());
            for (int i = 0; i < 12; i++)
                cr_assert_eq(gv[i], i / 3 == 1 ? 1.0f : 0.0f, "deterministic %d, grad element %d", det, i);
            ct_set_deterministic(false);
        }
    });
}

/* padding_idx -1 means no padding, so an index of -1 is a bad index: the backward, atomic or
 * deterministic, reports it and adds nothing through it, rather than skip it as padding. */
Test(cuda_nn, embedding_backward_reports_index_minus_one_without_padding) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *w = ct_requires_grad(ct_ones((int64_t[]){4, 3}, 2, CT_F32, GPU), true);
        ct_tensor *bad = ct_from_host((int32_t[]){1, -1}, (int64_t[]){2}, 1, CT_I32, GPU);
        for (int det = 0; det < 2; det++) {
            ct_set_deterministic(det);
            ct_zero_grad(w);
            ct_tensor *e = ct_embedding(w, bad, -1);
            cr_assert_not_null(e, "%s", ct_last_error_message());
            /* the forward's report first, so that the next one can only come from the backward */
            cr_assert_eq(ct_device_synchronize(0), CT_ERR_DIM);
            t_assert_error(CT_ERR_DIM, "ct_embedding: index -1 out of range [0, 4)", NULL);
            cr_assert_eq(ct_backward(ct_sum(e, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
            float gv[12];
            cr_assert_eq(ct_to_host(ct_grad(w), gv, sizeof gv), CT_ERR_DIM,
                         "deterministic %d: the backward did not report index -1", det);
            t_assert_error(CT_ERR_DIM, "ct_embedding: index -1", NULL);
            cr_assert_eq(ct_to_host(ct_grad(w), gv, sizeof gv), CT_OK, "%s", ct_last_error_message());
            for (int i = 0; i < 12; i++)
                cr_assert_eq(gv[i], i / 3 == 1 ? 1.0f : 0.0f, "deterministic %d, grad element %d", det, i);
            ct_set_deterministic(false);
        }
    });
}

typedef struct pad_case {
    int ndim, npads;
    int64_t shape[4], pads[6];
    ct_pad_mode mode;
    bool transposed; /* pad a transposed (non-contiguous) view of the input */
} pad_case;

static ct_tensor *f_pad(ct_tensor **in, void *ctx) {
    const pad_case *c = ctx;
    ct_tensor *x = c->transposed ? ct_transpose(in[0], 0, c->ndim - 1) : in[0];
    return ct_pad(x, c->pads, c->npads, c->mode, 0.25);
}

/* Padding only moves values, and the reflect/replicate gradient adds in the CPU's order
 * (row-major output order, in F32, rounded once), so both directions must match exactly. */
Test(cuda_nn, pad) {
    T_REQUIRE_GPU();
    ct_manual_seed(4);
    static const pad_case cases[] = {
        {3, 4, {2, 3, 5}, {2, -1, 1, 3}, CT_PAD_CONSTANT, false},
        {3, 4, {2, 3, 5}, {2, 4, 1, 2}, CT_PAD_REFLECT, false},
        {4, 4, {2, 3, 6, 7}, {3, 1, 5, 2}, CT_PAD_REFLECT, false},
        {3, 6, {4, 5, 6}, {1, 5, 4, 0, 2, 3}, CT_PAD_REFLECT, false}, /* every dim padded */
        {3, 4, {6, 3, 5}, {2, 2, 1, 1}, CT_PAD_REFLECT, true},
        {4, 4, {4, 8, 32, 32}, {1, 1, 1, 1}, CT_PAD_REFLECT, false}, /* many blocks */
        {3, 4, {2, 3, 5}, {7, 2, 0, 4}, CT_PAD_REPLICATE, false},    /* pads longer than the dim */
        {4, 4, {2, 3, 1, 6}, {2, 3, 4, 5}, CT_PAD_REPLICATE, false}, /* a padded dim of size 1 */
        {3, 6, {4, 5, 6}, {1, 5, 4, 0, 2, 3}, CT_PAD_REPLICATE, false},
        {3, 4, {6, 3, 5}, {3, 0, 2, 2}, CT_PAD_REPLICATE, true},
        {4, 4, {4, 8, 32, 32}, {2, 2, 2, 2}, CT_PAD_REPLICATE, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int k = 0; k < 3; k++)
            T_NO_LEAK({
                const pad_case *c = &cases[i];
                ct_tensor *in[1] = {
                    ct_requires_grad(ct_cast(t_rand(c->shape, c->ndim, CT_F32, -1, 1), float_dtypes[k]), true)};
                parity(f_pad, in, 1, (void *)c, (void *)c, 0, 0);
            });
    /* integers pad too (forward only) */
    for (int mode = CT_PAD_REFLECT; mode <= CT_PAD_REPLICATE; mode++)
        T_NO_LEAK({
            ct_tensor *x = ct_cast(t_rand((int64_t[]){3, 4, 5}, 3, CT_F32, -100, 100), CT_I32);
            const int64_t pads[4] = {3, 1, 2, 3};
            t_assert_parity(ct_pad(t_to_gpu(x), pads, 4, (ct_pad_mode)mode, 0),
                            ct_pad(x, pads, 4, (ct_pad_mode)mode, 0), 0, "I32 pad");
        });
    T_NO_LEAK({
        cr_assert_null(ct_pad(ct_zeros((int64_t[]){3, 4}, 2, CT_F32, GPU), (int64_t[]){4, 1}, 2, CT_PAD_REFLECT, 0));
        t_assert_error(CT_ERR_VALUE, "ct_pad", "reflect", "dim 1 has size 4", NULL);
    });
}

/* ---- losses ---------------------------------------------------------------------------------------- */

typedef struct class_ctx {
    bool ce;
    ct_tensor *targets, *weight;
    ct_cross_entropy_opts opts;
} class_ctx;

static ct_tensor *f_class(ct_tensor **in, void *ctx) {
    class_ctx *c = ctx;
    c->opts.weight = c->weight;
    if (c->ce)
        return ct_cross_entropy(in[0], c->targets, &c->opts);
    ct_nll_loss_opts o = {c->weight, c->opts.ignore_index, c->opts.reduction};
    return ct_nll_loss(in[0], c->targets, &o);
}

Test(cuda_nn, classification_losses) {
    T_REQUIRE_GPU();
    ct_manual_seed(5);
    for (int v = 0; v < 24; v++)
        T_NO_LEAK({
            ct_dtype dt = float_dtypes[v % 3];
            bool spatial = (v / 3) % 2, ce = v < 16;
            int64_t xs[3] = {6, 40, 3}, ts[2] = {6, 3};
            int32_t tv[18];
            for (int i = 0; i < 18; i++)
                tv[i] = i % 5 == 4 ? -1 : (i * 13) % 40;
            ct_tensor *t = ct_from_host(tv, ts, spatial ? 2 : 1, CT_I32, CT_CPU);
            ct_tensor *w = v % 2 ? t_rand((int64_t[]){40}, 1, CT_F32, 0.2, 2) : NULL;
            ct_cross_entropy_opts o = {NULL, -1, (ct_reduction)(v % 3), ce && v >= 8 ? 0.2 : 0.0};
            class_ctx c = {ce, t, w, o}, g = {ce, ct_to_device(t, GPU), w ? ct_to_device(w, GPU) : NULL, o};
            ct_tensor *in[1] = {ct_requires_grad(ct_cast(t_rand(xs, spatial ? 3 : 2, CT_F32, -4, 4), dt), true)};
            parity(f_class, in, 1, &c, &g, tol_of(dt), rtol_of(dt));
        });
    T_NO_LEAK({
        /* A bad target on CUDA counts as ignored (nothing read through it) and the next
         * synchronization reports it: the mean is over sample 0 alone, log 3. */
        ct_tensor *x = ct_requires_grad(ct_zeros((int64_t[]){2, 3}, 2, CT_F32, GPU), true);
        ct_tensor *t = ct_from_host((int32_t[]){0, 3}, (int64_t[]){2}, 1, CT_I32, GPU);
        ct_tensor *l = ct_cross_entropy(x, t, NULL);
        cr_assert_not_null(l, "%s", ct_last_error_message());
        cr_assert(isnan(ct_item(l)));
        t_assert_error(CT_ERR_DIM, "ct_cross_entropy: target 3 out of range [0, 3)", "at position 1",
                       "reported by cuda:0 at this synchronization", NULL);
        cr_assert_float_eq(ct_item(l), log(3.0), 1e-6, "%s", ct_last_error_message());
        cr_assert_eq(ct_backward(l), CT_OK, "%s", ct_last_error_message());
        float gv[6];
        cr_assert_eq(ct_to_host(ct_grad(x), gv, sizeof gv), CT_ERR_DIM);
        t_assert_error(CT_ERR_DIM, "ct_cross_entropy: target 3", NULL);
        cr_assert_eq(ct_to_host(ct_grad(x), gv, sizeof gv), CT_OK, "%s", ct_last_error_message());
        for (int i = 0; i < 6; i++)
            cr_assert_float_eq(gv[i], i == 0 ? -2.0 / 3 : i < 3 ? 1.0 / 3 : 0.0, 1e-6, "grad element %d", i);
        ct_tensor *nll = ct_nll_loss(x, t, NULL);
        cr_assert_not_null(nll, "%s", ct_last_error_message());
        cr_assert_eq(ct_device_synchronize(0), CT_ERR_DIM);
        t_assert_error(CT_ERR_DIM, "ct_nll_loss: target 3 out of range [0, 3)", NULL);
        cr_assert_float_eq(ct_item(nll), 0.0, 1e-6, "%s", ct_last_error_message());
    });
}

/* A +inf logit makes the sample's loss and gradient NaN whatever the target, a -inf logit at
 * the target makes the loss +inf, as on the CPU and in PyTorch. C = 10 (one class per lane)
 * and 40 (the +inf on a lane's second class); with and without label smoothing. */
Test(cuda_nn, cross_entropy_of_infinite_logits_follows_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(6);
    static const int64_t classes[] = {10, 40};
    for (int v = 0; v < 12; v++)
        T_NO_LEAK({
            ct_dtype dt = float_dtypes[v % 3];
            int64_t C = classes[(v / 3) % 2];
            ct_tensor *x = t_rand((int64_t[]){4, C}, 2, CT_F32, -4, 4);
            const int64_t inf_at[][2] = {{0, C - 5}, {1, C - 5}, {2, 0}, {3, C - 1}};
            for (int k = 0; k < 4; k++)
                cr_assert_eq(ct_fill_(ct_slice(ct_slice(x, 0, inf_at[k][0], inf_at[k][0] + 1, 1), 1, inf_at[k][1],
                                               inf_at[k][1] + 1, 1),
                                      k < 3 ? INFINITY : -INFINITY),
                             CT_OK, "%s", ct_last_error_message());
            /* targets: beside the +inf, at it, beside a +inf at class 0, at the -inf */
            ct_tensor *t =
                ct_from_host((int32_t[]){0, (int32_t)C - 5, 1, (int32_t)C - 1}, (int64_t[]){4}, 1, CT_I32, CT_CPU);
            ct_cross_entropy_opts o = {NULL, -100, CT_REDUCTION_NONE, v >= 6 ? 0.1 : 0.0};
            class_ctx c = {true, t, NULL, o}, g = {true, ct_to_device(t, GPU), NULL, o};
            ct_tensor *in[1] = {ct_requires_grad(ct_cast(x, dt), true)};
            parity(f_class, in, 1, &c, &g, tol_of(dt), rtol_of(dt));
        });
}

typedef struct point_ctx {
    int which;
    ct_reduction r;
    ct_tensor *w, *pw;
} point_ctx;

static ct_tensor *f_point(ct_tensor **in, void *ctx) {
    point_ctx *c = ctx;
    switch (c->which) {
    case 0: return ct_bce_with_logits(in[0], in[1], c->w, c->pw, c->r);
    case 1: return ct_mse_loss(in[0], in[1], c->r);
    case 2: return ct_l1_loss(in[0], in[1], c->r);
    case 3: return ct_smooth_l1_loss(in[0], in[1], c->r, 0.4);
    case 4: return ct_huber_loss(in[0], in[1], c->r, 0.6);
    case 5: return ct_kl_div(in[0], in[1], c->r, false);
    case 6: return ct_kl_div(in[0], in[1], c->r, true);
    default: return ct_distillation_loss(in[0], in[1], 2.5);
    }
}

Test(cuda_nn, pointwise_losses) {
    T_REQUIRE_GPU();
    ct_manual_seed(6);
    for (int which = 0; which < 8; which++)
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < 3; k++) {
                if (r == CT_REDUCTION_BATCHMEAN && which != 5 && which != 6)
                    continue;
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[k];
                    int64_t shape[2] = {50, 33};
                    double lo = which == 5 ? 0 : (which == 0 ? 0 : -2), hi = which == 0 || which == 5 ? 1 : 2;
                    ct_tensor *in[2] = {ct_requires_grad(ct_cast(t_rand(shape, 2, CT_F32, -2, 2), dt), true),
                                        ct_requires_grad(ct_cast(t_rand(shape, 2, CT_F32, lo, hi), dt), true)};
                    point_ctx c = {which, (ct_reduction)r, NULL, NULL};
                    if (which == 0) {
                        c.w = t_rand((int64_t[]){50, 1}, 2, CT_F32, 0.5, 2);
                        c.pw = t_rand((int64_t[]){33}, 1, CT_F32, 0.5, 3);
                    }
                    point_ctx g = {which, (ct_reduction)r, to_gpu(c.w), to_gpu(c.pw)};
                    parity(f_point, in, 2, &c, &g, tol_of(dt), rtol_of(dt));
                });
            }
}

/* ---- non-contiguous inputs ------------------------------------------------------------------------ */

typedef struct view_ctx {
    int which; /* 0 layer norm over 1 dim, 1 over 2 dims, 2 batch norm, 3 cross-entropy, 4.. pointwise losses */
    bool training;
    ct_tensor *rm, *rv, *targets, *weight;
    ct_reduction r;
} view_ctx;

/* The ops on transposed and stepped views of their leaves: in[0] (and in[1] for the
 * pointwise losses) as stored, transposed or sliced here. */
static ct_tensor *f_views(ct_tensor **in, void *ctx) {
    view_ctx *c = ctx;
    switch (c->which) {
    case 0: /* (33, 4, 6) -> (6, 4, 33) */
    case 1: return ct_layer_norm(ct_transpose(in[0], 0, 2), c->which + 1, in[1], in[2], 1e-5);
    case 2: /* (8, 3, 9, 7) -> (8, 3, 7, 9) */
        return ct_batch_norm(ct_transpose(in[0], 2, 3), c->rm, c->rv, in[1], in[2], c->training, 0.1, 1e-5);
    case 3: { /* (40, 6) -> (6, 40) */
        ct_cross_entropy_opts o = CT_CROSS_ENTROPY_OPTS_DEFAULT;
        o.weight = c->weight;
        o.reduction = c->r;
        o.label_smoothing = 0.1;
        return ct_cross_entropy(ct_transpose(in[0], 0, 1), c->targets, &o);
    }
    default: { /* input (33, 50) -> (50, 33); target (50, 66) -> every other column (50, 33) */
        ct_tensor *x = ct_transpose(in[0], 0, 1), *y = ct_slice(in[1], 1, 0, 66, 2);
        switch (c->which) {
        case 4: return ct_bce_with_logits(x, y, NULL, NULL, c->r);
        case 5: return ct_mse_loss(x, y, c->r);
        case 6: return ct_huber_loss(x, y, c->r, 0.6);
        default: return ct_kl_div(x, y, c->r, true);
        }
    }
    }
}

/* Norms and losses read their inputs through any strides (on CUDA through a contiguous copy
 * made outside the graph): transposed and stepped views, forward and gradients against the
 * CPU with the tolerances above. */
Test(cuda_nn, norms_and_losses_of_views) {
    T_REQUIRE_GPU();
    ct_manual_seed(7);
    for (int k = 0; k < 3; k++) {
        ct_dtype dt = float_dtypes[k];
        for (int which = 0; which < 2; which++)
            T_NO_LEAK({
                const int64_t *ps = which == 0 ? (int64_t[]){33} : (int64_t[]){4, 33};
                ct_tensor *in[3] = {
                    ct_requires_grad(ct_cast(t_rand((int64_t[]){33, 4, 6}, 3, CT_F32, -2, 3), dt), true),
                    ct_requires_grad(t_rand(ps, which + 1, CT_F32, 0.5, 2), true),
                    ct_requires_grad(t_rand(ps, which + 1, CT_F32, -1, 1), true)};
                view_ctx c = {.which = which};
                parity(f_views, in, 3, &c, &c, tol_of(dt), rtol_of(dt));
            });
        for (int training = 0; training < 2; training++)
            T_NO_LEAK({
                int64_t C = 3;
                ct_tensor *in[3] = {
                    ct_requires_grad(ct_cast(t_rand((int64_t[]){8, 3, 9, 7}, 4, CT_F32, -2, 3), dt), true),
                    ct_requires_grad(t_rand(&C, 1, CT_F32, 0.5, 2), true),
                    ct_requires_grad(t_rand(&C, 1, CT_F32, -1, 1), true)};
                view_ctx c = {.which = 2,
                              .training = training,
                              .rm = t_rand(&C, 1, CT_F32, -0.5, 0.5),
                              .rv = t_rand(&C, 1, CT_F32, 0.5, 2)};
                view_ctx g = c;
                g.rm = to_gpu(c.rm);
                g.rv = to_gpu(c.rv);
                parity(f_views, in, 3, &c, &g, tol_of(dt), rtol_of(dt));
                assert_same(g.rm, c.rm, 1e-5, 1e-4, "running_mean");
                assert_same(g.rv, c.rv, 1e-5, 1e-4, "running_var");
            });
        for (int r = CT_REDUCTION_MEAN; r <= CT_REDUCTION_NONE; r++)
            T_NO_LEAK({
                ct_tensor *targets = ct_from_host((int32_t[]){3, 0, 39, 17, 3, 22}, (int64_t[]){6}, 1, CT_I32, CT_CPU);
                view_ctx c = {.which = 3,
                              .targets = targets,
                              .weight = t_rand((int64_t[]){40}, 1, CT_F32, 0.2, 2),
                              .r = (ct_reduction)r};
                view_ctx g = c;
                g.targets = ct_to_device(targets, GPU);
                g.weight = ct_to_device(c.weight, GPU);
                ct_tensor *in[1] = {ct_requires_grad(ct_cast(t_rand((int64_t[]){40, 6}, 2, CT_F32, -4, 4), dt), true)};
                parity(f_views, in, 1, &c, &g, tol_of(dt), rtol_of(dt));
            });
        for (int which = 4; which < 8; which++)
            for (int r = CT_REDUCTION_MEAN; r <= CT_REDUCTION_NONE; r++)
                T_NO_LEAK({
                    double lo = which == 4 ? 0 : -2, hi = which == 4 ? 1 : 2;
                    ct_tensor *in[2] = {
                        ct_requires_grad(ct_cast(t_rand((int64_t[]){33, 50}, 2, CT_F32, -2, 2), dt), true),
                        ct_requires_grad(ct_cast(t_rand((int64_t[]){50, 66}, 2, CT_F32, lo, hi), dt), true)};
                    view_ctx c = {.which = which, .r = (ct_reduction)r};
                    parity(f_views, in, 2, &c, &c, tol_of(dt), rtol_of(dt));
                });
    }
}

/* Batch `x`, `y` of the loader test below: images n * 7 + k (mod 251) / 255, labels 3 n. */
static void check_loader_batch(ct_tensor *x, ct_tensor *y, int64_t first, int64_t batch_size, int64_t per) {
    cr_assert_eq(ct_tensor_device(x).type, CT_DEVICE_CUDA);
    double *xv = t_values(x), *yv = t_values(y);
    int64_t count = ct_tensor_shape(y)[0];
    for (int64_t i = 0; i < count; i++) {
        int64_t n = first + i;
        cr_assert_eq(yv[i], (double)(n * 3), "batch of %lld, label %lld", (long long)batch_size, (long long)n);
        for (int64_t k = 0; k < per; k += 37)
            cr_assert_float_eq(xv[i * per + k], ((n * 7 + k) % 251) / 255.0, 1e-6,
                               "batch of %lld, image %lld, pixel %lld", (long long)batch_size, (long long)n,
                               (long long)k);
    }
    free(xv);
    free(yv);
}

/* The loader delivers its batches onto the GPU straight from its pinned buffers, asynchronously,
 * and refills them in the background: every batch must arrive as filled, with the GPU kept
 * busy so that the copies lag behind the host (small batches, once read by the driver after
 * the slot was refilled, and large ones), and two batches taken before either is read (the
 * first's buffer must not be refilled before its copy is done). */
Test(cuda_nn, loader_batches_arrive_intact_on_the_gpu) {
    T_REQUIRE_GPU();
    const int64_t N = 300, per = 28 * 28;
    T_NO_LEAK({
        ct_tensor *images = ct_empty((int64_t[]){N, 1, 28, 28}, 4, CT_U8, CT_CPU);
        ct_tensor *labels = ct_empty((int64_t[]){N}, 1, CT_I32, CT_CPU);
        uint8_t *px = ct_tensor_data(images);
        int32_t *lb = ct_tensor_data(labels);
        for (int64_t i = 0; i < N; i++) {
            lb[i] = (int32_t)(i * 3);
            for (int64_t k = 0; k < per; k++)
                px[i * per + k] = (uint8_t)((i * 7 + k) % 251);
        }
        ct_tensor *busy = ct_ones((int64_t[]){2048, 2048}, 2, CT_F32, T_GPU);
        const int64_t batch_sizes[] = {16, 128}; /* 49 KiB and 392 KiB of images */
        for (int b = 0; b < 2; b++) {
            ct_loader_opts o = CT_LOADER_OPTS_DEFAULT;
            o.batch_size = batch_sizes[b];
            o.shuffle = false;
            o.prefetch = 2;
            o.device = T_GPU;
            ct_loader *l = ct_loader_create(images, labels, &o);
            cr_assert_not_null(l, "%s", ct_last_error_message());
            cr_assert_eq(ct_loader_start_epoch(l, 0), CT_OK);
            int64_t seen = 0;
            bool more = true;
            while (more) {
                ct_scope_begin();
                ct_tensor *x[2] = {NULL, NULL}, *y[2] = {NULL, NULL};
                for (int k = 0; k < 2 && more; k++) {
                    for (int r = 0; r < 3; r++) /* this batch's copy queues behind these, and the */
                        cr_assert_not_null(ct_matmul(busy, busy)); /* loader refills its slot meanwhile */
                    cr_assert_eq(ct_loader_next(l, &x[k], &y[k]), CT_OK, "%s", ct_last_error_message());
                    more = x[k] != NULL;
                }
                for (int k = 0; k < 2 && x[k]; k++) {
                    check_loader_batch(x[k], y[k], seen, o.batch_size, per);
                    seen += ct_tensor_shape(y[k])[0];
                }
                ct_scope_end();
            }
            cr_assert_eq(seen, N);
            ct_loader_free(l);
        }
    });
}

/* ---- metrics ------------------------------------------------------------------------------- */

/* The metrics read CUDA logits and labels through the host: accuracy, top-k accuracy and
 * the confusion matrix of GPU tensors (contiguous and transposed logits, stepped labels;
 * ties, which the half types make common, and NaN rows) equal the CPU's exactly, and bad
 * inputs get the CPU's errors. */
Test(cuda_nn, metrics_of_gpu_tensors_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(41);
    const int64_t N = 1037, C = 7;
    for (int k = 0; k < 3; k++)
        for (int transposed = 0; transposed < 2; transposed++)
            T_NO_LEAK({
                ct_dtype dt = float_dtypes[k];
                ct_tensor *base = t_rand_dtype(transposed ? (int64_t[]){C, N} : (int64_t[]){N, C}, 2, dt, -3, 3);
                ct_tensor *logits = transposed ? ct_transpose(base, 0, 1) : base;
                /* Every third row in whole numbers (ties), and a NaN in two rows. */
                ct_tensor *tied = ct_slice(logits, 0, 0, N, 3);
                cr_assert_eq(ct_copy_(tied, ct_cast(ct_cast(tied, CT_I32), dt)), CT_OK, "%s", ct_last_error_message());
                cr_assert_eq(ct_fill_(ct_slice(ct_slice(logits, 0, 5, 7, 1), 1, 2, 3, 1), NAN), CT_OK);
                ct_tensor *label_base = ct_cast(t_rand((int64_t[]){2 * N}, 1, CT_F32, 0, (double)C), CT_I32);
                ct_tensor *labels = ct_slice(label_base, 0, 1, 2 * N, 2);
                ct_tensor *logits_gpu = transposed ? ct_transpose(to_gpu(base), 0, 1) : to_gpu(base);
                ct_tensor *labels_gpu = ct_slice(to_gpu(label_base), 0, 1, 2 * N, 2);
                cr_assert(logits_gpu && labels_gpu, "%s", ct_last_error_message());

                cr_assert_eq(ct_correct_count(logits_gpu, labels_gpu), ct_correct_count(logits, labels),
                             "%s: correct count", ct_dtype_name(dt));
                for (int topk = 1; topk <= C; topk++)
                    cr_assert_eq(ct_topk_accuracy(logits_gpu, labels_gpu, topk), ct_topk_accuracy(logits, labels, topk),
                                 "%s: top-%d accuracy", ct_dtype_name(dt), topk);
                ct_confusion *cm_cpu = ct_confusion_create((int)C), *cm_gpu = ct_confusion_create((int)C);
                for (int batch = 0; batch < 2; batch++) { /* counts add up over batches */
                    cr_assert_eq(ct_confusion_update(cm_cpu, logits, labels), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(ct_confusion_update(cm_gpu, logits_gpu, labels_gpu), CT_OK, "%s",
                                 ct_last_error_message());
                }
                for (int t = 0; t < C; t++)
                    for (int p = 0; p < C; p++)
                        cr_assert_eq(ct_confusion_count(cm_gpu, t, p), ct_confusion_count(cm_cpu, t, p),
                                     "%s: count[%d][%d]", ct_dtype_name(dt), t, p);
                cr_assert_eq(ct_confusion_accuracy(cm_gpu), ct_confusion_accuracy(cm_cpu));
                cr_assert_eq(ct_confusion_macro_f1(cm_gpu), ct_confusion_macro_f1(cm_cpu));

                ct_tensor *bad_labels = ct_full((int64_t[]){N}, 1, (double)C, CT_I32, GPU);
                cr_assert_eq(ct_confusion_update(cm_gpu, logits_gpu, bad_labels), CT_ERR_DIM);
                t_assert_error(CT_ERR_DIM, "ct_confusion_update", "out of range", NULL);
                cr_assert_eq(ct_confusion_update(cm_gpu, ct_cast(logits_gpu, CT_I32), labels_gpu), CT_ERR_DTYPE);
                t_assert_error(CT_ERR_DTYPE, "ct_confusion_update", "floating", NULL);
                cr_assert_eq(ct_correct_count(logits_gpu, ct_cast(labels_gpu, CT_F32)), -1);
                t_assert_error(CT_ERR_DTYPE, "ct_correct_count", "I32 labels", NULL);
                cr_assert(isnan(ct_topk_accuracy(logits_gpu, labels_gpu, (int)C + 1)));
                t_assert_error(CT_ERR_VALUE, "ct_topk_accuracy", NULL);
                ct_confusion_free(cm_cpu);
                ct_confusion_free(cm_gpu);
            });
}
