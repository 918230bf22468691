// ctensor — the CUDA device layer: device discovery, storage allocation, copies between
// devices, and the per-device error word of kernels/cuda/device_error.cuh. Every CUDA call
// goes through CT_CUDA_CHECK, which turns a failure into a ctensor error naming the call, the
// file and the line. The caching allocator and streams build on this.
//
// Copies follow the rule of the scheduler: only reading on the host waits.
//   - Host to device is cudaMemcpyAsync on the destination's current stream. From pinned
//     storage (ct_pin_memory) the copy reads the block directly, and the block is recorded
//     on the stream, so the pinned cache reuses it only once the copy has completed (freeing
//     the source tensor right after the call is safe). From pageable memory, copies up to
//     64 KiB go to cudaMemcpyAsync as they are: the driver copies pageable sources into its
//     own staging buffer before returning (CUDA's "API synchronization behavior"), which for
//     small sizes costs less than a trip through the cache. Larger ones are copied on the host
//     into a block of the pinned cache, which the GPU then reads asynchronously; the block is
//     freed at once with the same event-gated reuse. (The driver's own path would return only
//     after the stream had reached the copy, when it needs more than its staging buffer.)
//     A raw pointer into page-locked memory (ct_pinned_alloc, cudaHostAlloc) is staged too,
//     whatever its size: the driver would read it asynchronously, after the caller, who owns
//     the buffer once ct_from_host returns, may already have refilled it.
//   - Device to host is queued on the source device's current stream, which is then
//     synchronized (not the whole device), and the device's error word is checked.
//   - Device to device is queued on the destination's current stream after an event on the
//     source's current stream; the source's stream then waits for the copy, so that memory
//     freed there afterwards is not reused before the copy has read it.
#include "ctensor/error.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_error.cuh"
#include "runtime/allocator.h"

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEVICES 64
#define SMALL_PAGEABLE_COPY ((size_t)64 << 10)

extern "C" {

// Without a driver, cudaGetDeviceCount fails ("driver version is insufficient", or "no
// CUDA-capable device"): that means "no GPU", not an error. The answer is cached.
int ct__cuda_device_count(void) {
    static int cached = -1;
    if (cached >= 0)
        return cached;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error so later calls are not confused by it
        count = 0;
    }
    cached = count;
    return count;
}

// Storage memory comes from the caching allocator (kernels/cuda/allocator.cu), on the
// calling thread's current stream.
void *ct__cuda_storage_alloc(size_t nbytes, int device_index) {
    return ct__cuda_allocator_malloc(device_index, nbytes);
}

void ct__cuda_storage_free(void *ptr, int device_index) {
    if (ptr)
        ct__cuda_allocator_free(device_index, ptr);
}

// ---- the error word --------------------------------------------------------------------

// Each error the device raises is taken from the record once (under the lock), numbered, and
// kept as a message; every thread that synchronizes on the device afterwards is told once
// (its own count of the errors it has been told of), so the thread whose op failed learns of
// it even when another thread's synchronization took the record first. A thread's count
// starts at its first use of the device: errors taken before then are not told to it (a
// thread started after an error was reported does not fail on it at its first ct_item).
typedef struct device_error_word {
    unsigned int *claim;                  // device memory
    ct_device_error_record *record;       // mapped pinned host memory (host pointer)
    ct_device_error_record *record_on_gpu; // its device pointer
    uint64_t raised;                      // errors taken from the record so far
    ct_status last_status;                // the latest of them (under the lock)
    char last_message[512];
} device_error_word;

static device_error_word error_words[MAX_DEVICES];
static pthread_mutex_t error_words_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread uint64_t errors_told[MAX_DEVICES]; // per thread: errors reported to it
static __thread bool errors_baseline_set[MAX_DEVICES]; // errors_told starts at the thread's first use

