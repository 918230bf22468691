/* Storage: reference-counted buffers on a device. Host memory is 64-byte aligned (2 MiB for
 * large buffers). */
#include "runtime/allocator.h"
#include "runtime/internal.h"

#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#ifdef CT_HAVE_CUDA
void *ct__cuda_storage_alloc(size_t nbytes, int device_index); /* kernels/cuda; NULL + error */
void ct__cuda_storage_free(void *ptr, int device_index);
#endif

/* Buffers from 32 MiB up (glibc's largest mmap threshold: each one is a fresh mapping) are
 * 2 MiB aligned and offered to transparent huge pages. With 4 KiB pages, first-touch faults
 * and the unmap made ct_add of 64 Mi f32 elements take 6x as long as ct_add_ in place (77 vs
 * 12 ms); with huge pages, 1.8x (22 vs 12 ms). The host cache below avoids the faults
 * altogether; this path serves CPU tensors when the cache is off (bench/results/2026-11-22-cpu.md).
 * Only whole 2 MiB pages inside the buffer are advised: nothing beyond the request is touched. */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define HUGE_PAGE_FROM ((size_t)32 << 20)

void *ct__host_alloc(size_t nbytes) {
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    if (rounded == 0)
        rounded = 64;
#ifdef MADV_HUGEPAGE
    void *huge;
    if (rounded >= HUGE_PAGE_FROM && posix_memalign(&huge, HUGE_PAGE_BYTES, rounded) == 0) {
        madvise(huge, rounded & ~(HUGE_PAGE_BYTES - 1), MADV_HUGEPAGE); /* advice: a failure is harmless */
        return huge;
    }
#endif
    void *p = aligned_alloc(64, rounded);
    if (!p)
        ct__set_error(CT_ERR_MEMORY, "out of host memory: could not allocate %zu bytes", nbytes);
    return p;
}

void ct__host_free(void *p) { free(p); }

/* ---- the host cache ---------------------------------------------------------------------
 * CPU tensors get their memory from the caching allocator engine (runtime/allocator.h) over
 * plain host memory, one stream. A training step allocates and frees the same large
 * activation buffers every iteration; fresh buffers from the system cost a page fault and a
 * zeroed page per 4 KiB on first touch (a quarter of a CPU training step of the Fashion-MNIST
 * CNN before this cache), cached ones cost nothing. ct_cpu_empty_cache() gives the memory
 * back. CT_CPU_CACHE=0 turns the cache off, and sanitizer builds never use it, so that
 * AddressSanitizer sees every buffer on its own. */

static ct_allocator *host_cache;
static pthread_once_t host_cache_once = PTHREAD_ONCE_INIT;

#ifndef CT_SANITIZE_BUILD
static ct_status host_segment_alloc(void *ctx, size_t bytes, void **ptr) {
    size_t align = bytes >= HUGE_PAGE_BYTES ? HUGE_PAGE_BYTES : 4096;
    if (posix_memalign(ptr, align, bytes) != 0)
        return CT_ERR_MEMORY;
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_PAGE_BYTES)
        madvise(*ptr, bytes & ~(HUGE_PAGE_BYTES - 1), MADV_HUGEPAGE); /* advice: a failure is harmless */
#endif
    return CT_OK;
}

static void host_segment_free(void *ctx, void *ptr, size_t bytes) { free(ptr); }
#endif

static void host_cache_init(void) {
#ifndef CT_SANITIZE_BUILD
    const char *env = getenv("CT_CPU_CACHE");
    if (env && strcmp(env, "0") == 0)
        return;
    static const ct_segment_provider provider = {"host memory", host_segment_alloc, host_segment_free,
                                                 NULL, NULL, NULL, NULL};
    host_cache = ct_allocator_create(&provider, NULL);
#endif
}

static void *cpu_storage_alloc(size_t nbytes) {
    pthread_once(&host_cache_once, host_cache_init);
    return host_cache ? ct_allocator_malloc(host_cache, nbytes, 0) : ct__host_alloc(nbytes);
}

static void cpu_storage_free(void *ptr) {
    if (host_cache)
        ct_allocator_free(host_cache, ptr);
    else
        ct__host_free(ptr);
}

