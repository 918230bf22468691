/* CUDA graphs on a GPU (ctensor/graph.h): a captured forward + backward replayed with new
 * inputs gives the eager training steps' numbers; random ops draw fresh numbers at each replay,
 * the same as eager ops from the same generator state; calls that cannot be captured are
 * refused and leave the capture intact; the graph's memory is private and given back; bad
 * arguments. Each test reports itself skipped where no GPU is usable. */
#include "tests/common.h"

#include <pthread.h>
#include <string.h>

#define BATCH 16

/* conv(1 -> 4, 3x3, pad 1) - relu - flatten - linear(4*8*8 -> 10), the same numbers each time. */
static ct_module *small_net(uint64_t seed) {
    ct_manual_seed(seed);
    ct_conv2d_opts conv = CT_CONV2D_OPTS_DEFAULT;
    conv.padding[0] = conv.padding[1] = 1;
    ct_module *net = ct_sequential(4, (ct_module *[]){ct_conv2d_layer(1, 4, 3, &conv, true), ct_relu_layer(),
                                                       ct_flatten_layer(1, -1), ct_linear(4 * 8 * 8, 10, true)});
    cr_assert_not_null(net, "%s", ct_last_error_message());
    cr_assert_eq(ct_module_to(net, T_GPU), CT_OK, "%s", ct_last_error_message());
    return net;
}

/* Batch k of images and labels, made on the CPU and copied to the GPU. */
static void batch(int k, ct_tensor **x, ct_tensor **y) {
    ct_manual_seed(1000 + (uint64_t)k);
    *x = t_to_gpu(t_rand((int64_t[]){BATCH, 1, 8, 8}, 4, CT_F32, -1, 1));
    int32_t labels[BATCH];
    for (int i = 0; i < BATCH; i++)
        labels[i] = (i * 7 + k) % 10;
    *y = ct_from_host(labels, (int64_t[]){BATCH}, 1, CT_I32, T_GPU);
    cr_assert_not_null(*y, "%s", ct_last_error_message());
}

static double loss_step(ct_module *net, ct_tensor *x, ct_tensor *y) {
    ct_tensor *loss = ct_cross_entropy(ct_module_forward(net, x), y, NULL);
    cr_assert_not_null(loss, "%s", ct_last_error_message());
    cr_assert_eq(ct_backward(loss), CT_OK, "%s", ct_last_error_message());
    return ct_item(loss);
}

static void assert_same_params(ct_module *a, ct_module *b, double rtol, int step) {
    ct_named_tensors *pa = ct_module_parameters(a), *pb = ct_module_parameters(b);
    cr_assert(pa && pb && pa->count == pb->count);
    for (int i = 0; i < pa->count; i++) {
        double *va = t_values(pa->tensors[i]);
        t_assert_close(pb->tensors[i], va, 1e-7, rtol);
        (void)step;
        free(va);
    }
    ct_named_tensors_free(pa);
    ct_named_tensors_free(pb);
}

