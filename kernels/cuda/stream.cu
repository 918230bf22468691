// ctensor — the stream scheduler: per-thread current streams, a stream pool, copy and
// communication streams, events. Every CUDA call is checked (CT_CUDA_CHECK).
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_error.cuh"
#include "kernels/cuda/stream_internal.h"
#include "ctensor/stream.h"

#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

extern "C" int ct__cuda_device_count(void);

#define POOL_SIZE 32
#define MAX_DEVICES 64

// The CUDA event is made at the first record, on the stream's device (an event can only be
// recorded on its own device's streams); device is -1 until then. Recording it later on
// another device's stream is refused, as in PyTorch (remaking the handle could pull it from
// under another thread waiting on it).
struct ct_event {
    cudaEvent_t event;
    int device;
    bool timing;
    bool recorded;
};

typedef struct device_streams {
    bool ready;
    ct_stream default_stream;
    ct_stream copy, comm;
    ct_stream pool[POOL_SIZE];
    unsigned next;
} device_streams;

static device_streams devices[MAX_DEVICES];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread ct_stream *current[MAX_DEVICES];
// The device this thread is capturing a CUDA graph on, or -1. CUDA's thread-local capture
// mode covers the whole thread: while it captures, the thread must not synchronize or work
// on any other device either.
static __thread int capture_device = -1;

static bool check_device(const char *op, int device) {
    int count = ct__cuda_device_count();
    if (device < 0 || device >= count || device >= MAX_DEVICES) {
        ct__set_error(CT_ERR_DEVICE, "%s: cuda:%d is not available (%d CUDA device%s usable)", op, device, count,
                      count == 1 ? "" : "s");
        return false;
    }
    return true;
}

static bool make_stream(ct_stream *s, int device, int priority) {
    s->device = device;
    s->blas = NULL;
    s->capture = NULL;
    return CT_CUDA_CHECK(cudaStreamCreateWithPriority(&s->handle, cudaStreamNonBlocking, priority));
}

// Create a device's streams once. Returns the table or NULL with an error recorded.
static device_streams *streams_for(const char *op, int device) {
    if (!check_device(op, device))
        return NULL;
    device_streams *d = &devices[device];
    // Fast path: once a device's streams exist they never change, so no lock is needed.
    if (__atomic_load_n(&d->ready, __ATOMIC_ACQUIRE))
        return d;
    pthread_mutex_lock(&streams_lock);
    bool ok = d->ready;
    if (!ok) {
        int old = 0;
        ok = CT_CUDA_CHECK(cudaGetDevice(&old)) && CT_CUDA_CHECK(cudaSetDevice(device));
        int least = 0, greatest = 0;
        ok = ok && CT_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
        d->default_stream.device = device;
        d->default_stream.handle = 0;
        d->default_stream.blas = NULL;
        d->default_stream.capture = NULL;
        // Communication gets the highest priority so all-reduce is not starved by compute.
        ok = ok && make_stream(&d->copy, device, least) && make_stream(&d->comm, device, greatest);
        for (int i = 0; ok && i < POOL_SIZE; i++)
            ok = make_stream(&d->pool[i], device, least);
        if (ok)
            __atomic_store_n(&d->ready, true, __ATOMIC_RELEASE);
        cudaSetDevice(old);
    }
    pthread_mutex_unlock(&streams_lock);
    return ok ? d : NULL;
}

