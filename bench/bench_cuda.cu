// ctbench, CUDA sections (compiled into ctbench in CUDA builds; run with --device cuda).
//
// First the device's own limits, measured without ctensor:
//   memory       cudaMemcpyAsync device to device of 1 GiB: the copy bandwidth, bytes read + written
//   matmul       cuBLASLt called directly (handle, 32 MiB workspace, its first heuristic choice, as
//                ctensor calls it) at 8192^3 in BF16, F16 and F32 (F32 without TF32, ctensor's and
//                PyTorch's default): the GEMM peak
// then every ctensor kernel as a fraction of them:
//   elementwise  ct_add, ct_mul, ct_relu, ct_cast f32 -> bf16 and ct_softmax on 256 MiB f32 tensors
//                (target >= 90% of the copy bandwidth), and reductions (ct_sum over everything, rows
//                and columns, ct_max_all, ct_var, ct_logsumexp, ct_argmax; target >= 85%); each call
//                allocates its output, as a user's call does, and rounds interleave them with the copy
//   matmul       ct_matmul at 8192^3, interleaved with the direct call (target within 2%)
//   overhead     host time of the caching allocator (ct_empty + ct_tensor_free of a 1 MiB tensor,
//                target < 1 us) and of a tiny op (ct_add of 1-element tensors, enqueued without
//                waiting for the GPU, target < 4 us), medians over batches; the same add replayed
//                from a CUDA graph of 100 of them (host time per op)
//   train        the main job's CNN (bench_train.c)
//
// GPU work is timed with CUDA events around `iters` calls, after warmup calls, on the stream
// ctensor's ops use (the thread's current stream), and the host waits only when a whole
// measurement is queued. Every CUDA and cuBLASLt call is checked; a failure ends the section
// with a message naming the call.
#include "bench/bench.h"

#include "ctensor/ctensor.h"
#include "kernels/cuda/stream_internal.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

// Set when bench/null_cudart.c stands in for the CUDA runtime (LD_LIBRARY_PATH).
static bool null_runtime = false;

#define MAX_REPS 256

// ---- checking ------------------------------------------------------------------------------

static bool cuda_ok(cudaError_t err, const char *call, const char *file, int line) {
    if (err == cudaSuccess)
        return true;
    fprintf(stderr, "ctbench: %s failed at %s:%d: %s (%s)\n", call, file, line, cudaGetErrorString(err),
            cudaGetErrorName(err));
    return false;
}
#define CUDA_CHECK(call) cuda_ok((call), #call, __FILE__, __LINE__)

static bool lt_ok(cublasStatus_t st, const char *call, const char *file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS)
        return true;
    fprintf(stderr, "ctbench: %s failed at %s:%d: cuBLAS status %d\n", call, file, line, (int)st);
    return false;
}
#define LT_CHECK(call) lt_ok((call), #call, __FILE__, __LINE__)

static bool ct_failed(const char *what) {
    fprintf(stderr, "ctbench: %s failed: %s\n", what, ct_last_error_message());
    ct_clear_error();
    return false;
}

static const ct_device gpu0 = {CT_DEVICE_CUDA, 0};

// The stream ctensor's ops enqueue on (the thread's current stream on device 0).
static bool current_stream(cudaStream_t *out) {
    ct_stream *s = ct_stream_current(0);
    if (!s)
        return ct_failed("ct_stream_current");
    *out = s->handle;
    return true;
}

// ---- event timing --------------------------------------------------------------------------

// Rounds of timed calls of several kinds: in each round, each wanted kind runs `iters` calls
// between two events. Everything is queued first; the host waits once, at the end.
struct event_grid {
    int kinds, reps;
    std::vector<cudaEvent_t> events; // [kind][rep][start, stop]
    bool ok = true;

    event_grid(int kinds_, int reps_) : kinds(kinds_), reps(reps_), events((size_t)kinds_ * reps_ * 2, nullptr) {
        for (auto &e : events)
            if (ok)
                ok = CUDA_CHECK(cudaEventCreate(&e));
    }
    ~event_grid() {
        for (auto e : events)
            if (e)
                CUDA_CHECK(cudaEventDestroy(e));
    }
    cudaEvent_t at(int kind, int rep, int which) { return events[((size_t)kind * reps + rep) * 2 + which]; }
    bool record(int kind, int rep, int which, cudaStream_t s) { return CUDA_CHECK(cudaEventRecord(at(kind, rep, which), s)); }
    // Seconds per call of (kind, rep), after the host has waited for the last event.
    bool seconds(int kind, int rep, int iters, double *out) {
        float ms = 0;
        if (!CUDA_CHECK(cudaEventElapsedTime(&ms, at(kind, rep, 0), at(kind, rep, 1))))
            return false;
        *out = 1e-3 * (double)ms / iters;
        return true;
    }
};