void ct__cuda_device_errors_baseline(int device) {
    if (device < 0 || device >= MAX_DEVICES || errors_baseline_set[device])
        return;
    errors_baseline_set[device] = true;
    errors_told[device] = __atomic_load_n(&error_words[device].raised, __ATOMIC_ACQUIRE);
}

ct_status ct__cuda_device_errors_init(int device) {
    if (device < 0 || device >= MAX_DEVICES)
        return ct__set_error(CT_ERR_DEVICE, "cuda:%d is not supported (at most %d devices)", device, MAX_DEVICES);
    device_error_word *w = &error_words[device];
    if (!__atomic_load_n(&w->record_on_gpu, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&error_words_lock);
        bool ok = true;
        if (!w->record_on_gpu) {
            int old = 0;
            unsigned int *claim = NULL;
            void *record = NULL, *on_gpu = NULL;
            // The zeroing must be complete before any kernel can see the flag: kernels run on
            // non-blocking streams, which do not wait for the legacy stream the memset is on.
            ok = CT_CUDA_CHECK(cudaGetDevice(&old)) && CT_CUDA_CHECK(cudaSetDevice(device)) &&
                 CT_CUDA_CHECK(cudaMalloc((void **)&claim, sizeof *claim)) &&
                 CT_CUDA_CHECK(cudaMemsetAsync(claim, 0, sizeof *claim, 0)) &&
                 CT_CUDA_CHECK(cudaStreamSynchronize(0)) &&
                 CT_CUDA_CHECK(cudaHostAlloc(&record, sizeof(ct_device_error_record),
                                             cudaHostAllocMapped | cudaHostAllocPortable)) &&
                 CT_CUDA_CHECK(cudaHostGetDevicePointer(&on_gpu, record, 0));
            if (ok) {
                memset(record, 0, sizeof(ct_device_error_record));
                w->claim = claim;
                w->record = (ct_device_error_record *)record;
                __atomic_store_n(&w->record_on_gpu, (ct_device_error_record *)on_gpu, __ATOMIC_RELEASE);
            } else {
                if (claim)
                    cudaFree(claim);
                if (record)
                    cudaFreeHost(record);
            }
            cudaSetDevice(old);
        }
        pthread_mutex_unlock(&error_words_lock);
        if (!ok)
            return ct_last_error();
    }
    return CT_OK;
}

ct_status ct__cuda_index_report(ct_stream *stream, const char *op, const char *what, int status, int dim,
                                int64_t limit, ct_index_report *report) {
    if (!stream) // ct__stream_for failed (its error is recorded): no kernel may launch on stream 0 instead
        return ct_last_error();
    int device = stream->device;
    if (device < 0 || device >= MAX_DEVICES)
        return ct__set_error(CT_ERR_DEVICE, "%s: cuda:%d is not supported (at most %d devices)", op, device,
                             MAX_DEVICES);
    if (ct__cuda_device_errors_init(device) != CT_OK)
        return ct_last_error();
    device_error_word *w = &error_words[device];
    report->claim = w->claim;
    report->record = w->record_on_gpu;
    report->op = op;
    report->what = what;
    report->status = status;
    report->dim = dim;
    report->limit = limit;
    return CT_OK;
}