Test(cuda_graph, replayed_steps_match_eager_steps) {
    T_REQUIRE_GPU();
    ct_set_deterministic(true); /* cuDNN algorithms without atomics: both runs add in one order */
    T_NO_LEAK({
        ct_module *eager = small_net(5), *graphed = small_net(5);
        ct_sgd_opts so = CT_SGD_OPTS_DEFAULT;
        so.lr = 0.1;
        so.momentum = 0.9;
        ct_optim *oe = ct_optim_sgd(eager, &so), *og = ct_optim_sgd(graphed, &so);
        cr_assert(oe && og, "%s", ct_last_error_message());
        /* Step 0 eagerly on both: the warm-up (cuDNN timing, handles) before the capture. */
        ct_tensor *x0, *y0;
        batch(0, &x0, &y0);
        for (int m = 0; m < 2; m++) {
            ct_optim_zero_grad(m ? og : oe);
            loss_step(m ? graphed : eager, x0, y0);
            cr_assert_eq(ct_optim_step(m ? og : oe), CT_OK, "%s", ct_last_error_message());
        }
        /* Static input and labels, then the capture of forward + backward. */
        ct_tensor *sx = ct_empty((int64_t[]){BATCH, 1, 8, 8}, 4, CT_F32, T_GPU);
        ct_tensor *sy = ct_empty((int64_t[]){BATCH}, 1, CT_I32, T_GPU);
        cr_assert(sx && sy, "%s", ct_last_error_message());
        ct_optim_zero_grad(og);
        ct_graph *g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_device(g), 0);
        ct_tensor *loss = ct_cross_entropy(ct_module_forward(graphed, sx), sy, NULL);
        cr_assert_not_null(loss, "%s", ct_last_error_message());
        cr_assert_eq(ct_backward(loss), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());
        for (int k = 1; k <= 4; k++) {
            ct_tensor *x, *y;
            batch(k, &x, &y);
            ct_optim_zero_grad(oe);
            double want = loss_step(eager, x, y);
            cr_assert_eq(ct_optim_step(oe), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_copy_(sx, x), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_copy_(sy, y), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
            double got = ct_item(loss);
            cr_assert_eq(ct_last_error(), CT_OK, "%s", ct_last_error_message());
            cr_assert(fabs(got - want) <= 1e-6 * fabs(want), "step %d: replayed loss %.9g, eager %.9g", k, got, want);
            cr_assert_eq(ct_optim_step(og), CT_OK, "%s", ct_last_error_message());
            assert_same_params(eager, graphed, 1e-5, k);
        }
        ct_graph_free(g);
        ct_optim_free(oe);
        ct_optim_free(og);
        ct_module_free(eager);
        ct_module_free(graphed);
    });
    ct_set_deterministic(false);
}

Test(cuda_graph, random_ops_draw_new_numbers_at_each_replay) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        const int64_t n = 4099; /* not a multiple of 4: a partial Philox block at the end */
        ct_tensor *ones = ct_full((int64_t[]){n}, 1, 1.0, CT_F32, T_GPU);
        cr_assert_not_null(ones, "%s", ct_last_error_message());
        ct_graph *g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        ct_tensor *d = ct_dropout(ones, 0.5, true);
        ct_tensor *u = ct_rand((int64_t[]){n}, 1, CT_F32, T_GPU);
        ct_tensor *perm = ct_randperm(n, T_GPU); /* a CUB sort inside the graph */
        cr_assert(d && u && perm, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());

        ct_manual_seed(77);
        double *d1 = NULL, *u1 = NULL, *d2 = NULL, *u2 = NULL, *p1 = NULL, *p2 = NULL;
        cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
        d1 = t_values(d);
        u1 = t_values(u);
        p1 = t_values(perm);
        cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
        d2 = t_values(d);
        u2 = t_values(u);
        p2 = t_values(perm);
        /* The same ops run eagerly from the same generator state give the same numbers (the
         * permutations also on the CPU, which draws the same words). */
        ct_manual_seed(77);
        ct_tensor *e_d1 = ct_dropout(ones, 0.5, true), *e_u1 = ct_rand((int64_t[]){n}, 1, CT_F32, T_GPU);
        ct_tensor *e_p1 = ct_randperm(n, CT_CPU);
        ct_tensor *e_d2 = ct_dropout(ones, 0.5, true), *e_u2 = ct_rand((int64_t[]){n}, 1, CT_F32, T_GPU);
        ct_tensor *e_p2 = ct_randperm(n, CT_CPU);
        cr_assert(e_d1 && e_u1 && e_p1 && e_d2 && e_u2 && e_p2, "%s", ct_last_error_message());
        t_assert_close(e_d1, d1, 0, 0);
        t_assert_close(e_u1, u1, 0, 0);
        t_assert_close(e_p1, p1, 0, 0);
        t_assert_close(e_d2, d2, 0, 0);
        t_assert_close(e_u2, u2, 0, 0);
        t_assert_close(e_p2, p2, 0, 0);
        int64_t same = 0;
        for (int64_t i = 0; i < n; i++)
            same += d1[i] == d2[i];
        cr_assert(same < n * 3 / 4, "two replays drew the same dropout mask (%lld of %lld equal)", (long long)same,
                  (long long)n);
        free(d1);
        free(u1);
        free(d2);
        free(u2);
        free(p1);
        free(p2);
        ct_graph_free(g);
    });
}