static bench_row make_row(const char *section, const char *name, const char *size, int reps, bench_stats s,
                          double value, const char *unit) {
    bench_row r;
    memset(&r, 0, sizeof r);
    r.section = section;
    r.name = name;
    snprintf(r.size, sizeof r.size, "%s", size);
    r.threads = 1;
    r.reps = reps;
    r.best_s = s.best;
    r.median_s = s.median;
    r.value = value;
    r.unit = unit;
    r.target_met = -1;
    return r;
}

// ---- the copy bandwidth ----------------------------------------------------------------------

struct copy_ref {
    void *src = nullptr, *dst = nullptr;
    size_t bytes = 0;
    ~copy_ref() {
        if (src)
            CUDA_CHECK(cudaFree(src));
        if (dst)
            CUDA_CHECK(cudaFree(dst));
    }
    bool init(size_t n) {
        bytes = n;
        return CUDA_CHECK(cudaMalloc(&src, bytes)) && CUDA_CHECK(cudaMalloc(&dst, bytes)) &&
               CUDA_CHECK(cudaMemset(src, 0x3c, bytes)) && CUDA_CHECK(cudaMemset(dst, 0, bytes)) &&
               CUDA_CHECK(cudaDeviceSynchronize());
    }
    bool call(cudaStream_t s) { return CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s)); }
};

// The reference row: GB/s of the copy (2 x bytes per call), best of `reps` samples of `iters` copies.
static bool section_copy(const bench_opts *o, copy_ref *copy, int warmup, int reps, int iters, double *copy_gbs) {
    cudaStream_t s;
    if (!current_stream(&s))
        return false;
    event_grid ev(1, reps);
    bool ok = ev.ok;
    for (int i = 0; i < warmup && ok; i++)
        ok = copy->call(s);
    for (int r = 0; r < reps && ok; r++) {
        ok = ev.record(0, r, 0, s);
        for (int i = 0; i < iters && ok; i++)
            ok = copy->call(s);
        ok = ok && ev.record(0, r, 1, s);
    }
    double t[MAX_REPS];
    ok = ok && CUDA_CHECK(cudaStreamSynchronize(s));
    for (int r = 0; r < reps && ok; r++)
        ok = ev.seconds(0, r, iters, &t[r]);
    if (!ok)
        return false;
    bench_stats st = bench_stats_of(t, reps);
    *copy_gbs = 2.0 * (double)copy->bytes / st.best * 1e-9;
    char size[32];
    snprintf(size, sizeof size, "%zu MiB", copy->bytes >> 20);
    bench_row row = make_row("memory", "cudaMemcpyAsync D2D", size, reps, st, *copy_gbs, "GB/s");
    bench_emit(o, &row);
    return true;
}

// ---- GEMM: the direct cuBLASLt call and ct_matmul ---------------------------------------------

#define LT_WORKSPACE_BYTES (32u << 20) // ctensor's per-stream workspace

// A square row-major C = A @ B (n x n) as cuBLASLt's column-major C^T = B^T A^T: the first
// operand is B, the second A, no transposes.
struct lt_gemm {
    cublasLtHandle_t handle = nullptr;
    void *workspace = nullptr;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t layout = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulAlgo_t algo;
    ~lt_gemm() {
        if (pref)
            LT_CHECK(cublasLtMatmulPreferenceDestroy(pref));
        if (layout)
            LT_CHECK(cublasLtMatrixLayoutDestroy(layout));
        if (desc)
            LT_CHECK(cublasLtMatmulDescDestroy(desc));
        if (workspace)
            CUDA_CHECK(cudaFree(workspace));
        if (handle)
            LT_CHECK(cublasLtDestroy(handle));
    }
    bool init(ct_dtype dtype, int64_t n) {
        cudaDataType_t dt = dtype == CT_F16 ? CUDA_R_16F : dtype == CT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
        cublasOperation_t op = CUBLAS_OP_N;
        size_t ws = LT_WORKSPACE_BYTES;
        cublasLtMatmulHeuristicResult_t result;
        int found = 0;
        bool ok = LT_CHECK(cublasLtCreate(&handle)) && CUDA_CHECK(cudaMalloc(&workspace, ws)) &&
                  LT_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)) &&
                  LT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op, sizeof op)) &&
                  LT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op, sizeof op)) &&
                  LT_CHECK(cublasLtMatrixLayoutCreate(&layout, dt, (uint64_t)n, (uint64_t)n, n)) &&
                  LT_CHECK(cublasLtMatmulPreferenceCreate(&pref)) &&
                  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                                sizeof ws)) &&
                  LT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc, layout, layout, layout, layout, pref, 1,
                                                          &result, &found));
        if (ok && found == 0) {
            fprintf(stderr, "ctbench: cuBLASLt has no algorithm for a %s GEMM at %lld^3\n", ct_dtype_name(dtype),
                    (long long)n);
            ok = false;
        }
        if (ok)
            algo = result.algo;
        return ok;
    }
    bool call(const void *a, const void *b, void *c, cudaStream_t s) {
        const float alpha = 1.0f, beta = 0.0f;
        return LT_CHECK(cublasLtMatmul(handle, desc, &alpha, b, layout, a, layout, &beta, c, layout, c, layout, &algo,
                                       workspace, LT_WORKSPACE_BYTES, s));
    }
};

