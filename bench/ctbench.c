/* ctbench: benchmarks of ctensor against the machine (memcpy bandwidth, direct BLAS).
 *
 *   ctbench [--device cpu|cuda] [--quick] [--only SECTIONS] [--reps N] [--json FILE]
 *
 * Prints an aligned table on stdout; with --json, also one JSON object per line (a "meta"
 * line describing the run, then one "row" per measurement). Throughput figures are
 * computed from the best repetition, per-op overheads from the median. */
#include "bench/bench.h"

#include "ctensor/ctensor.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bench_stats bench_stats_of(double *samples, int n) {
    qsort(samples, (size_t)n, sizeof *samples, cmp_double);
    bench_stats s = {samples[0], n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2])};
    return s;
}

double bench_paired_ratio(const double *ref_times, const double *times, int n) {
    double ratios[256];
    if (n > 256)
        n = 256;
    for (int i = 0; i < n; i++)
        ratios[i] = ref_times[i] / times[i];
    return bench_stats_of(ratios, n).median;
}

bool bench_section_enabled(const bench_opts *o, const char *section) {
    if (!o->only)
        return true;
    size_t len = strlen(section);
    for (const char *p = o->only; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, section, n) == 0)
            return true;
        p += n + (end ? 1 : 0);
    }
    return false;
}

/* A time in the unit that keeps three or four significant digits in view. */
static const char *fmt_time(char *buf, size_t cap, double s) {
    if (s >= 1.0)
        snprintf(buf, cap, "%.3f s", s);
    else if (s >= 1e-3)
        snprintf(buf, cap, "%.2f ms", s * 1e3);
    else
        snprintf(buf, cap, "%.3f us", s * 1e6);
    return buf;
}

#define TABLE_FORMAT "%-12s %-30s %-10s %3s %6s %11s %11s %10s %-8s %-20s %s\n"

static void print_header(void) {
    printf(TABLE_FORMAT, "section", "benchmark", "size", "thr", "reps", "best", "median", "value", "unit",
           "vs reference", "target");
    for (int i = 0; i < 140; i++)
        putchar('-');
    putchar('\n');
}

void bench_emit(const bench_opts *o, const bench_row *r) {
    char best[24], median[24], value[24], threads[8], reps[16], vs[40] = "", target[48] = "";
    snprintf(value, sizeof value, r->value >= 100 ? "%.1f" : "%.3f", r->value);
    snprintf(threads, sizeof threads, "%d", r->threads);
    snprintf(reps, sizeof reps, "%d", r->reps);
    if (r->ref_name)
        snprintf(vs, sizeof vs, "%5.1f%% of %s", 100.0 * r->ratio, r->ref_name);
    if (r->target)
        snprintf(target, sizeof target, "%s  %s", r->target, r->target_met ? "ok" : "MISSED");
    printf(TABLE_FORMAT, r->section, r->name, r->size, threads, reps, fmt_time(best, sizeof best, r->best_s),
           fmt_time(median, sizeof median, r->median_s), value, r->unit, vs, target);
    fflush(stdout);
    if (!o->json)
        return;
    fprintf(o->json,
            "{\"type\":\"row\",\"device\":\"%s\",\"section\":\"%s\",\"name\":\"%s\",\"size\":\"%s\","
            "\"threads\":%d,\"reps\":%d,\"best_s\":%.9g,\"median_s\":%.9g,\"value\":%.6g,\"unit\":\"%s\"",
            o->device, r->section, r->name, r->size, r->threads, r->reps, r->best_s, r->median_s, r->value, r->unit);
    if (r->ref_name)
        fprintf(o->json, ",\"ref\":\"%s\",\"ratio\":%.6g,\"ratio_of_best\":%.6g", r->ref_name, r->ratio,
                r->ratio_of_best);
    if (r->target)
        fprintf(o->json, ",\"target\":\"%s\",\"target_met\":%s", r->target, r->target_met ? "true" : "false");
    fprintf(o->json, "}\n");
    fflush(o->json);
}

void bench_note(const bench_opts *o, const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    printf("# %s\n", text);
    if (o->json) {
        fprintf(o->json, "{\"type\":\"note\",\"device\":\"%s\",\"text\":\"", o->device);
        for (const char *p = text; *p; p++)
            fprintf(o->json, (*p == '"' || *p == '\\') ? "\\%c" : "%c", *p);
        fprintf(o->json, "\"}\n");
    }
}

/* The "model name" line of /proc/cpuinfo, or "unknown". */
static void cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            colon += 1 + strspn(colon + 1, " \t");
            colon[strcspn(colon, "\n")] = 0;
            snprintf(out, cap, "%s", colon);
            break;
        }
    }
    fclose(f);
}