Test(cuda_graph, reseeding_during_a_capture_with_random_ops_is_refused) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *ones = ct_full((int64_t[]){64}, 1, 1.0, CT_F32, T_GPU);
        ct_graph *g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        cr_assert_not_null(ct_dropout(ones, 0.5, true), "%s", ct_last_error_message());
        ct_manual_seed(3);
        cr_assert_null(ct_dropout(ones, 0.5, true), "a random op after a reseed in the capture");
        t_assert_error(CT_ERR_STATE, "reseeded", NULL);
        cr_assert_eq(ct_graph_capture_end(g), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "reseeded", NULL);
        cr_assert_eq(ct_graph_replay(g), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "cannot be replayed", NULL);
        ct_graph_free(g);
        /* The thread is no longer capturing: ordinary work and synchronization go on. */
        cr_assert_eq(ct_item(ct_sum(ones, NULL, 0, false)), 64.0, "%s", ct_last_error_message());
    });
}

/* A reseed back to the very seed and offset the capture began at is still a reseed: the
 * graph's ops would draw overlapping numbers, and replays would repeat them. */
Test(cuda_graph, reseeding_back_to_the_same_seed_is_refused_too) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *ones = ct_full((int64_t[]){64}, 1, 1.0, CT_F32, T_GPU);
        cr_assert_not_null(ones, "%s", ct_last_error_message());
        for (int how = 0; how < 2; how++) {
            ct_manual_seed(5);
            ct_graph *g = ct_graph_capture_begin(0);
            cr_assert_not_null(g, "%s", ct_last_error_message());
            cr_assert_not_null(ct_dropout(ones, 0.5, true), "%s", ct_last_error_message());
            if (how == 0)
                ct_manual_seed(5);
            else
                ct_random_set_offset(0);
            cr_assert_eq(ct_graph_capture_end(g), CT_ERR_STATE, "%s: the capture ended well",
                         how ? "ct_random_set_offset(0)" : "ct_manual_seed(5)");
            t_assert_error(CT_ERR_STATE, "reseeded", NULL);
            ct_graph_free(g);
        }
    });
}

/* A dropout captured in a graph redraws its mask at each replay: its backward run eagerly
 * after a replay would rebuild the capture's mask, so it is refused; captured with the
 * forward, it matches the replay's mask. */
Test(cuda_graph, a_captured_dropout_needs_its_backward_in_the_capture) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        const int64_t n = 1000;
        ct_tensor *x = ct_full((int64_t[]){n}, 1, 1.0, CT_F32, T_GPU);
        cr_assert_not_null(x, "%s", ct_last_error_message());
        ct_requires_grad(x, true);
        ct_graph *g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        ct_tensor *loss = ct_sum(ct_dropout(x, 0.5, true), NULL, 0, false);
        cr_assert_not_null(loss, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_backward(loss), CT_ERR_STATE, "the eager backward of a captured dropout ran");
        t_assert_error(CT_ERR_STATE, "ct_dropout backward", "capture the backward in the same graph", NULL);
        ct_graph_free(g);

        /* forward and backward in one capture: the gradient is the replay's mask times 2 */
        g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        ct_tensor *y = ct_dropout(x, 0.5, true);
        cr_assert_not_null(y, "%s", ct_last_error_message());
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
        double *fwd = t_values(y), *grad = t_values(ct_grad(x));
        int64_t kept = 0;
        for (int64_t i = 0; i < n; i++) {
            cr_assert_eq(grad[i], fwd[i], "element %lld: gradient %g, forward %g (x is 1: both are the mask times 2)",
                         (long long)i, grad[i], fwd[i]);
            kept += fwd[i] != 0;
        }
        cr_assert(kept > n / 4 && kept < 3 * n / 4, "%lld of %lld kept", (long long)kept, (long long)n);
        free(fwd);
        free(grad);
        ct_graph_free(g);
    });
}

