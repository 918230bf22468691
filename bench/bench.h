/* ctbench — the pieces shared by every section: options, timing, statistics and the
 * result table (aligned text on stdout, JSON Lines with --json).
 *
 * A section measures a few things and reports each as one row. A row carries the time per
 * call (best and median over the repetitions), the figure derived from it (GB/s, GFLOP/s
 * or microseconds), and optionally a comparison with a reference measured in the same run
 * (memcpy for bandwidth, a direct cblas_sgemm for matmul) and the target it is held to. */
#ifndef CT_BENCH_H
#define CT_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ctensor/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bench_opts {
    bool quick;        /* small sizes and few repetitions: a smoke run */
    const char *device; /* "cpu" or "cuda" */
    const char *only;  /* comma-separated section names; NULL runs all */
    FILE *json;        /* JSON Lines output, or NULL */
    int reps;          /* repetitions of each large measurement; 0 for the default */
} bench_opts;

typedef struct bench_row {
    const char *section; /* "memory", "elementwise", "matmul", "overhead" */
    const char *name;    /* "ct_add", "cblas_sgemm", ... */
    char size[32];       /* "64Mi f32", "1024^3" */
    int threads;
    int reps;
    double best_s, median_s; /* seconds per call */
    double value;            /* the row's figure, in `unit` */
    const char *unit;        /* "GB/s", "GFLOP/s", "us" */
    const char *ref_name;    /* what `ratio` compares with ("memcpy"); NULL when nothing */
    double ratio;            /* value / reference value: the median of the ratios measured in
                                each round (the calls are interleaved with the reference's) */
    double ratio_of_best;    /* the same from the best times (JSON only) */
    const char *target;      /* the goal, as text ("ratio >= 0.90"); NULL when none */
    int target_met;          /* 1 met, 0 missed, -1 no target */
} bench_row;

/* Monotonic wall-clock time in seconds. */
double bench_now(void);

typedef struct bench_stats {
    double best, median;
} bench_stats;
/* Best (smallest) and median of n samples (sorts them in place). */
bench_stats bench_stats_of(double *samples, int n);
/* The median over i of ref_times[i] / times[i] (neither array is modified). */
double bench_paired_ratio(const double *ref_times, const double *times, int n);

bool bench_section_enabled(const bench_opts *o, const char *section);
/* Print one row of the table (and its JSON line). */
void bench_emit(const bench_opts *o, const bench_row *row);
/* A line of text between rows ("# ..."); also a JSON "note" line. */
void bench_note(const bench_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The CPU sections. Returns 0, or 1 after printing what failed. */
int bench_cpu(const bench_opts *o);

/* The "train" section (bench_train.c): the main job's CNN on `device`. Returns 0 or 1. */
int bench_train(const bench_opts *o, ct_device device);

/* The CUDA sections (bench_cuda.cu, CUDA builds only). Returns 0, or 1 after printing what
 * failed (no usable GPU included). */
int bench_cuda_sections(const bench_opts *o);

#ifdef __cplusplus
}
#endif
#endif
