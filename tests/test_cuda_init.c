/* CUDA parity for parameter initialization (init.h): each ct_init_* fill of a CUDA tensor,
 * of a contiguous weight or of a transposed or stepped view, holds the numbers the CPU
 * fill holds from the same (seed, offset), and moves the offset alike. The random fills draw
 * with ct_uniform / ct_normal and copy, so they match as those do in test_cuda_core's
 * random_distributions_match_the_cpu: the uniform ones bit for bit (the GPU rounds
 * low + (high - low) * u as the CPU does, without a fused multiply-add), the normal ones
 * within one unit in the last place of the dtype (log, cos and sin may differ in their last
 * double bit); the constant fills bit for bit, in every dtype. Targets start as NaN (the whole base
 * under a view), so an element a fill misses, or one it writes outside its view, fails.
 * Each test reports itself skipped where no GPU is usable. */
#include "tests/common.h"
#include "ctensor/init.h"

static const ct_dtype float_dtypes[] = {CT_F32, CT_F16, CT_BF16};
static const double ulp[] = {2.4e-7, 0x1p-10, 0x1p-7}; /* relative spacing of F32, F16, BF16 */

enum init_kind {
    I_UNIFORM,
    I_NORMAL,
    I_CONSTANT,
    I_ZEROS,
    I_ONES,
    I_XAVIER_UNIFORM,
    I_XAVIER_NORMAL,
    I_KAIMING_UNIFORM,
    I_KAIMING_NORMAL,
    NUM_INITS
};
static const char *init_names[] = {"uniform",        "normal",        "constant",        "zeros",         "ones",
                                   "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"};

static ct_status run_init(enum init_kind kind, ct_tensor *t) {
    switch (kind) {
    case I_UNIFORM: return ct_init_uniform(t, -0.3, 0.7);
    case I_NORMAL: return ct_init_normal(t, 0.25, 1.5);
    case I_CONSTANT: return ct_init_constant(t, 0.1);
    case I_ZEROS: return ct_init_zeros(t);
    case I_ONES: return ct_init_ones(t);
    case I_XAVIER_UNIFORM: return ct_init_xavier_uniform(t, 5.0 / 3.0);
    case I_XAVIER_NORMAL: return ct_init_xavier_normal(t, 1.0);
    case I_KAIMING_UNIFORM: return ct_init_kaiming_uniform(t, sqrt(5.0), CT_FAN_IN, CT_NONLINEARITY_LEAKY_RELU);
    default: return ct_init_kaiming_normal(t, 0.0, CT_FAN_OUT, CT_NONLINEARITY_RELU);
    }
}

static bool is_normal(enum init_kind kind) {
    return kind == I_NORMAL || kind == I_XAVIER_NORMAL || kind == I_KAIMING_NORMAL;
}

/* The tensor that a fill sees, as a view of `base`. */
enum layout { CONV_WEIGHT, TRANSPOSED, STEPPED, NUM_LAYOUTS };
static const int64_t base_shapes[NUM_LAYOUTS][4] = {{33, 17, 3, 3}, {129, 65}, {40, 258}};
static const int base_ndims[NUM_LAYOUTS] = {4, 2, 2};

static ct_tensor *layout_view(ct_tensor *base, enum layout layout) {
    ct_tensor *v = layout == TRANSPOSED ? ct_transpose(base, 0, 1)     /* (65, 129) */
                   : layout == STEPPED  ? ct_slice(base, 1, 1, 258, 2) /* (40, 129), one element in */
                                        : base;
    cr_assert_not_null(v, "%s", ct_last_error_message());
    return v;
}

/* Fill layout_view(base) on `device` from (seed, offset); base starts as NaN. The offset
 * after the fill goes to *after. */
static ct_tensor *filled_base(enum init_kind kind, enum layout layout, ct_dtype dt, ct_device device, uint64_t seed,
                              uint64_t *after) {
    ct_tensor *base = ct_full(base_shapes[layout], base_ndims[layout], NAN, dt, device);
    cr_assert_not_null(base, "%s", ct_last_error_message());
    ct_manual_seed(seed);
    ct_random_set_offset(4242);
    cr_assert_eq(run_init(kind, layout_view(base, layout)), CT_OK, "ct_init_%s on %s: %s", init_names[kind],
                 ct_device_name(device), ct_last_error_message());
    *after = ct_random_offset();
    return base;
}