Test(cuda_graph, refused_calls_spoil_the_capture_and_say_so) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *w = ct_full((int64_t[]){8}, 1, 1.0, CT_F32, T_GPU);
        ct_requires_grad(w, true);
        cr_assert_eq(ct_backward(ct_sum(ct_mul_scalar(w, 2.0), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        ct_optim *opt = ct_optim_sgd_from_tensors(&w, (const char *[]){"w"}, 1, &(ct_sgd_opts)CT_SGD_OPTS_DEFAULT);
        cr_assert_not_null(opt, "%s", ct_last_error_message());
        ct_tensor *x = ct_full((int64_t[]){4, 4}, 2, 1.0, CT_F32, T_GPU);
        cr_assert_not_null(x, "%s", ct_last_error_message());
        ct_stream *before = ct_stream_current(0);
        ct_event *ev = ct_event_create(false);
        cr_assert_eq(ct_event_record(ev, before), CT_OK, "%s", ct_last_error_message());

        ct_graph *g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        cr_assert_neq(ct_stream_current(0), before, "the capture runs on the graph's own stream");
        ct_tensor *y = ct_add_scalar(x, 1.0);
        cr_assert_not_null(y, "%s", ct_last_error_message());
        cr_assert(isnan(ct_item(ct_sum(y, NULL, 0, false))), "ct_item during the capture returned a number");
        t_assert_error(CT_ERR_STATE, "ct_item", "capture", NULL);
        float host[16];
        cr_assert_eq(ct_to_host(y, host, sizeof host), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "capture", NULL);
        cr_assert_null(ct_from_host(host, (int64_t[]){16}, 1, CT_F32, T_GPU));
        t_assert_error(CT_ERR_STATE, "host memory", "capture", NULL);
        cr_assert_eq(ct_stream_synchronize(ct_stream_current(0)), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_stream_synchronize", NULL);
        cr_assert_eq(ct_device_synchronize(0), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_device_synchronize", NULL);
        cr_assert_eq(ct_event_synchronize(ev), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_event_synchronize", NULL);
        cr_assert_eq(ct_stream_wait_event(ct_stream_current(0), ev), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_stream_wait_event", NULL);
        cr_assert_eq(ct_event_record(ev, ct_stream_current(0)), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_event_record", "capture", NULL);
        cr_assert_eq(ct_tensor_record_stream(y, ct_stream_current(0)), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_tensor_record_stream", "capture", NULL);
        cr_assert_eq(ct_stream_set_current(ct_stream_default(0)), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_stream_set_current", "capturing", NULL);
        cr_assert_null(ct_graph_capture_begin(0));
        t_assert_error(CT_ERR_STATE, "already capturing", NULL);
        cr_assert_eq(ct_graph_replay(g), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "still being captured", NULL);
        cr_assert_eq(ct_optim_step(opt), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_optim_step", "frozen", NULL);
        /* The capture ends, but the graph would lack what was refused: it is not replayable. */
        cr_assert_eq(ct_graph_capture_end(g), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_graph_capture_end", "errors on this thread during the capture", "ct_item",
                       NULL);
        cr_assert_eq(ct_stream_current(0), before, "the thread's stream is restored");
        cr_assert_eq(ct_graph_replay(g), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "cannot be replayed", NULL);
        cr_assert_eq(ct_graph_capture_end(g), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "already ended", NULL);
        ct_graph_free(g);
        /* Afterwards everything works again, the optimizer included. */
        cr_assert_eq(ct_optim_step(opt), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_event_synchronize(ev), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_device_synchronize(0), CT_OK, "%s", ct_last_error_message());
        /* A failing op (not a refusal) spoils the capture too. */
        ct_tensor *odd = ct_full((int64_t[]){3, 5}, 2, 1.0, CT_F32, T_GPU);
        g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        cr_assert_null(ct_matmul(x, odd));
        cr_assert_eq(ct_graph_capture_end(g), CT_ERR_STATE);
        t_assert_error(CT_ERR_STATE, "ct_matmul", NULL);
        ct_graph_free(g);
        ct_event_free(ev);
        ct_optim_free(opt);
    });
}

/* y = x @ x / N four times, then x <- y + 1 in place: with x all c, y is all c^5. Enough work
 * that a second replay started before the first ended would read x before it was rewritten. */
#define ORDER_N 2048
static void chain_in_place(ct_tensor *x) {
    ct_tensor *y = x;
    for (int i = 0; i < 4; i++)
        y = ct_mul_scalar(ct_matmul(y, x), 1.0 / ORDER_N);
    cr_assert_eq(ct_copy_(x, ct_add_scalar(y, 1.0)), CT_OK, "%s", ct_last_error_message());
}

Test(cuda_graph, replays_on_two_streams_run_one_after_the_other) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        const int64_t n = 4099;
        ct_tensor *x = ct_full((int64_t[]){ORDER_N, ORDER_N}, 2, 1.0, CT_F32, T_GPU);
        ct_tensor *acc = ct_zeros(&n, 1, CT_F32, T_GPU);
        cr_assert(x && acc, "%s", ct_last_error_message());
        /* cuBLASLt's algorithm chosen eagerly (the graph's stream gets its own handle and
         * workspace when the capture begins). */
        cr_assert_not_null(ct_matmul(x, x), "%s", ct_last_error_message());
        ct_graph *g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        ct_scope_begin();
        chain_in_place(x);
        /* last, after the matmuls: a replay's random numbers come from a buffer of the graph
         * that the next replay rewrites before its launch */
        cr_assert_eq(ct_add_(acc, ct_rand(&n, 1, CT_F32, T_GPU)), CT_OK, "%s", ct_last_error_message());
        ct_scope_end();
        cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());
        ct_stream *def = ct_stream_current(0), *pool = ct_stream_from_pool(0);
        /* x = 1 -> 2 on the default stream, then 2 -> 33 on a pool stream, with no host wait
         * in between: only the graph's own ordering keeps the second from reading x = 1, and
         * only ct_graph_replay's wait keeps the second's offsets from reaching the first's
         * ct_rand (acc would hold the second's numbers twice). */
        ct_manual_seed(21);
        cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_set_current(pool), CT_OK);
        cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_synchronize(pool), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_set_current(def), CT_OK);
        double *v = t_values(x);
        for (int64_t i = 0; i < (int64_t)ORDER_N * ORDER_N; i += 4099)
            cr_assert_eq(v[i], 33.0, "x[%lld] = %g after two replays (33 when the second waited for the first)",
                         (long long)i, v[i]);
        free(v);
        ct_manual_seed(21);
        ct_tensor *r1 = ct_rand(&n, 1, CT_F32, CT_CPU), *r2 = ct_rand(&n, 1, CT_F32, CT_CPU);
        double *want = t_values(ct_add(r1, r2));
        t_assert_close(acc, want, 0, 0);
        free(want);
        ct_graph_free(g);
    });
}

Test(cuda_graph, the_graph_memory_is_private_until_it_is_freed) {
    T_REQUIRE_GPU();
    ct_cuda_empty_cache();
    ct_memory_stats s0, s1, s2, s3;
    cr_assert_eq(ct_cuda_memory_stats(0, &s0), CT_OK);
    const int64_t n = 1 << 20; /* 4 MiB blocks: the large pool, carved from 20 MiB segments */
    ct_tensor *x = ct_full((int64_t[]){n}, 1, 1.0, CT_F32, T_GPU);
    ct_graph *g = ct_graph_capture_begin(0);
    cr_assert_not_null(g, "%s", ct_last_error_message());
    ct_scope_begin();
    ct_tensor *a = ct_add_scalar(x, 1.0);
    void *inner_ptr = ct_tensor_data(a);
    ct_tensor *out = ct_keep(ct_mul_scalar(a, 2.0));
    ct_scope_end(); /* a is freed inside the capture... */
    ct_tensor *again = ct_add_scalar(x, 5.0);
    cr_assert(again && out, "%s", ct_last_error_message());
    cr_assert_eq(ct_tensor_data(again), inner_ptr, "...and its block is reused within the capture");
    ct_tensor_free(again); /* the block is free again, in the graph's pool */
    cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_cuda_memory_stats(0, &s1), CT_OK);
    cr_assert_geq(s1.reserved_bytes, s0.reserved_bytes + ((size_t)40 << 20), "x's segment and the graph's");
    /* An eager allocation of that size does not get the graph's free block. */
    ct_tensor *eager = ct_add_scalar(x, 1.0);
    cr_assert_not_null(eager, "%s", ct_last_error_message());
    cr_assert_neq(ct_tensor_data(eager), inner_ptr, "an eager op got a free block of the graph's pool");
    ct_tensor_free(eager);
    cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
    double *v = t_values(out);
    cr_assert_eq(v[0], 4.0);
    cr_assert_eq(v[n - 1], 4.0);
    free(v);
    /* With every tensor of the graph freed, its pool is all free, yet kept while it lives. */
    ct_tensor_free(out);
    ct_cuda_empty_cache();
    cr_assert_eq(ct_cuda_memory_stats(0, &s2), CT_OK);
    cr_assert_geq(s2.reserved_bytes, s0.reserved_bytes + ((size_t)40 << 20),
                  "the graph's pool was given back while the graph lives: reserved %zu, %zu before", s2.reserved_bytes,
                  s0.reserved_bytes);
    cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message()); /* still safe to replay */
    ct_graph_free(g);
    ct_tensor_free(x);
    ct_cuda_empty_cache();
    cr_assert_eq(ct_cuda_memory_stats(0, &s3), CT_OK);
    cr_assert_leq(s3.reserved_bytes, s0.reserved_bytes, "reserved %zu after the graph and its tensors were freed, %zu "
                  "before", s3.reserved_bytes, s0.reserved_bytes);
}

