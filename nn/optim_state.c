/* Optimizer state dicts: listing the state for a checkpoint and loading it back, with every
 * mismatch reported at once. */
#include "nn/optim_internal.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

void ct_optim_state_dict_free(ct_optim_state_dict *state) {
    if (!state)
        return;
    for (int i = 0; i < state->count; i++)
        free(state->names[i]);
    free(state->names);
    free(state->tensors);
    free(state->hparam_names);
    free(state->hparam_values);
    free(state);
}

static char *join(const char *param, const char *suffix) {
    size_t n = strlen(param) + strlen(suffix) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s.%s", param, suffix);
    return s;
}

ct_optim_state_dict *ct_optim_state(const ct_optim *opt) {
    if (!opt) {
        ct__null_arg("ct_optim_state", "opt");
        return NULL;
    }
    int capacity = opt->n * (1 + CT_OPTIM_MAX_SLOTS), nh = ct__optim_num_hparams(opt->hyper.rule);
    ct_optim_state_dict *s = calloc(1, sizeof *s);
    bool ok = s && (s->names = calloc((size_t)capacity, sizeof *s->names)) &&
              (s->tensors = calloc((size_t)capacity, sizeof *s->tensors)) &&
              (s->hparam_names = calloc((size_t)nh, sizeof *s->hparam_names)) &&
              (s->hparam_values = calloc((size_t)nh, sizeof *s->hparam_values));
    for (int i = 0; ok && i < opt->n; i++) {
        const ct_optim_param *e = &opt->params[i];
        /* The step first, then the rule's tensors, as PyTorch orders its per-parameter state. */
        for (int k = -1; ok && k < CT_OPTIM_MAX_SLOTS; k++) {
            ct_tensor *t = k < 0 ? e->step : e->state[k];
            if (!t)
                continue;
            s->tensors[s->count] = t;
            ok = (s->names[s->count++] = join(e->name, k < 0 ? "step" : ct__optim_slot_name(opt->hyper.rule, k)));
        }
    }
    for (int i = 0; ok && i < nh; i++) {
        s->hparam_names[i] = ct__optim_hparam_name(opt->hyper.rule, i);
        s->hparam_values[i] = ct_optim_hparam(opt, s->hparam_names[i]);
        s->num_hparams++;
    }
    if (!ok) {
        ct_optim_state_dict_free(s);
        ct__set_error(CT_ERR_MEMORY, "ct_optim_state: out of host memory");
        return NULL;
    }
    return s;
}

/* ---- loading ---------------------------------------------------------------------------- */

/* The mismatches found so far, joined into one message. */
typedef struct report {
    int count;
    size_t len;
    char text[900];
} report;