// Take a pending error from the device's record into w->last_* (counted in w->raised) and
// re-arm the record. Called with error_words_lock held.
static void take_pending_error(int device, device_error_word *w) {
    ct_device_error_record *r = w->record;
    if (!r->pending)
        return;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    char where[64] = "";
    if (r->dim >= 0)
        snprintf(where, sizeof where, " for dim %d", r->dim);
    else if (r->position >= 0)
        snprintf(where, sizeof where, " at position %lld", (long long)r->position);
    w->last_status = (ct_status)r->status;
    snprintf(w->last_message, sizeof w->last_message,
             "%s: %s %d out of range [0, %lld)%s (reported by cuda:%d at this synchronization; the op ran earlier on "
             "the GPU, skipped the bad %s and its result is not valid)",
             r->op, r->what, (int)r->value, (long long)r->limit, where, device, r->what);
    __atomic_store_n(&w->raised, w->raised + 1, __ATOMIC_RELEASE);
    // Re-arm: the record first, then the claim (on the device), so that a kernel that
    // claims it next finds the record free. The memset is on the legacy stream, which the
    // non-blocking streams the ops run on do not wait for: it is waited for here, or a bad
    // index in an op queued right after this call could find the flag still taken and go
    // unreported. (A kernel already running on another stream can still lose its report in
    // that window; its result is as invalid as the one reported.)
    r->pending = 0;
    bool rearmed = false;
    {
        ct_device_guard guard(device);
        rearmed = guard.ok && CT_CUDA_CHECK(cudaMemsetAsync(w->claim, 0, sizeof *w->claim, 0)) &&
                  CT_CUDA_CHECK(cudaStreamSynchronize(0));
    }
    // Not re-armed, the claim stays taken and later bad indices would go unreported: keep
    // reporting this one instead, at every synchronization.
    if (!rearmed)
        r->pending = 1;
}

ct_status ct__cuda_check_device_errors(int device) {
    if (device < 0 || device >= MAX_DEVICES)
        return CT_OK;
    ct__cuda_device_errors_baseline(device); // a thread that launched nothing: only what is pending
    device_error_word *w = &error_words[device];
    if (!__atomic_load_n(&w->record_on_gpu, __ATOMIC_ACQUIRE))
        return CT_OK; // no op has reported on this device yet
    if (!w->record->pending && __atomic_load_n(&w->raised, __ATOMIC_ACQUIRE) == errors_told[device])
        return CT_OK;
    // One taker at a time: two threads that both saw `pending` would take the error twice,
    // and the second could read the record while a kernel refills it after the first one's
    // re-arm.
    pthread_mutex_lock(&error_words_lock);
    take_pending_error(device, w);
    bool news = w->raised != errors_told[device];
    ct_status status = w->last_status;
    char message[sizeof w->last_message];
    memcpy(message, w->last_message, sizeof message);
    errors_told[device] = w->raised;
    pthread_mutex_unlock(&error_words_lock);
    if (!news)
        return CT_OK;
    // The CT_CUDA_CHECKs of the re-arm may have recorded an error of their own: the device's
    // is the one the caller must see.
    ct__set_error(status, "%s", message);
    return status;
}

// ---- copies -----------------------------------------------------------------------------

// Make `device` current and give its current stream, or NULL with an error recorded.
static ct_stream *stream_on(int device) {
    if (!CT_CUDA_CHECK(cudaSetDevice(device)))
        return NULL;
    return ct_stream_current(device);
}

// Whether host memory at p is page-locked (then cudaMemcpyAsync reads it asynchronously).
static bool is_page_locked(const void *p) {
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
        cudaGetLastError(); // not memory CUDA knows of: pageable
        return false;
    }
    return attr.type == cudaMemoryTypeHost || attr.type == cudaMemoryTypeManaged;
}

