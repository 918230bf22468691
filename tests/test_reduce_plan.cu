// The GPU reductions' own code, run on the CPU: kernels/cuda/reduce_plan.cuh holds the plans
// and every thread's work (the 16-byte head/middle/tail walk of a row, the outer walk down
// columns, the accumulators) as host+device functions. This suite runs them on the host and
// merges the threads' partials in the kernels' own trees (shuffle butterflies, the block's
// warp results, the outer kernel's shared-memory tree, the partials of sliced reductions), then
// compares every output with the CPU kernels of kernels/cpu/reduce.c: exactly for max/min, the
// argmax/argmin positions and everything I32 (accumulated in double), within 1e-5 (F32) or the
// half type's rounding otherwise. Each
// test first asserts the plan it meant to reach, so a change to the planning cannot quietly
// move a case to another path. No GPU is needed; CUDA builds only (nvcc compiles it).
// The kernels themselves (shuffles, shared memory, launches) are covered by test_cuda_reduce.
#include <criterion/criterion.h>

#include "kernels/cuda/reduce_plan.cuh"
extern "C" {
#include "kernels/cpu/reduce.h"
}

#include <math.h>
#include <stdint.h>
#include <vector>

// ---- the kernels' merge trees -------------------------------------------------------------

// __shfl_xor_sync merges over lanes [0, G): each lane merges its partner's value from before
// the step (reduce.cu group_reduce).
template <typename Op> static void butterfly(const Op &op, typename Op::acc *lanes, int G) {
    std::vector<typename Op::acc> before(G);
    for (int offset = G / 2; offset > 0; offset /= 2) {
        before.assign(lanes, lanes + G);
        for (int l = 0; l < G; l++)
            op.merge(lanes[l], before[l ^ offset]);
    }
}

// reduce.cu block_reduce: each warp's butterfly, then warp 0 over the warps' results.
template <typename Op> static typename Op::acc block_tree(const Op &op, typename Op::acc *threads) {
    typename Op::acc warps[32];
    for (int w = 0; w < BLOCK / 32; w++)
        butterfly(op, threads + 32 * w, 32);
    for (int l = 0; l < 32; l++)
        warps[l] = l < BLOCK / 32 ? threads[32 * l] : op.identity();
    butterfly(op, warps, 32);
    return warps[0];
}

template <typename T, typename Op, int V>
static void inner_units(const reduce_plan &p, const reduce_job<T, Op> &job, std::vector<typename Op::acc> &out,
                        std::vector<typename Op::acc> &partials) {
    const Op &op = job.op;
    std::vector<typename Op::acc> lanes((size_t)p.G);
    for (int64_t unit = 0; unit < p.K * p.slices; unit++) {
        for (int l = 0; l < p.G; l++)
            lanes[(size_t)l] = inner_lane<T, Op, V>(job, unit, l, p.G);
        typename Op::acc a;
        if (p.G == BLOCK) {
            a = block_tree(op, lanes.data());
        } else {
            butterfly(op, lanes.data(), p.G);
            a = lanes[0];
        }
        (p.slices == 1 ? out : partials)[(size_t)unit] = a;
    }
}

// reduce.cu reduce_outer_kernel: block (bx, by); the rows ty < half merge row ty + half.
template <typename T, typename Op, int V>
static void outer_blocks(const reduce_plan &p, const reduce_job<T, Op> &job, std::vector<typename Op::acc> &out,
                         std::vector<typename Op::acc> &partials) {
    typedef typename Op::acc A;
    const Op &op = job.op;
    std::vector<A> t((size_t)(p.bx * p.by * V));
    for (int64_t block = 0; block < p.blocks; block++) {
        for (int64_t slice = 0; slice < p.slices; slice++) {
            int64_t row = block / p.tiles;
            int64_t r0 = slice * job.chunk, r1 = r0 + job.chunk < job.R ? r0 + job.chunk : job.R;
            for (int ty = 0; ty < p.by; ty++) {
                for (int tx = 0; tx < p.bx; tx++) {
                    int64_t col = ((block % p.tiles) * p.bx + tx) * V;
                    A a[V];
                    for (int e = 0; e < V; e++)
                        a[e] = op.identity();
                    if (col < job.width)
                        outer_walk<T, Op, V>(job, row, col, r0, r1, ty, p.by, a);
                    for (int e = 0; e < V; e++)
                        t[(size_t)((ty * p.bx + tx) * V + e)] = a[e];
                }
            }
            for (int half = p.by / 2; half > 0; half /= 2)
                for (int ty = 0; ty < half; ty++)
                    for (int i = 0; i < p.bx * V; i++)
                        op.merge(t[(size_t)(ty * p.bx * V + i)], t[(size_t)((ty + half) * p.bx * V + i)]);
            for (int tx = 0; tx < p.bx; tx++) {
                int64_t col = ((block % p.tiles) * p.bx + tx) * V;
                for (int e = 0; e < V && col < job.width; e++) {
                    int64_t k = row * job.width + col + e;
                    if (p.slices == 1)
                        out[(size_t)k] = t[(size_t)(tx * V + e)];
                    else
                        partials[(size_t)(k * p.slices + slice)] = t[(size_t)(tx * V + e)];
                }
            }
        }
    }
}

