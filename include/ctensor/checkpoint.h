/* ctensor — checkpoints as safetensors files.
 *
 * The format (readable by PyTorch's and Hugging Face's safetensors): 8 bytes holding the
 * little-endian length N of a JSON header, the header, then the raw little-endian tensor
 * bytes. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
 * end]} (offsets relative to the start of the data), plus an optional "__metadata__"
 * object of string values. Files are written to "<path>.tmp" and renamed into place, so a
 * crash never leaves a half-written checkpoint under the real name.
 *
 * Loading validates everything: header length against the file size, the JSON, known
 * dtypes, shapes against offsets, offsets inside the data and covering it without gaps or
 * overlaps. Any problem is a CT_ERR_IO error naming the file and the entry.
 */
#ifndef CTENSOR_CHECKPOINT_H
#define CTENSOR_CHECKPOINT_H

#include "nn.h"
#include "optim.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- raw safetensors files ---------------------------------------------------------- */

/* Write n named tensors (any device; copied to the host) and n_meta metadata pairs. */
ct_status ct_safetensors_save(const char *path, const char *const *names, ct_tensor *const *tensors, int n,
                              const char *const *meta_keys, const char *const *meta_values, int n_meta);

typedef struct ct_safetensors ct_safetensors;
/* Read a whole file into CPU tensors. NULL with CT_ERR_IO on any problem. */
ct_safetensors *ct_safetensors_load(const char *path);
int ct_safetensors_count(const ct_safetensors *f);
const char *ct_safetensors_name(const ct_safetensors *f, int i);
/* Borrowed from the file object (valid until ct_safetensors_free); NULL when absent. */
ct_tensor *ct_safetensors_get(const ct_safetensors *f, const char *name);
/* A metadata value, NULL when absent. */
const char *ct_safetensors_metadata(const ct_safetensors *f, const char *key);
void ct_safetensors_free(ct_safetensors *f);

/* ---- module checkpoints --------------------------------------------------------------- */

/* Save a module's parameters and buffers by their dotted paths ("conv1.weight"), plus
 * metadata pairs (e.g. {"epoch", "3"}). */
ct_status ct_module_save(const ct_module *m, const char *path, const char *const *meta_keys,
                         const char *const *meta_values, int n_meta);

typedef struct ct_load_opts {
    /* strict: every module tensor must be in the file and every file tensor in the module.
     * Otherwise (partial loading, for transfer learning) missing and unexpected names are
     * skipped and counted. Shape and dtype mismatches are always errors. */
    bool strict;
    /* Only load entries whose path starts with this prefix (NULL = all). */
    const char *prefix;
} ct_load_opts;
#define CT_LOAD_OPTS_STRICT ((ct_load_opts){true, NULL})
#define CT_LOAD_OPTS_PARTIAL ((ct_load_opts){false, NULL})

typedef struct ct_load_report {
    int loaded, missing, unexpected;
} ct_load_report;

/* Load values into the module's existing tensors (copied to their device and dtype is
 * required equal). On any mismatch nothing is changed and the error message lists every
 * mismatch (names, shapes, dtypes). `report` may be NULL. */
ct_status ct_module_load(ct_module *m, const char *path, const ct_load_opts *opts, ct_load_report *report);
/* The same from an already loaded file (e.g. one that also holds optimizer state). */
ct_status ct_module_load_from(ct_module *m, const ct_safetensors *f, const char *name_prefix, const ct_load_opts *opts,
                              ct_load_report *report);

/* ---- training checkpoints ------------------------------------------------------------- */

/* One file for resuming training: the model's state under "model.<path>", the optimizer's
 * state tensors under "optim.<name>" (optim may be NULL), and in the metadata the
 * optimizer's hyper-parameters, the schedule's state (schedule may be NULL), the epoch and
 * `meta` pairs. Written atomically like every safetensors file. */
ct_status ct_checkpoint_save(const char *path, const ct_module *model, const ct_optim *optim,
                             const ct_lr_schedule *schedule, int64_t epoch);
/* Restore what ct_checkpoint_save wrote (strictly: names, shapes and dtypes must match;
 * every mismatch is listed). `epoch` (may be NULL) receives the saved epoch. */
ct_status ct_checkpoint_load(const char *path, ct_module *model, ct_optim *optim, ct_lr_schedule *schedule,
                             int64_t *epoch);

#ifdef __cplusplus
}
#endif
#endif
