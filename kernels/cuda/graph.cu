// ctensor — CUDA graphs (include/ctensor/graph.h): stream capture of the calling thread's ops
// on one device into a graph, and its replay.
//
// The capture runs on a stream of the graph's own (ct_stream.capture set), made current for
// the capture: the launchers then see that they are being captured, the caching allocator
// serves them from the graph's private pool (ct__cuda_allocator_malloc), random kernels read
// their Philox seed and offset from a buffer that each replay fills, and the calls that
// cannot be captured refuse to run (ct__cuda_refuse_in_capture). The capture mode is
// ThreadLocal, as in PyTorch: other threads keep working; the calls of this thread that
// CUDA would refuse but that are safe here (cudaMalloc of a segment or workspace, library
// handle creation) run in relaxed mode (ct_capture_relaxed).
#include "kernels/cuda/check.h"
#include "kernels/cuda/stream_internal.h"
#include "ctensor/error.h"
#include "ctensor/graph.h"
#include "ctensor/stream.h"
#include "runtime/allocator.h"

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" int ct__cuda_device_count(void);
extern "C" uint64_t ct__philox_reserve(uint64_t words, uint64_t *seed);
extern "C" void ct__philox_state(uint64_t *seed, uint64_t *offset, uint64_t *generation);
extern "C" ct_status ct__null_arg(const char *op, const char *name);
extern "C" void ct__error_mark(void);
extern "C" uint64_t ct__errors_since_mark(const char **first);

enum graph_state { GRAPH_CAPTURING, GRAPH_READY, GRAPH_FAILED };

struct ct_graph {
    int device;
    enum graph_state state;
    pthread_t owner;      // the thread that captures
    ct_stream stream;     // the graph's own stream, where the capture happens
    ct_capture capture;   // what the launchers see while capturing (capture.pool: the graph's pool id)
    ct_stream *previous;  // the owner's current stream before the capture
    bool allocator_capturing, pool_retained;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    uint64_t philox_blocks; // Philox offsets (blocks of 4 words) one replay consumes
    pthread_mutex_t replay_lock; // replays share the graph's memory and Philox buffer
    cudaEvent_t done;       // recorded after each replay
    bool replayed;
    cudaStream_t last_stream;
    ct_graph *next_deferred; // in deferred_frees
};

// Captures underway per device, on any thread. CUDA lets other threads go on during a
// thread-local capture, but not with calls that synchronize the whole device (a
// cudaDeviceSynchronize, the implicit one of a cudaFree): they would invalidate the capture.
// So while one is underway, ct_device_synchronize waits for ctensor's streams one by one
// (stream.cu), a graph freed by another thread is released when the last capture on its
// device ends, and cuDNN's algorithm timing (which allocates and frees) is not run.
// One lock per device: a device's synchronization or algorithm timing holds its lock, and
// must not hold up another device's.
#define CAPTURE_DEVICES 64
static pthread_mutex_t captures_lock[CAPTURE_DEVICES];
static pthread_once_t captures_once = PTHREAD_ONCE_INIT;
static int captures_underway[CAPTURE_DEVICES];
static ct_graph *deferred_frees[CAPTURE_DEVICES]; // graphs whose release waits for the captures on their device

static void captures_init(void) {
    for (int d = 0; d < CAPTURE_DEVICES; d++)
        pthread_mutex_init(&captures_lock[d], NULL);
}
static void captures_enter(int device) {
    pthread_once(&captures_once, captures_init);
    pthread_mutex_lock(&captures_lock[device]);
}
static void captures_leave(int device) { pthread_mutex_unlock(&captures_lock[device]); }

static void graph_release(ct_graph *g);

static void capture_started(int device) {
    captures_enter(device);
    captures_underway[device]++;
    captures_leave(device);
}

// Release g (on its device) and free it.
static void graph_destroy(ct_graph *g) {
    {
        ct_device_guard guard(g->device);
        graph_release(g);
    }
    pthread_mutex_destroy(&g->replay_lock);
    free(g);
}

// One capture on `device` has ended; with the last, the graphs freed meanwhile are released
// (under the lock, so that no capture begins during their cudaFree).
static void capture_stopped(int device) {
    captures_enter(device);
    if (--captures_underway[device] == 0) {
        while (deferred_frees[device]) {
            ct_graph *g = deferred_frees[device];
            deferred_frees[device] = g->next_deferred;
            graph_destroy(g);
        }
    }
    captures_leave(device);
}

