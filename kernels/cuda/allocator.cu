// ctensor — the CUDA side of the caching allocator: segment providers over cudaMalloc /
// cudaFree / CUDA events (one allocator per device, created on first use) and over
// cudaHostAlloc (pinned host memory), and the public memory API of ctensor/memory.h.
// The bookkeeping itself is runtime/allocator.c, tested on the CPU. Every CUDA call is
// checked (CT_CUDA_CHECK); cudaMalloc's out-of-memory becomes CT_ERR_MEMORY so that the
// allocator can flush its cache and retry.
#include "kernels/cuda/check.h"
#include "kernels/cuda/stream_internal.h"
#include "runtime/allocator.h"

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" int ct__cuda_device_count(void);
extern "C" void *ct__host_alloc(size_t nbytes);
extern "C" void ct__host_free(void *p);
extern "C" ct_status ct__null_arg(const char *op, const char *name);

#define MAX_DEVICES 64

typedef struct device_ctx {
    int device;
    char name[16]; // "cuda:3"
} device_ctx;

// ---- the device provider ---------------------------------------------------------------

// Make `device` current for one provider call; the caller's device is restored after.
static bool enter_device(int device, int *old) {
    if (!CT_CUDA_CHECK(cudaGetDevice(old)))
        return false;
    return *old == device || CT_CUDA_CHECK(cudaSetDevice(device));
}

static void leave_device(int device, int old) {
    if (old != device)
        CT_CUDA_CHECK(cudaSetDevice(old));
}

static ct_status device_segment_alloc(void *ctx, size_t bytes, void **ptr) {
    int device = ((device_ctx *)ctx)->device, old = 0;
    if (!enter_device(device, &old))
        return ct_last_error();
    ct_status status = CT_OK;
    cudaError_t err;
    {
        // During a CUDA graph capture on this thread cudaMalloc would invalidate it; the
        // segment is not stream work and outlives the capture, so that check is relaxed.
        ct_capture_relaxed relaxed;
        err = cudaMalloc(ptr, bytes);
    }
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError(); // not sticky: the allocator flushes its cache and retries
        status = CT_ERR_MEMORY;
    } else if (!CT_CUDA_CHECK(err)) {
        status = ct_last_error();
    }
    leave_device(device, old);
    return status;
}

static void device_segment_free(void *ctx, void *ptr, size_t bytes) {
    int device = ((device_ctx *)ctx)->device, old = 0;
    if (!enter_device(device, &old))
        return;
    CT_CUDA_CHECK(cudaFree(ptr));
    leave_device(device, old);
}

// The event is created on the allocator's device, where the recorded stream lives too
// (ct_tensor_record_stream refuses streams of other devices).
static ct_status device_event_record(void *ctx, uintptr_t stream, void **event) {
    int device = ((device_ctx *)ctx)->device, old = 0;
    if (!enter_device(device, &old))
        return ct_last_error();
    cudaEvent_t e = NULL;
    bool ok = CT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    if (ok && !CT_CUDA_CHECK(cudaEventRecord(e, (cudaStream_t)stream))) {
        ok = false;
        CT_CUDA_CHECK(cudaEventDestroy(e));
    }
    leave_device(device, old);
    if (!ok)
        return ct_last_error();
    *event = (void *)e;
    return CT_OK;
}

// A failed query (other than "not ready") is recorded and the block stays held: reusing
// memory that another stream may still touch is worse than keeping it.
static bool device_event_query(void *ctx, void *event) {
    cudaError_t err = cudaEventQuery((cudaEvent_t)event);
    if (ct__cuda_not_ready(err))
        return false;
    return CT_CUDA_CHECK(err);
}

static void device_event_free(void *ctx, void *event) { CT_CUDA_CHECK(cudaEventDestroy((cudaEvent_t)event)); }

static bool device_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes) {
    int device = ((device_ctx *)ctx)->device, old = 0;
    if (!enter_device(device, &old))
        return false;
    ct_capture_relaxed relaxed; // for the out-of-memory message during a capture
    bool ok = CT_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    leave_device(device, old);
    return ok;
}

