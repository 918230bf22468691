/* The stream scheduler on a GPU: work on two pool streams ordered by an event and by
 * ct_stream_wait_stream, a tensor used on another stream kept from reuse by
 * ct_tensor_record_stream, events that are never recorded, timing events, a stream's calls
 * made while another device is current (here: with the current device changed by hand to
 * the same one, which is all one GPU allows), and bad arguments. Each test reports itself
 * skipped where no GPU is usable; the two-device tests (default streams of two devices, a
 * copy between them) also where there is only one. */
#include "tests/common.h"

#include <math.h>

#define N 2048

/* y = x @ x on the current stream: enough work that a missing dependency shows. */
static ct_tensor *slow_square(ct_tensor *x) {
    ct_tensor *y = x;
    for (int i = 0; i < 4; i++)
        y = ct_mul_scalar(ct_matmul(y, x), 1.0 / N);
    cr_assert_not_null(y, "%s", ct_last_error_message());
    return y;
}

Test(cuda_stream, an_event_orders_work_across_pool_streams) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_stream *a = ct_stream_from_pool(0), *b = ct_stream_from_pool(0);
        cr_assert(a && b && a != b, "two pool streams");
        cr_assert_eq(ct_stream_device(a), 0);
        ct_tensor *x = ct_full((int64_t[]){N, N}, 2, 1.0, CT_F32, T_GPU);
        cr_assert_eq(ct_stream_wait_stream(a, ct_stream_current(0)), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_set_current(a), CT_OK);
        ct_tensor *y = slow_square(x); /* every element 1 after each step */
        ct_event *done = ct_event_create(false);
        cr_assert_not_null(done, "%s", ct_last_error_message());
        cr_assert_eq(ct_event_record(done, a), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_set_current(b), CT_OK);
        cr_assert_eq(ct_stream_wait_event(b, done), CT_OK, "%s", ct_last_error_message());
        ct_tensor *z = ct_add_scalar(y, 1.0); /* on b, after a's matmuls */
        cr_assert_not_null(z, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_set_current(ct_stream_default(0)), CT_OK);
        cr_assert_eq(ct_stream_wait_stream(ct_stream_current(0), b), CT_OK, "%s", ct_last_error_message());
        double *v = t_values(z);
        for (int64_t i = 0; i < (int64_t)N * N; i += 4099)
            cr_assert_eq(v[i], 2.0, "element %lld is %g: b did not wait for a", (long long)i, v[i]);
        free(v);
        cr_assert_eq(ct_event_synchronize(done), CT_OK);
        cr_assert(ct_event_query(done));
        ct_event_free(done);
        cr_assert_eq(ct_device_synchronize(0), CT_OK);
    });
}

/* A tensor made on the default stream and read by slow work on a pool stream, recorded there
 * and freed: its block must not go to the next allocation of its size on the default stream
 * before the pool stream's work is done, or the default stream's writes into the new tensor
 * would reach the pool stream's reads. (Without the record, the block is reused at once: on a
 * GPU the pool stream's matmuls would then read 3s, sometimes; the CUDA emulator, whose
 * streams run only when something waits for them, makes it every time.) */
Test(cuda_stream, a_recorded_tensor_is_not_reused_before_its_stream_is_done) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_stream *home = ct_stream_current(0), *b = ct_stream_from_pool(0);
        cr_assert(home && b && home != b);
        ct_tensor *x = ct_full((int64_t[]){N, N}, 2, 1.0, CT_F32, T_GPU);
        cr_assert_eq(ct_stream_wait_stream(b, home), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_set_current(b), CT_OK);
        ct_tensor *y = slow_square(x); /* on b: four matmuls that read x */
        cr_assert_eq(ct_tensor_record_stream(x, b), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_stream_set_current(home), CT_OK);
        ct_tensor_free(x);
        ct_tensor *x2 = ct_full((int64_t[]){N, N}, 2, 3.0, CT_F32, T_GPU); /* x's size, on home */
        cr_assert_not_null(x2, "%s", ct_last_error_message());
        double *v2 = t_values(x2); /* home's work done, b's maybe not */
        cr_assert_eq(v2[0], 3.0);
        free(v2);
        cr_assert_eq(ct_stream_wait_stream(home, b), CT_OK, "%s", ct_last_error_message());
        double *v = t_values(y);
        for (int64_t i = 0; i < (int64_t)N * N; i += 4099)
            cr_assert_eq(v[i], 1.0, "element %lld is %g: x's block was reused while b still read it", (long long)i,
                         v[i]);
        free(v);
    });
}