struct mm_result {
    bool measured = false;
    bench_row direct, ours;
    char name_direct[48], name_ours[48];
};

// max |x - y| and max |y| of two same-shape CUDA tensors, through ctensor (f32 on the device).
static bool max_difference(ct_tensor *x, ct_tensor *y, double *diff, double *scale) {
    ct_scope_begin();
    ct_tensor *xf = ct_cast(x, CT_F32), *yf = ct_cast(y, CT_F32);
    *diff = ct_item(ct_max_all(ct_abs(ct_sub(xf, yf))));
    *scale = ct_item(ct_max_all(ct_abs(yf)));
    ct_scope_end();
    return !isnan(*diff) && !isnan(*scale) ? true : ct_failed("comparing the GEMM results");
}

// Direct cuBLASLt and ct_matmul for one dtype at n^3, interleaved round by round.
static bool measure_matmul(ct_dtype dtype, int64_t n, int warmup, int reps, int iters, mm_result *out) {
    cudaStream_t s;
    if (!current_stream(&s))
        return false;
    int64_t shape[2] = {n, n};
    ct_tensor *a = ct_uniform(shape, 2, -1.0, 1.0, dtype, gpu0), *b = ct_uniform(shape, 2, -1.0, 1.0, dtype, gpu0);
    ct_tensor *c = ct_empty(shape, 2, dtype, gpu0);
    lt_gemm g;
    event_grid ev(2, reps);
    bool ok = a && b && c ? ev.ok && g.init(dtype, n) : ct_failed("allocating the GEMM operands");
    // The result first: ct_matmul must agree with the direct call.
    if (ok) {
        ct_scope_begin();
        ct_tensor *ours = ct_matmul(a, b);
        double diff = 0, scale = 0;
        ok = ours ? g.call(ct_tensor_data(a), ct_tensor_data(b), ct_tensor_data(c), s) &&
                        max_difference(ours, c, &diff, &scale)
                  : ct_failed("ct_matmul");
        if (ok && !(diff <= (dtype == CT_F32 ? 1e-4 : 1e-2) * scale)) {
            fprintf(stderr, "ctbench: ct_matmul %s differs from the direct cuBLASLt call by %g (largest |value| %g)\n",
                    ct_dtype_name(dtype), diff, scale);
            ok = false;
        }
        ct_scope_end();
    }
    for (int i = 0; i < warmup && ok; i++) {
        ct_scope_begin();
        ok = g.call(ct_tensor_data(a), ct_tensor_data(b), ct_tensor_data(c), s) &&
             (ct_matmul(a, b) ? true : ct_failed("ct_matmul"));
        ct_scope_end();
    }
    for (int r = 0; r < reps && ok; r++) {
        ok = ev.record(0, r, 0, s);
        for (int i = 0; i < iters && ok; i++)
            ok = g.call(ct_tensor_data(a), ct_tensor_data(b), ct_tensor_data(c), s);
        ok = ok && ev.record(0, r, 1, s) && ev.record(1, r, 0, s);
        for (int i = 0; i < iters && ok; i++) {
            ct_scope_begin();
            ok = ct_matmul(a, b) ? true : ct_failed("ct_matmul");
            ct_scope_end();
        }
        ok = ok && ev.record(1, r, 1, s);
    }
    double direct_t[MAX_REPS], ours_t[MAX_REPS];
    ok = ok && CUDA_CHECK(cudaStreamSynchronize(s));
    for (int r = 0; r < reps && ok; r++)
        ok = ev.seconds(0, r, iters, &direct_t[r]) && ev.seconds(1, r, iters, &ours_t[r]);
    if (ok) {
        double flops = 2.0 * (double)n * (double)n * (double)n, paired = bench_paired_ratio(direct_t, ours_t, reps);
        bench_stats sd = bench_stats_of(direct_t, reps), so = bench_stats_of(ours_t, reps);
        char size[32];
        snprintf(size, sizeof size, "%lld^3", (long long)n);
        snprintf(out->name_direct, sizeof out->name_direct, "cublasLt %s (direct)", ct_dtype_name(dtype));
        snprintf(out->name_ours, sizeof out->name_ours, "ct_matmul %s", ct_dtype_name(dtype));
        out->direct = make_row("matmul", out->name_direct, size, reps, sd, flops / sd.best * 1e-12, "TFLOP/s");
        out->ours = make_row("matmul", out->name_ours, size, reps, so, flops / so.best * 1e-12, "TFLOP/s");
        out->ours.ref_name = "cublasLt";
        out->ours.ratio = paired;
        out->ours.ratio_of_best = sd.best / so.best;
        out->measured = true;
    }
    ct_tensor_free(a);
    ct_tensor_free(b);
    ct_tensor_free(c);
    return ok;
}

// ---- memory-bound kernels ----------------------------------------------------------------------

