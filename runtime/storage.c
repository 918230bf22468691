/* Storage: reference-counted buffers on a device. Host memory is 64-byte aligned (2 MiB for
 * large buffers). */
#include "runtime/internal.h"

#include <string.h>
#include <sys/mman.h>

#ifdef CT_HAVE_CUDA
void *ct__cuda_storage_alloc(size_t nbytes, int device_index); /* kernels/cuda; NULL + error */
void ct__cuda_storage_free(void *ptr, int device_index);
#endif

/* Buffers from 32 MiB up (glibc's largest mmap threshold: each one is a fresh mapping) are
 * 2 MiB aligned and offered to transparent huge pages. With 4 KiB pages, first-touch faults
 * and the unmap made a ct_add of 64 Mi f32 elements take 75 ms instead of 12 ms in place;
 * with huge pages it takes 29 ms (bench/results/2026-11-22-cpu.md). Only whole 2 MiB pages
 * inside the buffer are advised, so no memory is touched beyond what was asked for. */
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

ct_storage *ct__storage_new(size_t nbytes, ct_device device) {
    ct_storage *s = malloc(sizeof *s);
    if (!s) {
        ct__set_error(CT_ERR_MEMORY, "out of host memory");
        return NULL;
    }
    atomic_init(&s->refcount, 1);
    atomic_init(&s->version, 0);
    s->device = device;
    s->nbytes = nbytes;
    if (device.type == CT_DEVICE_CPU) {
        s->data = ct__host_alloc(nbytes);
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

void ct__storage_release(ct_storage *s) {
    if (!s || atomic_fetch_sub(&s->refcount, 1) != 1)
        return;
    if (s->device.type == CT_DEVICE_CPU) {
        ct__host_free(s->data);
    } else {
#ifdef CT_HAVE_CUDA
        ct__cuda_storage_free(s->data, s->device.index);
#endif
    }
    free(s);
}

#ifdef CT_HAVE_CUDA
ct_status ct__cuda_memcpy(ct_device dst_device, void *dst, ct_device src_device, const void *src, size_t nbytes);
#endif

ct_status ct__memcpy(ct_device dst_device, void *dst, ct_device src_device, const void *src, size_t nbytes) {
    if (nbytes == 0)
        return CT_OK;
    if (dst_device.type == CT_DEVICE_CPU && src_device.type == CT_DEVICE_CPU) {
        memcpy(dst, src, nbytes);
        return CT_OK;
    }
#ifdef CT_HAVE_CUDA
    return ct__cuda_memcpy(dst_device, dst, src_device, src, nbytes);
#else
    return ct__set_error(CT_ERR_DEVICE, "copy between %s and %s: this ctensor was built without CUDA",
                         ct_device_name(src_device), ct_device_name(dst_device));
#endif
}
