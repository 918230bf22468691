/* ctensor — IEEE binary16 (F16) and bfloat16 (BF16) conversions on the host.
 * Round to nearest even; NaN stays NaN (quiet), infinities and subnormals are exact. */
#ifndef CT_KERNELS_CPU_HALF_H
#define CT_KERNELS_CPU_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t ct_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float ct_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t ct_f32_to_f16(float f) {
    uint32_t x = ct_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* Inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0));
    if (abs >= 0x477ff000u) /* rounds to ≥ 65520: overflow to Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) { /* below the smallest normal half (2^-14): subnormal or zero */
        if (abs < 0x33000000u) /* < 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t exp = abs >> 23;
        uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exp; /* 14 + (127 - exp) - 1 ... produces 10-bit subnormal */
        uint32_t result = mant >> (shift);
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (result & 1u)))
            result++;
        return (uint16_t)(sign | result);
    }
    /* normal: rebias exponent 127 -> 15, keep 10 mantissa bits, round to nearest even */
    uint32_t result = ((abs - 0x38000000u) >> 13);
    uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (result & 1u)))
        result++;
    return (uint16_t)(sign | result);
}

static inline float ct_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: value = mant * 2^-24 */
            float v = (float)mant * 0x1p-24f;
            return sign ? -v : v;
        }
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    return ct_bits_f32(bits);
}

static inline uint16_t ct_f32_to_bf16(float f) {
    uint32_t x = ct_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, force quiet */
        return (uint16_t)((x >> 16) | 0x40u);
    uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)((x + rounding) >> 16);
}

static inline float ct_bf16_to_f32(uint16_t b) { return ct_bits_f32((uint32_t)b << 16); }

/* double -> float rounding to odd, so that a second rounding to F16/BF16 (fewer than 22
 * mantissa bits) gives the correctly rounded result of the double. */
static inline float ct_f64_to_f32_odd(double d) {
    float f = (float)d;
    if ((double)f == d || isnan(d))
        return f;
    if (fabs((double)f) > fabs(d))
        f = nextafterf(f, 0.0f);
    return ct_bits_f32(ct_f32_bits(f) | 1u);
}
static inline uint16_t ct_f64_to_f16(double d) { return ct_f32_to_f16(ct_f64_to_f32_odd(d)); }
static inline uint16_t ct_f64_to_bf16(double d) { return ct_f32_to_bf16(ct_f64_to_f32_odd(d)); }

#endif