enum bw_kind {
    BW_COPY, // the reference, interleaved with the others
    BW_ADD,
    BW_MUL,
    BW_RELU,
    BW_CAST,
    BW_SOFTMAX,
    BW_SUM,
    BW_SUM_ROWS,
    BW_SUM_COLS,
    BW_MAX_ALL,
    BW_VAR_ROWS,
    BW_LOGSUMEXP_ROWS,
    BW_ARGMAX_ROWS,
    BW_RAND,    // random numbers and dropout: no target, measured against the copy all the same
    BW_RANDN,
    BW_DROPOUT,
    BW_COUNT
};

static const struct bw_info {
    const char *name;
    int bytes;     // bytes read + written per element of the input (the copy: per byte)
    int target_pc; // the target in % of the copy bandwidth (0: none)
} bw_info[BW_COUNT] = {
    {"cudaMemcpyAsync D2D", 2, 0},
    {"ct_add", 12, 90},
    {"ct_mul", 12, 90},
    {"ct_relu", 8, 90},
    {"ct_cast f32->bf16", 6, 90},
    {"ct_softmax (rows of 1024)", 8, 90},
    {"ct_sum (all)", 4, 85},
    {"ct_sum (rows of 1024)", 4, 85},
    {"ct_sum (dim 0, 1024 cols)", 4, 85},
    {"ct_max_all", 4, 85},
    {"ct_var (rows of 1024)", 4, 85},
    {"ct_logsumexp (rows)", 4, 85},
    {"ct_argmax (rows)", 4, 85},
    {"ct_rand f32", 4, 0},
    {"ct_randn f32", 4, 0},
    {"ct_dropout f32 (p 0.1)", 8, 0},
};

#define ROW 1024 // the row length of the 2-D views

struct bw_ctx {
    ct_tensor *a, *b; // (n) f32
    ct_tensor *a2;    // a viewed as (n / ROW, ROW)
    copy_ref *copy;
    int64_t n;
};

static ct_tensor *bw_run(bw_kind kind, bw_ctx *c) {
    static const int last[1] = {-1}, first[1] = {0};
    switch (kind) {
    case BW_ADD: return ct_add(c->a, c->b);
    case BW_MUL: return ct_mul(c->a, c->b);
    case BW_RELU: return ct_relu(c->a);
    case BW_CAST: return ct_cast(c->a, CT_BF16);
    case BW_SOFTMAX: return ct_softmax(c->a2, -1);
    case BW_SUM: return ct_sum(c->a, NULL, 0, false);
    case BW_SUM_ROWS: return ct_sum(c->a2, last, 1, false);
    case BW_SUM_COLS: return ct_sum(c->a2, first, 1, false);
    case BW_MAX_ALL: return ct_max_all(c->a);
    case BW_VAR_ROWS: return ct_var(c->a2, last, 1, 1, false);
    case BW_LOGSUMEXP_ROWS: return ct_logsumexp(c->a2, last, 1, false);
    case BW_ARGMAX_ROWS: return ct_argmax(c->a2, -1, false);
    case BW_RAND: return ct_rand(&c->n, 1, CT_F32, gpu0);
    case BW_RANDN: return ct_randn(&c->n, 1, CT_F32, gpu0);
    case BW_DROPOUT: return ct_dropout(c->a, 0.1, true);
    default: return NULL;
    }
}

static bool bw_call(bw_kind kind, bw_ctx *c, cudaStream_t s) {
    if (kind == BW_COPY)
        return c->copy->call(s);
    ct_scope_begin();
    bool ok = bw_run(kind, c) != NULL;
    ct_scope_end();
    return ok ? true : ct_failed(bw_info[kind].name);
}

// float -> bf16 -> float, rounding to nearest even (NaN is not among the inputs).
static float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

// The expected value of element i of an op's output (row i for the row reductions, column i
// for the column sums), from the inputs on the host, and its tolerance (relative to 1 + |want|).
static double bw_expected(bw_kind kind, const float *ha, const float *hb, int64_t n, int64_t i, double *tol) {
    const float *x = ha + (kind >= BW_SUM_ROWS ? i : i / ROW) * ROW; // the row that element i belongs to
    double sum = 0, max = -INFINITY, sq = 0, se = 0;
    int argmax = 0;
    *tol = 1e-6;
    switch (kind) {
    case BW_ADD: return ha[i] + hb[i];
    case BW_MUL: return ha[i] * hb[i];
    case BW_RELU: return ha[i] > 0 ? ha[i] : 0;
    case BW_CAST: *tol = 0; return bf16_round(ha[i]);
    case BW_SUM_COLS: // 65536 terms per column, summed in f32 in the kernel's own order
        *tol = 1e-3;
        for (int64_t r = 0; r < n / ROW; r++)
            sum += ha[r * ROW + i];
        return sum;
    default: break;
    }
    for (int j = 0; j < ROW; j++) {
        sum += x[j];
        max = fmax(max, x[j]);
        argmax = x[j] > x[argmax] ? j : argmax;
    }
    for (int j = 0; j < ROW; j++) {
        sq += (x[j] - sum / ROW) * (x[j] - sum / ROW);
        se += exp(x[j] - max);
    }
    *tol = 1e-5;
    switch (kind) {
    case BW_SOFTMAX: return exp(ha[i] - max) / se;
    case BW_SUM_ROWS: return sum;
    case BW_VAR_ROWS: return sq / (ROW - 1);
    case BW_LOGSUMEXP_ROWS: return max + log(se);
    case BW_ARGMAX_ROWS: *tol = 0; return argmax;
    default: return NAN;
    }
}