static void *end_elsewhere(void *graph) {
    ct_status st = ct_graph_capture_end((ct_graph *)graph);
    return (void *)(intptr_t)(st == CT_ERR_STATE && strstr(ct_last_error_message(), "thread that began it"));
}

/* What another thread does while this one captures (capture mode ThreadLocal), one thing
 * per round so that a failure names it: synchronize the device, free a ready graph, empty the
 * cache, allocate and run a matmul, run a convolution of a geometry not timed before on a
 * thread that makes its own cuDNN handle (handle creation and cuDNN's heuristics), then one
 * already timed with that handle, from the pool its thread left it in (cuDNN's execution
 * alone). */
enum elsewhere_kind { E_SYNC, E_FREE_GRAPH, E_EMPTY_CACHE, E_MATMUL, E_NEW_CONV, E_CACHED_CONV, NUM_ELSEWHERE };
static const char *elsewhere_names[] = {"ct_device_synchronize", "ct_graph_free", "ct_cuda_empty_cache", "a matmul",
                                        "a convolution of a new geometry with a new cuDNN handle",
                                        "a timed convolution with a pooled cuDNN handle"};
/* The sum of conv(ones (shape x), ones (shape w)), or of ones (n, n) @ halves (n, n) with
 * w NULL, read back (NaN on failure). */
