// ctensor — deferred reporting of bad indices found by kernels (PyTorch's device-side
// asserts, without killing the context).
//
// An op that indexes memory with values it cannot check on the host without a
// synchronization (index_select, gather, scatter_add, one_hot, embedding, the class targets
// of cross-entropy and NLL) passes its kernels a ct_index_report. A kernel that meets an
// index outside [0, limit) never dereferences it: it skips the element (gathers write a
// zero) and records the value in its device's error word. The first record wins until the
// host reads it: every synchronizing entry point (ct_to_host, ct_item, the synchronize calls)
// checks the word after waiting (ct__cuda_check_device_errors, kernels/cuda/device.cu) and
// turns it into the ctensor error the CPU would have raised at once, saying that the GPU
// reported it at this synchronization.
//
// The word has two parts: a claim flag in device memory (atomicCAS: one writer) and the
// record in mapped pinned host memory, written with plain stores by the writer only, then
// published by `pending` after a system fence, so the host reads it without a copy.
#ifndef CT_KERNELS_CUDA_DEVICE_ERROR_CUH
#define CT_KERNELS_CUDA_DEVICE_ERROR_CUH

#include "kernels/cuda/check.h"
#include "kernels/cuda/stream_internal.h"

#include <stdint.h>

// The record in mapped host memory (one per device).
struct ct_device_error_record {
    volatile unsigned int pending; // set last: the fields below are complete
    int status;                    // the ctensor status the host reports (CT_ERR_DIM, CT_ERR_VALUE)
    int dim;                       // the indexed dim, or -1
    int32_t value;
    int64_t limit;
    int64_t position; // linear position of the bad index, or -1 when unknown
    const char *op;   // host string literals (static storage), carried as pointers
    const char *what; // "index", "target"
};

// What a kernel needs to report, passed by value.
struct ct_index_report {
    unsigned int *claim;                 // device memory
    ct_device_error_record *record;      // device pointer of the mapped record
    const char *op, *what;
    int status, dim;
    int64_t limit;
};

#ifdef __cplusplus
extern "C" {
#endif
// Fill `report` for kernels queued on `stream` (creating the device's error word on first
// use). `op` and `what` must be string literals. CT_OK or an error recorded.
ct_status ct__cuda_index_report(ct_stream *stream, const char *op, const char *what, int status, int dim,
                                int64_t limit, ct_index_report *report);
// After a synchronization with work on cuda:`device`: CT_OK, or the error recorded there
// (the record is then cleared, ready for the next one).
ct_status ct__cuda_check_device_errors(int device);
// The calling thread's first use of cuda:`device` (ct_stream_current; a first check also
// counts): errors already reported to other threads before then are not the thread's news.
void ct__cuda_device_errors_baseline(int device);
#ifdef __cplusplus
}
#endif

// True when 0 <= v < limit; otherwise records v (the first one wins) and returns false.
__device__ __forceinline__ bool ct_index_ok(const ct_index_report &r, int32_t v, int64_t position) {
    if (v >= 0 && (int64_t)v < r.limit)
        return true;
    if (atomicCAS(r.claim, 0u, 1u) == 0u) {
        ct_device_error_record *rec = r.record;
        rec->status = r.status;
        rec->dim = r.dim;
        rec->value = v;
        rec->limit = r.limit;
        rec->position = position;
        rec->op = r.op;
        rec->what = r.what;
        __threadfence_system();
        rec->pending = 1u;
    }
    return false;
}

#endif
