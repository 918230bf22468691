/* ctensor — the body of the normalization kernels, included by kernels/cpu/norm.c once per
 * compute type: T = float, SFX f, NATIVE CT_F32 (for F32, F16 and BF16 data) and T = double,
 * SFX d, NATIVE CT_F64. Not a header of its own: it has no include guard on purpose.
 *
 * Every operand is walked in chunks of at most CHUNK contiguous elements. A chunk of data
 * that already holds T is used in place; F16/BF16 chunks are converted into a stack buffer.
 * Sums over a chunk use LANES independent accumulators (so that the compiler vectorizes
 * them without reassociating anything), and chunk sums are added in double. */

#define NAME2(a, b) a##_##b
#define NAME(a, b)  NAME2(a, b)
#define F(name)     NAME(name, SFX)

/* Elements [i, i + n) of a contiguous buffer of dtype dt, as T. */
static inline const T *F(load)(const void *base, ct_dtype dt, int64_t i, int64_t n, T *buf) {
    if (dt == NATIVE)
        return (const T *)base + i;
    const uint16_t *h = (const uint16_t *)base + i;
    if (dt == CT_F16) {
        for (int64_t k = 0; k < n; k++)
            buf[k] = ct_f16_to_f32(h[k]);
    } else {
        for (int64_t k = 0; k < n; k++)
            buf[k] = ct_bf16_to_f32(h[k]);
    }
    return buf;
}

/* Where to compute output elements [i, i + n): in place when the output holds T, else in
 * buf, which F(flush) then rounds into the output. */
static inline T *F(dest)(void *base, ct_dtype dt, int64_t i, T *buf) {
    return dt == NATIVE ? (T *)base + i : buf;
}

static inline void F(flush)(void *base, ct_dtype dt, int64_t i, int64_t n, const T *buf) {
    if (dt == NATIVE)
        return;
    uint16_t *h = (uint16_t *)base + i;
    if (dt == CT_F16) {
        for (int64_t k = 0; k < n; k++)
            h[k] = ct_f32_to_f16((float)buf[k]);
    } else {
        for (int64_t k = 0; k < n; k++)
            h[k] = ct_f32_to_bf16((float)buf[k]);
    }
}

/* sum x */
static inline double F(sum)(const T *x, int64_t n) {
    T acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++)
            acc[k] += x[i + k];
    double s = 0;
    for (; i < n; i++)
        s += x[i];
    for (int k = 0; k < LANES; k++)
        s += acc[k];
    return s;
}

/* sum (x - m)^2 */
static inline double F(sum_sq_dev)(const T *x, int64_t n, T m) {
    T acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            T d = x[i + k] - m;
            acc[k] += d * d;
        }
    double s = 0;
    for (; i < n; i++)
        s += (double)(x[i] - m) * (x[i] - m);
    for (int k = 0; k < LANES; k++)
        s += acc[k];
    return s;
}

/* sum g and sum g * (x - m), added to *sg and *sgx. */
static inline void F(sum_g_gx)(const T *g, const T *x, int64_t n, T m, double *sg, double *sgx) {
    T a[LANES] = {0}, b[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            a[k] += g[i + k];
            b[k] += g[i + k] * (x[i + k] - m);
        }
    double s = 0, sx = 0;
    for (; i < n; i++) {
        s += g[i];
        sx += (double)g[i] * (x[i] - m);
    }
    for (int k = 0; k < LANES; k++) {
        s += a[k];
        sx += b[k];
    }
    *sg += s;
    *sgx += sx;
}

/* g * weight for a chunk (weight: the double per-column parameters of layer norm), or g. */
static inline const T *F(times_weight)(const T *g, const double *weight, int64_t n, T *buf) {
    if (!weight)
        return g;
    for (int64_t k = 0; k < n; k++)
        buf[k] = g[k] * (T)weight[k];
    return buf;
}

/* ---- batch norm ------------------------------------------------------------------------ */

/* Channel c: statistics (training) and y = (x - mean) * invstd * weight + bias. The
 * variance is taken around the mean rounded to T, m_t, and corrected exactly:
 * sum (x - m)^2 = sum (x - m_t)^2 - M (m - m_t)^2. */
