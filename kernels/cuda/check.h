// ctensor — checking macros for CUDA-side calls. Each evaluates to true on success and
// records a CT_ERR_CUDA error (call, file, line, the library's message) on failure.
#ifndef CT_KERNELS_CUDA_CHECK_H
#define CT_KERNELS_CUDA_CHECK_H

#include "ctensor/types.h"

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif
ct_status ct__set_error(ct_status status, const char *fmt, ...);
ct_status ct_last_error(void);
#ifdef __cplusplus
}
#endif

static inline bool ct__cuda_ok(cudaError_t err, const char *call, const char *file, int line) {
    if (err == cudaSuccess)
        return true;
    cudaGetLastError();
    ct__set_error(CT_ERR_CUDA, "%s failed at %s:%d: %s (%s)", call, file, line, cudaGetErrorString(err),
                  cudaGetErrorName(err));
    return false;
}

#define CT_CUDA_CHECK(call) ct__cuda_ok((call), #call, __FILE__, __LINE__)

// True when err is cudaErrorNotReady (an event's or a stream's work still running): an answer,
// not a failure of the device; it is cleared so that no later check reports it.
static inline bool ct__cuda_not_ready(cudaError_t err) {
    if (err != cudaErrorNotReady)
        return false;
    cudaGetLastError();
    return true;
}

#endif
