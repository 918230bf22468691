/* ctensor — device memory: the CUDA caching allocator's statistics and controls, stream
 * recording for tensors, and pinned host memory.
 *
 * CUDA tensors get their memory from a caching allocator (one per device). Freed blocks
 * are kept and reused instead of being returned with cudaFree, so a training step that
 * allocates the same shapes every iteration stops calling cudaMalloc after the first one.
 * Requests are rounded up to 512 bytes; requests up to 1 MiB are carved from 2 MiB
 * segments, larger ones from 20 MiB segments (or, from 10 MiB up, from a segment of their
 * own size rounded to 2 MiB). Memory is allocated on the thread's current stream
 * (ct_stream_current); a cached block is reused only by allocations on the stream it was
 * allocated on; a tensor also used on other streams must be recorded with
 * ct_tensor_record_stream, so that its block waits for that work before being reused.
 *
 *     ct_memory_stats s;
 *     ct_cuda_memory_stats(0, &s);
 *     printf("%zu bytes in tensors, %zu held from the device\n", s.allocated_bytes, s.reserved_bytes);
 */
#ifndef CTENSOR_MEMORY_H
#define CTENSOR_MEMORY_H

#include "stream.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Counters of one caching allocator. Byte counts are block sizes: requests rounded up to
 * 512 bytes, plus the tail of a block that was too small to split off. */
typedef struct ct_memory_stats {
    size_t allocated_bytes;      /* in blocks handed out and not yet freed */
    size_t reserved_bytes;       /* in segments held from the device (cudaMalloc) */
    size_t peak_allocated_bytes; /* highest allocated_bytes since creation or the last reset */
    size_t peak_reserved_bytes;  /* highest reserved_bytes since creation or the last reset */
    size_t pending_free_bytes;   /* freed, waiting for work on other streams to finish */
    size_t limit_bytes;          /* the memory limit on reserved_bytes; 0 when none */
    uint64_t allocations;        /* successful allocations */
    uint64_t frees;              /* frees */
    uint64_t cache_hits;         /* allocations served from a cached block */
    uint64_t segment_allocs;     /* segments obtained from the device (cudaMalloc calls) */
    uint64_t segment_frees;      /* segments given back (cudaFree calls) */
    uint64_t oom_retries;        /* cache flushes forced by the device or the limit */
    uint64_t ooms;               /* allocations that failed for lack of memory */
} ct_memory_stats;

/* The counters of cuda:`device`'s allocator. CT_ERR_NULL for a NULL `out`; CT_ERR_DEVICE
 * (and `out` zeroed) when the device does not exist or ctensor was built without CUDA. */
ct_status ct_cuda_memory_stats(int device, ct_memory_stats *out);
/* Set both peaks of cuda:`device` to the current values. Errors as ct_cuda_memory_stats. */
ct_status ct_cuda_reset_peak_stats(int device);
/* Give every cached segment that holds no live block back to the device (cudaFree), on
 * every device, and empty the pinned host cache the same way. Blocks still waiting for
 * work on other streams stay. */
void ct_cuda_empty_cache(void);

/* CPU tensors are cached the same way (one pool of host memory, no streams): the counters,
 * and giving cached memory back to the system. CT_CPU_CACHE=0 in the environment turns
 * the host cache off (every buffer then comes from malloc). */
ct_status ct_cpu_memory_stats(ct_memory_stats *out);
void ct_cpu_empty_cache(void);
/* Cap the bytes cuda:`device`'s allocator reserves (0 removes the cap). An allocation that
 * would go over it first releases cached segments, then fails with CT_ERR_MEMORY. Cached
 * segments are released at once when the reserve is already over the new cap. The
 * environment variable CT_CUDA_MEMORY_LIMIT sets the initial cap of every device, in bytes
 * or with a binary suffix: 8G, 512M, 1.5GiB. Errors as ct_cuda_memory_stats. */
ct_status ct_cuda_set_memory_limit(int device, size_t bytes);

/* Declare that `t`'s memory is used by work queued on `stream`: when the tensor's storage
 * is freed, its block is reused only after that work completes (an event recorded on
 * `stream` at free time has completed). Needed whenever a tensor allocated on one stream
 * is read or written on another. A no-op for CPU tensors and for the stream the memory was
 * allocated on. CT_ERR_NULL / CT_ERR_STATE for a NULL or freed tensor or a NULL stream;
 * CT_ERR_DEVICE when the stream belongs to another device than the tensor. */
ct_status ct_tensor_record_stream(ct_tensor *t, ct_stream *stream);

/* Page-locked host memory for asynchronous copies, at least 64-byte aligned, from a cache
 * like the device one (cudaHostAlloc). Without a usable GPU it is ordinary aligned host
 * memory. Returns NULL with CT_ERR_MEMORY when none is left. Free with ct_pinned_free, and
 * only once the copies that use it have completed: a freed block is reused at once. */
void *ct_pinned_alloc(size_t nbytes);
/* Return memory from ct_pinned_alloc to the cache (NULL is ignored). */
void ct_pinned_free(void *ptr);
/* The pinned cache's counters (all zero when the aligned-memory fallback is in use). */
ct_status ct_pinned_memory_stats(ct_memory_stats *out);

/* Pinned CPU tensors (PyTorch's Tensor.pin_memory). A CPU tensor with `t`'s values, dtype
 * and shape, contiguous, over memory from the pinned cache above (a new tensor in the
 * current scope; differentiable like ct_clone; `t` itself is left alone). ct_to_device of
 * a pinned tensor to a GPU reads it asynchronously on the destination's current stream:
 * the call returns before the copy has run, the tensor may be freed at once (its block is
 * reused only once the copy has completed), but writing into it before the copy has run
 * changes what arrives. (Copies from ordinary CPU memory are asynchronous too, through a
 * staging block: only their first, host-side step waits.) Without a usable GPU the memory
 * is ordinary aligned memory: the result is a plain copy and ct_is_pinned says false.
 * NULL with an error for a NULL or freed tensor, or CT_ERR_DEVICE for a tensor that is not
 * on the CPU. */
ct_tensor *ct_pin_memory(const ct_tensor *t);
/* True when `t` (or the tensor it views) lives in page-locked memory from ct_pin_memory;
 * false otherwise, without a usable GPU, and (with an error) for a NULL or freed tensor. */
bool ct_is_pinned(const ct_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
