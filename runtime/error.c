/* Thread-local error state. */
#include "runtime/internal.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local ct_status last_status = CT_OK;
static _Thread_local char last_message[1024];
/* Errors raised on this thread, and the first message since ct__error_mark (CUDA graph
 * capture: a capture in which anything failed must not be replayed). */
static _Thread_local uint64_t raised, raised_at_mark;
static _Thread_local char first_since_mark[1024];

ct_status ct__set_error(ct_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    last_status = status;
    if (raised++ == raised_at_mark)
        memcpy(first_since_mark, last_message, sizeof first_since_mark);
    return status;
}

ct_status ct__null_arg(const char *op, const char *name) {
    if (last_status == CT_OK)
        ct__set_error(CT_ERR_NULL, "%s: argument %s is NULL", op, name);
    else if (raised++ == raised_at_mark) /* the earlier message stands; the failure still counts */
        snprintf(first_since_mark, sizeof first_since_mark, "%s: argument %s is NULL", op, name);
    return CT_ERR_NULL;
}

void ct__error_mark(void) {
    raised_at_mark = raised;
    first_since_mark[0] = '\0';
}

uint64_t ct__errors_since_mark(const char **first) {
    if (first)
        *first = first_since_mark;
    return raised - raised_at_mark;
}

ct_status ct_last_error(void) { return last_status; }
const char *ct_last_error_message(void) { return last_message; }

void ct_clear_error(void) {
    last_status = CT_OK;
    last_message[0] = '\0';
}

const char *ct_status_name(ct_status status) {
    switch (status) {
    case CT_OK: return "CT_OK";
    case CT_ERR_NULL: return "CT_ERR_NULL";
    case CT_ERR_SHAPE: return "CT_ERR_SHAPE";
    case CT_ERR_DTYPE: return "CT_ERR_DTYPE";
    case CT_ERR_DIM: return "CT_ERR_DIM";
    case CT_ERR_VALUE: return "CT_ERR_VALUE";
    case CT_ERR_MEMORY: return "CT_ERR_MEMORY";
    case CT_ERR_DEVICE: return "CT_ERR_DEVICE";
    case CT_ERR_AUTOGRAD: return "CT_ERR_AUTOGRAD";
    case CT_ERR_STATE: return "CT_ERR_STATE";
    case CT_ERR_IO: return "CT_ERR_IO";
    case CT_ERR_CUDA: return "CT_ERR_CUDA";
    case CT_ERR_UNSUPPORTED: return "CT_ERR_UNSUPPORTED";
    case CT_ERR_INTERNAL: return "CT_ERR_INTERNAL";
    }
    return "CT_ERR_UNKNOWN";
}

size_t ct_dtype_size(ct_dtype dtype) {
    switch (dtype) {
    case CT_F32: return 4;
    case CT_F64: return 8;
    case CT_F16: return 2;
    case CT_BF16: return 2;
    case CT_I32: return 4;
    case CT_U8: return 1;
    default: return 0;
    }
}

const char *ct_dtype_name(ct_dtype dtype) {
    switch (dtype) {
    case CT_F32: return "f32";
    case CT_F64: return "f64";
    case CT_F16: return "f16";
    case CT_BF16: return "bf16";
    case CT_I32: return "i32";
    case CT_U8: return "u8";
    default: return "invalid";
    }
}

bool ct_dtype_is_float(ct_dtype dtype) {
    return dtype == CT_F32 || dtype == CT_F64 || dtype == CT_F16 || dtype == CT_BF16;
}
