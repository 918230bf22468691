/* Tensors: creation, dtypes and half-precision conversion, views, ownership and scopes. */
#include "tests/common.h"
#include "kernels/cpu/half.h"

#include <string.h>

Test(tensor, creation_and_inspection) {
    T_NO_LEAK({
        ct_tensor *z = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        t_assert_shape(z, (int64_t[]){2, 3}, 2);
        cr_assert_eq(ct_tensor_numel(z), 6);
        cr_assert_eq(ct_tensor_dtype(z), CT_F32);
        cr_assert(ct_tensor_is_contiguous(z));
        cr_assert_eq(ct_tensor_strides(z)[0], 3);
        cr_assert_eq((uintptr_t)ct_tensor_data(z) % 64, 0, "CPU memory is 64-byte aligned");
        t_assert_close(z, (double[]){0, 0, 0, 0, 0, 0}, 0, 0);
        t_assert_close(ct_ones((int64_t[]){3}, 1, CT_I32, CT_CPU), (double[]){1, 1, 1}, 0, 0);
        t_assert_close(ct_full((int64_t[]){2}, 1, -2.5, CT_BF16, CT_CPU), (double[]){-2.5, -2.5}, 0, 0);
        ct_tensor *s = ct_scalar(7, CT_F64, CT_CPU);
        cr_assert_eq(ct_tensor_ndim(s), 0);
        cr_assert_eq(ct_item(s), 7);
        t_assert_close(ct_arange(0, 5, 1, CT_F32, CT_CPU), (double[]){0, 1, 2, 3, 4}, 0, 0);
        t_assert_close(ct_arange(1, -1, -0.5, CT_F64, CT_CPU), (double[]){1, 0.5, 0, -0.5}, 0, 0);
        cr_assert_eq(ct_tensor_numel(ct_arange(3, 3, 1, CT_F32, CT_CPU)), 0);
        ct_tensor *e = ct_empty((int64_t[]){0, 4}, 2, CT_U8, CT_CPU);
        cr_assert_eq(ct_tensor_numel(e), 0);
        int32_t buf[4] = {1, -2, 3, 2147483647};
        ct_tensor *h = ct_from_host(buf, (int64_t[]){2, 2}, 2, CT_I32, CT_CPU);
        int32_t back[4];
        cr_assert_eq(ct_to_host(h, back, sizeof back), CT_OK);
        cr_assert_arr_eq(buf, back, sizeof buf);
        cr_assert_str_eq(ct_shape_str(h), "[2, 2]");
        ct_tensor *c = ct_clone(h);
        cr_assert(!ct_tensor_shares_storage(c, h));
        t_assert_close(c, (double[]){1, -2, 3, 2147483647}, 0, 0);
        ct_tensor *like = ct_zeros_like(h);
        t_assert_shape(like, (int64_t[]){2, 2}, 2);
        cr_assert_eq(ct_tensor_dtype(like), CT_I32);
    });
}