void ct_cpu_empty_cache(void) {
    pthread_once(&host_cache_once, host_cache_init);
    if (host_cache)
        ct_allocator_empty_cache(host_cache);
}

ct_status ct_cpu_memory_stats(ct_memory_stats *out) {
    if (!out)
        return ct__null_arg("ct_cpu_memory_stats", "out");
    pthread_once(&host_cache_once, host_cache_init);
    memset(out, 0, sizeof *out);
    if (host_cache)
        ct_allocator_stats(host_cache, out);
    return CT_OK;
}

/* A storage of nbytes on `device`; on the CPU from the pinned cache when `pinned`. */
static ct_storage *storage_new(size_t nbytes, ct_device device, bool pinned) {
    ct_storage *s = malloc(sizeof *s);
    if (!s) {
        ct__set_error(CT_ERR_MEMORY, "out of host memory");
        return NULL;
    }
    atomic_init(&s->refcount, 1);
    atomic_init(&s->version, 0);
    s->device = device;
    s->nbytes = nbytes;
    s->pinned = pinned;
    if (pinned) {
        s->data = ct_pinned_alloc(nbytes);
    } else if (device.type == CT_DEVICE_CPU) {
        s->data = cpu_storage_alloc(nbytes);
    } else {
#ifdef CT_HAVE_CUDA
        s->data = ct__cuda_storage_alloc(nbytes, device.index);
#else
        ct__set_error(CT_ERR_DEVICE, "cannot allocate on %s: this ctensor was built without CUDA",
                      ct_device_name(device));
        s->data = NULL;
#endif
    }
    if (!s->data) {
        free(s);
        return NULL;
    }
    return s;
}

ct_storage *ct__storage_new(size_t nbytes, ct_device device) { return storage_new(nbytes, device, false); }

ct_storage *ct__storage_new_pinned(size_t nbytes) { return storage_new(nbytes, CT_CPU, true); }

void ct__storage_release(ct_storage *s) {
    if (!s || atomic_fetch_sub(&s->refcount, 1) != 1)
        return;
    if (s->pinned) {
        ct_pinned_free(s->data); /* reused only after the copies recorded on it (ct__memcpy_from_pinned) */
    } else if (s->device.type == CT_DEVICE_CPU) {
        cpu_storage_free(s->data);
    } else {
#ifdef CT_HAVE_CUDA
        ct__cuda_storage_free(s->data, s->device.index);
#endif
    }
    free(s);
}

#ifdef CT_HAVE_CUDA
ct_status ct__cuda_memcpy(ct_device dst_device, void *dst, ct_device src_device, const void *src, size_t nbytes,
                          void *pinned_block);
#endif

ct_status ct__memcpy(ct_device dst_device, void *dst, ct_device src_device, const void *src, size_t nbytes) {
    if (nbytes == 0)
        return CT_OK;
    if (dst_device.type == CT_DEVICE_CPU && src_device.type == CT_DEVICE_CPU) {
        memcpy(dst, src, nbytes);
        return CT_OK;
    }
#ifdef CT_HAVE_CUDA
    return ct__cuda_memcpy(dst_device, dst, src_device, src, nbytes, NULL);
#else
    return ct__set_error(CT_ERR_DEVICE, "copy between %s and %s: this ctensor was built without CUDA",
                         ct_device_name(src_device), ct_device_name(dst_device));
#endif
}

ct_status ct__memcpy_from_pinned(ct_device dst_device, void *dst, void *pinned_block, const void *src, size_t nbytes) {
    CT_ASSERT(pinned_block && dst_device.type == CT_DEVICE_CUDA, CT_ERR_INTERNAL);
    if (nbytes == 0)
        return CT_OK;
#ifdef CT_HAVE_CUDA
    return ct__cuda_memcpy(dst_device, dst, CT_CPU, src, nbytes, pinned_block);
#else
    return ct__set_error(CT_ERR_DEVICE, "copy to %s: this ctensor was built without CUDA", ct_device_name(dst_device));
#endif
}

bool ct_is_pinned(const ct_tensor *t) {
    return ct__check("ct_is_pinned", "t", t) && t->storage->pinned && ct__pinned_is_page_locked();
}