static void note(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(report *r, const char *fmt, ...) {
    r->count++;
    if (r->len >= sizeof r->text - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = snprintf(r->text + r->len, sizeof r->text - r->len, "%s", r->count > 1 ? "; " : "");
    if (w > 0)
        r->len += (size_t)w;
    if (r->len < sizeof r->text - 1) {
        w = vsnprintf(r->text + r->len, sizeof r->text - r->len, fmt, ap);
        if (w > 0)
            r->len += (size_t)w;
    }
    va_end(ap);
    if (r->len > sizeof r->text - 1)
        r->len = sizeof r->text - 1;
}

/* Which parameter and slot (-1: the step) `name` designates, or false. */
static bool parse_name(const ct_optim *opt, const char *name, int *param, int *slot) {
    for (int i = 0; i < opt->n; i++) {
        size_t len = strlen(opt->params[i].name);
        if (strncmp(name, opt->params[i].name, len) != 0 || name[len] != '.')
            continue;
        const char *suffix = name + len + 1;
        if (strcmp(suffix, "step") == 0) {
            *param = i;
            *slot = -1;
            return true;
        }
        for (int k = 0; k < CT_OPTIM_MAX_SLOTS; k++) {
            const char *slot_name = ct__optim_slot_name(opt->hyper.rule, k);
            if (slot_name && strcmp(suffix, slot_name) == 0 && ct__optim_slot_used(&opt->hyper, k)) {
                *param = i;
                *slot = k;
                return true;
            }
        }
    }
    return false;
}

static void check_entry(report *r, const ct_optim_param *e, int slot, const char *name, const ct_tensor *t) {
    if (slot < 0) {
        if (t->ndim != 0 || t->dtype != CT_F64) {
            note(r, "%s is %s %s, expected f64 []", name, ct_dtype_name(t->dtype), ct_shape_str(t));
            return;
        }
        double step = ct_item(t);
        /* range first: converting 1e300 or inf to int64_t would be undefined */
        if (!(step >= 0.0 && step <= 9007199254740992.0) || step != floor(step))
            note(r, "%s is %g, expected a count >= 0", name, step);
        return;
    }
    const ct_tensor *p = e->param;
    if (t->dtype != p->dtype)
        note(r, "%s is %s, expected %s", name, ct_dtype_name(t->dtype), ct_dtype_name(p->dtype));
    bool same_shape = t->ndim == p->ndim && memcmp(t->shape, p->shape, sizeof(int64_t) * (size_t)p->ndim) == 0;
    if (!same_shape)
        note(r, "%s has shape %s, expected %s", name, ct_shape_str(t), ct_shape_str(p));
}

ct_status ct_optim_load_state(ct_optim *opt, const char *const *names, ct_tensor *const *tensors, int n) {
    const char *op = "ct_optim_load_state";
    if (!opt || ((!names || !tensors) && n > 0))
        return ct__null_arg(op, !opt ? "opt" : !names ? "names" : "tensors");
    if (n < 0)
        return ct__set_error(CT_ERR_VALUE, "%s: n is %d", op, n);
    int *target = malloc(sizeof(int) * 2 * (size_t)(n > 0 ? n : 1));
    if (!target)
        return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
    report r = {0};
    for (int i = 0; i < n; i++) {
        int *pi = &target[2 * i], *si = &target[2 * i + 1];
        *pi = -1;
        if (!names[i] || !tensors[i]) {
            note(&r, "entry %d has a NULL %s", i, names[i] ? "tensor" : "name");
            continue;
        }
        if (!ct__check(op, names[i], tensors[i])) {
            note(&r, "%s is not a valid tensor", names[i]);
            ct_clear_error();
            continue;
        }
        if (!parse_name(opt, names[i], pi, si)) {
            note(&r, "unexpected %s", names[i]);
            continue;
        }
        bool duplicate = false;
        for (int j = 0; j < i && !duplicate; j++)
            duplicate = target[2 * j] == *pi && target[2 * j + 1] == *si;
        if (duplicate) {
            note(&r, "%s appears twice", names[i]);
            *pi = -1;
            continue;
        }
        check_entry(&r, &opt->params[*pi], *si, names[i], tensors[i]);
    }
    /* Every required entry must be there. */
    for (int p = 0; p < opt->n; p++)
        for (int k = -1; k < CT_OPTIM_MAX_SLOTS; k++) {
            if (k >= 0 && !ct__optim_slot_required(&opt->hyper, k))
                continue;
            bool found = false;
            for (int i = 0; i < n && !found; i++)
                found = target[2 * i] == p && target[2 * i + 1] == k;
            if (!found)
                note(&r, "missing %s.%s", opt->params[p].name,
                     k < 0 ? "step" : ct__optim_slot_name(opt->hyper.rule, k));
        }
    if (r.count > 0) {
        free(target);
        return ct__set_error(CT_ERR_VALUE, "%s: %d mismatch%s: %s%s", op, r.count, r.count == 1 ? "" : "es", r.text,
                             r.len >= sizeof r.text - 1 ? " ..." : "");
    }
    /* Everything fits: copy. An optional buffer that the state lacks starts afresh. */
    ct_status st = CT_OK;
    for (int p = 0; p < opt->n && st == CT_OK; p++) {
        ct_optim_param *e = &opt->params[p];
        for (int k = 0; k < CT_OPTIM_MAX_SLOTS; k++) {
            bool found = false;
            for (int i = 0; i < n && !found; i++)
                found = target[2 * i] == p && target[2 * i + 1] == k;
            if (!found && e->state[k] && !ct__optim_slot_required(&opt->hyper, k)) {
                ct_tensor_free(e->state[k]);
                e->state[k] = NULL;
            }
        }
    }
    for (int i = 0; i < n && st == CT_OK; i++) {
        ct_optim_param *e = &opt->params[target[2 * i]];
        int k = target[2 * i + 1];
        if (k < 0) {
            *(double *)ct__data(e->step) = ct_item(tensors[i]);
            continue;
        }
        if (!e->state[k] && !(e->state[k] = ct__optim_state_new(e->param, 0.0)))
            st = ct_last_error();
        else
            st = ct_copy_(e->state[k], tensors[i]);
    }
    free(target);
    return st;
}