static void F(bn_forward_channel)(ct_dtype dt, int64_t N, int64_t C, int64_t S, const void *x, int64_t c, bool training,
                                  double eps, const double *weight, const double *bias, double *mean, double *var,
                                  double *invstd, void *y) {
    T buf[CHUNK], obuf[CHUNK];
    double count = (double)N * (double)S;
    if (training) {
        double s = 0, q = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0, base = (n * C + c) * S; j < S; j += CHUNK) {
                int64_t len = S - j < CHUNK ? S - j : CHUNK;
                s += F(sum)(F(load)(x, dt, base + j, len, buf), len);
            }
        double m = s / count;
        T mt = (T)m;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0, base = (n * C + c) * S; j < S; j += CHUNK) {
                int64_t len = S - j < CHUNK ? S - j : CHUNK;
                q += F(sum_sq_dev)(F(load)(x, dt, base + j, len, buf), len, mt);
            }
        double dm = m - (double)mt, v = q / count - dm * dm;
        mean[c] = m;
        var[c] = v > 0 ? v : 0;
    }
    invstd[c] = 1.0 / sqrt(var[c] + eps);
    T mt = (T)mean[c], a = (T)(invstd[c] * (weight ? weight[c] : 1.0)), b = (T)(bias ? bias[c] : 0.0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0, base = (n * C + c) * S; j < S; j += CHUNK) {
            int64_t len = S - j < CHUNK ? S - j : CHUNK;
            const T *in = F(load)(x, dt, base + j, len, buf);
            T *out = F(dest)(y, dt, base + j, obuf);
            for (int64_t k = 0; k < len; k++)
                out[k] = (in[k] - mt) * a + b;
            F(flush)(y, dt, base + j, len, obuf);
        }
}

/* Channel c of the backward. With A = weight * invstd and the channel sums sg = sum g,
 * sgx = sum g (x - mean), training gives dx = A g + B (x - mean) - A sg / M with
 * B = -A invstd^2 sgx / M; evaluation gives dx = A g. */
static void F(bn_backward_channel)(ct_dtype dt, int64_t N, int64_t C, int64_t S, const void *x, const void *g,
                                   int64_t c, const double *mean, const double *invstd, const double *weight,
                                   bool training, void *dx, double *dweight, double *dbias) {
    T xb[CHUNK], gb[CHUNK], ob[CHUNK];
    double count = (double)N * (double)S, m = mean[c], is = invstd[c];
    T mt = (T)m;
    double sg = 0, sgx = 0;
    if (training || dweight || dbias) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0, base = (n * C + c) * S; j < S; j += CHUNK) {
                int64_t len = S - j < CHUNK ? S - j : CHUNK;
                F(sum_g_gx)(F(load)(g, dt, base + j, len, gb), F(load)(x, dt, base + j, len, xb), len, mt, &sg, &sgx);
            }
        sgx -= sg * (m - (double)mt);
    }
    if (dweight)
        dweight[c] = sgx * is;
    if (dbias)
        dbias[c] = sg;
    if (!dx)
        return;
    double A = (weight ? weight[c] : 1.0) * is;
    double B = training ? -A * is * is * sgx / count : 0.0;
    double K = training ? -A * sg / count + B * ((double)mt - m) : 0.0;
    T At = (T)A, Bt = (T)B, Kt = (T)K;
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0, base = (n * C + c) * S; j < S; j += CHUNK) {
            int64_t len = S - j < CHUNK ? S - j : CHUNK;
            const T *gi = F(load)(g, dt, base + j, len, gb), *xi = F(load)(x, dt, base + j, len, xb);
            T *out = F(dest)(dx, dt, base + j, ob);
            for (int64_t k = 0; k < len; k++)
                out[k] = At * gi[k] + Bt * (xi[k] - mt) + Kt;
            F(flush)(dx, dt, base + j, len, ob);
        }
}

/* ---- layer norm ------------------------------------------------------------------------ */

