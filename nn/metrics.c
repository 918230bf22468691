/* Classification metrics on the host: accuracy, top-k, confusion matrix and report. */
#include "ctensor/metrics.h"
#include "runtime/internal.h"

#include <math.h>
#include <string.h>

struct ct_confusion {
    int k;
    int64_t *counts; /* k x k, [true][predicted] */
};

/* logits (N, C) and labels (N) as host arrays (float / int32); false with an error. */
static bool host_view(const char *op, const ct_tensor *logits, const ct_tensor *labels, float **lv, int32_t **yv,
                      int64_t *N, int64_t *C) {
    if (!ct__check(op, "logits", logits) || !ct__check(op, "labels", labels))
        return false;
    if (logits->ndim != 2 || labels->ndim != 1 || labels->shape[0] != logits->shape[0]) {
        ct__set_error(CT_ERR_SHAPE, "%s: logits must be (N, C) and labels (N); got %s and %s", op,
                      ct_shape_str(logits), ct_shape_str(labels));
        return false;
    }
    if (labels->dtype != CT_I32 || !ct_dtype_is_float(logits->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: need floating logits and I32 labels, got %s and %s", op,
                      ct_dtype_name(logits->dtype), ct_dtype_name(labels->dtype));
        return false;
    }
    *N = logits->shape[0];
    *C = logits->shape[1];
    *lv = malloc(sizeof(float) * (size_t)(*N * *C + 1));
    *yv = malloc(sizeof(int32_t) * (size_t)(*N + 1));
    ct_tensor *f = NULL;
    bool ok = *lv && *yv;
    ct_scope_begin();
    ct_no_grad_begin();
    if (ok) {
        f = ct_cast(logits, CT_F32);
        ok = f && ct_to_host(f, *lv, sizeof(float) * (size_t)(*N * *C)) == CT_OK &&
             ct_to_host(labels, *yv, sizeof(int32_t) * (size_t)*N) == CT_OK;
    }
    ct_no_grad_end();
    ct_scope_end();
    if (!ok) {
        if (ct_last_error() == CT_OK)
            ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        free(*lv);
        free(*yv);
        return false;
    }
    return true;
}

static int64_t argmax_row(const float *row, int64_t C) {
    int64_t best = 0;
    for (int64_t c = 1; c < C; c++)
        if (row[c] > row[best] || (row[c] != row[c] && row[best] == row[best]))
            best = c;
    return best;
}

int64_t ct_correct_count(const ct_tensor *logits, const ct_tensor *labels) {
    float *lv;
    int32_t *yv;
    int64_t N, C, correct = 0;
    if (!host_view("ct_correct_count", logits, labels, &lv, &yv, &N, &C))
        return -1;
    for (int64_t i = 0; i < N; i++)
        correct += argmax_row(lv + i * C, C) == yv[i];
    free(lv);
    free(yv);
    return correct;
}

double ct_topk_accuracy(const ct_tensor *logits, const ct_tensor *labels, int k) {
    float *lv;
    int32_t *yv;
    int64_t N, C, correct = 0;
    if (!host_view("ct_topk_accuracy", logits, labels, &lv, &yv, &N, &C))
        return NAN;
    if (k < 1 || k > C) {
        free(lv);
        free(yv);
        ct__set_error(CT_ERR_VALUE, "ct_topk_accuracy: k = %d must be in [1, %lld]", k, (long long)C);
        return NAN;
    }
    for (int64_t i = 0; i < N; i++) {
        const float *row = lv + i * C;
        if (yv[i] < 0 || yv[i] >= C)
            continue;
        float target = row[yv[i]];
        int64_t above = 0;
        for (int64_t c = 0; c < C; c++)
            above += row[c] > target;
        correct += above < k;
    }
    free(lv);
    free(yv);
    return N ? (double)correct / (double)N : NAN;
}

ct_confusion *ct_confusion_create(int num_classes) {
    if (num_classes < 1 || num_classes > 100000) {
        ct__set_error(CT_ERR_VALUE, "ct_confusion_create: num_classes %d out of range", num_classes);
        return NULL;
    }
    ct_confusion *cm = calloc(1, sizeof *cm);
    if (cm)
        cm->counts = calloc((size_t)num_classes * (size_t)num_classes, sizeof(int64_t));
    if (!cm || !cm->counts) {
        free(cm);
        ct__set_error(CT_ERR_MEMORY, "ct_confusion_create: out of host memory");
        return NULL;
    }
    cm->k = num_classes;
    return cm;
}

void ct_confusion_free(ct_confusion *cm) {
    if (cm)
        free(cm->counts);
    free(cm);
}

void ct_confusion_reset(ct_confusion *cm) {
    if (cm)
        memset(cm->counts, 0, sizeof(int64_t) * (size_t)cm->k * (size_t)cm->k);
}