// ---- one allocator per device ------------------------------------------------------------

static ct_allocator *device_allocators[MAX_DEVICES];
static device_ctx device_contexts[MAX_DEVICES];
static pthread_mutex_t device_allocators_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t limit_from_env(void) {
    const char *text = getenv("CT_CUDA_MEMORY_LIMIT");
    size_t bytes = 0;
    if (text && *text && !ct__parse_byte_size(text, &bytes)) {
        static int noticed = 0;
        if (!__atomic_exchange_n(&noticed, 1, __ATOMIC_RELAXED))
            fprintf(stderr, "ctensor: CT_CUDA_MEMORY_LIMIT=%s is not a byte count (like 8G or 512M); no limit set\n",
                    text);
        bytes = 0;
    }
    return bytes;
}

// The allocator of cuda:`device`, created on first use; NULL with CT_ERR_DEVICE when the
// device does not exist.
static ct_allocator *allocator_for(const char *op, int device) {
    int count = ct__cuda_device_count();
    if (device < 0 || device >= count || device >= MAX_DEVICES) {
        ct__set_error(CT_ERR_DEVICE, "%s: cuda:%d is not available (%d CUDA device%s usable)", op, device, count,
                      count == 1 ? "" : "s");
        return NULL;
    }
    ct_allocator *a = __atomic_load_n(&device_allocators[device], __ATOMIC_ACQUIRE);
    if (a)
        return a;
    pthread_mutex_lock(&device_allocators_lock);
    a = device_allocators[device];
    if (!a) {
        device_ctx *ctx = &device_contexts[device];
        ctx->device = device;
        snprintf(ctx->name, sizeof ctx->name, "cuda:%d", device);
        ct_segment_provider provider = {ctx->name,          device_segment_alloc, device_segment_free,
                                        device_event_record, device_event_query,   device_event_free,
                                        device_mem_info};
        a = ct_allocator_create(&provider, ctx);
        if (a) {
            ct_allocator_set_limit(a, limit_from_env());
            __atomic_store_n(&device_allocators[device], a, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&device_allocators_lock);
    return a;
}

// ---- the pinned host provider ---------------------------------------------------------------

static ct_status pinned_segment_alloc(void *ctx, size_t bytes, void **ptr) {
    // Portable: page-locked for every device's context, not only the current one. Relaxed
    // during a CUDA graph capture, as the device segments are.
    cudaError_t err;
    {
        ct_capture_relaxed relaxed;
        err = cudaHostAlloc(ptr, bytes, cudaHostAllocPortable);
    }
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return CT_ERR_MEMORY;
    }
    return CT_CUDA_CHECK(err) ? CT_OK : ct_last_error();
}

static void pinned_segment_free(void *ctx, void *ptr, size_t bytes) { CT_CUDA_CHECK(cudaFreeHost(ptr)); }

// Pinned blocks are read by copies queued on device streams (ct__pinned_record_stream). Their
// stream ids are ct_stream pointers, not cudaStream_t handles: a handle (0 for the default
// stream) does not say which device it belongs to, and the event, recorded when the block is
// freed, perhaps on another thread with another current device, must be created on the
// stream's device.
static ct_status pinned_event_record(void *ctx, uintptr_t stream_id, void **event) {
    ct_stream *stream = (ct_stream *)stream_id;
    int old = 0;
    if (!enter_device(stream->device, &old))
        return ct_last_error();
    cudaEvent_t e = NULL;
    bool ok = CT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    if (ok && !CT_CUDA_CHECK(cudaEventRecord(e, stream->handle))) {
        ok = false;
        CT_CUDA_CHECK(cudaEventDestroy(e));
    }
    leave_device(stream->device, old);
    if (!ok)
        return ct_last_error();
    *event = (void *)e;
    return CT_OK;
}

// The stream id that pinned blocks are allocated on: the host, which is no ct_stream, so a
// copy on any stream (the default stream included) is a use on "another stream".
#define PINNED_HOST_STREAM UINTPTR_MAX

// NULL when no GPU is usable: ct_pinned_* then hand out ordinary aligned host memory. The
// choice is made once, so a pointer is always freed the way it was allocated.
static ct_allocator *pinned_allocator;
static pthread_once_t pinned_once = PTHREAD_ONCE_INIT;

static void pinned_init(void) {
    if (ct__cuda_device_count() == 0)
        return;
    ct_segment_provider provider = {"pinned host memory", pinned_segment_alloc, pinned_segment_free,
                                    pinned_event_record,  device_event_query,   device_event_free,
                                    NULL};
    pinned_allocator = ct_allocator_create(&provider, NULL); // NULL (out of host memory): the fallback
}

static ct_allocator *pinned_for_capture(void) {
    pthread_once(&pinned_once, pinned_init);
    return pinned_allocator;
}

extern "C" {

// ---- the glue called by the runtime --------------------------------------------------------

void *ct__cuda_allocator_malloc(int device, size_t nbytes) {
    int capturing = ct__cuda_capture_device();
    if (capturing >= 0 && capturing != device) { // its cache would query events: not on this thread now
        ct__set_error(CT_ERR_STATE, "an allocation on cuda:%d: not allowed while this thread captures a CUDA graph "
                      "on cuda:%d", device, capturing);
        return NULL;
    }
    ct_allocator *a = allocator_for("cuda allocation", device);
    ct_stream *stream = a ? ct_stream_current(device) : NULL;
    if (!stream)
        return NULL;
    // During a CUDA graph capture, memory comes from the graph's private pool.
    uintptr_t key = stream->capture ? stream->capture->pool : (uintptr_t)stream->handle;
    return ct_allocator_malloc(a, nbytes, key);
}

// A capture puts the device's allocator and the pinned one in capture mode: neither queries
// an event or gives memory back (cudaEventQuery, cudaFree and cudaFreeHost would invalidate
// the capture). The pool id is retained in both; only the device's is ever allocated from.

ct_status ct__cuda_allocator_capture_begin(int device, uintptr_t pool) {
    ct_allocator *a = allocator_for("ct_graph_capture_begin", device), *p = pinned_for_capture();
    if (!a || ct_allocator_capture_begin(a, pool) != CT_OK)
        return ct_last_error();
    if (p && ct_allocator_capture_begin(p, pool) != CT_OK) {
        ct_status st = ct_last_error();
        ct_allocator_capture_end(a);
        ct_allocator_release_pool(a, pool);
        return st;
    }
    return CT_OK;
}

ct_status ct__cuda_allocator_capture_end(int device) {
    ct_allocator *a = allocator_for("ct_graph_capture_end", device), *p = pinned_for_capture();
    ct_status st = a ? ct_allocator_capture_end(a) : ct_last_error();
    if (p && ct_allocator_capture_end(p) != CT_OK)
        st = ct_last_error();
    return st;
}

void ct__cuda_allocator_release_pool(int device, uintptr_t pool) {
    ct_allocator *a = allocator_for("ct_graph_free", device), *p = pinned_for_capture();
    if (a)
        ct_allocator_release_pool(a, pool);
    if (p)
        ct_allocator_release_pool(p, pool);
}

ct_status ct__cuda_allocator_free(int device, void *ptr) {
    ct_allocator *a = allocator_for("cuda free", device);
    return a ? ct_allocator_free(a, ptr) : ct_last_error();
}

ct_status ct__cuda_allocator_record_stream(int device, void *ptr, ct_stream *stream) {
    // The graph's stream runs nothing after the capture (replays run on the caller's stream)
    // and is destroyed with the graph: a use recorded on it would be waited for by an event
    // recorded on a dead stream when the block is freed.
    if (stream->capture)
        return ct__set_error(CT_ERR_STATE, "ct_tensor_record_stream: not allowed with the stream of a CUDA graph "
                             "capture (replays run on the stream current when ct_graph_replay is called: record "
                             "that one, after ct_graph_capture_end)");
    ct_allocator *a = allocator_for("ct_tensor_record_stream", device);
    return a ? ct_allocator_record_stream(a, ptr, (uintptr_t)stream->handle) : ct_last_error();
}

void ct__cuda_allocator_empty_cache(int device) {
    int capturing = ct__cuda_capture_device();
    ct_allocator *a = device >= 0 && device < MAX_DEVICES
                          ? __atomic_load_n(&device_allocators[device], __ATOMIC_ACQUIRE)
                          : NULL;
    if (a && (capturing < 0 || device == capturing))
        ct_allocator_empty_cache(a);
}

// ---- ctensor/memory.h ------------------------------------------------------------------------

ct_status ct_cuda_memory_stats(int device, ct_memory_stats *out) {
    if (!out)
        return ct__null_arg("ct_cuda_memory_stats", "out");
    memset(out, 0, sizeof *out);
    ct_allocator *a = allocator_for("ct_cuda_memory_stats", device);
    if (!a)
        return ct_last_error();
    ct_allocator_stats(a, out);
    return CT_OK;
}

ct_status ct_cuda_reset_peak_stats(int device) {
    ct_allocator *a = allocator_for("ct_cuda_reset_peak_stats", device);
    if (!a)
        return ct_last_error();
    ct_allocator_reset_peak(a);
    return CT_OK;
}

ct_status ct_cuda_set_memory_limit(int device, size_t bytes) {
    int capturing = ct__cuda_capture_device();
    if (capturing >= 0 && capturing != device) // that allocator is not in capture mode: it would cudaFree
        return ct__set_error(CT_ERR_STATE, "ct_cuda_set_memory_limit: not allowed on cuda:%d while this thread "
                             "captures a CUDA graph on cuda:%d", device, capturing);
    ct_allocator *a = allocator_for("ct_cuda_set_memory_limit", device);
    if (!a)
        return ct_last_error();
    ct_allocator_set_limit(a, bytes);
    return CT_OK;
}

void ct_cuda_empty_cache(void) {
    // On a thread that captures a CUDA graph, only the capture device's allocator (and the
    // pinned one) are in capture mode and safe to call: the others would query events and
    // cudaFree, which would invalidate the capture.
    int capturing = ct__cuda_capture_device();
    for (int device = 0; device < MAX_DEVICES; device++) {
        ct_allocator *a = __atomic_load_n(&device_allocators[device], __ATOMIC_ACQUIRE);
        if (a && (capturing < 0 || device == capturing))
            ct_allocator_empty_cache(a);
    }
    pthread_once(&pinned_once, pinned_init);
    if (pinned_allocator)
        ct_allocator_empty_cache(pinned_allocator);
}

void *ct_pinned_alloc(size_t nbytes) {
    pthread_once(&pinned_once, pinned_init);
    return pinned_allocator ? ct_allocator_malloc(pinned_allocator, nbytes, PINNED_HOST_STREAM)
                            : ct__host_alloc(nbytes);
}

void ct_pinned_free(void *ptr) {
    if (!ptr)
        return;
    pthread_once(&pinned_once, pinned_init);
    if (pinned_allocator)
        ct_allocator_free(pinned_allocator, ptr);
    else
        ct__host_free(ptr);
}

bool ct__pinned_is_page_locked(void) {
    pthread_once(&pinned_once, pinned_init);
    return pinned_allocator != NULL;
}

ct_status ct__pinned_record_stream(void *block, ct_stream *stream) {
    pthread_once(&pinned_once, pinned_init);
    if (!pinned_allocator)
        return ct__set_error(CT_ERR_INTERNAL, "internal error: pinned memory recorded on a stream without a GPU");
    return ct_allocator_record_stream(pinned_allocator, block, (uintptr_t)stream);
}

ct_status ct_pinned_memory_stats(ct_memory_stats *out) {
    if (!out)
        return ct__null_arg("ct_pinned_memory_stats", "out");
    memset(out, 0, sizeof *out);
    pthread_once(&pinned_once, pinned_init);
    if (pinned_allocator)
        ct_allocator_stats(pinned_allocator, out);
    return CT_OK;
}

} // extern "C"