Test(cuda_init, fills_match_the_cpu) {
    T_REQUIRE_GPU();
    for (int k = 0; k < 3; k++)
        for (int kind = 0; kind < NUM_INITS; kind++)
            for (int layout = 0; layout < NUM_LAYOUTS; layout++)
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[k];
                    uint64_t seed = 31 + (uint64_t)(kind * NUM_LAYOUTS + layout), after_cpu, after_gpu;
                    ct_tensor *cpu = filled_base(kind, layout, dt, CT_CPU, seed, &after_cpu);
                    ct_tensor *gpu = filled_base(kind, layout, dt, T_GPU, seed, &after_gpu);
                    cr_assert(ct_device_equal(ct_tensor_device(gpu), T_GPU));
                    cr_assert_eq(after_gpu, after_cpu,
                                 "ct_init_%s %s layout %d: offset %llu after the GPU fill, %llu "
                                 "after the CPU's",
                                 init_names[kind], ct_dtype_name(dt), layout, (unsigned long long)after_gpu,
                                 (unsigned long long)after_cpu);
                    double *ref = t_values(cpu);
                    if (is_normal(kind))
                        t_assert_close(gpu, ref, 1e-7, ulp[k]);
                    else
                        t_assert_close(gpu, ref, 0, 0);
                    free(ref);
                });
}

/* ct_init_constant, _zeros and _ones fill every dtype, as on the CPU: rounding, saturation
 * and NaN alike, into a stepped view of a poisoned tensor. */
Test(cuda_init, constants_in_every_dtype) {
    T_REQUIRE_GPU();
    static const ct_dtype dtypes[] = {CT_F32, CT_F16, CT_BF16, CT_I32, CT_U8};
    static const double values[] = {0.1, -2.5, 300.0, 1e20, NAN};
    for (unsigned k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++)
        for (unsigned v = 0; v < sizeof values / sizeof values[0]; v++)
            T_NO_LEAK({
                ct_tensor *bases[2];
                for (int d = 0; d < 2; d++) {
                    ct_device device = d ? T_GPU : CT_CPU;
                    bases[d] = ct_full((int64_t[]){7, 301}, 2, 77, dtypes[k], device);
                    cr_assert_not_null(bases[d], "%s", ct_last_error_message());
                    ct_tensor *view = ct_slice(bases[d], 1, 2, 301, 3);
                    cr_assert_eq(ct_init_constant(view, values[v]), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(ct_init_ones(ct_select(view, 0, 3)), CT_OK, "%s", ct_last_error_message());
                    cr_assert_eq(ct_init_zeros(ct_select(view, 1, 97)), CT_OK, "%s", ct_last_error_message());
                }
                double *ref = t_values(bases[0]);
                t_assert_close(bases[1], ref, 0, 0);
                free(ref);
            });
}

/* A parameter on the GPU that requires grad stays a leaf with no gradient; an empty tensor
 * is left alone without drawing; bad tensors get the CPU's errors. */
Test(cuda_init, parameters_empty_tensors_and_errors) {
    T_REQUIRE_GPU();
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *w = ct_requires_grad(ct_zeros((int64_t[]){16, 9}, 2, CT_F32, T_GPU), true);
        cr_assert_not_null(w, "%s", ct_last_error_message());
        cr_assert_eq(ct_init_kaiming_uniform(w, sqrt(5.0), CT_FAN_IN, CT_NONLINEARITY_LEAKY_RELU), CT_OK, "%s",
                     ct_last_error_message());
        cr_assert(ct_tensor_is_leaf(w) && ct_tensor_requires_grad(w) && ct_grad(w) == NULL);

        uint64_t before = ct_random_offset();
        ct_tensor *empty = ct_zeros((int64_t[]){0, 5}, 2, CT_F16, T_GPU);
        cr_assert_eq(ct_init_normal(empty, 0, 1), CT_OK);
        cr_assert_eq(ct_init_xavier_uniform(empty, 1.0), CT_OK);
        cr_assert_eq(ct_random_offset(), before, "an empty fill drew numbers");

        ct_tensor *ints = ct_zeros((int64_t[]){4, 4}, 2, CT_I32, T_GPU);
        cr_assert_eq(ct_init_uniform(ints, 0, 1), CT_ERR_DTYPE);
        t_assert_error(CT_ERR_DTYPE, "ct_init_uniform", "floating", "i32", NULL);
        ct_tensor *vector = ct_zeros((int64_t[]){8}, 1, CT_BF16, T_GPU);
        cr_assert_eq(ct_init_kaiming_normal(vector, 0, CT_FAN_IN, CT_NONLINEARITY_RELU), CT_ERR_SHAPE);
        t_assert_error(CT_ERR_SHAPE, "ct_init_kaiming_normal", "at least 2 dims", NULL);
        cr_assert_eq(ct_init_normal(w, 0, -1), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "ct_init_normal", NULL);
    });
}