ct_status ct_confusion_update(ct_confusion *cm, const ct_tensor *logits, const ct_tensor *labels) {
    if (!cm)
        return ct__null_arg("ct_confusion_update", "cm");
    float *lv;
    int32_t *yv;
    int64_t N, C;
    if (!host_view("ct_confusion_update", logits, labels, &lv, &yv, &N, &C))
        return ct_last_error();
    ct_status st = CT_OK;
    if (C != cm->k)
        st = ct__set_error(CT_ERR_SHAPE, "ct_confusion_update: logits have %lld classes, the matrix %d", (long long)C,
                           cm->k);
    for (int64_t i = 0; i < N && st == CT_OK; i++) {
        if (yv[i] < 0 || yv[i] >= cm->k) {
            st = ct__set_error(CT_ERR_DIM, "ct_confusion_update: label %d out of range [0, %d)", yv[i], cm->k);
            break;
        }
    }
    for (int64_t i = 0; i < N && st == CT_OK; i++)
        cm->counts[(int64_t)yv[i] * cm->k + argmax_row(lv + i * C, C)]++;
    free(lv);
    free(yv);
    return st;
}

int64_t ct_confusion_count(const ct_confusion *cm, int t, int p) {
    if (!cm || t < 0 || p < 0 || t >= cm->k || p >= cm->k)
        return -1;
    return cm->counts[(int64_t)t * cm->k + p];
}

static int64_t row_sum(const ct_confusion *cm, int t) {
    int64_t s = 0;
    for (int p = 0; p < cm->k; p++)
        s += cm->counts[(int64_t)t * cm->k + p];
    return s;
}
static int64_t col_sum(const ct_confusion *cm, int p) {
    int64_t s = 0;
    for (int t = 0; t < cm->k; t++)
        s += cm->counts[(int64_t)t * cm->k + p];
    return s;
}

double ct_confusion_accuracy(const ct_confusion *cm) {
    if (!cm)
        return NAN;
    int64_t correct = 0, total = 0;
    for (int c = 0; c < cm->k; c++) {
        correct += cm->counts[(int64_t)c * cm->k + c];
        total += row_sum(cm, c);
    }
    return total ? (double)correct / (double)total : NAN;
}

double ct_confusion_precision(const ct_confusion *cm, int c) {
    if (!cm || c < 0 || c >= cm->k)
        return NAN;
    int64_t predicted = col_sum(cm, c);
    return predicted ? (double)cm->counts[(int64_t)c * cm->k + c] / (double)predicted : 0.0;
}

double ct_confusion_recall(const ct_confusion *cm, int c) {
    if (!cm || c < 0 || c >= cm->k)
        return NAN;
    int64_t actual = row_sum(cm, c);
    return actual ? (double)cm->counts[(int64_t)c * cm->k + c] / (double)actual : 0.0;
}

double ct_confusion_f1(const ct_confusion *cm, int c) {
    double p = ct_confusion_precision(cm, c), r = ct_confusion_recall(cm, c);
    if (isnan(p) || isnan(r))
        return NAN;
    return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}

double ct_confusion_macro_f1(const ct_confusion *cm) {
    if (!cm)
        return NAN;
    double s = 0;
    for (int c = 0; c < cm->k; c++)
        s += ct_confusion_f1(cm, c);
    return s / cm->k;
}

void ct_confusion_print(const ct_confusion *cm, const char *const *names, FILE *out) {
    if (!cm)
        return;
    if (!out)
        out = stdout;
    char label[32];
    fprintf(out, "confusion matrix (rows: true class, columns: predicted)\n%12s", "");
    for (int p = 0; p < cm->k; p++)
        fprintf(out, " %6d", p);
    fprintf(out, "\n");
    for (int t = 0; t < cm->k; t++) {
        snprintf(label, sizeof label, "%d %s", t, names ? names[t] : "");
        fprintf(out, "%-12.12s", label);
        for (int p = 0; p < cm->k; p++)
            fprintf(out, " %6lld", (long long)cm->counts[(int64_t)t * cm->k + p]);
        fprintf(out, "\n");
    }
    fprintf(out, "\n%-14s %9s %9s %9s %8s\n", "class", "precision", "recall", "f1", "support");
    double sp = 0, sr = 0;
    for (int c = 0; c < cm->k; c++) {
        snprintf(label, sizeof label, "%d %s", c, names ? names[c] : "");
        double p = ct_confusion_precision(cm, c), r = ct_confusion_recall(cm, c);
        sp += p;
        sr += r;
        fprintf(out, "%-14.14s %9.4f %9.4f %9.4f %8lld\n", label, p, r, ct_confusion_f1(cm, c),
                (long long)row_sum(cm, c));
    }
    fprintf(out, "%-14s %9.4f %9.4f %9.4f\n%-14s %29.4f\n", "macro avg", sp / cm->k, sr / cm->k,
            ct_confusion_macro_f1(cm), "accuracy", ct_confusion_accuracy(cm));
}