static void usage(FILE *to) {
    fprintf(to, "usage: ctbench [--device cpu|cuda] [--quick] [--only SECTIONS] [--reps N] [--json FILE]\n"
                "  --device cpu|cuda the backend to measure (cuda: the first GPU; needs a CUDA build)\n"
                "  --quick           small sizes and few repetitions (a smoke run, a few seconds)\n"
                "  --only LIST       comma-separated sections: memory,elementwise,matmul,overhead,train\n"
                "  --reps N          repetitions of each large measurement (default 10; 3 with --quick)\n"
                "  --json FILE       also write JSON Lines to FILE\n"
                "Threads: OpenMP's default (OMP_NUM_THREADS) for ctensor and the memcpy reference;\n"
                "OpenBLAS's own (OPENBLAS_NUM_THREADS) for GEMM.\n");
}

/* The value of an option given as "--name value" or "--name=value"; NULL when `arg` is
 * not that option. Advances *i past a separate value. */
static const char *option_value(int argc, char **argv, int *i, const char *name) {
    size_t len = strlen(name);
    if (strncmp(argv[*i], name, len) != 0)
        return NULL;
    if (argv[*i][len] == '=')
        return argv[*i] + len + 1;
    if (argv[*i][len] != 0)
        return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "ctbench: %s needs a value\n", name);
        exit(2);
    }
    return argv[++*i];
}

int main(int argc, char **argv) {
    bench_opts o = {.device = "cpu"};
    const char *json_path = NULL, *v;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            o.quick = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((v = option_value(argc, argv, &i, "--device"))) {
            o.device = v;
        } else if ((v = option_value(argc, argv, &i, "--only"))) {
            o.only = v;
        } else if ((v = option_value(argc, argv, &i, "--json"))) {
            json_path = v;
        } else if ((v = option_value(argc, argv, &i, "--reps"))) {
            o.reps = atoi(v);
            if (o.reps < 1) {
                fprintf(stderr, "ctbench: --reps must be a positive integer, not '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "ctbench: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    bool on_cuda = strcmp(o.device, "cuda") == 0;
    if (strcmp(o.device, "cpu") != 0 && !on_cuda) {
        fprintf(stderr, "ctbench: --device must be cpu or cuda, not '%s'\n", o.device);
        return 2;
    }
#ifndef CT_HAVE_CUDA
    if (on_cuda) {
        fprintf(stderr, "ctbench: --device cuda: this ctbench was built without CUDA (configure with -DCT_CUDA=ON)\n");
        return 2;
    }
#endif
    if (on_cuda && !ct_cuda_is_available()) {
        fprintf(stderr, "ctbench: --device cuda: no usable CUDA device on this machine\n");
        return 1;
    }
    if (json_path && !(o.json = fopen(json_path, "w"))) {
        fprintf(stderr, "ctbench: cannot write %s\n", json_path);
        return 2;
    }

    char model[128];
    cpu_model(model, sizeof model);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    const char *wait_policy = getenv("OMP_WAIT_POLICY");
    printf("ctbench %d.%d.%d  %s  device %s  cpu \"%s\"  OpenMP threads %d  OpenBLAS threads %d%s\n",
           CT_VERSION_MAJOR, CT_VERSION_MINOR, CT_VERSION_PATCH, date, o.device, model, omp_get_max_threads(),
           openblas_get_num_threads(), o.quick ? "  (quick)" : "");
    if (o.json)
        fprintf(o.json,
                "{\"type\":\"meta\",\"device\":\"%s\",\"date\":\"%s\",\"cpu\":\"%s\",\"omp_threads\":%d,"
                "\"openblas_threads\":%d,\"omp_wait_policy\":\"%s\",\"quick\":%s}\n",
                o.device, date, model, omp_get_max_threads(), openblas_get_num_threads(),
                wait_policy ? wait_policy : "", o.quick ? "true" : "false");
    print_header();

    int rc = 0;
#ifdef CT_HAVE_CUDA
    if (on_cuda)
        rc = bench_cuda_sections(&o);
#endif
    if (!on_cuda) {
        rc = bench_cpu(&o);
        if (bench_section_enabled(&o, "train"))
            rc |= bench_train(&o, CT_CPU);
    }
    if (!on_cuda) /* the CUDA sections print their own legend */
        printf("Throughput (GB/s, GFLOP/s) is from the best repetition; overheads (us) are medians.\n"
               "GB/s counts bytes read + written: memcpy 2N, add/mul 3N, relu 2N, sum N (x 4 bytes).\n"
               "vs reference: median over rounds of the ratio to the reference measured in the same round.\n"
           "* ct_matmul right after a ct_add on OpenMP threads (128 Ki elements): GFLOP/s from the median.\n%s",
               o.quick ? "Quick run: sizes are too small for the targets, which are not checked.\n" : "");
    if (o.json)
        fclose(o.json);
    return rc;
}