// Release g and free it, or, while another thread captures on its device, leave that to the
// end of the last capture there.
static void release_or_defer(ct_graph *g) {
    int device = g->device;
    captures_enter(device);
    if (captures_underway[device] > 0) {
        g->next_deferred = deferred_frees[device];
        deferred_frees[device] = g;
    } else {
        graph_destroy(g);
    }
    captures_leave(device);
}

extern "C" int ct__cuda_captures_lock(int device) {
    if (device < 0 || device >= CAPTURE_DEVICES)
        return 0; // no capture can be underway there (ct_graph_capture_begin refuses the device)
    captures_enter(device);
    return captures_underway[device];
}
extern "C" void ct__cuda_captures_unlock(int device) {
    if (device >= 0 && device < CAPTURE_DEVICES)
        captures_leave(device);
}

// Pool ids are odd, so never a stream handle (an aligned pointer, or 0), and never reused:
// a new graph must not inherit the blocks of a freed one.
static uint64_t next_pool_id = 1;

__global__ void set_philox_kernel(uint64_t *philox, uint64_t seed, uint64_t offset) {
    philox[0] = seed;
    philox[1] = offset;
}

static bool usable_device(const char *op, int device) {
    int count = ct__cuda_device_count();
    if (device >= 0 && device < count && device < CAPTURE_DEVICES)
        return true;
    ct__set_error(CT_ERR_DEVICE, "%s: cuda:%d is not available (%d CUDA device%s usable)", op, device, count,
                  count == 1 ? "" : "s");
    return false;
}

// Give back what the graph holds on the device (with the device current). The pool last: from
// then on its free segments may be given back (by cudaFree, which waits for running replays).
static void graph_release(ct_graph *g) {
    if (g->exec)
        CT_CUDA_CHECK(cudaGraphExecDestroy(g->exec));
    if (g->graph)
        CT_CUDA_CHECK(cudaGraphDestroy(g->graph));
    if (g->done)
        CT_CUDA_CHECK(cudaEventDestroy(g->done));
    ct__blas_release(&g->stream);
    if (g->stream.handle)
        CT_CUDA_CHECK(cudaStreamDestroy(g->stream.handle));
    if (g->capture.philox)
        CT_CUDA_CHECK(cudaFree(g->capture.philox));
    if (g->allocator_capturing)
        ct__cuda_allocator_capture_end(g->device);
    if (g->pool_retained)
        ct__cuda_allocator_release_pool(g->device, g->capture.pool);
    g->exec = NULL;
    g->graph = NULL;
    g->done = NULL;
    g->stream.handle = NULL;
    g->capture.philox = NULL;
    g->allocator_capturing = g->pool_retained = false;
}

// Stop capturing (on the owner thread): the thread's stream is restored and the allocator
// leaves capture mode. Returns cudaStreamEndCapture's result; *graph gets the graph or NULL.
static cudaError_t stop_capture(ct_graph *g, cudaGraph_t *graph, ct_status *allocator_status) {
    *graph = NULL;
    cudaError_t err = cudaStreamEndCapture(g->stream.handle, graph);
    if (err != cudaSuccess)
        cudaGetLastError(); // a failed capture is reported as the graph's error, not left sticky
    capture_stopped(g->device);
    g->stream.capture = NULL;
    ct__stream_set_current_for_capture(g->device, g->previous);
    *allocator_status = ct__cuda_allocator_capture_end(g->device);
    g->allocator_capturing = false;
    return err;
}

