// ctensor — cuDNN handles, one per thread and device (see dnn.h). A thread's handles go to a
// pool when it exits and the next thread takes them from there, as PyTorch's handle pool
// does: making a handle is slow, and destroying one synchronizes the device.
#include "kernels/cuda/dnn.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_DEVICES 64
#define POOL_MAX    64 // idle handles kept per device

bool ct__cudnn_ok(cudnnStatus_t st, const char *call, const char *file, int line) {
    if (st == CUDNN_STATUS_SUCCESS)
        return true;
    ct__set_error(CT_ERR_CUDA, "%s failed at %s:%d: %s", call, file, line, cudnnGetErrorString(st));
    return false;
}

typedef struct thread_handles {
    cudnnHandle_t h[MAX_DEVICES];
} thread_handles;

static pthread_key_t handles_key;
static pthread_once_t handles_once = PTHREAD_ONCE_INIT;
static bool key_made;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static cudnnHandle_t pool[MAX_DEVICES][POOL_MAX];
static int pool_count[MAX_DEVICES];

// At thread exit: the thread's handles go back to the pool (destroyed if it is full).
static void release_handles(void *p) {
    thread_handles *t = (thread_handles *)p;
    for (int d = 0; d < MAX_DEVICES; d++) {
        if (!t->h[d])
            continue;
        pthread_mutex_lock(&pool_lock);
        bool kept = pool_count[d] < POOL_MAX;
        if (kept)
            pool[d][pool_count[d]++] = t->h[d];
        pthread_mutex_unlock(&pool_lock);
        if (!kept) {
            ct_device_guard guard(d);
            if (guard.ok)
                cudnnDestroy(t->h[d]); // nothing to report to at thread exit
        }
    }
    free(t);
}

static void make_key(void) { key_made = pthread_key_create(&handles_key, release_handles) == 0; }

cudnnHandle_t ct__cudnn_handle(ct_stream *stream) {
    int device = stream->device;
    if (device < 0 || device >= MAX_DEVICES) {
        ct__set_error(CT_ERR_DEVICE, "cuDNN: cuda:%d is out of range (at most %d devices)", device, MAX_DEVICES);
        return NULL;
    }
    pthread_once(&handles_once, make_key);
    if (!key_made) {
        ct__set_error(CT_ERR_INTERNAL, "cuDNN: no thread-local key for the handles");
        return NULL;
    }
    thread_handles *t = (thread_handles *)pthread_getspecific(handles_key);
    if (!t) {
        t = (thread_handles *)calloc(1, sizeof *t);
        if (!t || pthread_setspecific(handles_key, t) != 0) {
            free(t);
            ct__set_error(CT_ERR_MEMORY, "cuDNN: out of host memory for the thread's handles");
            return NULL;
        }
    }
    if (!t->h[device]) {
        pthread_mutex_lock(&pool_lock);
        if (pool_count[device] > 0)
            t->h[device] = pool[device][--pool_count[device]];
        pthread_mutex_unlock(&pool_lock);
    }
    if (!t->h[device]) {
        ct_device_guard guard(device); // a handle belongs to the device current when it is made
        ct_capture_relaxed relaxed; // a thread's first cuDNN use may be inside a CUDA graph capture
        if (!guard.ok || !CT_CUDNN_CHECK(cudnnCreate(&t->h[device]))) {
            t->h[device] = NULL;
            return NULL;
        }
    }
    return CT_CUDNN_CHECK(cudnnSetStream(t->h[device], stream->handle)) ? t->h[device] : NULL;
}
