/* Helpers shared by the libFuzzer harnesses: a path that holds the input, for the parsers
 * that only take a path, and the checks that every parser must pass on every input. */
#ifndef CT_FUZZ_COMMON_H
#define CT_FUZZ_COMMON_H

#include "ctensor/ctensor.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The input as a file: one memfd per process, rewritten for each input; its path goes
 * through /proc so that fopen and gzopen open it from the start. */
static inline const char *fuzz_input_path(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("ct_fuzz_input", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("writing the fuzz input");
        abort();
    }
    return path;
}

/* A refusal must say why: a status and a message. Aborting turns a silent failure into a
 * finding. */
static inline void fuzz_expect_error(const char *what) {
    if (ct_last_error() == CT_OK || !ct_last_error_message() || !*ct_last_error_message()) {
        fprintf(stderr, "%s failed without an error message\n", what);
        abort();
    }
    ct_clear_error();
}

/* Every tensor made for an input is freed by the time the input is done. */
static inline void fuzz_expect_no_live_tensors(int64_t before, const char *what) {
    if (ct_live_tensors() != before) {
        fprintf(stderr, "%s leaked %lld tensors\n", what, (long long)(ct_live_tensors() - before));
        abort();
    }
}

#endif