Test(cuda_stream, events_never_recorded_and_timing) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_event *e = ct_event_create(false);
        cr_assert_not_null(e, "%s", ct_last_error_message());
        /* Like CUDA: a never-recorded event has completed, and waiting on it is a no-op. */
        cr_assert(ct_event_query(e));
        cr_assert_eq(ct_event_synchronize(e), CT_OK);
        cr_assert_eq(ct_stream_wait_event(ct_stream_current(0), e), CT_OK);
        ct_event *start = ct_event_create(true), *end = ct_event_create(true);
        cr_assert(isnan(ct_event_elapsed_ms(start, end)), "elapsed time of events never recorded");
        t_assert_error(CT_ERR_STATE, "ct_event_elapsed_ms", "recorded", NULL);
        ct_stream *s = ct_stream_current(0);
        cr_assert_eq(ct_event_record(start, s), CT_OK, "%s", ct_last_error_message());
        ct_tensor *x = ct_full((int64_t[]){N, N}, 2, 1.0, CT_F32, T_GPU);
        slow_square(x);
        cr_assert_eq(ct_event_record(end, s), CT_OK);
        /* Before the end event completes (always on the emulator, whose streams run when
         * waited for; most likely on a GPU, after a slow kernel): NaN, and what to do. */
        double early = ct_event_elapsed_ms(start, end);
        if (isnan(early))
            t_assert_error(CT_ERR_STATE, "ct_event_elapsed_ms", "not completed", "ct_event_synchronize", NULL);
        cr_assert_eq(ct_event_synchronize(end), CT_OK, "%s", ct_last_error_message());
        double ms = ct_event_elapsed_ms(start, end);
        cr_assert(ms > 0 && ms < 60000, "elapsed %g ms", ms);
        /* An event made without timing cannot be timed. */
        cr_assert_eq(ct_event_record(e, s), CT_OK);
        cr_assert(isnan(ct_event_elapsed_ms(start, e)));
        t_assert_error(CT_ERR_STATE, "timing", NULL);
        ct_event_free(start);
        ct_event_free(end);
        ct_event_free(e);
        ct_event_free(NULL);
    });
}

/* The stream calls make the stream's device current themselves and leave the thread's
 * device as it was (with one GPU the device cannot change; this checks the bookkeeping). */
Test(cuda_stream, calls_keep_the_current_device) {
    T_REQUIRE_GPU();
    cr_assert_eq(ct_cuda_set_device(0), CT_OK);
    ct_stream *s = ct_stream_from_pool(0);
    ct_event *e = ct_event_create(false);
    cr_assert_eq(ct_event_record(e, s), CT_OK);
    cr_assert_eq(ct_stream_wait_event(ct_stream_current(0), e), CT_OK);
    cr_assert_eq(ct_stream_wait_stream(s, ct_stream_current(0)), CT_OK);
    cr_assert_eq(ct_stream_synchronize(s), CT_OK);
    cr_assert_eq(ct_cuda_current_device(), 0);
    ct_event_free(e);
}