static ct_status host_to_device(int device, void *dst, const void *src, size_t nbytes, void *pinned_block) {
    // Captured, the copy would read the host buffer at every replay, long after it was reused.
    if (ct__cuda_refuse_in_capture("a copy from host memory to a CUDA tensor") != CT_OK)
        return ct_last_error();
    ct_stream *stream = stream_on(device);
    if (!stream)
        return ct_last_error();
    cudaStream_t s = stream->handle;
    bool page_locked = ct__pinned_is_page_locked();
    bool raw_locked = !pinned_block && nbytes <= SMALL_PAGEABLE_COPY && is_page_locked(src);
    void *staging = NULL;
    if (!pinned_block && page_locked && (nbytes > SMALL_PAGEABLE_COPY || raw_locked)) {
        staging = ct_pinned_alloc(nbytes);
        if (staging) {
            memcpy(staging, src, nbytes);
            pinned_block = staging;
            src = staging;
        } else if (raw_locked) {
            ct_clear_error(); // no room to stage: copy directly and wait (below)
        } else if (ct_last_error() == CT_ERR_MEMORY) {
            // No pinned memory left to stage through: copy straight from the caller's memory.
            // From pageable memory the driver returns once it has read it; page-locked memory
            // (pinned outside ctensor) is waited for below.
            ct_clear_error();
            raw_locked = is_page_locked(src);
        } else {
            return ct_last_error();
        }
    }
    if (!CT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s))) {
        ct_pinned_free(staging); // nothing was queued: the block is free at once
        return ct_last_error();
    }
    ct_status status = CT_OK;
    if (raw_locked && !staging && !CT_CUDA_CHECK(cudaStreamSynchronize(s))) // not staged: wait for the read
        status = ct_last_error();
    if (pinned_block && page_locked && ct__pinned_record_stream(pinned_block, stream) != CT_OK) {
        // The block could not be marked: wait for the copy rather than let it be reused early.
        status = ct_last_error();
        CT_CUDA_CHECK(cudaStreamSynchronize(s));
    }
    ct_pinned_free(staging);
    return status;
}

static ct_status device_to_host(int device, void *dst, const void *src, size_t nbytes) {
    if (ct__cuda_refuse_in_capture("a copy from a CUDA tensor to host memory (ct_to_host, ct_item)") != CT_OK)
        return ct_last_error();
    ct_stream *stream = stream_on(device);
    if (!stream)
        return ct_last_error();
    if (!CT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream->handle)) ||
        !CT_CUDA_CHECK(cudaStreamSynchronize(stream->handle)))
        return ct_last_error();
    return ct__cuda_check_device_errors(device);
}

// dst's stream waits for `from` (an event recorded there, on its own device).
static bool stream_waits(ct_stream *stream, ct_stream *from) {
    cudaEvent_t e = NULL;
    bool ok = CT_CUDA_CHECK(cudaSetDevice(from->device)) &&
              CT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)) &&
              CT_CUDA_CHECK(cudaEventRecord(e, from->handle)) &&
              CT_CUDA_CHECK(cudaSetDevice(stream->device)) &&
              CT_CUDA_CHECK(cudaStreamWaitEvent(stream->handle, e, 0));
    if (e)
        CT_CUDA_CHECK(cudaEventDestroy(e)); // the dependency outlives the event
    return ok;
}

static ct_status device_to_device(int dst_device, void *dst, int src_device, const void *src, size_t nbytes) {
    if (src_device != dst_device && ct__cuda_refuse_in_capture("a copy between devices") != CT_OK)
        return ct_last_error();
    ct_stream *src_stream = stream_on(src_device);
    ct_stream *dst_stream = src_stream ? stream_on(dst_device) : NULL;
    if (!dst_stream)
        return ct_last_error();
    if (src_device == dst_device)
        return CT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, dst_stream->handle))
                   ? CT_OK
                   : ct_last_error();
    bool ok = stream_waits(dst_stream, src_stream) &&
              CT_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, nbytes, dst_stream->handle)) &&
              stream_waits(src_stream, dst_stream);
    CT_CUDA_CHECK(cudaSetDevice(dst_device));
    return ok ? CT_OK : ct_last_error();
}

ct_status ct__cuda_memcpy(ct_device dst_device, void *dst, ct_device src_device, const void *src, size_t nbytes,
                          void *pinned_block) {
    if (src_device.type == CT_DEVICE_CPU)
        return host_to_device(dst_device.index, dst, src, nbytes, pinned_block);
    if (dst_device.type == CT_DEVICE_CPU)
        return device_to_host(src_device.index, dst, src, nbytes);
    return device_to_device(dst_device.index, dst, src_device.index, src, nbytes);
}

}  // extern "C"