static double sum_of_ones_op(const int64_t *x, const int64_t *w) {
    if (!w)
        return ct_item(ct_sum(ct_matmul(ct_full(x, 2, 1.0, CT_F32, T_GPU), ct_full(x, 2, 0.5, CT_F32, T_GPU)), NULL,
                              0, false));
    return ct_item(ct_sum(ct_conv2d(ct_full(x, 4, 1.0, CT_F32, T_GPU), ct_full(w, 4, 1.0, CT_F32, T_GPU), NULL, NULL),
                          NULL, 0, false));
}

struct elsewhere {
    enum elsewhere_kind kind;
    ct_graph *ready;
    char why[512];
};
static void *work_elsewhere(void *arg) {
    struct elsewhere *e = arg;
    bool ok = true;
    double got = 0, want = 0;
    ct_scope_begin();
    switch (e->kind) {
    case E_SYNC: ok = ct_device_synchronize(0) == CT_OK; break;
    case E_FREE_GRAPH:
        ct_graph_free(e->ready);
        ok = ct_last_error() == CT_OK;
        break;
    case E_EMPTY_CACHE:
        ct_cuda_empty_cache();
        ok = ct_last_error() == CT_OK;
        break;
    case E_MATMUL:
        got = sum_of_ones_op((int64_t[]){64, 64}, NULL);
        want = 64.0 * 64.0 * 64.0 * 0.5;
        ok = got == want;
        break;
    case E_CACHED_CONV: /* the geometry the test timed first: 14 x 14 outputs of 9 */
        got = sum_of_ones_op((int64_t[]){1, 1, 16, 16}, (int64_t[]){1, 1, 3, 3});
        want = 14.0 * 14.0 * 9.0;
        ok = got == want;
        break;
    default:
        got = sum_of_ones_op((int64_t[]){1, 1, 5, 7}, (int64_t[]){2, 1, 3, 3});
        want = 2.0 * 9.0 * 15.0;
        ok = got == want;
        break;
    }
    if (!ok)
        snprintf(e->why, sizeof e->why, "%s (got %g, want %g): %s", elsewhere_names[e->kind], got, want,
                 ct_last_error_message());
    ct_scope_end();
    return (void *)(intptr_t)ok;
}

