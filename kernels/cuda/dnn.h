// ctensor — what the cuDNN users (conv.cu, norm.cu) share: the check macro and the handles.
#ifndef CT_KERNELS_CUDA_DNN_H
#define CT_KERNELS_CUDA_DNN_H

#include "kernels/cuda/stream_internal.h"

#include <cudnn.h>

// A failed cuDNN call becomes a CT_ERR_CUDA error naming the call, the file and the line.
bool ct__cudnn_ok(cudnnStatus_t st, const char *call, const char *file, int line);
#define CT_CUDNN_CHECK(call) ct__cudnn_ok((call), #call, __FILE__, __LINE__)

// The calling thread's cuDNN handle for the stream's device, bound to the stream. cuDNN
// handles must not be used by two threads at once, so each thread has its own per device,
// taken from a pool (or made, on that device) on first use and returned to the pool when the
// thread exits. NULL with an error recorded.
cudnnHandle_t ct__cudnn_handle(ct_stream *stream);

#endif
