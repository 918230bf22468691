/* CPU copy / cast / fill. Same-dtype copies move bytes; casts go through double, which
 * holds every value of every dtype exactly (F16/BF16 are rounded from double to odd first,
 * so the result is correctly rounded). */
#include "kernels/cpu/copy.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define CT_PAR_THRESHOLD (1 << 16)

double ct_cpu_load(const void *base, ct_dtype dtype, int64_t i) {
    switch (dtype) {
    case CT_F32: return ((const float *)base)[i];
    case CT_F64: return ((const double *)base)[i];
    case CT_F16: return ct_f16_to_f32(((const uint16_t *)base)[i]);
    case CT_BF16: return ct_bf16_to_f32(((const uint16_t *)base)[i]);
    case CT_I32: return ((const int32_t *)base)[i];
    case CT_U8: return ((const uint8_t *)base)[i];
    default: return NAN;
    }
}

void ct_cpu_store(void *base, ct_dtype dtype, int64_t i, double v) {
    switch (dtype) {
    case CT_F32: ((float *)base)[i] = (float)v; break;
    case CT_F64: ((double *)base)[i] = v; break;
    case CT_F16: ((uint16_t *)base)[i] = ct_f64_to_f16(v); break;
    case CT_BF16: ((uint16_t *)base)[i] = ct_f64_to_bf16(v); break;
    case CT_I32: ((int32_t *)base)[i] = ct_saturate_i32(v); break;
    case CT_U8: ((uint8_t *)base)[i] = ct_saturate_u8(v); break;
    default: break;
    }
}

/* One row: n elements, strides in elements. */
static void row_copy_cast(int64_t n, char *dst, ct_dtype dt, int64_t ds, const char *src, ct_dtype st, int64_t ss) {
    if (dt == st) {
        size_t es = ct_dtype_size(dt);
        if (ds == 1 && ss == 1) {
            memcpy(dst, src, (size_t)n * es);
            return;
        }
        switch (es) {
        case 1: for (int64_t i = 0; i < n; i++) ((uint8_t *)dst)[i * ds] = ((const uint8_t *)src)[i * ss]; return;
        case 2: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i * ds] = ((const uint16_t *)src)[i * ss]; return;
        case 4: for (int64_t i = 0; i < n; i++) ((uint32_t *)dst)[i * ds] = ((const uint32_t *)src)[i * ss]; return;
        default: for (int64_t i = 0; i < n; i++) ((uint64_t *)dst)[i * ds] = ((const uint64_t *)src)[i * ss]; return;
        }
    }
    /* Common fast paths. */
    if (st == CT_F32 && dt == CT_F16) {
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i * ds] = ct_f32_to_f16(((const float *)src)[i * ss]);
        return;
    }
    if (st == CT_F32 && dt == CT_BF16) {
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i * ds] = ct_f32_to_bf16(((const float *)src)[i * ss]);
        return;
    }
    if (st == CT_F16 && dt == CT_F32) {
        for (int64_t i = 0; i < n; i++) ((float *)dst)[i * ds] = ct_f16_to_f32(((const uint16_t *)src)[i * ss]);
        return;
    }
    if (st == CT_BF16 && dt == CT_F32) {
        for (int64_t i = 0; i < n; i++) ((float *)dst)[i * ds] = ct_bf16_to_f32(((const uint16_t *)src)[i * ss]);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        ct_cpu_store(dst, dt, i * ds, ct_cpu_load(src, st, i * ss));
}

void ct_cpu_copy_cast(int ndim, const int64_t *shape_in, void *dst, ct_dtype dst_dtype, const int64_t *dst_strides,
                      const void *src, ct_dtype src_dtype, const int64_t *src_strides) {
    int64_t shape[CT_KMAX_DIMS], ds[CT_KMAX_DIMS], ss[CT_KMAX_DIMS];
    int64_t total = 1;
    for (int d = 0; d < ndim; d++) {
        shape[d] = shape_in[d];
        ds[d] = dst_strides[d];
        ss[d] = src_strides[d];
        total *= shape[d];
    }
    if (total == 0)
        return;
    int64_t *strides[2] = {ds, ss};
    ndim = ct_coalesce(ndim, shape, 2, strides);
    if (ndim == 0) {
        row_copy_cast(1, dst, dst_dtype, 1, src, src_dtype, 1);
        return;
    }
    size_t des = ct_dtype_size(dst_dtype), ses = ct_dtype_size(src_dtype);
    int64_t inner = shape[ndim - 1];
    int64_t rows = total / inner;
    if (rows == 1 && inner >= CT_PAR_THRESHOLD) {
        /* One long row: split it between threads. */
        int64_t dstride = ds[0], sstride = ss[0];
#pragma omp parallel
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            int64_t chunk = (inner + nt - 1) / nt, begin = chunk * t;
            int64_t end = begin + chunk < inner ? begin + chunk : inner;
            if (begin < end)
                row_copy_cast(end - begin, (char *)dst + (size_t)(begin * dstride) * des, dst_dtype, dstride,
                              (const char *)src + (size_t)(begin * sstride) * ses, src_dtype, sstride);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (total >= CT_PAR_THRESHOLD)
    for (int64_t r = 0; r < rows; r++) {
        int64_t off[2];
        ct_outer_offsets(ndim, shape, 2, strides, r, off);
        row_copy_cast(inner, (char *)dst + off[0] * (int64_t)des, dst_dtype, ds[ndim - 1],
                      (const char *)src + off[1] * (int64_t)ses, src_dtype, ss[ndim - 1]);
    }
}

void ct_cpu_fill(int ndim, const int64_t *shape_in, void *dst, ct_dtype dtype, const int64_t *strides_in,
                 double value) {
    /* Store one element, then broadcast it as a stride-0 source. */
    union {
        double d;
        uint64_t u;
        char bytes[8];
    } one;
    one.u = 0;
    ct_cpu_store(one.bytes, dtype, 0, value);
    int64_t zero[CT_KMAX_DIMS] = {0};
    ct_cpu_copy_cast(ndim, shape_in, dst, dtype, strides_in, one.bytes, dtype, zero);
}