Test(tensor, creation_errors) {
    ct_clear_error();
    cr_assert_null(ct_zeros((int64_t[]){2, -1}, 2, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_SHAPE, "ct_zeros", "negative", NULL);
    cr_assert_null(ct_empty((int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, 9, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_SHAPE, "ct_empty", "ndim is 9", NULL);
    cr_assert_null(ct_zeros((int64_t[]){2}, 1, (ct_dtype)42, CT_CPU));
    t_assert_error(CT_ERR_DTYPE, "invalid dtype", NULL);
    cr_assert_null(ct_from_host(NULL, (int64_t[]){2}, 1, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_NULL, "ct_from_host", "data", NULL);
    cr_assert_null(ct_arange(0, 1, 0, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_VALUE, "ct_arange", NULL);
    cr_assert_null(ct_zeros((int64_t[]){2}, 1, CT_F64, CT_CUDA(0)));
    t_assert_error(CT_ERR_DTYPE, "f64", NULL);
    if (!ct_cuda_is_available()) {
        cr_assert_null(ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CUDA(0)));
        t_assert_error(CT_ERR_DEVICE, "cuda:0", "not available", NULL);
    }
    T_NO_LEAK({
        ct_tensor *t = ct_zeros((int64_t[]){2, 2}, 2, CT_F32, CT_CPU);
        float small[2];
        cr_assert_eq(ct_to_host(t, small, sizeof small), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "too small", NULL);
        cr_assert(isnan(ct_item(t)));
        t_assert_error(CT_ERR_SHAPE, "ct_item", "[2, 2]", NULL);
        cr_assert_eq(ct_tensor_size(t, 2), -1);
        t_assert_error(CT_ERR_DIM, "ct_tensor_size", NULL);
        cr_assert_eq(ct_tensor_size(t, -1), 2);
    });
}

/* Found by fuzz_idx: a shape with a zero size and other sizes whose product overflows has no
 * elements, so the element count passed; its strides overflowed (UBSan). */
Test(tensor, zero_size_shape_with_overflowing_strides) {
    ct_clear_error();
    cr_assert_null(ct_empty((int64_t[]){0, 4294967296, 4294967296}, 3, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_SHAPE, "ct_empty", "[0, 4294967296, 4294967296]", "strides", NULL);
    T_NO_LEAK({
        ct_tensor *t = ct_zeros((int64_t[]){0, 1 << 20, 1 << 20}, 3, CT_F32, CT_CPU);
        t_assert_shape(t, (int64_t[]){0, 1 << 20, 1 << 20}, 3);
        /* Reshaping an empty tensor to such a shape is refused the same way. */
        ct_clear_error();
        cr_assert_null(ct_reshape(t, (int64_t[]){0, 4294967296, 4294967296}, 3));
        t_assert_error(CT_ERR_SHAPE, "ct_reshape", "[0, 4294967296, 4294967296]", NULL);
        cr_assert_null(ct_view(t, (int64_t[]){4294967296, 0, 4294967296}, 3));
        t_assert_error(CT_ERR_SHAPE, "ct_view", NULL);
        t_assert_shape(ct_reshape(t, (int64_t[]){1 << 20, 0, 1 << 20}, 3), (int64_t[]){1 << 20, 0, 1 << 20}, 3);
    });
}

Test(tensor, half_conversion_exhaustive_round_trip) {
    /* Every f16 bit pattern survives f16 -> f32 -> f16 (NaNs stay NaN). */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ct_f16_to_f32((uint16_t)h);
        uint16_t back = ct_f32_to_f16(f);
        if (isnan(f))
            cr_assert((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "NaN %04x came back as %04x", h, back);
        else
            cr_assert_eq(back, h, "f16 %04x -> %a -> %04x", h, f, back);
    }
    /* Every bf16 pattern too. */
    for (uint32_t b = 0; b < 65536; b++) {
        float f = ct_bf16_to_f32((uint16_t)b);
        uint16_t back = ct_f32_to_bf16(f);
        if (isnan(f))
            cr_assert(isnan(ct_bf16_to_f32(back)));
        else
            cr_assert_eq(back, b);
    }
}

Test(tensor, half_rounding_to_nearest_even) {
    /* Known values: ties go to even, overflow to Inf, subnormals exact, underflow to 0. */
    cr_assert_eq(ct_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(ct_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(ct_f32_to_f16(65519.99f), 0x7bff);
    cr_assert_eq(ct_f32_to_f16(65520.0f), 0x7c00);
    cr_assert_eq(ct_f32_to_f16(-INFINITY), 0xfc00);
    cr_assert_eq(ct_f32_to_f16(0x1p-24f), 0x0001);     /* smallest subnormal */
    cr_assert_eq(ct_f32_to_f16(0x1p-25f), 0x0000);     /* tie between 0 and 2^-24: even (0) */
    cr_assert_eq(ct_f32_to_f16(0x1.8p-24f), 0x0002);   /* 1.5 * 2^-24: tie -> 2 (even) */
    cr_assert_eq(ct_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);            /* tie -> even */
    cr_assert_eq(ct_f32_to_f16(1.0f + 0x1p-10f + 0x1p-11f), 0x3c02); /* tie -> even (up) */
    cr_assert_eq(ct_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(ct_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);            /* tie -> even */
    cr_assert_eq(ct_f32_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82);
    cr_assert_eq(ct_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(ct_f32_to_bf16(3.4028235e38f), 0x7f80); /* rounds up to Inf */
    cr_assert(isnan(ct_bf16_to_f32(ct_f32_to_bf16(NAN))));
    /* double -> f16 is rounded once: 1 + 2^-11 + 2^-40 is above the tie, so it rounds up,
     * where double -> float -> f16 would have rounded twice and gone down. */
    cr_assert_eq(ct_f64_to_f16(1.0 + 0x1p-11 + 0x1p-40), 0x3c01);
}

Test(tensor, dtype_casts_through_tensors) {
    T_NO_LEAK({
        ct_tensor *f = ct_from_host((float[]){1.5f, -2.7f, 1e6f, NAN, 300.0f, -1.0f}, (int64_t[]){6}, 1, CT_F32, CT_CPU);
        t_assert_close(ct_cast(f, CT_I32), (double[]){1, -2, 1000000, 0, 300, -1}, 0, 0);
        t_assert_close(ct_cast(f, CT_U8), (double[]){1, 0, 255, 0, 255, 0}, 0, 0);
        t_assert_close(ct_cast(f, CT_F16), (double[]){1.5, -2.69921875, INFINITY, NAN, 300, -1}, 0, 0);
        t_assert_close(ct_cast(ct_cast(f, CT_BF16), CT_F64), (double[]){1.5, -2.703125, 999424, NAN, 300, -1}, 0, 0);
    });
}

Test(views, share_storage_and_geometry) {
    T_NO_LEAK({
        ct_tensor *a = ct_arange(0, 24, 1, CT_F64, CT_CPU);
        ct_tensor *r = ct_reshape(a, (int64_t[]){2, 3, 4}, 3);
        cr_assert(ct_tensor_shares_storage(a, r));
        ct_tensor *p = ct_permute(r, (int[]){2, 0, 1}, 3);
        t_assert_shape(p, (int64_t[]){4, 2, 3}, 3);
        cr_assert(!ct_tensor_is_contiguous(p));
        double ref[24];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 2; j++)
                for (int k = 0; k < 3; k++)
                    ref[i * 6 + j * 3 + k] = j * 12 + k * 4 + i;
        t_assert_close(p, ref, 0, 0);
        ct_tensor *c = ct_contiguous(p);
        cr_assert(ct_tensor_is_contiguous(c) && !ct_tensor_shares_storage(c, p));
        t_assert_close(c, ref, 0, 0);
        /* reshape of a non-viewable layout copies; view refuses. */
        ct_tensor *flat = ct_reshape(p, (int64_t[]){-1}, 1);
        t_assert_close(flat, ref, 0, 0);
        cr_assert(!ct_tensor_shares_storage(flat, a));
        cr_assert_null(ct_view(p, (int64_t[]){24}, 1));
        t_assert_error(CT_ERR_SHAPE, "ct_view", "cannot be viewed", NULL);
        /* A view that merges compatible dims works on a permuted tensor. */
        ct_tensor *t = ct_transpose(r, 0, 1); /* (3, 2, 4) */
        ct_tensor *v = ct_view(t, (int64_t[]){3, 2, 2, 2}, 4);
        cr_assert_not_null(v, "%s", ct_last_error_message());
        cr_assert(ct_tensor_shares_storage(v, a));
        /* slicing with a step, negative bounds */
        ct_tensor *s = ct_slice(a, 0, -10, 100, 3);
        t_assert_close(s, (double[]){14, 17, 20, 23}, 0, 0);
        ct_tensor *sel = ct_select(r, 1, -1); /* (2, 4): r[:, 2, :] */
        t_assert_close(sel, (double[]){8, 9, 10, 11, 20, 21, 22, 23}, 0, 0);
        /* expand: stride 0 */
        ct_tensor *col = ct_reshape(ct_arange(0, 3, 1, CT_F32, CT_CPU), (int64_t[]){3, 1}, 2);
        ct_tensor *ex = ct_expand(col, (int64_t[]){2, 3, -1}, 3);
        t_assert_shape(ex, (int64_t[]){2, 3, 1}, 3);
        ex = ct_expand(col, (int64_t[]){3, 4}, 2);
        cr_assert_eq(ct_tensor_strides(ex)[1], 0);
        t_assert_close(ex, (double[]){0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2}, 0, 0);
        /* squeeze / unsqueeze / flatten */
        ct_tensor *u = ct_unsqueeze(r, -1);
        t_assert_shape(u, (int64_t[]){2, 3, 4, 1}, 4);
        t_assert_shape(ct_squeeze(u, CT_ALL_DIMS), (int64_t[]){2, 3, 4}, 3);
        t_assert_shape(ct_squeeze(u, 0), (int64_t[]){2, 3, 4, 1}, 4);
        t_assert_shape(ct_flatten(r, 1, -1), (int64_t[]){2, 12}, 2);
        t_assert_shape(ct_unsqueeze(ct_scalar(1, CT_F32, CT_CPU), 0), (int64_t[]){1}, 1);
        /* writes through a view are visible in the base */
        cr_assert_eq(ct_fill_(ct_select(ct_reshape(a, (int64_t[]){4, 6}, 2), 0, 0), -1), CT_OK);
        cr_assert_eq(ct_item(ct_select(a, 0, 5)), -1);
        cr_assert_eq(ct_item(ct_select(a, 0, 6)), 6);
    });
}

Test(views, errors) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_reshape(a, (int64_t[]){4, 2}, 2));
        t_assert_error(CT_ERR_SHAPE, "ct_reshape", "[2, 3]", "[4, 2]", NULL);
        cr_assert_null(ct_reshape(a, (int64_t[]){-1, 4}, 2));
        t_assert_error(CT_ERR_SHAPE, "ct_reshape", NULL);
        cr_assert_null(ct_transpose(a, 0, 2));
        t_assert_error(CT_ERR_DIM, "ct_transpose", "dim 2", NULL);
        cr_assert_null(ct_permute(a, (int[]){0, 0}, 2));
        t_assert_error(CT_ERR_DIM, "ct_permute", "twice", NULL);
        cr_assert_null(ct_slice(a, 1, 0, 2, 0));
        t_assert_error(CT_ERR_VALUE, "ct_slice", "step", NULL);
        cr_assert_null(ct_select(a, 0, 2));
        t_assert_error(CT_ERR_DIM, "ct_select", "index 2", NULL);
        cr_assert_null(ct_expand(a, (int64_t[]){4, 3}, 2));
        t_assert_error(CT_ERR_SHAPE, "ct_expand", NULL);
        cr_assert_null(ct_unsqueeze(a, 3));
        t_assert_error(CT_ERR_DIM, "ct_unsqueeze", NULL);
        cr_assert_null(ct_permute(NULL, (int[]){0}, 1));
        t_assert_error(CT_ERR_NULL, "ct_permute", NULL);
    });
}

Test(scopes, release_everything_and_keep_moves_out) {
    int64_t before = ct_live_tensors();
    ct_tensor *kept;
    ct_scope_begin();
    {
        ct_tensor *a = ct_ones((int64_t[]){4}, 1, CT_F32, CT_CPU);
        ct_scope_begin();
        ct_tensor *b = ct_add(a, a);
        ct_tensor *c = ct_mul(b, b);
        (void)c;
        kept = ct_keep(ct_add(b, a)); /* moves to the outer scope */
        cr_assert_eq(ct_scope_depth(), 2);
        cr_assert_eq(ct_scope_end(), CT_OK);
        cr_assert_eq(ct_item(ct_sum(kept, NULL, 0, false)), 12);
        ct_keep(kept); /* outermost scope: now owned by the caller */
    }
    cr_assert_eq(ct_scope_end(), CT_OK);
    cr_assert_eq(ct_live_tensors(), before + 1);
    ct_tensor *first = ct_select(kept, 0, 0); /* no scope open: owned by the caller */
    cr_assert_eq(ct_item(first), 3);
    ct_tensor_free(first);
    ct_tensor_free(kept);
    cr_assert_eq(ct_live_tensors(), before);
    cr_assert_eq(ct_scope_end(), CT_ERR_STATE);
    t_assert_error(CT_ERR_STATE, "no scope", NULL);
}

Test(scopes, free_inside_scope_and_views_keep_storage) {
    int64_t before = ct_live_tensors();
    ct_scope_begin();
    ct_tensor *a = ct_arange(0, 6, 1, CT_F32, CT_CPU);
    ct_tensor *v = ct_slice(a, 0, 2, 6, 1);
    ct_tensor_free(a); /* taken out of the scope and released; the view keeps the storage */
    cr_assert_eq(ct_item(ct_select(v, 0, 0)), 2);
    ct_scope_end();
    cr_assert_eq(ct_live_tensors(), before);
}

Test(scopes, use_after_free_is_caught) {
    ct_tensor *a = ct_ones((int64_t[]){2}, 1, CT_F32, CT_CPU);
    ct_tensor_free(a);
    ct_clear_error();
    cr_assert_null(ct_add(a, a));
    t_assert_error(CT_ERR_STATE, "ct_add", "was freed", NULL);
    ct_scope_begin();
    ct_tensor *b = ct_ones((int64_t[]){2}, 1, CT_F32, CT_CPU);
    ct_scope_end();
    cr_assert_null(ct_exp(b));
    t_assert_error(CT_ERR_STATE, "ct_exp", "was freed", NULL);
    ct_tensor_free(b);
    t_assert_error(CT_ERR_STATE, "already freed", NULL);
}

Test(tensor, retain_and_names) {
    int64_t before = ct_live_tensors();
    ct_tensor *a = ct_ones((int64_t[]){1}, 1, CT_F32, CT_CPU);
    cr_assert_eq(ct_tensor_retain(a), a);
    cr_assert_eq(ct_tensor_set_name(a, "conv1.weight"), CT_OK);
    cr_assert_str_eq(ct_tensor_name(a), "conv1.weight");
    ct_tensor_free(a);
    cr_assert_eq(ct_live_tensors(), before + 1);
    ct_tensor_free(a);
    cr_assert_eq(ct_live_tensors(), before);
}

Test(tensor, retained_references_and_scopes) {
    int64_t before = ct_live_tensors();
    /* A reference retained in a scope outlives it and is the caller's to free. */
    ct_scope_begin();
    ct_tensor *c = ct_tensor_retain(ct_ones((int64_t[]){3}, 1, CT_F32, CT_CPU));
    ct_scope_end();
    cr_assert_eq(ct_live_tensors(), before + 1);
    ct_scope_begin();
    cr_assert_eq(ct_item(ct_sum(c, NULL, 0, false)), 3.0, "%s", ct_last_error_message());
    ct_scope_end();
    ct_tensor_free(c);
    cr_assert_eq(ct_live_tensors(), before);

    /* ct_tensor_free on a scoped tensor releases the scope's reference: the tensor leaves the
     * scope, and a retained reference keeps it alive past the scope's end. */
    ct_scope_begin();
    ct_tensor *b = ct_ones((int64_t[]){3}, 1, CT_F32, CT_CPU);
    ct_tensor_retain(b);
    ct_tensor_free(b);
    cr_assert_eq(ct_live_tensors(), before + 1);
    cr_assert_eq(ct_scope_end(), CT_OK);
    cr_assert_eq(ct_live_tensors(), before + 1, "the retained reference outlives the scope");
    ct_tensor_free(b);
    cr_assert_eq(ct_live_tensors(), before);
}

Test(devices, parse_and_default) {
    ct_device d;
    cr_assert_eq(ct_device_parse("cuda:3", &d), CT_OK);
    cr_assert(d.type == CT_DEVICE_CUDA && d.index == 3);
    cr_assert_str_eq(ct_device_name(d), "cuda:3");
    cr_assert_eq(ct_device_parse("cpu", &d), CT_OK);
    cr_assert_eq(ct_device_parse("gpu", &d), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "gpu", NULL);
    setenv("CT_DEVICE", "cpu", 1);
    cr_assert_eq(ct_device_default().type, CT_DEVICE_CPU);
    /* A bad CT_DEVICE means the CPU, with a notice; the caller's pending error is kept. */
    setenv("CT_DEVICE", "gpu", 1);
    cr_assert_eq(ct_device_parse("tpu", &d), CT_ERR_VALUE); /* an error left pending */
    cr_assert_eq(ct_device_default().type, CT_DEVICE_CPU);
    t_assert_error(CT_ERR_VALUE, "ct_device_parse", "tpu", NULL);
    if (!ct_cuda_is_available()) {
        setenv("CT_DEVICE", "cuda", 1);
        cr_assert_eq(ct_device_default().type, CT_DEVICE_CPU, "falls back to the CPU without a GPU");
    }
    unsetenv("CT_DEVICE");
}

Test(devices, cuda_graphs_without_a_gpu_report_an_error) {
    if (ct_cuda_is_available())
        cr_skip_test("a GPU is usable: tests/test_cuda_graph.c covers CUDA graphs");
    cr_assert_null(ct_graph_capture_begin(0));
    t_assert_error(CT_ERR_DEVICE, "ct_graph_capture_begin", NULL);
    t_assert_graph_null_arguments();
}

Test(tensor, copy_and_fill_in_place) {
    T_NO_LEAK({
        ct_tensor *dst = ct_zeros((int64_t[]){2, 3}, 2, CT_F16, CT_CPU);
        ct_tensor *row = ct_from_host((double[]){1.5, -2, 3.25}, (int64_t[]){3}, 1, CT_F64, CT_CPU);
        cr_assert_eq(ct_copy_(dst, row), CT_OK, "%s", ct_last_error_message()); /* broadcast + cast */
        t_assert_close(dst, (double[]){1.5, -2, 3.25, 1.5, -2, 3.25}, 0, 0);
        /* into a strided view: the transpose of a (3, 2) buffer */
        ct_tensor *buf = ct_zeros((int64_t[]){3, 2}, 2, CT_F32, CT_CPU);
        cr_assert_eq(ct_copy_(ct_transpose(buf, 0, 1), dst), CT_OK);
        t_assert_close(buf, (double[]){1.5, 1.5, -2, -2, 3.25, 3.25}, 0, 0);
        cr_assert_eq(ct_fill_(ct_slice(buf, 0, 0, 3, 2), 7), CT_OK);
        t_assert_close(buf, (double[]){7, 7, -2, -2, 7, 7}, 0, 0);
        cr_assert_eq(ct_copy_(row, dst), CT_ERR_SHAPE);
        t_assert_error(CT_ERR_SHAPE, "ct_copy_", "[2, 3]", "[3]", NULL);
        cr_assert_eq(ct_copy_(row, NULL), CT_ERR_NULL);
        t_assert_error(CT_ERR_NULL, "ct_copy_", "src", NULL);
        /* to_device on the same device gives a handle on the same data */
        ct_tensor *same = ct_to_device(row, CT_CPU);
        cr_assert(ct_tensor_shares_storage(same, row));
        if (!ct_cuda_is_available()) {
            cr_assert_null(ct_to_device(row, CT_CUDA(0)));
            t_assert_error(CT_ERR_DEVICE, "ct_to_device", "cuda:0", NULL);
        }
        ct_tensor_print(buf, "buf", 4);
    });
}
