/* A null CUDA runtime: libcudart.so.<major> with the entry points ctensor, ctbench and the
 * tests use, where nothing reaches a GPU. It stands in for the real runtime through
 * LD_LIBRARY_PATH (see bench/README.md, "Host overhead without a GPU"):
 *
 * - one device, cuda:0, whose "device memory" is host memory (so copies work and no kernel
 *   writes anything: results are garbage, and tests that check values fail);
 * - kernel launches, events, streams and graph captures succeed at once and do nothing.
 *
 * What it is for: timing ctensor's own host work per op (allocation, dispatch, checks), apart
 * from the driver's launch cost, on any machine; and running the host side of the GPU suites
 * under valgrind or the sanitizers where there is no GPU. It is not part of the library and
 * proves nothing about kernels. cuBLASLt and cuDNN stay the real libraries: they find no
 * driver and fail, so matmul, convolution and what uses them fail with their errors. The one
 * exception is cuBLASLt's handle: cublasLtCreate and cublasLtDestroy are defined here too
 * (exported in cuBLASLt's symbol version, and found first), because every CUDA graph capture
 * makes its stream's handle when it begins; a matmul still fails in the real library. */
#include <cuda_runtime_api.h>

#include <stdlib.h>
#include <string.h>

#define NULL_API __attribute__((visibility("default")))

static __thread int current_device;
static __thread struct {
    dim3 grid, block;
    size_t shared;
    cudaStream_t stream;
} launch_config;

/* Streams, events, graphs: distinct non-NULL handles that own nothing but themselves. */
static void *new_handle(void) { return calloc(1, 16); }

static void *host_block(size_t bytes) {
    size_t rounded = (bytes + 511) / 512 * 512;
    return aligned_alloc(512, rounded ? rounded : 512);
}

/* ---- cuBLASLt's handle (see the top) ------------------------------------------------------- */

NULL_API int cublasLtCreate(void **handle) {
    *handle = new_handle();
    return *handle ? 0 : 3; /* CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_ALLOC_FAILED */
}
NULL_API int cublasLtDestroy(void *handle) {
    free(handle);
    return 0;
}

/* ---- what nvcc's generated code calls -------------------------------------------------- */

NULL_API void **__cudaRegisterFatBinary(void *fat_cubin) {
    static void *handle;
    return &handle;
}
NULL_API void __cudaRegisterFatBinaryEnd(void **handle) {}
NULL_API void __cudaUnregisterFatBinary(void **handle) {}
NULL_API char __cudaInitModule(void **handle) { return 1; }
NULL_API void __cudaRegisterFunction(void **handle, const char *host_fun, char *device_fun, const char *name,
                                     int thread_limit, uint3 *tid, uint3 *bid, dim3 *block, dim3 *grid, int *wsize) {
}
NULL_API void __cudaRegisterVar(void **handle, char *host_var, char *device_address, const char *device_name, int ext,
                                size_t size, int constant, int global) {
}
NULL_API unsigned __cudaPushCallConfiguration(dim3 grid, dim3 block, size_t shared, cudaStream_t stream) {
    launch_config.grid = grid;
    launch_config.block = block;
    launch_config.shared = shared;
    launch_config.stream = stream;
    return 0;
}
NULL_API cudaError_t __cudaPopCallConfiguration(dim3 *grid, dim3 *block, size_t *shared, void *stream) {
    *grid = launch_config.grid;
    *block = launch_config.block;
    *shared = launch_config.shared;
    *(cudaStream_t *)stream = launch_config.stream;
    return cudaSuccess;
}
NULL_API cudaError_t __cudaGetKernel(cudaKernel_t *kernel, const void *fun) {
    *kernel = (cudaKernel_t)fun;
    return cudaSuccess;
}
NULL_API cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 grid, dim3 block, void **args, size_t shared,
                                        cudaStream_t stream) {
    return cudaSuccess;
}
NULL_API cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t kernel, dim3 grid, dim3 block, void **args, size_t shared,
                                             cudaStream_t stream) {
    return __cudaLaunchKernel(kernel, grid, block, args, shared, stream);
}
NULL_API cudaError_t cudaLaunchKernel(const void *fun, dim3 grid, dim3 block, void **args, size_t shared,
                                      cudaStream_t stream) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t *config, const void *fun, void **args) {
    return cudaSuccess;
}

/* ---- devices and errors ------------------------------------------------------------------ */

NULL_API cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}
NULL_API cudaError_t cudaGetDevice(int *device) {
    *device = current_device;
    return cudaSuccess;
}
NULL_API cudaError_t cudaSetDevice(int device) {
    if (device != 0)
        return cudaErrorInvalidDevice;
    current_device = device;
    return cudaSuccess;
}
NULL_API cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
NULL_API cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) {
    *least = 0;
    *greatest = -5;
    return cudaSuccess;
}
NULL_API cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    memset(prop, 0, sizeof *prop);
    strcpy(prop->name, "null CUDA runtime (no GPU: kernels do not run)");
    prop->major = 9;
    prop->multiProcessorCount = 1;
    prop->totalGlobalMem = (size_t)1 << 34;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}
