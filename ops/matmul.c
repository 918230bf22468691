/* Matrix products: ct_matmul (NumPy semantics) and ct_bmm, with their gradients.
 *
 * Operands reach the GEMM kernel with their own strides, so a transposed view (ct_transpose
 * of a weight, or the transposes taken by backward) costs no copy: the kernel folds it into
 * the BLAS call. Floating dtypes only: integer inputs are CT_ERR_DTYPE (there is no integer
 * GEMM in BLAS or cuBLAS to keep the two backends alike; cast to a float dtype first).
 *
 * On CUDA the product is one cuBLASLt call per coalesced batch (kernels/cuda/matmul.cu) in
 * F32, F16 or BF16. cuBLASLt takes row- and column-major matrices with a leading dimension,
 * the layouts ct_cpu_gemm_is_direct accepts; the CPU kernel packs any other layout itself,
 * the CUDA path first makes a contiguous copy of such an operand (an expanded or otherwise
 * overlapping view: rare, and a copy the size of the operand). F32 products use TF32
 * tensor cores only after ct_matmul_set_allow_tf32(true), as in PyTorch. */
#include "runtime/internal.h"
#include "kernels/cpu/gemm.h"

#include <limits.h>
#include <stdatomic.h>
#include <string.h>

static atomic_bool allow_tf32 = false;

void ct_matmul_set_allow_tf32(bool allow) { atomic_store(&allow_tf32, allow); }

bool ct_matmul_allow_tf32(void) { return atomic_load(&allow_tf32); }

/* A (rows, cols) matrix stack as seen by the kernel, from a tensor promoted to >= 2-D. */
typedef struct mat_geom {
    int batch_ndim;
    int64_t batch_shape[CT_MAX_DIMS];
    int64_t batch_strides[CT_MAX_DIMS];
    int64_t rows, cols, row_stride, col_stride;
} mat_geom;

/* NumPy promotion: a 1-D `a` is a row (1, K), a 1-D `b` a column (K, 1). */
static void geom_of(const ct_tensor *t, bool is_left, mat_geom *g) {
    if (t->ndim == 1) {
        g->batch_ndim = 0;
        if (is_left) {
            g->rows = 1;
            g->cols = t->shape[0];
            g->row_stride = t->shape[0];
            g->col_stride = t->strides[0];
        } else {
            g->rows = t->shape[0];
            g->cols = 1;
            g->row_stride = t->strides[0];
            g->col_stride = 1;
        }
        return;
    }
    g->batch_ndim = t->ndim - 2;
    for (int d = 0; d < g->batch_ndim; d++) {
        g->batch_shape[d] = t->shape[d];
        g->batch_strides[d] = t->strides[d];
    }
    g->rows = t->shape[t->ndim - 2];
    g->cols = t->shape[t->ndim - 1];
    g->row_stride = t->strides[t->ndim - 2];
    g->col_stride = t->strides[t->ndim - 1];
}

/* When b has no batch dims and a's batch dims lie at a fixed stride from its rows
 * (a row-major stack such as (B, T, C) activations), the whole stack is one (B*T, K)
 * matrix: one large GEMM instead of B small ones (unless B*T would not fit BLAS's int). */
static void fold_batch_into_rows(mat_geom *a) {
    if (a->batch_ndim == 0 || (a->cols > 1 && a->col_stride != 1))
        return;
    int64_t rows = a->rows, row_stride = a->row_stride;
    if (a->rows == 1)
        row_stride = a->cols; /* any row stride is valid for one row: pick the dense one */
    for (int d = a->batch_ndim - 1; d >= 0; d--) {
        if (a->batch_shape[d] != 1 && a->batch_strides[d] != rows * row_stride)
            return;
        rows *= a->batch_shape[d];
        if (rows > INT_MAX)
            return;
    }
    a->rows = rows;
    a->row_stride = row_stride;
    a->batch_ndim = 0;
}

static bool check_operands(const char *op, const ct_tensor *a, const ct_tensor *b) {
    if (!ct__check(op, "a", a) || !ct__check(op, "b", b))
        return false;
    if (!ct__same_device_dtype(op, a, b))
        return false;
    if (!ct_dtype_is_float(a->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: dtype %s is not supported (floating dtypes only; cast with ct_cast)", op,
                      ct_dtype_name(a->dtype));
        return false;
    }
    if (a->device.type == CT_DEVICE_CUDA && a->dtype == CT_F64) {
        ct__set_error(CT_ERR_DTYPE, "%s: f64 is not supported on %s (f32, f16 or bf16; f64 is CPU only)", op,
                      ct_device_name(a->device));
        return false;
    }
    if (a->ndim == 0 || b->ndim == 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: both operands need at least 1 dimension: a is %s, b is %s", op,
                      ct_shape_str(a), ct_shape_str(b));
        return false;
    }
    return true;
}