// Every output's final accumulator, as the kernels of plan p would leave it.
template <typename T, typename Op>
static std::vector<typename Op::acc> emulate(const reduce_plan &p, const T *in, const Op &op) {
    constexpr int VEC = 16 / sizeof(T);
    std::vector<typename Op::acc> out((size_t)p.K, op.identity());
    std::vector<typename Op::acc> partials((size_t)(p.slices > 1 ? p.K * p.slices : 0), op.identity());
    reduce_job<T, Op> job = make_job<T>(p, in, op, NULL, NULL, partials.data());
    if (p.outer && p.vectorized)
        outer_blocks<T, Op, VEC>(p, job, out, partials);
    else if (p.outer)
        outer_blocks<T, Op, 1>(p, job, out, partials);
    else if (p.vectorized)
        inner_units<T, Op, VEC>(p, job, out, partials);
    else
        inner_units<T, Op, 1>(p, job, out, partials);
    if (p.slices > 1) { // reduce_finish_kernel: lane l takes partials l, l + 32, ...
        for (int64_t k = 0; k < p.K; k++) {
            typename Op::acc lanes[32];
            for (int l = 0; l < 32; l++) {
                lanes[l] = op.identity();
                for (int64_t s = l; s < p.slices; s += 32)
                    op.merge(lanes[l], partials[(size_t)(k * p.slices + s)]);
            }
            butterfly(op, lanes, 32);
            out[(size_t)k] = lanes[0];
        }
    }
    return out;
}

// ---- inputs ---------------------------------------------------------------------------------

enum values { RANDOM, TIES, TIES_AND_NANS, INFINITIES, RAMPS };

// Per input type: its dtype, the accumulator type of its kernels (reduce.cu launch_any /
// launch_float), the tolerance against the CPU, and the conversions.
template <typename T> struct traits;
template <> struct traits<float> {
    static const ct_dtype dtype = CT_F32;
    typedef float F;
    static constexpr bool floating = true;
    static constexpr double tol = 1e-5;
};
template <> struct traits<__half> {
    static const ct_dtype dtype = CT_F16;
    typedef float F;
    static constexpr bool floating = true;
    static constexpr double tol = 1e-2;
};
template <> struct traits<__nv_bfloat16> {
    static const ct_dtype dtype = CT_BF16;
    typedef float F;
    static constexpr bool floating = true;
    static constexpr double tol = 1e-2;
};
template <> struct traits<int32_t> { // accumulated in double: exact
    static const ct_dtype dtype = CT_I32;
    typedef double F;
    static constexpr bool floating = false; // sum, max, min and their positions only
    static constexpr double tol = 0;
};

static double as_double(float x) { return x; }
static double as_double(__half x) { return __half2float(x); }
static double as_double(__nv_bfloat16 x) { return __bfloat162float(x); }
static double as_double(int32_t x) { return x; }
template <typename T> static T from_float(float x);
template <> float from_float<float>(float x) { return x; }
template <> __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> int32_t from_float<int32_t>(float x) { return (int32_t)floorf(x); }

// A buffer of n values: uniform in [-2, 3), small integers (ties everywhere), those with a
// NaN at every 97th element, random with ±inf sprinkled in and whole stretches of -inf, or
// ramps rising over 5000 elements from -100 to 150 (logsumexp's running max grows at every
// step: the rescaling path).
template <typename T> static std::vector<T> make_values(int64_t n, values kind, uint64_t seed) {
    std::vector<T> v((size_t)n);
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0; // [0, 1)
        float x = (float)(-2.0 + 5.0 * u);
        if (kind != RANDOM)
            x = floorf(x + 1.0f);
        if (kind == TIES_AND_NANS && i % 97 == 13)
            x = NAN;
        if (kind == RAMPS)
            x = -100.0f + 0.05f * (float)(i % 5000);
        if (kind == INFINITIES) {
            x = (float)(-2.0 + 5.0 * u);
            if (i % 211 == 7)
                x = INFINITY;
            if (i % 53 == 3 || (i / 300) % 7 == 2)
                x = -INFINITY;
        }
        v[(size_t)i] = from_float<T>(x);
    }
    return v;
}