NULL_API cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrMultiProcessorCount: *value = 1; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 << 10; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    default: *value = 0; break;
    }
    return cudaSuccess;
}
NULL_API cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, const void *fun) {
    memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = 1024;
    attr->ptxVersion = 90;
    attr->binaryVersion = 90;
    return cudaSuccess;
}
NULL_API cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *blocks, const void *fun,
                                                                            int block_size, size_t shared,
                                                                            unsigned flags) {
    *blocks = 1;
    return cudaSuccess;
}
NULL_API cudaError_t cudaRuntimeGetVersion(int *version) {
    *version = CUDART_VERSION;
    return cudaSuccess;
}
NULL_API cudaError_t cudaDriverGetVersion(int *version) {
    *version = CUDART_VERSION;
    return cudaSuccess;
}
NULL_API cudaError_t cudaGetLastError(void) { return cudaSuccess; }
NULL_API cudaError_t cudaPeekAtLastError(void) { return cudaSuccess; }
NULL_API const char *cudaGetErrorName(cudaError_t error) { return error == cudaSuccess ? "cudaSuccess" : "cudaError"; }
NULL_API const char *cudaGetErrorString(cudaError_t error) {
    return error == cudaSuccess ? "no error" : "error from the null CUDA runtime";
}

/* ---- memory -------------------------------------------------------------------------------- */

NULL_API cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    *ptr = host_block(bytes);
    return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
NULL_API cudaError_t cudaFree(void *ptr) {
    free(ptr);
    return cudaSuccess;
}
/* NULL_CUDART_PINNED_FAILS=1: page-locked allocations other than mapped ones fail as out of
 * memory, to run the paths taken when pinned memory runs out. */
NULL_API cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags) {
    const char *fail = getenv("NULL_CUDART_PINNED_FAILS");
    if (fail && *fail == '1' && !(flags & cudaHostAllocMapped)) {
        *ptr = NULL;
        return cudaErrorMemoryAllocation;
    }
    return cudaMalloc(ptr, bytes);
}
NULL_API cudaError_t cudaFreeHost(void *ptr) { return cudaFree(ptr); }
NULL_API cudaError_t cudaHostGetDevicePointer(void **device_ptr, void *host_ptr, unsigned flags) {
    *device_ptr = host_ptr;
    return cudaSuccess;
}
NULL_API cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = (size_t)15 << 30;
    *total_bytes = (size_t)16 << 30;
    return cudaSuccess;
}
/* Every pointer reads as device memory: page-locked buffers are not told apart. */
NULL_API cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *ptr) {
    memset(attr, 0, sizeof *attr);
    attr->type = cudaMemoryTypeDevice;
    attr->device = 0;
    attr->devicePointer = (void *)ptr;
    return cudaSuccess;
}
NULL_API cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
    memmove(dst, src, bytes);
    return cudaSuccess;
}
NULL_API cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                                     cudaStream_t stream) {
    return cudaMemcpy(dst, src, bytes, kind);
}
NULL_API cudaError_t cudaMemcpyPeerAsync(void *dst, int dst_device, const void *src, int src_device, size_t bytes,
                                         cudaStream_t stream) {
    memmove(dst, src, bytes);
    return cudaSuccess;
}
NULL_API cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    memset(dst, value, bytes);
    return cudaSuccess;
}
NULL_API cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream) {
    return cudaMemset(dst, value, bytes);
}

/* ---- streams, events, graphs ---------------------------------------------------------------- */

NULL_API cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    *stream = new_handle();
    return *stream ? cudaSuccess : cudaErrorMemoryAllocation;
}
NULL_API cudaError_t cudaStreamCreateWithPriority(cudaStream_t *stream, unsigned flags, int priority) {
    return cudaStreamCreateWithFlags(stream, flags);
}
NULL_API cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    free(stream);
    return cudaSuccess;
}
NULL_API cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaEventCreate(cudaEvent_t *event) {
    *event = new_handle();
    return *event ? cudaSuccess : cudaErrorMemoryAllocation;
}
NULL_API cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags) {
    return cudaEventCreate(event);
}
NULL_API cudaError_t cudaEventDestroy(cudaEvent_t event) {
    free(event);
    return cudaSuccess;
}
NULL_API cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaEventQuery(cudaEvent_t event) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    return cudaSuccess;
}
/* No GPU time passes: every interval is reported as 1 ms so that rates stay finite. */
NULL_API cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    *ms = 1.0f;
    return cudaSuccess;
}
NULL_API cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    *graph = new_handle();
    return *graph ? cudaSuccess : cudaErrorMemoryAllocation;
}
NULL_API cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    *exec = new_handle();
    return *exec ? cudaSuccess : cudaErrorMemoryAllocation;
}
NULL_API cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    return cudaSuccess;
}
NULL_API cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    free(graph);
    return cudaSuccess;
}
NULL_API cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    free(exec);
    return cudaSuccess;
}