// Spot-check an op's output on the host, so that a fast wrong kernel is not reported: the
// reductions to a scalar entirely, the others on their first elements (rows, columns).
static bool bw_check(bw_kind kind, bw_ctx *c, const float *ha, const float *hb) {
    ct_scope_begin();
    const uint64_t seed = ct_random_seed(), offset = ct_random_offset();
    ct_tensor *out = bw_run(kind, c);
    bool ok = out ? true : ct_failed(bw_info[kind].name);
    double worst = 0; // the largest error, in units of the tolerance
    if (ok && kind >= BW_RAND) {
        // The CPU draws the same numbers from the same (seed, offset): the first 64 rows'
        // worth, bit for bit (randn within 1 unit in the last place: log/cos/sin).
        const int64_t count = 64 * ROW;
        ct_manual_seed(seed);
        ct_random_set_offset(offset);
        ct_tensor *want = kind == BW_RAND    ? ct_rand(&count, 1, CT_F32, CT_CPU)
                          : kind == BW_RANDN ? ct_randn(&count, 1, CT_F32, CT_CPU)
                                             : ct_dropout(ct_from_host(ha, &count, 1, CT_F32, CT_CPU), 0.1, true);
        std::vector<float> got((size_t)count), ref((size_t)count);
        ok = want && ct_to_host(ct_slice(out, 0, 0, count, 1), got.data(), (size_t)count * 4) == CT_OK &&
             ct_to_host(want, ref.data(), (size_t)count * 4) == CT_OK;
        for (int64_t i = 0; i < count && ok; i++) {
            double err = fabs((double)got[(size_t)i] - ref[(size_t)i]);
            double tol = kind == BW_RANDN ? 2.4e-7 * (1 + fabs(ref[(size_t)i])) : 0;
            worst = fmax(worst, tol > 0 ? err / tol : (err == 0 ? 0 : INFINITY));
        }
        if (!ok)
            ct_failed(bw_info[kind].name);
    } else if (ok && (kind == BW_SUM || kind == BW_MAX_ALL)) {
        double want = kind == BW_SUM ? 0 : -INFINITY;
        for (int64_t i = 0; i < c->n; i++)
            want = kind == BW_SUM ? want + ha[i] : fmax(want, ha[i]);
        double got = ct_item(out);
        worst = kind == BW_SUM ? fabs(got - want) / (1e-6 * (double)c->n + 1e-3) : (got == want ? 0 : INFINITY);
    } else if (ok) {
        int64_t count = kind == BW_SUM_COLS ? ROW : kind >= BW_SUM_ROWS ? 64 : (kind == BW_SOFTMAX ? 8 : 64) * ROW;
        int64_t flat_shape[1] = {-1};
        ct_tensor *head = ct_slice(ct_reshape(out, flat_shape, 1), 0, 0, count, 1);
        std::vector<float> got((size_t)count);
        ok = head && ct_to_host(ct_tensor_dtype(head) == CT_F32 ? head : ct_cast(head, CT_F32), got.data(),
                                (size_t)count * sizeof(float)) == CT_OK;
        for (int64_t i = 0; i < count && ok; i++) {
            double tol, want = bw_expected(kind, ha, hb, c->n, i, &tol);
            double err = fabs(got[(size_t)i] - want);
            worst = fmax(worst, tol > 0 ? err / (tol * (1 + fabs(want))) : (err == 0 ? 0 : INFINITY));
        }
        if (!ok)
            ct_failed(bw_info[kind].name);
    }
    if (ok && !(worst <= 1.0)) {
        fprintf(stderr, "ctbench: %s returned a wrong result (error %g x the tolerance)\n", bw_info[kind].name,
                worst);
        ok = false;
    }
    ct_scope_end();
    return ok;
}