Test(cuda_stream, bad_arguments) {
    T_REQUIRE_GPU();
    cr_assert_eq(ct_stream_synchronize(NULL), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_stream_synchronize", NULL);
    cr_assert_eq(ct_stream_wait_event(ct_stream_current(0), NULL), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_stream_wait_event", "event", NULL);
    cr_assert_eq(ct_stream_wait_stream(NULL, ct_stream_current(0)), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_stream_wait_stream", NULL);
    cr_assert_eq(ct_event_record(NULL, ct_stream_current(0)), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_event_record", "event", NULL);
    ct_event *e = ct_event_create(false);
    cr_assert_eq(ct_event_record(e, NULL), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_event_record", "stream", NULL);
    ct_event_free(e);
    cr_assert_null(ct_stream_current(99));
    t_assert_error(CT_ERR_DEVICE, "cuda:99", NULL);
    cr_assert_eq(ct_stream_set_current(NULL), CT_ERR_NULL);
    t_assert_error(CT_ERR_NULL, "ct_stream_set_current", NULL);
}

/* With two GPUs: an op on cuda:1 leaves cuda:1 current, and the stream calls on cuda:0's
 * default stream must still act on cuda:0 (handle 0 names the current device's default
 * stream). Skipped with fewer than two devices. */
Test(cuda_stream, default_streams_of_two_devices) {
    T_REQUIRE_GPU();
    if (ct_cuda_device_count() < 2)
        cr_skip_test("needs two GPUs (%d usable)", ct_cuda_device_count());
    T_NO_LEAK({
        cr_assert_eq(ct_cuda_set_device(0), CT_OK);
        ct_tensor *x0 = ct_full((int64_t[]){N, N}, 2, 1.0, CT_F32, CT_CUDA(0));
        ct_tensor *y0 = slow_square(x0); /* queued on cuda:0's default stream */
        ct_tensor *x1 = ct_full((int64_t[]){4}, 1, 2.0, CT_F32, CT_CUDA(1));
        cr_assert_not_null(ct_add(x1, x1)); /* leaves cuda:1 current */
        cr_assert_eq(ct_cuda_current_device(), 1);
        cr_assert_eq(ct_stream_synchronize(ct_stream_current(0)), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_cuda_current_device(), 1, "the stream call changed the current device");
        ct_event *e = ct_event_create(false);
        cr_assert_eq(ct_event_record(e, ct_stream_current(0)), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_event_synchronize(e), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_event_record(e, ct_stream_current(1)), CT_ERR_DEVICE);
        t_assert_error(CT_ERR_DEVICE, "belongs to cuda:0", NULL);
        /* cuda:1's stream waits for cuda:0's work through ct_stream_wait_stream */
        cr_assert_eq(ct_stream_wait_stream(ct_stream_current(1), ct_stream_current(0)), CT_OK,
                     "%s", ct_last_error_message());
        double *v = t_values(y0);
        cr_assert_eq(v[0], 1.0);
        free(v);
        ct_event_free(e);
    });
}

/* With two GPUs: a copy from cuda:0 to cuda:1 waits for the work that makes its source on
 * cuda:0 (read on cuda:1 first), and cuda:0 waits for the copy before reusing the source's
 * block (a new tensor of its size written there, and read, before the copy's result is).
 * Skipped with fewer than two devices. */
Test(cuda_stream, a_copy_between_devices_waits_on_both_sides) {
    T_REQUIRE_GPU();
    if (ct_cuda_device_count() < 2)
        cr_skip_test("needs two GPUs (%d usable)", ct_cuda_device_count());
    T_NO_LEAK({
        cr_assert_eq(ct_cuda_set_device(0), CT_OK);
        ct_tensor *x0 = ct_full((int64_t[]){N, N}, 2, 1.0, CT_F32, CT_CUDA(0));
        /* the copy waits for its source */
        ct_tensor *y0 = slow_square(x0); /* queued on cuda:0's default stream */
        ct_tensor *y1 = ct_to_device(y0, CT_CUDA(1));
        cr_assert_not_null(y1, "%s", ct_last_error_message());
        double *v = t_values(ct_add_scalar(y1, 1.0));
        for (int64_t i = 0; i < (int64_t)N * N; i += 4099)
            cr_assert_eq(v[i], 2.0, "element %lld is %g: the copy did not wait for its source", (long long)i, v[i]);
        free(v);
        /* the source's device waits for the copy */
        ct_tensor *u0 = slow_square(x0);
        ct_tensor *u1 = ct_to_device(u0, CT_CUDA(1));
        cr_assert_not_null(u1, "%s", ct_last_error_message());
        ct_tensor_free(u0);
        ct_tensor *w0 = ct_full((int64_t[]){N, N}, 2, 5.0, CT_F32, CT_CUDA(0)); /* u0's size */
        double *w = t_values(w0);
        cr_assert_eq(w[0], 5.0);
        free(w);
        v = t_values(u1);
        for (int64_t i = 0; i < (int64_t)N * N; i += 4099)
            cr_assert_eq(v[i], 1.0, "element %lld is %g: the source's block was reused before the copy", (long long)i,
                         v[i]);
        free(v);
        cr_assert_eq(ct_cuda_set_device(0), CT_OK);
    });
}
