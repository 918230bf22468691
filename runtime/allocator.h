/* ctensor — the caching allocator engine (internal).
 *
 * Plain C bookkeeping over an abstract segment provider: the CUDA backend plugs in
 * cudaMalloc/cudaFree/cudaEvent (kernels/cuda/allocator.cu), pinned host memory plugs in
 * cudaHostAlloc, and the unit tests plug in malloc with simulated events, so every rule
 * below runs on the CPU in CI.
 *
 * Rules (those of PyTorch's CUDA caching allocator):
 *   - Sizes are rounded up to 512 bytes (0 bytes gets a 512-byte block).
 *   - Blocks of up to 1 MiB come from the small pool, carved from 2 MiB segments; larger
 *     blocks from the large pool: requests under 10 MiB carve 20 MiB segments, bigger ones
 *     get a segment of their own size rounded up to 2 MiB.
 *   - Best fit: the smallest free block of the pool and stream that is large enough (the
 *     lowest address among equals). A block larger than needed is split when the rest is
 *     at least 512 bytes (small pool) or more than 1 MiB (large pool).
 *   - A freed block merges with its free neighbours in the same segment.
 *   - Blocks belong to the stream they were allocated on and are reused only by
 *     allocations on that stream. A block recorded as used on other streams
 *     (ct_allocator_record_stream) waits, once freed, until an event recorded on each of
 *     those streams at free time has completed; events are queried lazily, at the next
 *     allocation or empty_cache.
 *   - When the provider is out of memory, or a new segment would take the reserve over
 *     the limit, a segment just large enough (the request rounded to 2 MiB) is tried
 *     first when it is smaller; then the cached free segments are released and that
 *     segment is tried once more; if that fails too, the allocation fails with
 *     CT_ERR_MEMORY and a message giving the requested bytes, the provider's free and
 *     total bytes, and the allocated, reserved and limit bytes.
 *   - CUDA graph capture (kernels/cuda/graph.cu). A capture allocates with its private pool
 *     id as the stream (a value that is never a stream id), so its blocks, those freed
 *     during the capture included, are reused only within the pool. The pool is retained
 *     from capture_begin until release_pool: its segments are never given back, since the
 *     graph's replays still use blocks freed during the capture. While any capture is
 *     underway (captures may overlap: a count is kept) no event is queried (cudaEventQuery
 *     is illegal during capture) and no segment is given back (cudaFree would synchronize
 *     with the capturing stream): empty_cache and set_limit release nothing, and an
 *     allocation that needs the cache flushed fails with CT_ERR_MEMORY, its message saying
 *     that a capture is underway. A block freed with recorded streams is held (counted in
 *     pending_free_bytes) and records its events only when the last capture ends, since an
 *     event recorded on the capturing stream would become part of the graph.
 *
 * Data structures: free blocks of each pool live in one AVL tree ordered by (stream,
 * size, address), so the best fit on a stream is one O(log n) lower-bound search and
 * insertion and removal are O(log n) with no allocation; live blocks are found by address
 * in an intrusive hash table (chained through the blocks, resized only as it grows). Block
 * structs and event records come from free lists refilled a chunk at a time, so a cached
 * malloc or free allocates no host memory (except when the number of live blocks reaches a
 * new high and the table doubles). Measured with a malloc-backed provider: 20 ns per
 * malloc + free of one cached size, 50 ns with ~1300 live blocks of mixed sizes on four
 * streams. One mutex per allocator makes every call thread-safe.
 */
#ifndef CT_RUNTIME_ALLOCATOR_H
#define CT_RUNTIME_ALLOCATOR_H

#include "ctensor/memory.h"
#include "ctensor/types.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CT_ALLOC_ROUND ((size_t)512)
#define CT_ALLOC_SMALL_MAX ((size_t)1 << 20)          /* the largest small-pool block */
#define CT_ALLOC_SMALL_SEGMENT ((size_t)2 << 20)      /* small-pool segment size */
#define CT_ALLOC_LARGE_SEGMENT ((size_t)20 << 20)     /* large-pool segment for requests < 10 MiB */
#define CT_ALLOC_LARGE_SHARED_MAX ((size_t)10 << 20)  /* from here, a segment of its own */
#define CT_ALLOC_SEGMENT_ROUND ((size_t)2 << 20)      /* own segments are rounded to 2 MiB */

/* Where the allocator gets its memory. Streams are opaque ids (a cudaStream_t for CUDA;
 * anything for tests). The allocator serializes calls into one provider with its mutex. */
typedef struct ct_segment_provider {
    const char *name; /* names the memory in messages: "cuda:0", "pinned host memory" */
    /* Reserve `bytes`; CT_OK with *ptr set (at least 512-byte aligned), CT_ERR_MEMORY when
     * out of memory (the allocator may then flush its cache and retry; nothing need be
     * recorded), or another status with an error recorded (reported as is). */
    ct_status (*segment_alloc)(void *ctx, size_t bytes, void **ptr);
    void (*segment_free)(void *ctx, void *ptr, size_t bytes);
    /* Record an event on `stream` now; CT_OK with *event set, or an error recorded. The
     * three event functions may be NULL when the memory is never used on several streams:
     * ct_allocator_record_stream then reports CT_ERR_UNSUPPORTED. */
    ct_status (*event_record)(void *ctx, uintptr_t stream, void **event);
    /* True when the work before the event's record has completed. */
    bool (*event_query)(void *ctx, void *event);
    void (*event_free)(void *ctx, void *event);
    /* Free and total bytes of the underlying memory, for messages; false when unknown
     * (may be NULL: unknown). */
    bool (*mem_info)(void *ctx, size_t *free_bytes, size_t *total_bytes);
} ct_segment_provider;