static bool section_bandwidth(const bench_opts *o, copy_ref *copy, int64_t n, int warmup, int reps, int iters) {
    cudaStream_t s;
    if (!current_stream(&s))
        return false;
    int64_t shape[1] = {n};
    bw_ctx c = {ct_uniform(shape, 1, -1.0, 1.0, CT_F32, gpu0), ct_uniform(shape, 1, 0.5, 1.5, CT_F32, gpu0), NULL,
                copy, n};
    int64_t rows_shape[2] = {n / ROW, ROW};
    c.a2 = ct_view(c.a, rows_shape, 2);
    std::vector<float> ha((size_t)n), hb((size_t)n);
    bool want[BW_COUNT], all_ok = true;
    bool ok = c.a && c.b && c.a2 ? ct_to_host(c.a, ha.data(), (size_t)n * 4) == CT_OK &&
                                       ct_to_host(c.b, hb.data(), (size_t)n * 4) == CT_OK
                                 : false;
    if (!ok)
        all_ok = ct_failed("allocating the elementwise inputs");
    for (int k = 0; k < BW_COUNT; k++) {
        want[k] = ok && (k == BW_COPY || bw_check((bw_kind)k, &c, ha.data(), hb.data()));
        all_ok &= want[k] || !ok;
    }
    event_grid ev(BW_COUNT, reps);
    ok = ok && ev.ok;
    for (int i = 0; i < warmup && ok; i++)
        for (int k = 0; k < BW_COUNT; k++)
            if (want[k])
                ok = ok && bw_call((bw_kind)k, &c, s);
    for (int r = 0; r < reps && ok; r++)
        for (int k = 0; k < BW_COUNT && ok; k++) {
            if (!want[k])
                continue;
            ok = ev.record(k, r, 0, s);
            for (int i = 0; i < iters && ok; i++)
                ok = bw_call((bw_kind)k, &c, s);
            ok = ok && ev.record(k, r, 1, s);
        }
    ok = ok && CUDA_CHECK(cudaStreamSynchronize(s));
    static double t[BW_COUNT][MAX_REPS];
    for (int k = 0; k < BW_COUNT && ok; k++)
        for (int r = 0; r < reps && ok && want[k]; r++)
            ok = ev.seconds(k, r, iters, &t[k][r]);
    if (ok) {
        // Bandwidth ratios to the copy, round by round (before the samples are sorted).
        double copy_bytes = 2.0 * (double)copy->bytes, paired[BW_COUNT];
        for (int k = 1; k < BW_COUNT; k++) {
            double per_round[MAX_REPS];
            for (int r = 0; r < reps && want[k]; r++)
                per_round[r] = ((double)bw_info[k].bytes * (double)n / t[k][r]) / (copy_bytes / t[BW_COPY][r]);
            paired[k] = want[k] ? bench_stats_of(per_round, reps).median : 0;
        }
        bench_stats sc = bench_stats_of(t[BW_COPY], reps);
        double copy_gbs = copy_bytes / sc.best * 1e-9;
        char size[32], target[BW_COUNT][32];
        snprintf(size, sizeof size, "%lldMi f32", (long long)(n >> 20));
        for (int k = 1; k < BW_COUNT; k++) {
            if (!want[k])
                continue;
            bench_stats st = bench_stats_of(t[k], reps);
            double gbs = (double)bw_info[k].bytes * (double)n / st.best * 1e-9;
            bench_row row = make_row("elementwise", bw_info[k].name, size, reps, st, gbs, "GB/s");
            row.ref_name = "D2D copy";
            row.ratio = paired[k];
            row.ratio_of_best = gbs / copy_gbs;
            if (!o->quick && !null_runtime && bw_info[k].target_pc > 0) {
                snprintf(target[k], sizeof target[k], ">= %d%% of copy", bw_info[k].target_pc);
                row.target = target[k];
                row.target_met = paired[k] >= bw_info[k].target_pc / 100.0;
            }
            bench_emit(o, &row);
        }
    }
    ct_tensor_free(c.a2);
    ct_tensor_free(c.a);
    ct_tensor_free(c.b);
    return ok && all_ok;
}

// ---- host-side costs ---------------------------------------------------------------------------

__global__ void empty_kernel() {}
// The same with a 512-byte argument, about what an op's strided kernel takes (shapes and strides
// of its operands): does the size of the arguments account for part of a tiny op's cost?
struct launch_arg {
    int64_t words[64];
};
__global__ void empty_kernel_arg(launch_arg) {}

