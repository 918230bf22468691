// ctensor — the CUDA device layer: device discovery, storage allocation and copies.
// Every CUDA call goes through CT_CUDA_CHECK, which turns a failure into a ctensor error
// naming the call, the file and the line. The caching allocator and streams build on this.
#include "kernels/cuda/check.h"
#include "runtime/allocator.h"

#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {

// Without a driver, cudaGetDeviceCount fails ("driver version is insufficient", or "no
// CUDA-capable device"): that means "no GPU", not an error. The answer is cached.
int ct__cuda_device_count(void) {
    static int cached = -1;
    if (cached >= 0)
        return cached;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error so later calls are not confused by it
        count = 0;
    }
    cached = count;
    return count;
}

// Storage memory comes from the caching allocator (kernels/cuda/allocator.cu), on the
// calling thread's current stream.
void *ct__cuda_storage_alloc(size_t nbytes, int device_index) {
    return ct__cuda_allocator_malloc(device_index, nbytes);
}

void ct__cuda_storage_free(void *ptr, int device_index) {
    if (ptr)
        ct__cuda_allocator_free(device_index, ptr);
}

ct_status ct__cuda_memcpy(ct_device dst_device, void *dst, ct_device src_device, const void *src, size_t nbytes) {
    cudaMemcpyKind kind;
    if (dst_device.type == CT_DEVICE_CPU)
        kind = cudaMemcpyDeviceToHost;
    else if (src_device.type == CT_DEVICE_CPU)
        kind = cudaMemcpyHostToDevice;
    else
        kind = cudaMemcpyDeviceToDevice;
    int dev = dst_device.type == CT_DEVICE_CUDA ? dst_device.index : src_device.index;
    if (!CT_CUDA_CHECK(cudaSetDevice(dev)) || !CT_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind)))
        return ct_last_error();
    return CT_OK;
}

}  // extern "C"
