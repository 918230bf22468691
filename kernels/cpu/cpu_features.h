/* ctensor — what the CPU can do, asked once per process (per translation unit). */
#ifndef CT_KERNELS_CPU_CPU_FEATURES_H
#define CT_KERNELS_CPU_CPU_FEATURES_H

#include <stdbool.h>

/* Whether AVX-512F kernels may run here (always false off x86-64 GCC/Clang builds). */
static inline bool ct_cpu_has_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    static int cached = -1; /* a benign race: every thread computes the same value */
    if (cached < 0)
        cached = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return cached == 1;
#else
    return false;
#endif
}

#endif