// Median host time per call of `per_batch` calls, over `batches` batches. The device is left
// to drain between batches (untimed), so that a full launch queue never blocks the host.
static bool section_overhead(const bench_opts *o, int batches, int per_batch, int warmup_iters) {
    cudaStream_t s;
    if (!current_stream(&s))
        return false;
    static const int64_t one[1] = {1}, mib[1] = {(1 << 20) / 4};
    ct_tensor *a = ct_full(one, 1, 1.5, CT_F32, gpu0), *b = ct_full(one, 1, 2.5, CT_F32, gpu0);
    std::vector<double> samples((size_t)batches);
    bool ok = a && b ? true : ct_failed("allocating the overhead inputs");
    // The last two rows repeat the launch and the op with a non-blocking pool stream current,
    // to see whether the legacy default stream (handle 0) costs more per launch.
    launch_arg arg;
    memset(&arg, 0, sizeof arg);
    ct_stream *pool = ct_stream_from_pool(0);
    ok = ok && (pool ? true : ct_failed("ct_stream_from_pool"));
    struct {
        const char *name, *target;
        double target_us;
    } rows[6] = {{"ct_empty+ct_tensor_free 1MiB", "< 1 us", 1.0},
                 {"ct_add 1 elem, host time", "< 4 us", 4.0},
                 {"empty kernel launch (floor)", NULL, 0.0},
                 {"empty launch, 512 B argument", NULL, 0.0},
                 {"ct_add 1 elem, pool stream", NULL, 0.0},
                 {"empty kernel launch, pool stream", NULL, 0.0}};
    for (int k = 0; k < 6 && ok; k++) {
        if (k == 4) { // the inputs were filled on the default stream
            ok = ct_stream_wait_stream(pool, ct_stream_default(0)) == CT_OK && ct_stream_set_current(pool) == CT_OK
                     ? true
                     : ct_failed("switching to a pool stream");
            s = pool->handle;
        }
        for (int phase = 0; phase < 2 && ok; phase++) {
            int nb = phase == 0 ? 1 : batches, per = phase == 0 ? warmup_iters : per_batch;
            for (int bi = 0; bi < nb && ok; bi++) {
                double t0 = bench_now();
                for (int i = 0; i < per && ok; i++) {
                    if (k == 0) {
                        ct_tensor *t = ct_empty(mib, 1, CT_F32, gpu0);
                        ok = t ? true : ct_failed("ct_empty");
                        ct_tensor_free(t);
                    } else if (k == 2 || k == 5) {
                        empty_kernel<<<1, 1, 0, s>>>();
                        ok = CUDA_CHECK(cudaGetLastError());
                    } else if (k == 3) {
                        empty_kernel_arg<<<1, 1, 0, s>>>(arg);
                        ok = CUDA_CHECK(cudaGetLastError());
                    } else {
                        ct_scope_begin();
                        ok = ct_add(a, b) ? true : ct_failed("ct_add");
                        ct_scope_end();
                    }
                }
                double dt = bench_now() - t0;
                if (phase == 1)
                    samples[(size_t)bi] = dt / per;
                ok = ok && CUDA_CHECK(cudaStreamSynchronize(s));
            }
        }
        if (!ok)
            break;
        bench_stats st = bench_stats_of(samples.data(), batches);
        bench_row row = make_row("overhead", rows[k].name, k == 0 ? "1 MiB" : k == 1 || k == 4 ? "1 elem" : "<<<1,1>>>",
                                 batches * per_batch, st, st.median * 1e6, "us");
        if (!o->quick && !null_runtime && rows[k].target) {
            row.target = rows[k].target;
            row.target_met = row.value < rows[k].target_us;
        }
        bench_emit(o, &row);
    }
    // The same tiny op replayed from a CUDA graph (ctensor/graph.h): a chain of GRAPH_OPS adds
    // captured once; host time per replay divided by the ops it holds.
    enum { GRAPH_OPS = 100 };
    ct_graph *graph = ok ? ct_graph_capture_begin(0) : NULL;
    ct_tensor *chain = graph ? ct_tensor_retain(a) : NULL;
    for (int i = 0; i < GRAPH_OPS && chain; i++) {
        ct_tensor *next = ct_add(chain, b);
        ct_tensor_free(chain);
        chain = next;
    }
    if (ok && !(graph && chain && ct_graph_capture_end(graph) == CT_OK))
        ok = ct_failed("capturing the CUDA graph of tiny adds");
    int graph_per = per_batch / 10 > 0 ? per_batch / 10 : 1;
    for (int phase = 0; phase < 2 && ok; phase++) {
        int nb = phase == 0 ? 1 : batches, per = phase == 0 ? warmup_iters / GRAPH_OPS + 1 : graph_per;
        for (int bi = 0; bi < nb && ok; bi++) {
            double t0 = bench_now();
            for (int i = 0; i < per && ok; i++)
                ok = ct_graph_replay(graph) == CT_OK ? true : ct_failed("ct_graph_replay");
            double dt = bench_now() - t0;
            if (phase == 1)
                samples[(size_t)bi] = dt / ((double)per * GRAPH_OPS);
            ok = ok && CUDA_CHECK(cudaStreamSynchronize(s));
        }
    }
    if (ok) {
        bench_stats st = bench_stats_of(samples.data(), batches);
        bench_row row = make_row("overhead", "ct_add 1 elem, CUDA graph replay (per op)", "1 elem x 100",
                                 batches * graph_per * GRAPH_OPS, st, st.median * 1e6, "us");
        bench_emit(o, &row);
    }
    ct_tensor_free(chain);
    ct_graph_free(graph);
    if (pool && ct_stream_set_current(ct_stream_default(0)) != CT_OK)
        ok = ct_failed("ct_stream_set_current (back to the default stream)");
    if (ok) {
        ct_memory_stats ms;
        if (ct_cuda_memory_stats(0, &ms) == CT_OK)
            bench_note(o, "overhead: allocator after the loop: %llu allocations, %llu cache hits, %llu cudaMalloc calls",
                       (unsigned long long)ms.allocations, (unsigned long long)ms.cache_hits,
                       (unsigned long long)ms.segment_allocs);
        else
            ct_clear_error();
        bench_note(o, "overhead: medians over batches of %d calls; ct_add runs in a scope per call and is not "
                      "waited for (the device drains between batches, untimed); the floor is a bare <<<>>> launch of "
                      "an empty kernel on the same stream, the least any GPU op can cost",
                   per_batch);
    }
    ct_tensor_free(a);
    ct_tensor_free(b);
    return ok;
}