Test(cuda_graph, other_threads_keep_working_during_a_capture) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *x = ct_full((int64_t[]){256}, 1, 1.0, CT_F32, T_GPU);
        cr_assert_not_null(x, "%s", ct_last_error_message());
        /* cuDNN set up on this thread first (the other thread makes its own handle) */
        ct_tensor *w = ct_full((int64_t[]){1, 1, 3, 3}, 4, 1.0, CT_F32, T_GPU);
        cr_assert_not_null(ct_conv2d(ct_reshape(x, (int64_t[]){1, 1, 16, 16}, 4), w, NULL, NULL), "%s",
                           ct_last_error_message());
        for (int kind = 0; kind < NUM_ELSEWHERE; kind++) {
            struct elsewhere e = {.kind = (enum elsewhere_kind)kind};
            if (kind == E_FREE_GRAPH) {
                e.ready = ct_graph_capture_begin(0);
                cr_assert_not_null(e.ready, "%s", ct_last_error_message());
                cr_assert_not_null(ct_add_scalar(x, 1.0), "%s", ct_last_error_message());
                cr_assert_eq(ct_graph_capture_end(e.ready), CT_OK, "%s", ct_last_error_message());
            }
            ct_scope_begin();
            ct_graph *g = ct_graph_capture_begin(0);
            cr_assert_not_null(g, "%s", ct_last_error_message());
            ct_tensor *y = ct_mul_scalar(ct_add_scalar(x, 2.0), 3.0);
            cr_assert_not_null(y, "%s", ct_last_error_message());
            pthread_t th;
            void *ok = NULL;
            cr_assert_eq(pthread_create(&th, NULL, work_elsewhere, &e), 0);
            pthread_join(th, &ok);
            ct_tensor *z = ct_add(y, x); /* captured after the other thread's work */
            cr_assert_not_null(z, "%s", ct_last_error_message());
            cr_assert_eq(ct_graph_capture_end(g), CT_OK, "the capture did not survive %s on another thread: %s",
                         elsewhere_names[kind], ct_last_error_message());
            cr_assert(ok, "the other thread failed during the capture: %s", e.why);
            cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
            double *v = t_values(z);
            for (int i = 0; i < 256; i++)
                cr_assert_eq(v[i], 10.0, "z[%d] = %g after the replay, want (1 + 2) * 3 + 1", i, v[i]);
            free(v);
            ct_graph_free(g);
            ct_scope_end();
        }
    });
}