// ---- comparison with the CPU ------------------------------------------------------------

struct geometry {
    std::vector<int64_t> shape, strides;
    int64_t offset; // of the first element in the buffer (misaligns rows when odd)
    int64_t extent; // buffer elements
};

static geometry contiguous(std::vector<int64_t> shape, int64_t offset) {
    geometry g;
    g.shape = shape;
    g.strides.assign(shape.size(), 1);
    for (int d = (int)shape.size() - 2; d >= 0; d--)
        g.strides[(size_t)d] = g.strides[(size_t)d + 1] * shape[(size_t)d + 1];
    g.offset = offset;
    g.extent = offset + g.strides[0] * shape[0];
    return g;
}

static bool same(double got, double want, double tol) {
    if (want != want)
        return got != got;
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= tol * fmax(1.0, fabs(want));
}

// The position an accumulator holds (argmax/argmin), or -1.
template <typename A> static int32_t index_of(const A &) { return -1; }
template <typename F> static int32_t index_of(const arg_acc<F> &a) { return a.i; }

// An output as the kernel stores it: the result rounded to T (as ct_from_double<T> does).
template <typename T> static double stored(double r) { return as_double(from_float<T>((float)r)); }
template <> double stored<int32_t>(double r) { return ct_saturate_i32(r); }

struct plan_expect {
    int outer;      // 1 outer, 0 inner, -1 any
    int vectorized; // 1, 0, -1 any
    int sliced;     // 1 (slices > 1), 0, -1 any
    int G;          // inner threads per output, 0 any
};

static void check_plan(const reduce_plan &p, plan_expect e, const char *what) {
    cr_assert(e.outer < 0 || p.outer == (e.outer == 1), "%s: the plan is %s, not the layout the test is for", what,
              p.outer ? "outer" : "inner");
    cr_assert(e.vectorized < 0 || p.vectorized == (e.vectorized == 1), "%s: the plan is %svectorized", what,
              p.vectorized ? "" : "not ");
    cr_assert(e.sliced < 0 || (p.slices > 1) == (e.sliced == 1), "%s: %lld slices", what, (long long)p.slices);
    cr_assert(e.G == 0 || p.outer || p.G == e.G, "%s: G = %d, expected %d", what, p.G, e.G);
}