// ---- the CUDA run --------------------------------------------------------------------------------

static bool describe_device(const bench_opts *o) {
    int count = 0, runtime = 0, driver = 0;
    cudaDeviceProp p;
    if (!CUDA_CHECK(cudaGetDeviceCount(&count)))
        return false;
    if (count < 1) {
        fprintf(stderr, "ctbench: --device cuda: no CUDA device\n");
        return false;
    }
    if (ct_cuda_set_device(0) != CT_OK)
        return ct_failed("ct_cuda_set_device(0)");
    if (!CUDA_CHECK(cudaSetDevice(0)) || !CUDA_CHECK(cudaGetDeviceProperties(&p, 0)) ||
        !CUDA_CHECK(cudaRuntimeGetVersion(&runtime)) || !CUDA_CHECK(cudaDriverGetVersion(&driver)))
        return false;
    bench_note(o, "cuda: %s, compute capability %d.%d, %d SMs, %.1f GiB, %d-bit memory bus, %d MiB L2; CUDA runtime %d, "
                  "driver %d; cuBLASLt %zu",
               p.name, p.major, p.minor, p.multiProcessorCount, (double)p.totalGlobalMem / (1 << 30), p.memoryBusWidth,
               p.l2CacheSize >> 20, runtime, driver, cublasLtGetVersion());
    null_runtime = strstr(p.name, "null CUDA runtime") != NULL;
    if (null_runtime)
        bench_note(o, "the null CUDA runtime (bench/null_cudart.c) stands in for CUDA: no kernel runs, GPU times and "
                      "rates are meaningless and no target is checked; the overhead rows are ctensor's own host work");
    return true;
}

extern "C" int bench_cuda_sections(const bench_opts *o) {
    if (!describe_device(o))
        return 1;
    int reps = o->reps ? o->reps : (o->quick ? 3 : 10), warmup = o->quick ? 1 : 3;
    if (reps > MAX_REPS)
        reps = MAX_REPS;
    int iters = o->quick ? 2 : 5;
    bool want_bw = bench_section_enabled(o, "memory") || bench_section_enabled(o, "elementwise");
    bool ok = true;

    // The device's limits first: the copy bandwidth, the GEMM peaks.
    copy_ref copy;
    double copy_gbs = 0;
    if (want_bw)
        ok = copy.init(o->quick ? (size_t)256 << 20 : (size_t)1 << 30) &&
             section_copy(o, &copy, warmup, reps, iters, &copy_gbs);
    mm_result mm[3];
    if (bench_section_enabled(o, "matmul")) {
        static const ct_dtype dtypes[3] = {CT_BF16, CT_F16, CT_F32};
        int64_t n = o->quick ? 2048 : 8192;
        for (int d = 0; d < 3; d++) {
            ok &= measure_matmul(dtypes[d], n, warmup, reps, o->quick ? 2 : 3, &mm[d]);
            if (mm[d].measured)
                bench_emit(o, &mm[d].direct);
        }
    }
    // Then ctensor, as fractions of them.
    if (bench_section_enabled(o, "elementwise") && copy.bytes)
        ok &= section_bandwidth(o, &copy, o->quick ? (int64_t)1 << 24 : (int64_t)1 << 26, warmup, reps, iters);
    for (int d = 0; d < 3; d++)
        if (mm[d].measured) {
            if (!o->quick && !null_runtime) {
                mm[d].ours.target = ">= 98% of cublasLt";
                mm[d].ours.target_met = mm[d].ours.ratio >= 0.98;
            }
            bench_emit(o, &mm[d].ours);
        }
    if (bench_section_enabled(o, "overhead"))
        ok &= o->quick ? section_overhead(o, 100, 50, 5000) : section_overhead(o, 2000, 100, 20000);
    if (bench_section_enabled(o, "train"))
        ok &= bench_train(o, gpu0) == 0;

    printf("GPU times are from CUDA events around %d calls (GEMMs: %d), after warmup; throughput from the best\n"
           "repetition; host overheads (us) are medians. GB/s counts bytes read + written: copy 2 x its size, add/mul 12,\n"
           "relu/softmax/dropout 8, cast f32->bf16 6, reductions and rand/randn 4 bytes per element.\n"
           "vs reference: median over rounds of the ratio to the reference measured in the same round.\n%s",
           iters, o->quick ? 2 : 3, o->quick ? "Quick run: sizes are too small for the targets, which are not checked.\n" : "");
    return ok ? 0 : 1;
}