Test(cuda_graph, bad_arguments) {
    T_REQUIRE_GPU();
    t_assert_graph_null_arguments();
    cr_assert_null(ct_graph_capture_begin(99));
    t_assert_error(CT_ERR_DEVICE, "ct_graph_capture_begin", "cuda:99", NULL);
    cr_assert_null(ct_graph_capture_begin(-1));
    t_assert_error(CT_ERR_DEVICE, "cuda:-1", NULL);
    /* Ending another thread's capture is refused; the owner ends it. */
    ct_graph *g = ct_graph_capture_begin(0);
    cr_assert_not_null(g, "%s", ct_last_error_message());
    pthread_t th;
    void *ok = NULL;
    cr_assert_eq(pthread_create(&th, NULL, end_elsewhere, g), 0);
    pthread_join(th, &ok);
    cr_assert(ok, "ending the capture on another thread was not refused with a clear message");
    /* An empty graph is a valid graph. */
    cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
    ct_graph_free(g);
    /* Freeing a graph during its capture abandons the capture and restores the stream. */
    ct_stream *before = ct_stream_current(0);
    g = ct_graph_capture_begin(0);
    cr_assert_not_null(g, "%s", ct_last_error_message());
    ct_graph_free(g);
    cr_assert_eq(ct_stream_current(0), before);
    cr_assert_eq(ct_device_synchronize(0), CT_OK, "%s", ct_last_error_message());
}

Test(cuda_graph, a_convolution_not_timed_before_the_capture_uses_cudnn_heuristics) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_manual_seed(11);
        /* A geometry no other test uses, so no timed choice is cached for it. */
        ct_tensor *x = t_to_gpu(t_rand((int64_t[]){3, 5, 13, 11}, 4, CT_F32, -1, 1));
        ct_tensor *w = t_to_gpu(t_rand((int64_t[]){7, 5, 3, 3}, 4, CT_F32, -1, 1));
        ct_requires_grad(w, true);
        /* cuDNN itself is set up eagerly by an unrelated convolution: the heuristic choice,
         * not the library's start, is what this test is about. */
        ct_tensor *other = ct_conv2d(t_to_gpu(t_rand((int64_t[]){1, 2, 6, 6}, 4, CT_F32, -1, 1)),
                                     t_to_gpu(t_rand((int64_t[]){2, 2, 3, 3}, 4, CT_F32, -1, 1)), NULL, NULL);
        cr_assert_not_null(other, "%s", ct_last_error_message());
        ct_graph *g = ct_graph_capture_begin(0);
        cr_assert_not_null(g, "%s", ct_last_error_message());
        ct_tensor *y = ct_conv2d(x, w, NULL, NULL);
        cr_assert_not_null(y, "%s", ct_last_error_message());
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_capture_end(g), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_graph_replay(g), CT_OK, "%s", ct_last_error_message());
        ct_tensor *grad_in_graph = ct_tensor_retain(ct_grad(w));
        cr_assert_not_null(grad_in_graph, "the replay made no gradient");
        ct_zero_grad(w);
        /* The same pass eagerly (timed algorithms); the numbers agree to rounding. */
        ct_tensor *ye = ct_conv2d(x, w, NULL, NULL);
        cr_assert_eq(ct_backward(ct_sum(ye, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        double *ev = t_values(ye);
        t_assert_close(y, ev, 1e-4, 1e-4);
        free(ev);
        ev = t_values(ct_grad(w));
        t_assert_close(grad_in_graph, ev, 1e-3, 1e-4);
        free(ev);
        ct_tensor_free(grad_in_graph);
        ct_graph_free(g);
    });
}