// Every reduction of `g` over the dims in `mask` (and argmax/argmin/max/min-with-index when
// exactly one dim is reduced), each compared with the CPU's.
template <typename T> static void check_all(const geometry &g, const std::vector<bool> &mask_v, plan_expect expect) {
    typedef typename traits<T>::F F;
    const ct_dtype dt = traits<T>::dtype;
    constexpr bool floating = traits<T>::floating;
    const int ndim = (int)g.shape.size();
    bool mask[CT_KMAX_DIMS] = {false};
    int reduced = 0, dim = -1;
    for (int d = 0; d < ndim; d++) {
        mask[d] = mask_v[(size_t)d];
        if (mask[d]) {
            reduced++;
            dim = d;
        }
    }
    for (int kind = RANDOM; kind <= (floating ? RAMPS : TIES); kind++) {
        std::vector<T> buf = make_values<T>(g.extent, (values)kind, 1000 + kind);
        const T *in = buf.data() + g.offset;
        reduce_plan p;
        make_plan(&p, dt, ndim, g.shape.data(), in, g.strides.data(), mask);
        check_plan(p, expect, ct_dtype_name(dt));
        std::vector<char> ref((size_t)p.K * sizeof(double));
        std::vector<int32_t> ref_index((size_t)p.K);
        const T *r = (const T *)ref.data();
        auto compare = [&](const char *name, auto op, double tol, bool with_index) {
            auto acc = emulate<T>(p, in, op);
            for (int64_t k = 0; k < p.K; k++) {
                double got = stored<T>(op.result(acc[(size_t)k])), want = as_double(r[k]);
                cr_assert(same(got, want, tol), "%s %s (values %d): output %lld is %.9g, the CPU gives %.9g", name,
                          ct_dtype_name(dt), kind, (long long)k, got, want);
                if (with_index)
                    cr_assert_eq(index_of(acc[(size_t)k]), ref_index[(size_t)k],
                                 "%s %s (values %d): output %lld is at %d, the CPU's at %d", name, ct_dtype_name(dt),
                                 kind, (long long)k, index_of(acc[(size_t)k]), ref_index[(size_t)k]);
            }
        };
        ct_cpu_reduce(CT_RED_SUM, dt, ndim, g.shape.data(), in, g.strides.data(), mask, ref.data(), 0.5);
        compare("sum * 0.5", sum_op<F>{(F)0.5}, traits<T>::tol, false);
        ct_cpu_reduce(CT_RED_MAX, dt, ndim, g.shape.data(), in, g.strides.data(), mask, ref.data(), 1.0);
        compare("max", extreme_op<F>{true}, 0, false);
        ct_cpu_reduce(CT_RED_MIN, dt, ndim, g.shape.data(), in, g.strides.data(), mask, ref.data(), 1.0);
        compare("min", extreme_op<F>{false}, 0, false);
        if constexpr (floating) {
            ct_cpu_reduce(CT_RED_LOGSUMEXP, dt, ndim, g.shape.data(), in, g.strides.data(), mask, ref.data(), 1.0);
            compare("logsumexp", lse_op{}, traits<T>::tol, false);
            if (kind != INFINITIES) { // inf - inf: NaN in both, not worth the comparison
                double divisor = (double)p.R - 1.0;
                float d = (float)(divisor > 0 ? divisor : 0.0);
                double tol = fmax(traits<T>::tol, 1e-4);
                ct_cpu_reduce_var(dt, ndim, g.shape.data(), in, g.strides.data(), mask, ref.data(), 1.0, false);
                compare("var", var_op{d, false}, tol, false);
                ct_cpu_reduce_var(dt, ndim, g.shape.data(), in, g.strides.data(), mask, ref.data(), 1.0, true);
                compare("std", var_op{d, true}, tol, false);
            }
        }
        if (reduced == 1) {
            ct_cpu_reduce_arg(CT_RED_MAX, dt, ndim, g.shape.data(), in, g.strides.data(), dim, ref.data(),
                              ref_index.data());
            compare("max with index", arg_op<F>{true}, 0, true);
            ct_cpu_reduce_arg(CT_RED_MIN, dt, ndim, g.shape.data(), in, g.strides.data(), dim, ref.data(),
                              ref_index.data());
            compare("min with index", arg_op<F>{false}, 0, true);
        }
    }
}

// ---- the cases --------------------------------------------------------------------------

// ctbench's rows: a warp per row of 1024, four 16-byte loads in flight per lane.
Test(reduce_plan, rows_of_1024) {
    check_all<float>(contiguous({64, 1024}, 0), {false, true}, {0, 1, 0, 32});
    check_all<__half>(contiguous({16, 1024}, 0), {false, true}, {0, 1, 0, 32});
}

// Rows that start off a 16-byte boundary (a scalar head and tail) and rows shorter than a warp.
Test(reduce_plan, misaligned_and_short_rows) {
    check_all<float>(contiguous({37, 1003}, 1), {false, true}, {0, 1, 0, 32});
    check_all<float>(contiguous({300, 7}, 3), {false, true}, {0, 1, 0, 2});
    check_all<__nv_bfloat16>(contiguous({41, 333}, 5), {false, true}, {0, 1, 0, 32});
    check_all<float>(contiguous({5, 1}, 0), {false, true}, {1, 0, 0, 0}); // R = 1: the outer layout
    check_all<int32_t>(contiguous({37, 1003}, 1), {false, true}, {0, 1, 0, 32});
}

// Rows long enough for a whole block, and few of them: cut into slices merged by a second kernel.
Test(reduce_plan, long_rows_in_blocks_and_slices) {
    check_all<float>(contiguous({3, 100003}, 2), {false, true}, {0, 1, 1, BLOCK});
    check_all<float>(contiguous({2000, 2500}, 0), {false, true}, {0, 1, 0, BLOCK});
    check_all<__half>(contiguous({2, 40000}, 0), {false, true}, {0, 1, 1, BLOCK});
    check_all<int32_t>(contiguous({3, 100003}, 2), {false, true}, {0, 1, 1, BLOCK});
}

// Everything reduced: K = 1, sliced.
Test(reduce_plan, all_reduce) {
    check_all<float>(contiguous({(1 << 20) + 3}, 1), {true}, {0, 1, 1, BLOCK});
    check_all<float>(contiguous({3, 70001}, 0), {true, true}, {0, 1, 1, BLOCK});
}

