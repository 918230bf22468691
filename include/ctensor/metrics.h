/* ctensor — classification metrics: accuracy, top-k accuracy, and a confusion matrix with
 * per-class precision, recall and F1 and their macro averages. */
#ifndef CTENSOR_METRICS_H
#define CTENSOR_METRICS_H

#include <stdio.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of rows of logits (N, C) whose arg-max equals the I32 label (N); -1 on error. */
int64_t ct_correct_count(const ct_tensor *logits, const ct_tensor *labels);
/* Fraction of rows whose label is among the k highest logits (ties count as correct);
 * NaN on error. k = 1 is plain accuracy. */
double ct_topk_accuracy(const ct_tensor *logits, const ct_tensor *labels, int k);

typedef struct ct_confusion ct_confusion;
ct_confusion *ct_confusion_create(int num_classes);
void ct_confusion_free(ct_confusion *cm);
void ct_confusion_reset(ct_confusion *cm);
/* Add a batch: arg-max of logits (N, C) against labels (N). */
ct_status ct_confusion_update(ct_confusion *cm, const ct_tensor *logits, const ct_tensor *labels);
/* count[true][predicted] */
int64_t ct_confusion_count(const ct_confusion *cm, int true_class, int predicted_class);
double ct_confusion_accuracy(const ct_confusion *cm);
/* Per class (0 when undefined, as scikit-learn's zero_division=0). */
double ct_confusion_precision(const ct_confusion *cm, int c);
double ct_confusion_recall(const ct_confusion *cm, int c);
double ct_confusion_f1(const ct_confusion *cm, int c);
double ct_confusion_macro_f1(const ct_confusion *cm);
/* Print the matrix as a table and a per-class report (names may be NULL). */
void ct_confusion_print(const ct_confusion *cm, const char *const *class_names, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