extern "C" {

ct_graph *ct_graph_capture_begin(int device) {
    const char *op = "ct_graph_capture_begin";
    if (!usable_device(op, device))
        return NULL;
    if (ct__cuda_capture_device() >= 0) {
        ct__set_error(CT_ERR_STATE, "%s: this thread is already capturing a CUDA graph on cuda:%d (captures do not nest)",
                      op, ct__cuda_capture_device());
        return NULL;
    }
    ct_graph *g = (ct_graph *)calloc(1, sizeof *g);
    if (!g) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        return NULL;
    }
    g->device = device;
    g->stream.device = device;
    g->capture.pool = (uintptr_t)__atomic_fetch_add(&next_pool_id, 2, __ATOMIC_RELAXED);
    pthread_mutex_init(&g->replay_lock, NULL);
    ct_device_guard guard(device);
    // What ops would otherwise set up lazily, with calls that cannot be captured, is made now.
    ct_stream *previous = guard.ok ? ct_stream_current(device) : NULL;
    bool ok = previous && ct__cuda_device_errors_init(device) == CT_OK &&
              CT_CUDA_CHECK(cudaStreamCreateWithFlags(&g->stream.handle, cudaStreamNonBlocking)) &&
              CT_CUDA_CHECK(cudaMalloc((void **)&g->capture.philox, 2 * sizeof(uint64_t))) &&
              ct__blas_prepare(&g->stream) == CT_OK;  // cuBLASLt's handle and workspace: not made in the capture
    if (ok) {
        ct__philox_state(&g->capture.seed, &g->capture.offset, &g->capture.generation);
        ok = ct__cuda_allocator_capture_begin(device, g->capture.pool) == CT_OK;
        g->allocator_capturing = g->pool_retained = ok;
    }
    if (ok) {
        capture_started(device); // first: a device-wide synchronization from now on would break it
        ok = CT_CUDA_CHECK(cudaStreamBeginCapture(g->stream.handle, cudaStreamCaptureModeThreadLocal));
        if (!ok)
            capture_stopped(device);
    }
    if (!ok) {
        ct_status st = ct_last_error();
        char message[512];
        snprintf(message, sizeof message, "%s", ct_last_error_message());
        release_or_defer(g);
        ct__set_error(st, "%s", message); // the release's own errors are not the caller's news
        return NULL;
    }
    g->stream.capture = &g->capture;
    g->previous = previous;
    g->owner = pthread_self();
    g->state = GRAPH_CAPTURING;
    ct__stream_set_current_for_capture(device, &g->stream);
    ct__error_mark(); // from here, any error on this thread spoils the capture
    return g;
}

ct_status ct_graph_capture_end(ct_graph *g) {
    const char *op = "ct_graph_capture_end";
    if (!g)
        return ct__null_arg(op, "graph");
    if (g->state != GRAPH_CAPTURING)
        return ct__set_error(CT_ERR_STATE, "%s: the graph is not being captured (its capture has already ended)", op);
    if (!pthread_equal(g->owner, pthread_self()))
        return ct__set_error(CT_ERR_STATE, "%s: the capture must be ended by the thread that began it", op);
    const char *first = NULL;
    uint64_t errors = ct__errors_since_mark(&first);
    char first_copy[512];
    snprintf(first_copy, sizeof first_copy, "%s", errors ? first : "");
    ct_device_guard guard(g->device);
    ct_status allocator_status = CT_OK;
    cudaError_t err = stop_capture(g, &g->graph, &allocator_status);
    // Held blocks whose events failed stay held for good: not the graph's error, and not left
    // as the thread's last error when the graph is ready.
    bool allocator_failed = allocator_status != CT_OK;
    g->state = GRAPH_FAILED;
    if (errors)
        return ct__set_error(CT_ERR_STATE,
                             "%s: %llu error%s on this thread during the capture, the first: \"%s\"; the graph would "
                             "lack what failed and cannot be replayed",
                             op, (unsigned long long)errors, errors == 1 ? "" : "s", first_copy);
    if (err != cudaSuccess)
        return ct__set_error(CT_ERR_CUDA,
                             "%s: CUDA refused the capture on cuda:%d: %s (a call that cannot be captured ran on the "
                             "capturing thread, or an op failed during the capture; run the work once eagerly before "
                             "capturing so that libraries and algorithm choices are set up)",
                             op, g->device, cudaGetErrorString(err));
    uint64_t seed = 0, offset = 0, generation = 0;
    ct__philox_state(&seed, &offset, &generation);
    // The generation, not the seed and offset: ct_manual_seed(s) back to the capture's own
    // seed would otherwise pass, and replays would reuse numbers.
    if (g->capture.uses_random && generation != g->capture.generation)
        return ct__set_error(CT_ERR_STATE, "%s: the random generator was reseeded during the capture, after random "
                             "ops were captured: they would not know their offsets", op);
    g->philox_blocks = g->capture.uses_random ? offset - g->capture.offset : 0;
    if (!guard.ok || !CT_CUDA_CHECK(cudaGraphInstantiate(&g->exec, g->graph, 0)) ||
        !CT_CUDA_CHECK(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming)))
        return ct_last_error();
    g->state = GRAPH_READY;
    if (allocator_failed)
        ct_clear_error();
    return CT_OK;
}

