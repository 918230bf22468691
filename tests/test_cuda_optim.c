/* CUDA parity of the fused optimizer step and of gradient clipping: the same parameters and
 * gradients on the CPU and on the GPU, compared after a few steps. Skipped without a GPU. */
#include "tests/common.h"
#include "runtime/internal.h"

#include <string.h>

/* 40 parameters (more than one launch holds), of sizes from 0 to beyond one block's chunk. */
#define N_PARAMS 40
static int64_t size_of(int i) {
    return i == 3 ? 0 : i == 7 ? 100003 : 1 + (i * 37) % 301;
}

static double value_at(int i, int64_t j, int salt) {
    return sin(0.37 * (double)j + 1.3 * i + 0.7 * salt);
}

static ct_tensor *filled(int i, int salt, ct_device device) {
    int64_t n = size_of(i);
    float *host = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t j = 0; j < n; j++)
        host[j] = (float)value_at(i, j, salt);
    ct_tensor *t = ct_from_host(host, (int64_t[]){n}, 1, CT_F32, device);
    free(host);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

/* Give every parameter a gradient (step `k`), leaving one out on odd steps. */
static void set_grads(ct_tensor **params, int k, ct_device device) {
    for (int i = 0; i < N_PARAMS; i++) {
        ct_zero_grad(params[i]);
        if (k % 2 == 1 && i == 5)
            continue;
        params[i]->grad = filled(i, 100 + k, device);
    }
}

typedef ct_optim *(*make_fn)(ct_tensor **params);
static ct_optim *sgd(ct_tensor **p) {
    ct_sgd_opts o = {.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01};
    return ct_optim_sgd_from_tensors(p, NULL, N_PARAMS, &o);
}
static ct_optim *adam(ct_tensor **p) {
    ct_adam_opts o = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1, .amsgrad = true};
    return ct_optim_adam_from_tensors(p, NULL, N_PARAMS, &o);
}
static ct_optim *adamw(ct_tensor **p) {
    ct_adam_opts o = CT_ADAMW_OPTS_DEFAULT;
    return ct_optim_adamw_from_tensors(p, NULL, N_PARAMS, &o);
}
static ct_optim *rmsprop(ct_tensor **p) {
    ct_rmsprop_opts o = {.lr = 0.01, .alpha = 0.9, .eps = 1e-8, .momentum = 0.5, .centered = true, .weight_decay = 0.1};
    return ct_optim_rmsprop_from_tensors(p, NULL, N_PARAMS, &o);
}
static ct_optim *adagrad(ct_tensor **p) {
    ct_adagrad_opts o = {
        .lr = 0.1, .lr_decay = 0.1, .weight_decay = 0.1, .initial_accumulator_value = 0.1, .eps = 1e-10};
    return ct_optim_adagrad_from_tensors(p, NULL, N_PARAMS, &o);
}

static void parity(make_fn make, const char *what) {
    ct_tensor *cpu[N_PARAMS], *gpu[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) {
        cpu[i] = ct_requires_grad(filled(i, 0, CT_CPU), true);
        gpu[i] = ct_requires_grad(filled(i, 0, CT_CUDA(0)), true);
    }
    ct_optim *oc = make(cpu), *og = make(gpu);
    cr_assert(oc && og, "%s: %s", what, ct_last_error_message());
    for (int k = 0; k < 4; k++) {
        set_grads(cpu, k, CT_CPU);
        set_grads(gpu, k, CT_CUDA(0));
        cr_assert_eq(ct_optim_step(oc), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_optim_step(og), CT_OK, "%s", ct_last_error_message());
    }
    /* The GPU contracts multiply-adds into FMAs: a few ulps per step. */
    for (int i = 0; i < N_PARAMS; i++) {
        double *ref = t_values(cpu[i]);
        double err = t_max_rel_diff(gpu[i], ref);
        cr_assert(err < 1e-5, "%s: parameter %d differs from the CPU by %g", what, i, err);
        free(ref);
    }
    ct_optim_free(oc);
    ct_optim_free(og);
    for (int i = 0; i < N_PARAMS; i++) {
        ct_tensor_free(cpu[i]);
        ct_tensor_free(gpu[i]);
    }
}

Test(cuda_optim, fused_step_matches_cpu) {
    T_REQUIRE_GPU();
    int64_t live = ct_live_tensors();
    parity(sgd, "SGD nesterov");
    parity(adam, "Adam amsgrad");
    parity(adamw, "AdamW");
    parity(rmsprop, "RMSprop centered");
    parity(adagrad, "Adagrad");
    cr_assert_eq(ct_live_tensors(), live);
}

Test(cuda_optim, clip_matches_cpu) {
    T_REQUIRE_GPU();
    ct_tensor *cpu[N_PARAMS], *gpu[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) {
        cpu[i] = ct_requires_grad(filled(i, 0, CT_CPU), true);
        gpu[i] = ct_requires_grad(filled(i, 0, CT_CUDA(0)), true);
    }
    set_grads(cpu, 1, CT_CPU);
    set_grads(gpu, 1, CT_CUDA(0));
    const double types[3] = {2.0, INFINITY, 1.5};
    for (int t = 0; t < 3; t++) {
        double nc = ct_clip_grad_norm(cpu, N_PARAMS, 1.0, types[t]);
        double ng = ct_clip_grad_norm(gpu, N_PARAMS, 1.0, types[t]);
        cr_assert(fabs(nc - ng) <= 1e-12 * nc, "norm %g: CPU %.17g, GPU %.17g", types[t], nc, ng);
    }
    cr_assert_eq(ct_clip_grad_value(cpu, N_PARAMS, 0.01), CT_OK);
    cr_assert_eq(ct_clip_grad_value(gpu, N_PARAMS, 0.01), CT_OK);
    for (int i = 0; i < N_PARAMS; i++) {
        cr_assert_eq(ct_grad(cpu[i]) == NULL, ct_grad(gpu[i]) == NULL);
        if (ct_grad(cpu[i])) {
            double *ref = t_values(ct_grad(cpu[i]));
            cr_assert(t_max_abs_diff(ct_grad(gpu[i]), ref) < 1e-7, "gradient %d", i);
            free(ref);
        }
        ct_tensor_free(cpu[i]);
        ct_tensor_free(gpu[i]);
    }
}
