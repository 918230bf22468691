// ctensor — what the CUDA side knows about a stream (not part of the public API).
#ifndef CT_KERNELS_CUDA_STREAM_INTERNAL_H
#define CT_KERNELS_CUDA_STREAM_INTERNAL_H

#include "kernels/cuda/check.h"

#include <cuda_runtime.h>
#include <stdbool.h>
#include <stdint.h>

// What the kernels of a CUDA graph capture need to know (kernels/cuda/graph.cu).
typedef struct ct_capture {
    uintptr_t pool;         // the graph's private allocator pool id
    uint64_t seed, offset;  // the Philox generator's seed and offset when the capture began
    uint64_t generation;    // and its generation (ct__philox_state): a reseed moves it
    uint64_t *philox;       // device memory: {seed, offset} of the replay being run
    bool uses_random;       // a random kernel was captured (it reads `philox`)
} ct_capture;

struct ct_stream {
    cudaStream_t handle;  // 0 for the device's default stream
    int device;
    void *blas;           // per-stream cuBLASLt handle and workspace, created on first use
    ct_capture *capture;  // set while a CUDA graph is captured on this stream (its own stream)
};

#ifdef __cplusplus
extern "C" {
#endif
// The capture the calling thread has underway on `device`, or NULL.
ct_capture *ct__cuda_capture_of(int device);
// The device the calling thread is capturing a CUDA graph on, or -1.
int ct__cuda_capture_device(void);
// CT_ERR_STATE naming `op` when the calling thread is capturing a CUDA graph (on any device:
// CUDA's thread-local capture mode covers the whole thread), as what `op` does cannot be
// captured; CT_OK otherwise.
ct_status ct__cuda_refuse_in_capture(const char *op);
// The Philox stream of a random kernel launched on `stream`: unchanged outside a capture; in
// one, `*base` becomes the graph's {seed, offset} buffer (the kernel adds base[1] to *offset and
// uses base[0] as the seed) and *offset becomes relative to the capture's start. An error when
// the generator was reseeded during the capture.
ct_status ct__cuda_philox_for(ct_stream *stream, uint64_t seed, uint64_t *offset, const uint64_t **base);
// Make the device's deferred-error record now (it is made lazily, with calls that cannot be
// captured).
ct_status ct__cuda_device_errors_init(int device);
// Make `stream` the thread's current stream of `device`, even during a capture (graph.cu
// installs the graph's stream, then restores the one before).
void ct__stream_set_current_for_capture(int device, ct_stream *stream);
// The number of CUDA graph captures underway on `device` (any thread), with the device's lock
// held, which keeps another from beginning there until ct__cuda_captures_unlock(device)
// (kernels/cuda/graph.cu).
int ct__cuda_captures_lock(int device);
void ct__cuda_captures_unlock(int device);
// Make the stream's cuBLASLt handle and workspace now (kernels/cuda/matmul.cu; made on first
// use otherwise): a CUDA graph's stream gets them before its capture begins.
ct_status ct__blas_prepare(ct_stream *stream);
// Free the stream's cuBLASLt handle and workspace (kernels/cuda/matmul.cu), for streams that
// are destroyed: those of CUDA graphs.
void ct__blas_release(ct_stream *stream);
#ifdef __cplusplus
}

// Lets calls that CUDA stream capture would refuse on this thread (cudaMalloc, library
// handle creation) run during a capture: their effects are not stream work and outlive it.
struct ct_capture_relaxed {
    cudaStreamCaptureMode previous = cudaStreamCaptureModeRelaxed;
    ct_capture_relaxed() { cudaThreadExchangeStreamCaptureMode(&previous); }
    ~ct_capture_relaxed() { cudaThreadExchangeStreamCaptureMode(&previous); }
    ct_capture_relaxed(const ct_capture_relaxed &) = delete;
    ct_capture_relaxed &operator=(const ct_capture_relaxed &) = delete;
};
#endif

#ifdef __cplusplus
// Makes `device` current for the guard's lifetime, then restores the thread's device. A
// stream's handle 0 means the current device's default stream, and events, cuDNN and cuBLAS
// handles belong to the device current when they are made: calls on a ct_stream run inside
// a guard for its device. `ok` is false (with the error recorded) if the switch failed.
struct ct_device_guard {
    int previous = -1;
    bool ok = true;
    explicit ct_device_guard(int device) {
        ok = CT_CUDA_CHECK(cudaGetDevice(&previous)) && (previous == device || CT_CUDA_CHECK(cudaSetDevice(device)));
    }
    ~ct_device_guard() {
        int now;
        if (previous >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous)
            cudaSetDevice(previous);
    }
    ct_device_guard(const ct_device_guard &) = delete;
    ct_device_guard &operator=(const ct_device_guard &) = delete;
};
#endif

#endif
