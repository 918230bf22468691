/* Training checkpoints: model, optimizer and schedule state with the epoch in one file. */
#include "ctensor/checkpoint.h"
#include "runtime/internal.h"

#include <errno.h>
#include <string.h>

#define MAX_META 64

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s", a, b);
    return s;
}

ct_status ct_checkpoint_save(const char *path, const ct_module *model, const ct_optim *optim,
                             const ct_lr_schedule *schedule, int64_t epoch) {
    if (!model)
        return ct__null_arg("ct_checkpoint_save", "model");
    ct_named_tensors *state = ct_module_state(model);
    ct_optim_state_dict *os = optim ? ct_optim_state(optim) : NULL;
    if (!state || (optim && !os)) {
        ct_named_tensors_free(state);
        ct_optim_state_dict_free(os);
        return ct_last_error();
    }
    int n = state->count + (os ? os->count : 0);
    char **names = calloc((size_t)n + 1, sizeof *names);
    ct_tensor **tensors = calloc((size_t)n + 1, sizeof *tensors);
    char *keys[MAX_META], *values[MAX_META];
    int n_meta = 0;
    bool ok = names && tensors;
    for (int i = 0; ok && i < state->count; i++) {
        names[i] = join("model.", state->names[i]);
        tensors[i] = state->tensors[i];
        ok = names[i] != NULL;
    }
    for (int i = 0; ok && os && i < os->count; i++) {
        names[state->count + i] = join("optim.", os->names[i]);
        tensors[state->count + i] = os->tensors[i];
        ok = names[state->count + i] != NULL;
    }
    char number[64];
    snprintf(number, sizeof number, "%lld", (long long)epoch);
    keys[n_meta] = strdup("epoch");
    values[n_meta++] = strdup(number);
    for (int i = 0; ok && os && i < os->num_hparams && n_meta < MAX_META; i++) {
        snprintf(number, sizeof number, "%.17g", os->hparam_values[i]);
        keys[n_meta] = join("optim.hparam.", os->hparam_names[i]);
        values[n_meta++] = strdup(number);
    }
    if (schedule) {
        const char *snames[CT_SCHEDULE_MAX_STATE];
        double svals[CT_SCHEDULE_MAX_STATE];
        int ns = ct_schedule_state(schedule, snames, svals, CT_SCHEDULE_MAX_STATE);
        for (int i = 0; i < ns && n_meta < MAX_META; i++) {
            snprintf(number, sizeof number, "%.17g", svals[i]);
            keys[n_meta] = join("schedule.", snames[i]);
            values[n_meta++] = strdup(number);
        }
    }
    for (int i = 0; i < n_meta; i++)
        ok = ok && keys[i] && values[i];
    ct_status st = ok ? ct_safetensors_save(path, (const char *const *)names, tensors, n, (const char *const *)keys,
                                            (const char *const *)values, n_meta)
                      : ct__set_error(CT_ERR_MEMORY, "ct_checkpoint_save: out of host memory");
    for (int i = 0; i < n_meta; i++) {
        free(keys[i]);
        free(values[i]);
    }
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(tensors);
    ct_named_tensors_free(state);
    ct_optim_state_dict_free(os);
    return st;
}

static bool parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return s && *s && !*end && errno == 0;
}

/* A metadata value that should hold a number and does not: an error rather than a value
 * silently kept. */
static ct_status not_a_number(const char *path, const char *key, const char *text) {
    return ct__set_error(CT_ERR_IO, "ct_checkpoint_load: %s: %s = \"%.40s\" in its metadata is not a number", path,
                         key, text);
}

/* The epoch, as ct_checkpoint_save writes it ("%lld"): converting a double such as 1e300
 * or nan to int64_t would be undefined. */
static bool parse_int64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno != 0)
        return false;
    *out = v;
    return true;
}

ct_status ct_checkpoint_load(const char *path, ct_module *model, ct_optim *optim, ct_lr_schedule *schedule,
                             int64_t *epoch) {
    const char *op = "ct_checkpoint_load";
    if (!model)
        return ct__null_arg(op, "model");
    ct_safetensors *f = ct_safetensors_load(path);
    if (!f)
        return ct_last_error();
    ct_load_opts strict = CT_LOAD_OPTS_STRICT;
    ct_status st = ct_module_load_from(model, f, "model.", &strict, NULL);
    if (st == CT_OK && optim) {
        int n = 0, total = ct_safetensors_count(f);
        const char **names = calloc((size_t)total + 1, sizeof *names);
        ct_tensor **tensors = calloc((size_t)total + 1, sizeof *tensors);
        if (!names || !tensors)
            st = ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        for (int i = 0; st == CT_OK && i < total; i++) {
            const char *name = ct_safetensors_name(f, i);
            if (strncmp(name, "optim.", 6) == 0) {
                names[n] = name + 6;
                tensors[n++] = ct_safetensors_get(f, name);
            }
        }
        if (st == CT_OK)
            st = ct_optim_load_state(optim, names, tensors, n);
        free(names);
        free(tensors);
        /* hyper-parameters: every "optim.hparam.<name>" the optimizer knows */
        ct_optim_state_dict *os = st == CT_OK ? ct_optim_state(optim) : NULL;
        for (int i = 0; os && i < os->num_hparams && st == CT_OK; i++) {
            char key[128];
            snprintf(key, sizeof key, "optim.hparam.%s", os->hparam_names[i]);
            const char *text = ct_safetensors_metadata(f, key);
            double v;
            if (text && !parse_double(text, &v))
                st = not_a_number(path, key, text);
            else if (text)
                st = ct_optim_set_hparam(optim, os->hparam_names[i], v);
        }
        ct_optim_state_dict_free(os);
    }
    if (st == CT_OK && schedule) {
        const char *snames[CT_SCHEDULE_MAX_STATE], *loaded[CT_SCHEDULE_MAX_STATE];
        double svals[CT_SCHEDULE_MAX_STATE], lvals[CT_SCHEDULE_MAX_STATE];
        int ns = ct_schedule_state(schedule, snames, svals, CT_SCHEDULE_MAX_STATE), nl = 0;
        for (int i = 0; i < ns && st == CT_OK; i++) {
            char key[128];
            snprintf(key, sizeof key, "schedule.%s", snames[i]);
            const char *text = ct_safetensors_metadata(f, key);
            if (text && !parse_double(text, &lvals[nl]))
                st = not_a_number(path, key, text);
            else if (text)
                loaded[nl++] = snames[i];
        }
        if (st == CT_OK)
            st = ct_schedule_load_state(schedule, loaded, lvals, nl);
    }
    if (st == CT_OK && epoch) {
        const char *text = ct_safetensors_metadata(f, "epoch");
        int64_t v;
        if (!text)
            st = ct__set_error(CT_ERR_IO, "%s: %s has no epoch in its metadata (not a training checkpoint?)", op,
                               path);
        else if (!parse_int64(text, &v))
            st = ct__set_error(CT_ERR_IO, "%s: %s: the epoch \"%.40s\" in its metadata is not a 64-bit integer", op,
                               path, text);
        else
            *epoch = v;
    }
    ct_safetensors_free(f);
    return st;
}
