/* ctensor — CUDA streams and events: the scheduler.
 *
 * Each thread has a current stream per device; ops enqueue their kernels on it and return
 * without waiting. Reading a value on the host (ct_item, ct_to_host) synchronizes; nothing
 * else does. By default the current stream is the device's default stream (as in PyTorch).
 * A pool of streams, and a dedicated copy stream and communication stream per device, let
 * loading, compute and all-reduce overlap; events order work across streams.
 *
 * Errors that only the GPU can see (an index or class target out of range in index_select,
 * gather, scatter_add, one_hot, embedding, cross-entropy or NLL on CUDA tensors) are not
 * reported by the op, which would have to wait for its kernel: the kernel skips the bad
 * element, records it, and the next synchronizing call on that device — ct_to_host, ct_item,
 * ct_stream_synchronize, ct_event_synchronize, ct_device_synchronize — returns the error
 * (CT_ERR_DIM, as the CPU reports a bad index or class target) with a message naming the op, the
 * value and the range, "reported by cuda:N at this synchronization". The results of the op
 * that reported it are not valid. The device keeps the first such error until a
 * synchronization takes it; every thread that synchronizes on that device afterwards (the one
 * whose op failed included, whichever thread's call took it) gets it once. If the flag
 * cannot be re-armed after that, a broken device, the error is reported at every
 * synchronization rather than later ones being lost.
 *
 * In a build without CUDA, or on a machine without a usable GPU, every call here that needs
 * a device returns CT_ERR_DEVICE (or NULL) with a message; none aborts.
 */
#ifndef CTENSOR_STREAM_H
#define CTENSOR_STREAM_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_stream ct_stream;
typedef struct ct_event ct_event;

/* The calling thread's current stream on `device` (the default stream unless set). */
ct_stream *ct_stream_current(int device);
/* Make `stream` current for its device on the calling thread. */
ct_status ct_stream_set_current(ct_stream *stream);
/* A stream from the device's round-robin pool (32 non-blocking streams; owned by ctensor). */
ct_stream *ct_stream_from_pool(int device);
/* The device's dedicated copy stream and communication stream (owned by ctensor). */
ct_stream *ct_stream_copy(int device);
ct_stream *ct_stream_comm(int device);
/* The device's default stream. */
ct_stream *ct_stream_default(int device);
int ct_stream_device(const ct_stream *stream);
/* Wait on the host until all work queued on the stream has finished; then report a
 * deferred GPU error of the stream's device (see above). */
ct_status ct_stream_synchronize(ct_stream *stream);
/* Make future work on `stream` wait for `event` (no host synchronization). */
ct_status ct_stream_wait_event(ct_stream *stream, ct_event *event);
/* Make future work on `stream` wait for everything queued so far on `other`. */
ct_status ct_stream_wait_stream(ct_stream *stream, ct_stream *other);

/* Events. `timing` enables ct_event_elapsed_ms (slightly slower to record). An event
 * belongs to the device of the stream it is first recorded on (the CUDA event is made then,
 * as in PyTorch); recording it on another device's stream is refused (CT_ERR_DEVICE). Waiting
 * on, synchronizing or querying a never-recorded event returns at once. Any thread, whatever
 * its current device, may use streams and events of any device; the calls leave the thread's
 * current device as it was. An event must not be recorded by one thread while another uses it
 * (as with CUDA's own events). */
ct_event *ct_event_create(bool timing);
void ct_event_free(ct_event *event);
ct_status ct_event_record(ct_event *event, ct_stream *stream);
/* Wait for the work before the record; then report a deferred GPU error (see above). */
ct_status ct_event_synchronize(ct_event *event);
/* True when the work before the record has completed (false on error, with a message). */
bool ct_event_query(ct_event *event);
/* Milliseconds between two recorded timing events, once both have completed (as in CUDA and
 * PyTorch, call ct_event_synchronize on the end event first; before that, NaN with
 * CT_ERR_STATE); NaN on error. */
double ct_event_elapsed_ms(ct_event *start, ct_event *end);

/* Wait until all work on `device` (every stream) has finished; then report a deferred GPU
 * error (see above). */
ct_status ct_device_synchronize(int device);
/* Make `device` current for the calling thread (CUDA ordinal). An op on CUDA tensors also
 * makes their device current for the calling thread before it launches (so an op on cuda:1
 * runs on cuda:1 whatever was current), and leaves it so. */
ct_status ct_cuda_set_device(int device);
int ct_cuda_current_device(void);

#ifdef __cplusplus
}
#endif
#endif