// Reduced elements not contiguous and no contiguous kept dim: the scalar inner walk.
Test(reduce_plan, strided_inner) {
    geometry g;
    g.shape = {33, 517};
    g.strides = {2 * 517 * 3, 3}; // every third element of each row, every other row
    g.offset = 1;
    g.extent = 1 + 2 * 517 * 3 * 33;
    check_all<float>(g, {false, true}, {0, 0, 0, 32});
    g.shape = {40, 50000};
    g.strides = {2, 80}; // a transposed view: the reduced dim strides by 80, the kept by 2
    g.offset = 0;
    g.extent = 80 * 50000;
    check_all<float>(g, {false, true}, {0, 0, 1, BLOCK});
}

// Columns: the kept innermost dim is contiguous; 16-byte columns of four, or single columns
// when the width or the base is not aligned; the walk split into slices when the outputs are few.
Test(reduce_plan, outer_columns) {
    check_all<float>(contiguous({4096, 96}, 0), {true, false}, {1, 1, 1, 0});
    check_all<float>(contiguous({1000, 33}, 0), {true, false}, {1, 0, 1, 0});
    check_all<float>(contiguous({517, 1024}, 1), {true, false}, {1, 0, -1, 0});
    check_all<float>(contiguous({7, 513, 24}, 0), {false, true, false}, {1, 1, 0, 0});
    check_all<__half>(contiguous({300, 64}, 0), {true, false}, {1, 1, -1, 0});
    check_all<float>(contiguous({64, 5000}, 0), {true, false}, {1, 1, 0, 0});
    check_all<int32_t>(contiguous({4096, 96}, 0), {true, false}, {1, 1, 1, 0});
    check_all<int32_t>(contiguous({1000, 33}, 0), {true, false}, {1, 0, 1, 0});
}

// The accumulators' rules on single elements, with pushes in index order and merges both ways.
Test(reduce_plan, accumulator_rules) {
    arg_op<float> amax{true};
    arg_acc<float> a = amax.identity(), b = amax.identity();
    amax.push(a, 2.0f, 0);
    amax.push(a, 2.0f, 1); // a tie keeps the first
    cr_assert_eq(a.i, 0);
    amax.push(a, NAN, 2);
    amax.push(a, 9.0f, 3); // the first NaN stays
    amax.push(a, NAN, 4);
    cr_assert_eq(a.i, 2);
    amax.push(b, NAN, 1); // an earlier NaN in the other partial wins, whichever side merges
    arg_acc<float> ab = a, ba = b;
    amax.merge(ab, b);
    amax.merge(ba, a);
    cr_assert(ab.i == 1 && ba.i == 1, "merged NaN positions %d and %d", ab.i, ba.i);
    arg_acc<float> tie1 = {5.0f, 7}, tie2 = {5.0f, 3};
    amax.merge(tie1, tie2);
    cr_assert_eq(tie1.i, 3, "a tie across partials keeps the lower index");
    arg_op<float> amin{false};
    arg_acc<float> m = amin.identity();
    const float pack[4] = {3.0f, -1.0f, -1.0f, 0.5f};
    amin.push_n(m, pack, 10, 2);
    cr_assert(m.i == 12 && m.v == -1.0f, "push_n: %g at %d", m.v, m.i);
    const float all_inf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    arg_acc<float> inf = amax.identity();
    amax.push_n(inf, all_inf, 0, 1);
    cr_assert(inf.i == 0 && isinf(inf.v), "the first -inf is an extreme too (%d)", inf.i);

    lse_op lse;
    lse_acc l = lse.identity();
    const float finite[4] = {0.0f, 1.0f, 2.0f, 3.0f}, higher[4] = {10.0f, -INFINITY, 4.0f, 10.0f};
    lse.push_n(l, finite, 0, 1);
    lse.push_n(l, higher, 4, 1); // the max grows: the running sum is rescaled
    double want = 10.0 + log(exp(-10.0) + exp(-9.0) + exp(-8.0) + exp(-7.0) + 1.0 + exp(-6.0) + 1.0);
    cr_assert(fabs(lse.result(l) - want) < 1e-5, "logsumexp %.9g, expected %.9g", lse.result(l), want);
    lse.push(l, INFINITY, 8);
    cr_assert(isinf(lse.result(l)) && lse.result(l) > 0, "+inf dominates");
    lse_acc n = lse.identity();
    const float with_nan[4] = {1.0f, NAN, 2.0f, INFINITY};
    lse.push_n(n, finite, 0, 1);
    lse.push_n(n, with_nan, 4, 1);
    lse.push_n(n, higher, 8, 1);
    cr_assert(isnan(lse.result(n)), "NaN stays");
}