static void F(ln_forward_row)(ct_dtype dt, int64_t D, const void *x, int64_t r, const double *weight,
                              const double *bias, double eps, double *mean, double *rstd, void *y) {
    T buf[CHUNK], obuf[CHUNK];
    int64_t base = r * D;
    double s = 0, q = 0;
    for (int64_t j = 0; j < D; j += CHUNK) {
        int64_t len = D - j < CHUNK ? D - j : CHUNK;
        s += F(sum)(F(load)(x, dt, base + j, len, buf), len);
    }
    double m = s / (double)D;
    T mt = (T)m;
    for (int64_t j = 0; j < D; j += CHUNK) {
        int64_t len = D - j < CHUNK ? D - j : CHUNK;
        q += F(sum_sq_dev)(F(load)(x, dt, base + j, len, buf), len, mt);
    }
    double dm = m - (double)mt, v = q / (double)D - dm * dm;
    double rs = 1.0 / sqrt((v > 0 ? v : 0) + eps);
    mean[r] = m;
    rstd[r] = rs;
    T rt = (T)rs;
    for (int64_t j = 0; j < D; j += CHUNK) {
        int64_t len = D - j < CHUNK ? D - j : CHUNK;
        const T *in = F(load)(x, dt, base + j, len, buf);
        T *out = F(dest)(y, dt, base + j, obuf);
        for (int64_t k = 0; k < len; k++) {
            T h = (in[k] - mt) * rt;
            out[k] = (weight ? h * (T)weight[j + k] : h) + (bias ? (T)bias[j + k] : 0);
        }
        F(flush)(y, dt, base + j, len, obuf);
    }
}

/* Row r of dx: with gw = g * weight, sg = sum gw and sgx = sum gw (x - mean),
 * dx = rstd gw + B (x - mean) - rstd sg / D with B = -rstd^3 sgx / D. */
static void F(ln_backward_row)(ct_dtype dt, int64_t D, const void *x, const void *g, int64_t r, const double *mean,
                               const double *rstd, const double *weight, void *dx) {
    T xb[CHUNK], gb[CHUNK], wb[CHUNK], ob[CHUNK];
    int64_t base = r * D;
    double m = mean[r], rs = rstd[r], sg = 0, sgx = 0;
    T mt = (T)m;
    for (int64_t j = 0; j < D; j += CHUNK) {
        int64_t len = D - j < CHUNK ? D - j : CHUNK;
        const T *gw = F(times_weight)(F(load)(g, dt, base + j, len, gb), weight ? weight + j : NULL, len, wb);
        F(sum_g_gx)(gw, F(load)(x, dt, base + j, len, xb), len, mt, &sg, &sgx);
    }
    sgx -= sg * (m - (double)mt);
    double B = -rs * rs * rs * sgx / (double)D, K = -rs * sg / (double)D + B * ((double)mt - m);
    T Rt = (T)rs, Bt = (T)B, Kt = (T)K;
    for (int64_t j = 0; j < D; j += CHUNK) {
        int64_t len = D - j < CHUNK ? D - j : CHUNK;
        const T *gw = F(times_weight)(F(load)(g, dt, base + j, len, gb), weight ? weight + j : NULL, len, wb);
        const T *xi = F(load)(x, dt, base + j, len, xb);
        T *out = F(dest)(dx, dt, base + j, ob);
        for (int64_t k = 0; k < len; k++)
            out[k] = Rt * gw[k] + Bt * (xi[k] - mt) + Kt;
        F(flush)(dx, dt, base + j, len, ob);
    }
}

/* Columns [j0, j0 + len) of dweight and dbias, summed over every row in order. */
static void F(ln_backward_columns)(ct_dtype dt, int64_t R, int64_t D, const void *x, const void *g, int64_t j0,
                                   int64_t len, const double *mean, const double *rstd, double *dweight,
                                   double *dbias) {
    T xb[CHUNK], gb[CHUNK];
    for (int64_t k = 0; k < len; k++) {
        if (dweight)
            dweight[j0 + k] = 0;
        if (dbias)
            dbias[j0 + k] = 0;
    }
    for (int64_t r = 0; r < R; r++) {
        const T *gi = F(load)(g, dt, r * D + j0, len, gb);
        if (dbias)
            for (int64_t k = 0; k < len; k++)
                dbias[j0 + k] += gi[k];
        if (!dweight)
            continue;
        const T *xi = F(load)(x, dt, r * D + j0, len, xb);
        T mt = (T)mean[r], rt = (T)rstd[r];
        for (int64_t k = 0; k < len; k++)
            dweight[j0 + k] += gi[k] * ((xi[k] - mt) * rt);
    }
}

#undef F
#undef NAME
#undef NAME2
