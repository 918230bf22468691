/* ctensor — basic types shared by every header: dtypes, devices, status codes. */
#ifndef CTENSOR_TYPES_H
#define CTENSOR_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A tensor has at most this many dimensions. */
#define CT_MAX_DIMS 8

typedef enum ct_dtype {
    CT_F32 = 0,
    CT_F64 = 1, /* CPU only; used by gradient checks */
    CT_F16 = 2,
    CT_BF16 = 3,
    CT_I32 = 4,
    CT_U8 = 5,  /* also the result type of comparisons (0 or 1) */
    CT_NUM_DTYPES
} ct_dtype;

typedef enum ct_device_type { CT_DEVICE_CPU = 0, CT_DEVICE_CUDA = 1 } ct_device_type;

typedef struct ct_device {
    ct_device_type type;
    int index; /* the CUDA ordinal; 0 for the CPU */
} ct_device;

#define CT_CPU ((ct_device){CT_DEVICE_CPU, 0})
#define CT_CUDA(i) ((ct_device){CT_DEVICE_CUDA, (i)})

typedef enum ct_status {
    CT_OK = 0,
    CT_ERR_NULL,        /* a required argument was NULL */
    CT_ERR_SHAPE,       /* shapes do not fit together */
    CT_ERR_DTYPE,       /* unsupported or mismatched dtype */
    CT_ERR_DIM,         /* a dimension or index out of range */
    CT_ERR_VALUE,       /* an argument has an invalid value */
    CT_ERR_MEMORY,      /* out of host or device memory */
    CT_ERR_DEVICE,      /* wrong or unavailable device */
    CT_ERR_AUTOGRAD,    /* autograd misuse (modified saved tensor, no grad, ...) */
    CT_ERR_STATE,       /* use of a freed tensor, unbalanced scopes, ... */
    CT_ERR_IO,          /* file or data errors */
    CT_ERR_CUDA,        /* a CUDA / cuBLAS / cuDNN / NCCL call failed */
    CT_ERR_UNSUPPORTED, /* not implemented for this device or dtype */
    CT_ERR_INTERNAL     /* a broken invariant inside ctensor: a bug */
} ct_status;

typedef struct ct_tensor ct_tensor;

/* Size in bytes of one element of `dtype` (0 for an invalid dtype). */
size_t ct_dtype_size(ct_dtype dtype);
/* "f32", "f64", "f16", "bf16", "i32", "u8" (or "invalid"). */
const char *ct_dtype_name(ct_dtype dtype);
/* True for F32, F64, F16 and BF16. */
bool ct_dtype_is_float(ct_dtype dtype);

#ifdef __cplusplus
}
#endif
#endif