typedef struct ct_allocator ct_allocator;

/* A new allocator over `provider` (copied) and its `provider_ctx` (borrowed). NULL with
 * CT_ERR_MEMORY when host memory runs out. */
ct_allocator *ct_allocator_create(const ct_segment_provider *provider, void *provider_ctx);
/* Give every segment back to the provider (live blocks included: the caller must be done
 * with them) and free the allocator. Pending events are freed without waiting. */
void ct_allocator_destroy(ct_allocator *a);

/* A block of at least `nbytes` for use on `stream`; NULL with CT_ERR_MEMORY (or the
 * provider's error) on failure. */
void *ct_allocator_malloc(ct_allocator *a, size_t nbytes, uintptr_t stream);
/* Return a block. CT_ERR_VALUE when `ptr` is not a live block of this allocator (a double
 * free, or a foreign pointer); NULL is ignored. */
ct_status ct_allocator_free(ct_allocator *a, void *ptr);
/* Mark the live block at `ptr` as used on `stream` (see the rules above). CT_ERR_VALUE
 * when `ptr` is not a live block; CT_ERR_MEMORY when host memory runs out. */
ct_status ct_allocator_record_stream(ct_allocator *a, void *ptr, uintptr_t stream);
/* Size of the live block at `ptr` (0 when it is none). */
size_t ct_allocator_block_size(ct_allocator *a, void *ptr);

/* Release every segment that holds no live or pending block (none during a capture, nor
 * those of retained capture pools). */
void ct_allocator_empty_cache(ct_allocator *a);
/* Cap on reserved bytes (0: none). Releases cached segments when the reserve is over it
 * (as empty_cache does). */
void ct_allocator_set_limit(ct_allocator *a, size_t bytes);
void ct_allocator_stats(ct_allocator *a, ct_memory_stats *out);
void ct_allocator_reset_peak(ct_allocator *a);

/* CUDA graph capture (see the rules above). capture_begin starts a capture and retains
 * `pool`: CT_ERR_VALUE when it is already retained, CT_ERR_MEMORY when host memory runs out.
 * capture_end ends one capture; when none remain, the blocks held during the captures
 * record their events (a block whose event cannot be recorded stays held for good, and the
 * error is returned); CT_ERR_STATE when no capture is underway. release_pool says that the
 * pool's graph is gone: its free segments may be given back from then on, by the next
 * empty_cache, set_limit or out-of-memory flush with no capture underway (release_pool
 * itself gives nothing back). Unknown pool ids are ignored. */
ct_status ct_allocator_capture_begin(ct_allocator *a, uintptr_t pool);
ct_status ct_allocator_capture_end(ct_allocator *a);
void ct_allocator_release_pool(ct_allocator *a, uintptr_t pool);

/* Verify every internal invariant (segments tile their memory, neighbours are merged,
 * trees are ordered and balanced, the table, the held list and the statistics agree with
 * the blocks).
 * CT_OK, or CT_ERR_INTERNAL with a message naming the first violation. For tests. */
ct_status ct_allocator_check(ct_allocator *a);

/* The CUDA glue (kernels/cuda/allocator.cu): allocate on the calling thread's current
 * stream of cuda:`device`, free, and record a stream on a block. Errors as above, plus
 * CT_ERR_DEVICE for a device that does not exist. */
void *ct__cuda_allocator_malloc(int device, size_t nbytes);
ct_status ct__cuda_allocator_free(int device, void *ptr);
ct_status ct__cuda_allocator_record_stream(int device, void *ptr, ct_stream *stream);
/* ct_cuda_empty_cache for cuda:`device` alone (for a library call that cudaMallocs its own
 * memory and failed for want of it); nothing when the thread captures a graph on another
 * device, and what a capture allows on this one. */
void ct__cuda_allocator_empty_cache(int device);
/* The CUDA graph glue (kernels/cuda/graph.cu): ct_allocator_capture_begin/_end and
 * ct_allocator_release_pool on cuda:`device`'s allocator. */
ct_status ct__cuda_allocator_capture_begin(int device, uintptr_t pool);
ct_status ct__cuda_allocator_capture_end(int device);
void ct__cuda_allocator_release_pool(int device, uintptr_t pool);

/* Pinned host memory (ct_pinned_alloc): whether it really is page-locked (false without a
 * usable GPU, where it is ordinary aligned memory), and, CUDA only, mark the live pinned
 * block at `block` as read by work queued on `stream`, so that once freed it is reused only
 * after that work completes (like ct_allocator_record_stream). */
bool ct__pinned_is_page_locked(void);
ct_status ct__pinned_record_stream(void *block, ct_stream *stream);

/* Parse a byte count: "1048576", "512M", "8G", "1.5GiB", "64KB" (K, M, G, T are powers of
 * 1024; an optional B or iB may follow). False on anything else or on overflow. */
bool ct__parse_byte_size(const char *text, size_t *out);

#ifdef __cplusplus
}
#endif
#endif