ct_status ct_graph_replay(ct_graph *g) {
    const char *op = "ct_graph_replay";
    if (!g)
        return ct__null_arg(op, "graph");
    if (g->state != GRAPH_READY)
        return ct__set_error(CT_ERR_STATE, "%s: the graph %s", op,
                             g->state == GRAPH_CAPTURING ? "is still being captured (call ct_graph_capture_end first)"
                                                         : "failed to capture and cannot be replayed");
    if (ct__cuda_refuse_in_capture(op) != CT_OK)
        return ct_last_error();
    ct_device_guard guard(g->device);
    ct_stream *stream = guard.ok ? ct_stream_current(g->device) : NULL;
    if (!stream)
        return ct_last_error();
    cudaStream_t s = stream->handle;
    bool ok = true;
    pthread_mutex_lock(&g->replay_lock);
    // Replays share the graph's memory and Philox buffer: one on another stream waits for the last.
    if (g->replayed && s != g->last_stream)
        ok = CT_CUDA_CHECK(cudaStreamWaitEvent(s, g->done, 0));
    if (ok && g->philox_blocks) {
        uint64_t seed = 0, offset = ct__philox_reserve(4 * g->philox_blocks, &seed);
        set_philox_kernel<<<1, 1, 0, s>>>(g->capture.philox, seed, offset);
        ok = CT_CUDA_CHECK(cudaGetLastError());
    }
    ok = ok && CT_CUDA_CHECK(cudaGraphLaunch(g->exec, s)) && CT_CUDA_CHECK(cudaEventRecord(g->done, s));
    if (ok) {
        g->replayed = true;
        g->last_stream = s;
    }
    pthread_mutex_unlock(&g->replay_lock);
    return ok ? CT_OK : ct_last_error();
}

ct_status ct__cuda_philox_for(ct_stream *stream, uint64_t seed, uint64_t *offset, const uint64_t **base) {
    *base = NULL;
    ct_capture *c = stream ? stream->capture : NULL;
    if (!c)
        return CT_OK;
    uint64_t now_seed = 0, now_offset = 0, generation = 0;
    ct__philox_state(&now_seed, &now_offset, &generation);
    if (generation != c->generation || seed != c->seed || *offset < c->offset)
        return ct__set_error(CT_ERR_STATE, "a random op in a CUDA graph capture: the random generator was reseeded "
                             "(ct_manual_seed or ct_random_set_offset) after the capture began");
    *offset -= c->offset;
    *base = c->philox;
    c->uses_random = true;
    return CT_OK;
}

bool ct__cuda_capturing(int device) { return ct__cuda_capture_of(device) != NULL; }

uint64_t ct__cuda_capture_id(int device) {
    ct_capture *c = ct__cuda_capture_of(device);
    return c ? (uint64_t)c->pool : 0;  // pool ids are odd: never 0
}

int ct_graph_device(const ct_graph *g) { return g ? g->device : -1; }

void ct_graph_free(ct_graph *g) {
    if (!g)
        return;
    if (g->state != GRAPH_CAPTURING && ct__cuda_capture_device() >= 0) {
        // cudaFree and cudaStreamDestroy would invalidate this thread's capture: the graph stays.
        ct__set_error(CT_ERR_STATE, "ct_graph_free: not allowed while this thread captures another CUDA graph; free "
                      "this one after ct_graph_capture_end");
        return;
    }
    if (g->state == GRAPH_CAPTURING) {
        if (!pthread_equal(g->owner, pthread_self())) {
            // CUDA ends a thread-local capture only on its own thread: the graph stays.
            ct__set_error(CT_ERR_STATE, "ct_graph_free: the graph is being captured by another thread; end or free it "
                          "there");
            return;
        }
        ct_device_guard guard(g->device);
        ct_status ignored = CT_OK;
        cudaGraph_t abandoned = NULL;
        stop_capture(g, &abandoned, &ignored);
        if (abandoned)
            CT_CUDA_CHECK(cudaGraphDestroy(abandoned));
    }
    // While another thread captures on the device, the release (cudaFree) waits for its end.
    release_or_defer(g);
}

}  // extern "C"