extern "C" {

ct_stream *ct_stream_default(int device) {
    device_streams *d = streams_for("ct_stream_default", device);
    return d ? &d->default_stream : NULL;
}

ct_stream *ct_stream_current(int device) {
    device_streams *d = streams_for("ct_stream_current", device);
    if (!d)
        return NULL;
    ct__cuda_device_errors_baseline(device);
    return current[device] ? current[device] : &d->default_stream;
}

ct_status ct_stream_set_current(ct_stream *stream) {
    if (!stream)
        return ct__set_error(CT_ERR_NULL, "ct_stream_set_current: stream is NULL");
    if (stream->device < 0 || stream->device >= MAX_DEVICES)
        return ct__set_error(CT_ERR_DEVICE, "ct_stream_set_current: the stream's device cuda:%d is not supported",
                             stream->device);
    ct_stream *now = current[stream->device];
    if (now && now->capture && stream != now)
        return ct__set_error(CT_ERR_STATE, "ct_stream_set_current: this thread is capturing a CUDA graph on cuda:%d; "
                             "its ops must stay on the graph's stream until ct_graph_capture_end",
                             stream->device);
    if (stream->capture && stream != now)
        return ct__set_error(CT_ERR_STATE, "ct_stream_set_current: the stream is a CUDA graph's, being captured by "
                             "another thread");
    current[stream->device] = stream;
    return CT_OK;
}

// ---- CUDA graph capture (kernels/cuda/graph.cu) --------------------------------------------

// The thread's capture is its current stream's: ct_graph_capture_begin makes the graph's
// stream current, and no other stream can be made current until the capture ends.
ct_capture *ct__cuda_capture_of(int device) {
    if (device < 0 || device >= MAX_DEVICES || !current[device])
        return NULL;
    return current[device]->capture;
}

int ct__cuda_capture_device(void) { return capture_device; }

ct_status ct__cuda_refuse_in_capture(const char *op) {
    if (capture_device < 0)
        return CT_OK;
    return ct__set_error(CT_ERR_STATE, "%s: not allowed while this thread captures a CUDA graph on cuda:%d (it would "
                         "wait for work that has not run, or freeze host data into the graph); end the capture first",
                         op, capture_device);
}

// Install `stream` as current (the graph's, or back to the one before) even during the
// capture it belongs to.
void ct__stream_set_current_for_capture(int device, ct_stream *stream) {
    current[device] = stream;
    capture_device = stream && stream->capture ? device : -1;
}

ct_stream *ct_stream_from_pool(int device) {
    device_streams *d = streams_for("ct_stream_from_pool", device);
    if (!d)
        return NULL;
    unsigned i = __atomic_fetch_add(&d->next, 1u, __ATOMIC_RELAXED);
    return &d->pool[i % POOL_SIZE];
}

ct_stream *ct_stream_copy(int device) {
    device_streams *d = streams_for("ct_stream_copy", device);
    return d ? &d->copy : NULL;
}

ct_stream *ct_stream_comm(int device) {
    device_streams *d = streams_for("ct_stream_comm", device);
    return d ? &d->comm : NULL;
}

int ct_stream_device(const ct_stream *stream) { return stream ? stream->device : -1; }

// Every call below that takes a ct_stream runs with the stream's device current: ops leave
// their operands' device current, and handle 0 names the current device's default stream.
ct_status ct_stream_synchronize(ct_stream *stream) {
    if (!stream)
        return ct__set_error(CT_ERR_NULL, "ct_stream_synchronize: stream is NULL");
    if (ct__cuda_refuse_in_capture("ct_stream_synchronize") != CT_OK)
        return ct_last_error();
    {
        ct_device_guard guard(stream->device);
        if (!guard.ok || !CT_CUDA_CHECK(cudaStreamSynchronize(stream->handle)))
            return ct_last_error();
    }
    return ct__cuda_check_device_errors(stream->device);
}

ct_status ct_stream_wait_event(ct_stream *stream, ct_event *event) {
    if (!stream || !event)
        return ct__set_error(CT_ERR_NULL, "ct_stream_wait_event: %s is NULL", stream ? "event" : "stream");
    if (!event->recorded)
        return CT_OK;  // like CUDA: waiting on a never-recorded event is a no-op
    // Waiting on work outside the capture would invalidate it (captures take one stream).
    if (ct__cuda_refuse_in_capture("ct_stream_wait_event") != CT_OK)
        return ct_last_error();
    ct_device_guard guard(stream->device); // the event may be another device's: CUDA allows that
    return guard.ok && CT_CUDA_CHECK(cudaStreamWaitEvent(stream->handle, event->event, 0)) ? CT_OK : ct_last_error();
}

ct_status ct_stream_wait_stream(ct_stream *stream, ct_stream *other) {
    if (!stream || !other)
        return ct__set_error(CT_ERR_NULL, "ct_stream_wait_stream: stream is NULL");
    if (stream == other)
        return CT_OK;
    if (ct__cuda_refuse_in_capture("ct_stream_wait_stream") != CT_OK)
        return ct_last_error();
    ct_event *e = ct_event_create(false);
    if (!e)
        return ct_last_error();
    ct_status st = ct_event_record(e, other);
    if (st == CT_OK)
        st = ct_stream_wait_event(stream, e);
    ct_event_free(e);  // safe: CUDA keeps the dependency after the event is destroyed
    return st;
}

ct_event *ct_event_create(bool timing) {
    if (ct__cuda_device_count() == 0) {
        ct__set_error(CT_ERR_DEVICE, "ct_event_create: no usable CUDA device");
        return NULL;
    }
    ct_event *e = (ct_event *)calloc(1, sizeof *e);
    if (!e) {
        ct__set_error(CT_ERR_MEMORY, "ct_event_create: out of host memory");
        return NULL;
    }
    e->device = -1;
    e->timing = timing;
    return e;
}

void ct_event_free(ct_event *event) {
    if (!event)
        return;
    if (event->device >= 0) {
        ct_device_guard guard(event->device);
        CT_CUDA_CHECK(cudaEventDestroy(event->event));
    }
    free(event);
}

ct_status ct_event_record(ct_event *event, ct_stream *stream) {
    if (!event || !stream)
        return ct__set_error(CT_ERR_NULL, "ct_event_record: %s is NULL", event ? "stream" : "event");
    if (event->device >= 0 && event->device != stream->device)
        return ct__set_error(CT_ERR_DEVICE, "ct_event_record: the event belongs to cuda:%d, the stream to cuda:%d",
                             event->device, stream->device);
    // CUDA allows it, but nothing may wait for or query such an event outside the capture
    // (cudaErrorCapturedEvent), and ct_stream_wait_event is refused inside it.
    if (stream->capture)
        return ct__set_error(CT_ERR_STATE, "ct_event_record: not allowed on the stream of a CUDA graph capture (the "
                             "event could be neither waited for nor queried); record it after ct_graph_capture_end, "
                             "on the stream the graph is replayed on");
    ct_device_guard guard(stream->device);
    if (!guard.ok)
        return ct_last_error();
    if (event->device < 0) {
        if (!CT_CUDA_CHECK(cudaEventCreateWithFlags(&event->event,
                                                    event->timing ? cudaEventDefault : cudaEventDisableTiming)))
            return ct_last_error();
        event->device = stream->device;
    }
    if (!CT_CUDA_CHECK(cudaEventRecord(event->event, stream->handle)))
        return ct_last_error();
    event->recorded = true;
    return CT_OK;
}

ct_status ct_event_synchronize(ct_event *event) {
    if (!event)
        return ct__set_error(CT_ERR_NULL, "ct_event_synchronize: event is NULL");
    if (!event->recorded)
        return CT_OK; // like CUDA: nothing recorded, nothing to wait for
    if (ct__cuda_refuse_in_capture("ct_event_synchronize") != CT_OK)
        return ct_last_error();
    if (!CT_CUDA_CHECK(cudaEventSynchronize(event->event)))
        return ct_last_error();
    return ct__cuda_check_device_errors(event->device);
}

bool ct_event_query(ct_event *event) {
    if (!event) {
        ct__set_error(CT_ERR_NULL, "ct_event_query: event is NULL");
        return false;
    }
    if (!event->recorded)
        return true; // like CUDA: a never-recorded event has completed
    if (ct__cuda_refuse_in_capture("ct_event_query") != CT_OK)
        return false;
    cudaError_t err = cudaEventQuery(event->event);
    if (ct__cuda_not_ready(err))
        return false;
    return CT_CUDA_CHECK(err);
}

double ct_event_elapsed_ms(ct_event *start, ct_event *end) {
    float ms = 0;
    if (!start || !end) {
        ct__set_error(CT_ERR_NULL, "ct_event_elapsed_ms: event is NULL");
        return NAN;
    }
    if (!start->recorded || !end->recorded || !start->timing || !end->timing) {
        ct__set_error(CT_ERR_STATE, "ct_event_elapsed_ms: both events must be created with timing and recorded");
        return NAN;
    }
    cudaError_t err = cudaEventElapsedTime(&ms, start->event, end->event);
    if (ct__cuda_not_ready(err)) {
        ct__set_error(CT_ERR_STATE, "ct_event_elapsed_ms: an event has not completed yet (call ct_event_synchronize "
                                    "on the end event first)");
        return NAN;
    }
    return CT_CUDA_CHECK(err) ? (double)ms : NAN;
}

// While another thread captures a CUDA graph on the device, a cudaDeviceSynchronize would
// invalidate its capture: ctensor's own streams of the device are waited for one by one
// instead (the graphs' streams run nothing outside their captures).
static bool synchronize_streams_of(int device) {
    device_streams *d = streams_for("ct_device_synchronize", device);
    if (!d)
        return false;
    bool ok = CT_CUDA_CHECK(cudaStreamSynchronize(0)) && CT_CUDA_CHECK(cudaStreamSynchronize(d->copy.handle)) &&
              CT_CUDA_CHECK(cudaStreamSynchronize(d->comm.handle));
    for (int i = 0; ok && i < POOL_SIZE; i++)
        ok = CT_CUDA_CHECK(cudaStreamSynchronize(d->pool[i].handle));
    return ok;
}

ct_status ct_device_synchronize(int device) {
    if (!check_device("ct_device_synchronize", device))
        return ct_last_error();
    if (ct__cuda_refuse_in_capture("ct_device_synchronize") != CT_OK)
        return ct_last_error();
    int old = 0;
    if (!CT_CUDA_CHECK(cudaGetDevice(&old)) || !CT_CUDA_CHECK(cudaSetDevice(device)))
        return ct_last_error();
    // No capture can begin on the device while the whole device is waited for.
    bool whole = ct__cuda_captures_lock(device) == 0;
    bool ok = whole ? CT_CUDA_CHECK(cudaDeviceSynchronize()) : true;
    ct__cuda_captures_unlock(device);
    ok = ok && (whole || synchronize_streams_of(device));
    cudaSetDevice(old);
    return ok ? ct__cuda_check_device_errors(device) : ct_last_error();
}

ct_status ct_cuda_set_device(int device) {
    if (!check_device("ct_cuda_set_device", device))
        return ct_last_error();
    return CT_CUDA_CHECK(cudaSetDevice(device)) ? CT_OK : ct_last_error();
}

// Ops launch on the calling thread's current device (and a stream's legacy default handle 0
// means that device's default stream): make an operand's device current before launching,
// so an op on cuda:1 runs there whatever device the thread had. Like cudaSetDevice, it stays.
ct_status ct__cuda_make_current(int device) {
    if (capture_device >= 0 && device != capture_device)
        return ct__set_error(CT_ERR_STATE, "an op on cuda:%d: not allowed while this thread captures a CUDA graph on "
                             "cuda:%d (the capturing thread works on that device only until the capture ends)",
                             device, capture_device);
    int cur = -1;
    if (!CT_CUDA_CHECK(cudaGetDevice(&cur)))
        return ct_last_error();
    if (cur == device)
        return CT_OK;
    if (!check_device("ct__cuda_make_current", device))
        return ct_last_error();
    return CT_CUDA_CHECK(cudaSetDevice(device)) ? CT_OK : ct_last_error();
}

int ct_cuda_current_device(void) {
    int device = -1;
    if (ct__cuda_device_count() == 0 || !CT_CUDA_CHECK(cudaGetDevice(&device)))
        return -1;
    return device;
}

}  // extern "C"