/* On CUDA, a contiguous copy of an operand whose matrices cuBLASLt cannot read as they lie
 * (no autograd: the product records the original operands); NULL when none is needed or
 * on error (*failed set). */
static ct_tensor *packed_for_cuda(const ct_tensor *t, bool is_left, bool *failed) {
    mat_geom g;
    geom_of(t, is_left, &g);
    if (t->device.type != CT_DEVICE_CUDA || ct_cpu_gemm_is_direct(g.rows, g.cols, g.row_stride, g.col_stride))
        return NULL;
    ct_tensor *copy = ct__new(t->dtype, t->device, t->ndim, t->shape);
    if (copy && ct__copy(copy, t) == CT_OK)
        return copy;
    ct_tensor_free(copy);
    *failed = true;
    return NULL;
}

static ct_status run_gemm(const char *op, const ct_tensor *a, const ct_tensor *b, ct_tensor *out, int batch_ndim,
                          const int64_t *batch_shape, int64_t M, int64_t N, int64_t K, const ct_gemm_operand *ka,
                          const ct_gemm_operand *kb) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_gemm(out->dtype, batch_ndim, batch_shape, M, N, K, ka, kb, ct__data(out),
                                       ct_matmul_allow_tf32(), ct__stream_for(out)));
    if (ct_cpu_gemm(out->dtype, batch_ndim, batch_shape, M, N, K, ka, kb, ct__data(out)))
        return CT_OK;
    return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory for GEMM scratch (a is %s, b is %s)", op,
                         ct_shape_str(a), ct_shape_str(b));
}

/* The product of operands the kernel takes as they lie; checks shapes. */
static ct_tensor *gemm_forward(const char *op, const ct_tensor *a, const ct_tensor *b) {
    mat_geom ga, gb;
    geom_of(a, true, &ga);
    geom_of(b, false, &gb);
    if (ga.cols != gb.rows) {
        ct__set_error(CT_ERR_SHAPE, "%s: inner dimensions differ: a is %s, b is %s", op, ct_shape_str(a),
                      ct_shape_str(b));
        return NULL;
    }
    int64_t M = ga.rows, K = ga.cols, N = gb.cols;
    int batch_ndim = ga.batch_ndim > gb.batch_ndim ? ga.batch_ndim : gb.batch_ndim;
    int64_t batch_shape[CT_MAX_DIMS];
    ct_gemm_operand ka = {0}, kb = {0};
    for (int d = 0; d < batch_ndim; d++) {
        int da = d - (batch_ndim - ga.batch_ndim), db = d - (batch_ndim - gb.batch_ndim);
        int64_t sa = da >= 0 ? ga.batch_shape[da] : 1, sb = db >= 0 ? gb.batch_shape[db] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            ct__set_error(CT_ERR_SHAPE, "%s: batch dimensions cannot be broadcast: a is %s, b is %s", op,
                          ct_shape_str(a), ct_shape_str(b));
            return NULL;
        }
        batch_shape[d] = sa == 1 ? sb : sa;
        ka.batch_strides[d] = sa == batch_shape[d] && sa != 1 ? ga.batch_strides[da] : 0;
        kb.batch_strides[d] = sb == batch_shape[d] && sb != 1 ? gb.batch_strides[db] : 0;
    }
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX) {
        ct__set_error(CT_ERR_UNSUPPORTED, "%s: a is %s, b is %s: matrix sizes above %d are not supported by BLAS", op,
                      ct_shape_str(a), ct_shape_str(b), INT_MAX);
        return NULL;
    }
    int out_ndim = 0;
    int64_t out_shape[CT_MAX_DIMS];
    for (int d = 0; d < batch_ndim; d++)
        out_shape[out_ndim++] = batch_shape[d];
    if (a->ndim > 1)
        out_shape[out_ndim++] = M;
    if (b->ndim > 1)
        out_shape[out_ndim++] = N;
    ct_tensor *out = ct__new(a->dtype, a->device, out_ndim, out_shape);
    if (!out)
        return NULL;

    if (gb.batch_ndim == 0 && ga.batch_ndim > 0) {
        fold_batch_into_rows(&ga);
        if (ga.batch_ndim == 0) {
            M = ga.rows;
            batch_ndim = 0;
        }
    }
    ka.data = ct__data(a);
    ka.row_stride = ga.row_stride;
    ka.col_stride = ga.col_stride;
    kb.data = ct__data(b);
    kb.row_stride = gb.row_stride;
    kb.col_stride = gb.col_stride;
    if (run_gemm(op, a, b, out, batch_ndim, batch_shape, M, N, K, &ka, &kb) != CT_OK) {
        ct_tensor_free(out);
        return NULL;
    }
    return out;
}

