// ctensor — what the CUDA side knows about a stream (not part of the public API).
#ifndef CT_KERNELS_CUDA_STREAM_INTERNAL_H
#define CT_KERNELS_CUDA_STREAM_INTERNAL_H

#include <cuda_runtime.h>

struct ct_stream {
    cudaStream_t handle; // 0 for the device's default stream
    int device;
    void *blas;          // per-stream cuBLASLt handle and workspace, created on first use
};

#endif
