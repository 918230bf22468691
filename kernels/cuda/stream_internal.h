// ctensor — what the CUDA side knows about a stream (not part of the public API).
#ifndef CT_KERNELS_CUDA_STREAM_INTERNAL_H
#define CT_KERNELS_CUDA_STREAM_INTERNAL_H

#include "kernels/cuda/check.h"

#include <cuda_runtime.h>

struct ct_stream {
    cudaStream_t handle; // 0 for the device's default stream
    int device;
    void *blas;          // per-stream cuBLASLt handle and workspace, created on first use
};

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