/* The product without autograd; checks shapes (operands already checked). */
static ct_tensor *matmul_forward(const char *op, const ct_tensor *a, const ct_tensor *b) {
    bool failed = false;
    ct_tensor *packed_a = packed_for_cuda(a, true, &failed);
    ct_tensor *packed_b = failed ? NULL : packed_for_cuda(b, false, &failed);
    ct_tensor *out = failed ? NULL : gemm_forward(op, packed_a ? packed_a : a, packed_b ? packed_b : b);
    ct_tensor_free(packed_a);
    ct_tensor_free(packed_b);
    return out;
}

/* ---- backward --------------------------------------------------------------------------
 * With a and b promoted to matrices (a 1-D a is (1, K), a 1-D b is (K, 1)) and g to the
 * matching (batch..., M, N): dA = g @ B^T and dB = A^T @ g, where the transposes are views
 * folded into the GEMM, then summed over the batch dims that were broadcast. */

static ct_status give(ct_node *node, ct_tensor **gin, int i, ct_tensor *g, int promoted_ndim,
                      const int64_t *promoted_shape) {
    ct_tensor *summed = g ? ct__sum_to_shape(g, promoted_ndim, promoted_shape) : NULL;
    gin[i] = summed ? ct_reshape(summed, node->in_shape[i], node->in_ndim[i]) : NULL;
    return gin[i] ? CT_OK : ct_last_error();
}

static ct_status matmul_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0), *b = ct__node_saved(node, 1);
    if (!a || !b)
        return ct_last_error();
    ct_tensor *g = gout[0];
    if (b->ndim == 1)
        g = ct_unsqueeze(g, -1);
    if (a->ndim == 1)
        g = g ? ct_unsqueeze(g, g->ndim - 1) : NULL;
    ct_tensor *a2 = a->ndim == 1 ? ct_unsqueeze(a, 0) : a;
    ct_tensor *b2 = b->ndim == 1 ? ct_unsqueeze(b, 1) : b;
    if (!g || !a2 || !b2)
        return ct_last_error();
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = give(node, gin, 0, ct_matmul(g, ct_transpose(b2, -1, -2)), a2->ndim, a2->shape);
    if (st != CT_OK || !node->needs_grad[1])
        return st;
    if (b2->ndim == 2 && a2->ndim > 2) {
        /* b was shared by every batch: one (K, B*M) x (B*M, N) product sums over them. */
        int64_t rows = ct__numel(a2->ndim - 1, a2->shape);
        ct_tensor *a_rows = ct_reshape(a2, (const int64_t[]){rows, a2->shape[a2->ndim - 1]}, 2);
        ct_tensor *g_rows = ct_reshape(g, (const int64_t[]){rows, g->shape[g->ndim - 1]}, 2);
        return give(node, gin, 1, ct_matmul(ct_transpose(a_rows, 0, 1), g_rows), b2->ndim, b2->shape);
    }
    return give(node, gin, 1, ct_matmul(ct_transpose(a2, -1, -2), g), b2->ndim, b2->shape);
}

static ct_tensor *record(const char *op, ct_tensor *out, const ct_tensor *a, const ct_tensor *b) {
    ct_node *node = ct__record(op, matmul_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node) {
        ct__node_save(node, a);
        ct__node_save(node, b);
    }
    return out;
}

ct_tensor *ct_matmul(const ct_tensor *a, const ct_tensor *b) {
    if (!check_operands("ct_matmul", a, b))
        return NULL;
    return record("ct_matmul", matmul_forward("ct_matmul", a, b), a, b);
}

ct_tensor *ct_bmm(const ct_tensor *a, const ct_tensor *b) {
    if (!check_operands("ct_bmm", a, b))
        return NULL;
    if (a->ndim != 3 || b->ndim != 3) {
        ct__set_error(CT_ERR_SHAPE, "ct_bmm: expected 3-D (B, M, K) and (B, K, N) tensors: a is %s, b is %s",
                      ct_shape_str(a), ct_shape_str(b));
        return NULL;
    }
    if (a->shape[0] != b->shape[0]) {
        ct__set_error(CT_ERR_SHAPE, "ct_bmm: batch sizes differ: a is %s, b is %s", ct_shape_str(a),
                      ct_shape_str(b));
        return NULL;
    }
    return record("ct_bmm", matmul_forward("ct_bmm", a, b), a, b);
}
