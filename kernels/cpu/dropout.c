/* CPU dropout: one Philox block gives the keep decisions of four consecutive elements. */
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/philox.h"

#define PAR_THRESHOLD 16384

static inline float scaled(ct_dtype dtype, const void *x, int64_t i, float scale) {
    if (dtype == CT_F16)
        return ct_f16_to_f32(((const uint16_t *)x)[i]) * scale;
    if (dtype == CT_BF16)
        return ct_bf16_to_f32(((const uint16_t *)x)[i]) * scale;
    return ((const float *)x)[i] * scale;
}

static inline void put(ct_dtype dtype, void *y, int64_t i, float v) {
    if (dtype == CT_F16)
        ((uint16_t *)y)[i] = ct_f32_to_f16(v);
    else if (dtype == CT_BF16)
        ((uint16_t *)y)[i] = ct_f32_to_bf16(v);
    else
        ((float *)y)[i] = v;
}

void ct_cpu_dropout(ct_dtype dtype, int64_t n, const void *x, void *y, uint64_t seed, uint64_t offset, double keep_prob,
                    double scale) {
    int64_t blocks = (n + 3) / 4;
    float scale_f = (float)scale;
#pragma omp parallel for schedule(static) if (n >= PAR_THRESHOLD)
    for (int64_t b = 0; b < blocks; b++) {
        uint32_t w[4];
        ct_philox_stream_block(seed, offset + (uint64_t)b, w);
        for (int k = 0; k < 4 && 4 * b + k < n; k++) {
            int64_t i = 4 * b + k;
            bool keep = ct_philox_uniform_f32(w[k]) < keep_prob;
            if (dtype == CT_F64)
                ((double *)y)[i] = keep ? ((const double *)x)[i] * scale : 0.0;
            else
                put(dtype, y, i, keep ? scaled(dtype, x, i, scale_f) : 0.0f);
        }
    }
}
