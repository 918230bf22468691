/* Module checkpoints: a module's state as a safetensors file, and loading it back with
 * every mismatch reported. */
#include "ctensor/checkpoint.h"
#include "runtime/internal.h"

#include <stdarg.h>
#include <string.h>

ct_status ct_module_save(const ct_module *m, const char *path, const char *const *meta_keys,
                         const char *const *meta_values, int n_meta) {
    ct_named_tensors *state = ct_module_state(m);
    if (!state)
        return ct_last_error();
    ct_status st = ct_safetensors_save(path, (const char *const *)state->names, state->tensors, state->count,
                                       meta_keys, meta_values, n_meta);
    ct_named_tensors_free(state);
    return st;
}

/* Append a line to the mismatch report (truncated quietly when long). */
static void note(char *buf, size_t cap, size_t *used, int *count, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void note(char *buf, size_t cap, size_t *used, int *count, const char *fmt, ...) {
    (*count)++;
    if (*used + 8 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *used, cap - *used, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used += (size_t)n < cap - *used ? (size_t)n : cap - *used - 1;
}

/* The file's tensor named name_prefix + name, or NULL: compared in place, since a key buffer
 * of fixed size would cut a long module path and miss the tensor saved under it. */
static const ct_tensor *find_prefixed(const ct_safetensors *f, const char *fp, size_t fpl, const char *name) {
    for (int k = 0; k < ct_safetensors_count(f); k++) {
        const char *key = ct_safetensors_name(f, k);
        if (strncmp(key, fp, fpl) == 0 && strcmp(key + fpl, name) == 0)
            return ct_safetensors_get(f, key);
    }
    return NULL;
}

ct_status ct_module_load_from(ct_module *m, const ct_safetensors *f, const char *name_prefix,
                              const ct_load_opts *opts_in, ct_load_report *report) {
    const char *op = "ct_module_load";
    if (!m || !f)
        return ct__null_arg(op, m ? "file" : "module");
    ct_load_opts opts = opts_in ? *opts_in : CT_LOAD_OPTS_STRICT;
    const char *fp = name_prefix ? name_prefix : "";
    size_t fpl = strlen(fp), opl = opts.prefix ? strlen(opts.prefix) : 0;
    ct_named_tensors *state = ct_module_state(m);
    if (!state)
        return ct_last_error();
    char problems[2048];
    size_t used = 0;
    int n_problems = 0, missing = 0, unexpected = 0, loaded = 0;
    problems[0] = '\0';
    /* First pass: check everything, change nothing. */
    for (int i = 0; i < state->count; i++) {
        if (opl && strncmp(state->names[i], opts.prefix, opl) != 0)
            continue;
        const ct_tensor *src = find_prefixed(f, fp, fpl, state->names[i]);
        const ct_tensor *dst = state->tensors[i];
        if (!src) {
            missing++;
            if (opts.strict)
                note(problems, sizeof problems, &used, &n_problems, "; missing %s", state->names[i]);
            continue;
        }
        bool same_shape = src->ndim == dst->ndim && !memcmp(src->shape, dst->shape, sizeof(int64_t) * (size_t)dst->ndim);
        if (!same_shape)
            note(problems, sizeof problems, &used, &n_problems, "; %s: shape %s in the file, %s in the module",
                 state->names[i], ct_shape_str(src), ct_shape_str(dst));
        else if (src->dtype != dst->dtype)
            note(problems, sizeof problems, &used, &n_problems, "; %s: dtype %s in the file, %s in the module",
                 state->names[i], ct_dtype_name(src->dtype), ct_dtype_name(dst->dtype));
    }
    for (int k = 0; k < ct_safetensors_count(f); k++) {
        const char *name = ct_safetensors_name(f, k);
        if (strncmp(name, fp, fpl) != 0)
            continue; /* another section of the file (optimizer state...) */
        if (opl && strncmp(name + fpl, opts.prefix, opl) != 0)
            continue;
        if (!ct_module_find(m, name + fpl)) {
            unexpected++;
            if (opts.strict)
                note(problems, sizeof problems, &used, &n_problems, "; unexpected %s", name + fpl);
        }
    }
    ct_status st = CT_OK;
    if (n_problems > 0) {
        st = ct__set_error(CT_ERR_VALUE, "%s: %d mismatch%s between the file and the module (nothing loaded)%s", op,
                           n_problems, n_problems == 1 ? "" : "es", problems);
    } else {
        ct_no_grad_begin();
        for (int i = 0; i < state->count && st == CT_OK; i++) {
            if (opl && strncmp(state->names[i], opts.prefix, opl) != 0)
                continue;
            const ct_tensor *src = find_prefixed(f, fp, fpl, state->names[i]);
            if (!src)
                continue;
            st = ct_copy_(state->tensors[i], src);
            loaded += st == CT_OK;
        }
        ct_no_grad_end();
    }
    ct_named_tensors_free(state);
    if (report)
        *report = (ct_load_report){loaded, missing, unexpected};
    return st;
}

ct_status ct_module_load(ct_module *m, const char *path, const ct_load_opts *opts, ct_load_report *report) {
    ct_safetensors *f = ct_safetensors_load(path);
    if (!f)
        return ct_last_error();
    ct_status st = ct_module_load_from(m, f, NULL, opts, report);
    ct_safetensors_free(f);
    return st;
}
