/* Optimizers: creation and validation, hyper-parameters, the step and its device dispatch. */
#include "nn/optim_internal.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* ---- rules: state slots and hyper-parameters ------------------------------------------- */

static const char *const slot_names[][CT_OPTIM_MAX_SLOTS] = {
    [CT_RULE_SGD] = {"momentum_buffer", NULL, NULL},
    [CT_RULE_ADAM] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    [CT_RULE_ADAMW] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    [CT_RULE_RMSPROP] = {"square_avg", "momentum_buffer", "grad_avg"},
    [CT_RULE_ADAGRAD] = {"sum", NULL, NULL},
};

const char *ct__optim_slot_name(ct_optim_rule rule, int slot) {
    return slot_names[rule][slot];
}

bool ct__optim_slot_used(const ct_optim_hyper *h, int slot) {
    switch (h->rule) {
    case CT_RULE_SGD: return slot == 0 && h->momentum != 0.0;
    case CT_RULE_ADAM:
    case CT_RULE_ADAMW: return slot < 2 || (slot == 2 && h->amsgrad);
    case CT_RULE_RMSPROP: return slot == 0 || (slot == 1 && h->momentum > 0.0) || (slot == 2 && h->centered);
    case CT_RULE_ADAGRAD: return slot == 0;
    }
    return false;
}

bool ct__optim_slot_required(const ct_optim_hyper *h, int slot) {
    bool momentum_buffer = (h->rule == CT_RULE_SGD && slot == 0) || (h->rule == CT_RULE_RMSPROP && slot == 1);
    return !momentum_buffer && ct__optim_slot_used(h, slot);
}

typedef struct hparam_desc {
    const char *name;
    size_t offset;
    bool is_bool, fixed; /* fixed: shapes the state, so only settable to its current value */
} hparam_desc;

#define HP(field) #field, offsetof(ct_optim_hyper, field)
static const hparam_desc sgd_hparams[] = {{HP(lr), false, false},
                                          {HP(momentum), false, false},
                                          {HP(dampening), false, false},
                                          {HP(weight_decay), false, false},
                                          {HP(nesterov), true, false}};
static const hparam_desc adam_hparams[] = {{HP(lr), false, false},           {HP(beta1), false, false},
                                           {HP(beta2), false, false},        {HP(eps), false, false},
                                           {HP(weight_decay), false, false}, {HP(amsgrad), true, true}};
static const hparam_desc rmsprop_hparams[] = {{HP(lr), false, false},       {HP(alpha), false, false},
                                              {HP(eps), false, false},      {HP(weight_decay), false, false},
                                              {HP(momentum), false, false}, {HP(centered), true, true}};
static const hparam_desc adagrad_hparams[] = {{HP(lr), false, false},
                                              {HP(lr_decay), false, false},
                                              {HP(weight_decay), false, false},
                                              {HP(initial_accumulator_value), false, true},
                                              {HP(eps), false, false}};
#undef HP

static const hparam_desc *hparams_of(ct_optim_rule rule, int *count) {
    switch (rule) {
    case CT_RULE_SGD: *count = 5; return sgd_hparams;
    case CT_RULE_ADAM:
    case CT_RULE_ADAMW: *count = 6; return adam_hparams;
    case CT_RULE_RMSPROP: *count = 6; return rmsprop_hparams;
    case CT_RULE_ADAGRAD: *count = 5; return adagrad_hparams;
    }
    *count = 0;
    return NULL;
}

int ct__optim_num_hparams(ct_optim_rule rule) {
    int count;
    hparams_of(rule, &count);
    return count;
}

const char *ct__optim_hparam_name(ct_optim_rule rule, int i) {
    int count;
    const hparam_desc *d = hparams_of(rule, &count);
    return i >= 0 && i < count ? d[i].name : NULL;
}

static double hparam_get(const ct_optim_hyper *h, const hparam_desc *d) {
    const char *base = (const char *)h + d->offset;
    return d->is_bool ? (double)*(const bool *)base : *(const double *)base;
}

static void hparam_set(ct_optim_hyper *h, const hparam_desc *d, double value) {
    char *base = (char *)h + d->offset;
    if (d->is_bool)
        *(bool *)base = value != 0.0;
    else
        *(double *)base = value;
}

static const char *rule_name(ct_optim_rule rule) {
    static const char *const names[] = {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad"};
    return names[rule];
}

/* PyTorch's checks, plus finiteness (NaN fails every comparison, so "!(x >= 0)" catches it). */
static bool check_hyper(const char *op, const ct_optim_hyper *h) {
#define REQUIRE(cond, ...)                                                                                             \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            ct__set_error(CT_ERR_VALUE, __VA_ARGS__);                                                                  \
            return false;                                                                                              \
        }                                                                                                              \
    } while (0)
    REQUIRE(h->lr >= 0.0 && isfinite(h->lr), "%s: lr must be a finite number >= 0, got %g", op, h->lr);
    REQUIRE(h->weight_decay >= 0.0 && isfinite(h->weight_decay),
            "%s: weight_decay must be a finite number >= 0, got %g", op, h->weight_decay);
    REQUIRE(h->eps >= 0.0 && isfinite(h->eps), "%s: eps must be a finite number >= 0, got %g", op, h->eps);
    switch (h->rule) {
    case CT_RULE_SGD:
        REQUIRE(h->momentum >= 0.0 && isfinite(h->momentum), "%s: momentum must be >= 0, got %g", op, h->momentum);
        REQUIRE(isfinite(h->dampening), "%s: dampening must be finite, got %g", op, h->dampening);
        REQUIRE(!h->nesterov || (h->momentum > 0.0 && h->dampening == 0.0),
                "%s: nesterov needs momentum > 0 and dampening = 0 (momentum %g, dampening %g)", op, h->momentum,
                h->dampening);
        break;
    case CT_RULE_ADAM:
    case CT_RULE_ADAMW:
        REQUIRE(h->beta1 >= 0.0 && h->beta1 < 1.0, "%s: beta1 must be in [0, 1), got %g", op, h->beta1);
        REQUIRE(h->beta2 >= 0.0 && h->beta2 < 1.0, "%s: beta2 must be in [0, 1), got %g", op, h->beta2);
        break;
    case CT_RULE_RMSPROP:
        REQUIRE(h->alpha >= 0.0 && isfinite(h->alpha), "%s: alpha must be >= 0, got %g", op, h->alpha);
        REQUIRE(h->momentum >= 0.0 && isfinite(h->momentum), "%s: momentum must be >= 0, got %g", op, h->momentum);
        break;
    case CT_RULE_ADAGRAD:
        REQUIRE(h->lr_decay >= 0.0 && isfinite(h->lr_decay), "%s: lr_decay must be >= 0, got %g", op, h->lr_decay);
        REQUIRE(h->initial_accumulator_value >= 0.0 && isfinite(h->initial_accumulator_value),
                "%s: initial_accumulator_value must be >= 0, got %g", op, h->initial_accumulator_value);
        break;
    }
    return true;
#undef REQUIRE
}

/* ---- creation -------------------------------------------------------------------------- */

ct_tensor *ct__optim_state_new(const ct_tensor *param, double fill) {
    ct_tensor *t = ct__new(param->dtype, param->device, param->ndim, param->shape);
    if (!t)
        return NULL;
    ct__scope_detach(t);
    if (ct_fill_(t, fill) != CT_OK) {
        ct_tensor_free(t);
        return NULL;
    }
    return t;
}

void ct_optim_free(ct_optim *opt) {
    if (!opt)
        return;
    for (int i = 0; i < opt->n; i++) {
        ct_optim_param *e = &opt->params[i];
        for (int k = 0; k < CT_OPTIM_MAX_SLOTS; k++)
            ct_tensor_free(e->state[k]);
        ct_tensor_free(e->step);
        if (e->param)
            ct__tensor_release(e->param);
        free(e->name);
    }
    free(opt->params);
    free(opt->param_list);
    free(opt);
}

static bool check_param(const char *op, ct_tensor *const *params, const char *const *names, int i) {
    char label[64];
    snprintf(label, sizeof label, "params[%d]", i);
    const ct_tensor *p = params[i];
    if (!p)
        return ct__set_error(CT_ERR_NULL, "%s: params[%d] is NULL", op, i), false;
    if (!ct__check(op, label, p))
        return false;
    const char *name = names ? names[i] : label;
    if (names && !name)
        return ct__set_error(CT_ERR_NULL, "%s: names[%d] is NULL", op, i), false;
    if (p->dtype != CT_F32 && p->dtype != CT_F64)
        return ct__set_error(CT_ERR_DTYPE, "%s: parameter \"%s\" is %s; parameters are F32 or F64 master weights", op,
                             name, ct_dtype_name(p->dtype)),
               false;
    if (!ct__is_contiguous(p))
        return ct__set_error(CT_ERR_SHAPE, "%s: parameter \"%s\" (%s) is not contiguous", op, name, ct_shape_str(p)),
               false;
    for (int j = 0; j < i; j++) {
        if (params[j] == p || ct_tensor_shares_storage(params[j], p))
            return ct__set_error(CT_ERR_VALUE, "%s: parameter \"%s\" appears twice (or shares storage with another)",
                                 op, name),
                   false;
        if (names && strcmp(names[j], name) == 0)
            return ct__set_error(CT_ERR_VALUE, "%s: two parameters are named \"%s\"", op, name), false;
    }
    return true;
}

static ct_optim *optim_new(const char *op, const ct_optim_hyper *hyper, ct_tensor *const *params,
                           const char *const *names, int n) {
    if (!check_hyper(op, hyper))
        return NULL;
    if (!params) {
        ct__null_arg(op, "params");
        return NULL;
    }
    if (n <= 0) {
        ct__set_error(CT_ERR_VALUE, "%s: no parameters to optimize (n = %d)", op, n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!check_param(op, params, names, i))
            return NULL;
    ct_optim *opt = calloc(1, sizeof *opt);
    if (!opt || !(opt->params = calloc((size_t)n, sizeof *opt->params)) ||
        !(opt->param_list = calloc((size_t)n, sizeof *opt->param_list))) {
        if (opt)
            free(opt->params);
        free(opt);
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        return NULL;
    }
    opt->hyper = *hyper;
    for (int i = 0; i < n; i++) {
        ct_optim_param *e = &opt->params[opt->n++];
        e->param = ct__tensor_ref(params[i]); /* the optimizer's own: the caller's scope keeps its */
        opt->param_list[i] = params[i];
        char fallback[24];
        snprintf(fallback, sizeof fallback, "%d", i);
        e->name = strdup(names ? names[i] : fallback);
        e->step = ct__new(CT_F64, CT_CPU, 0, NULL);
        if (e->step) {
            ct__scope_detach(e->step);
            *(double *)ct__data(e->step) = 0.0;
        }
        bool ok = e->name && e->step;
        /* The momentum buffers start with the first step that uses them; the rest start now. */
        for (int k = 0; ok && k < CT_OPTIM_MAX_SLOTS; k++) {
            if (!ct__optim_slot_required(hyper, k))
                continue;
            double fill = hyper->rule == CT_RULE_ADAGRAD ? hyper->initial_accumulator_value : 0.0;
            ok = (e->state[k] = ct__optim_state_new(params[i], fill)) != NULL;
        }
        if (!ok) {
            if (!e->name)
                ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
            ct_optim_free(opt);
            return NULL;
        }
    }
    return opt;
}

static ct_optim *optim_from_module(const char *op, const ct_optim_hyper *hyper, const ct_module *m) {
    if (!m) {
        ct__null_arg(op, "m");
        return NULL;
    }
    ct_named_tensors *list = ct_module_parameters(m);
    if (!list)
        return NULL;
    ct_optim *opt = optim_new(op, hyper, list->tensors, (const char *const *)list->names, list->count);
    ct_named_tensors_free(list);
    return opt;
}

static ct_optim_hyper sgd_hyper(const ct_sgd_opts *o) {
    const ct_sgd_opts d = CT_SGD_OPTS_DEFAULT;
    if (!o)
        o = &d;
    return (ct_optim_hyper){.rule = CT_RULE_SGD,
                            .lr = o->lr,
                            .momentum = o->momentum,
                            .dampening = o->dampening,
                            .weight_decay = o->weight_decay,
                            .nesterov = o->nesterov};
}

static ct_optim_hyper adam_hyper(ct_optim_rule rule, const ct_adam_opts *o) {
    const ct_adam_opts adam = CT_ADAM_OPTS_DEFAULT, adamw = CT_ADAMW_OPTS_DEFAULT;
    if (!o)
        o = rule == CT_RULE_ADAMW ? &adamw : &adam;
    return (ct_optim_hyper){.rule = rule,
                            .lr = o->lr,
                            .beta1 = o->beta1,
                            .beta2 = o->beta2,
                            .eps = o->eps,
                            .weight_decay = o->weight_decay,
                            .amsgrad = o->amsgrad};
}

static ct_optim_hyper rmsprop_hyper(const ct_rmsprop_opts *o) {
    const ct_rmsprop_opts d = CT_RMSPROP_OPTS_DEFAULT;
    if (!o)
        o = &d;
    return (ct_optim_hyper){.rule = CT_RULE_RMSPROP,
                            .lr = o->lr,
                            .alpha = o->alpha,
                            .eps = o->eps,
                            .weight_decay = o->weight_decay,
                            .momentum = o->momentum,
                            .centered = o->centered};
}

static ct_optim_hyper adagrad_hyper(const ct_adagrad_opts *o) {
    const ct_adagrad_opts d = CT_ADAGRAD_OPTS_DEFAULT;
    if (!o)
        o = &d;
    return (ct_optim_hyper){.rule = CT_RULE_ADAGRAD,
                            .lr = o->lr,
                            .lr_decay = o->lr_decay,
                            .weight_decay = o->weight_decay,
                            .initial_accumulator_value = o->initial_accumulator_value,
                            .eps = o->eps};
}

ct_optim *ct_optim_sgd(const ct_module *m, const ct_sgd_opts *o) {
    ct_optim_hyper h = sgd_hyper(o);
    return optim_from_module("ct_optim_sgd", &h, m);
}
ct_optim *ct_optim_sgd_from_tensors(ct_tensor *const *params, const char *const *names, int n, const ct_sgd_opts *o) {
    ct_optim_hyper h = sgd_hyper(o);
    return optim_new("ct_optim_sgd_from_tensors", &h, params, names, n);
}
ct_optim *ct_optim_adam(const ct_module *m, const ct_adam_opts *o) {
    ct_optim_hyper h = adam_hyper(CT_RULE_ADAM, o);
    return optim_from_module("ct_optim_adam", &h, m);
}
ct_optim *ct_optim_adam_from_tensors(ct_tensor *const *params, const char *const *names, int n, const ct_adam_opts *o) {
    ct_optim_hyper h = adam_hyper(CT_RULE_ADAM, o);
    return optim_new("ct_optim_adam_from_tensors", &h, params, names, n);
}
ct_optim *ct_optim_adamw(const ct_module *m, const ct_adam_opts *o) {
    ct_optim_hyper h = adam_hyper(CT_RULE_ADAMW, o);
    return optim_from_module("ct_optim_adamw", &h, m);
}
ct_optim *ct_optim_adamw_from_tensors(ct_tensor *const *params, const char *const *names, int n,
                                      const ct_adam_opts *o) {
    ct_optim_hyper h = adam_hyper(CT_RULE_ADAMW, o);
    return optim_new("ct_optim_adamw_from_tensors", &h, params, names, n);
}
ct_optim *ct_optim_rmsprop(const ct_module *m, const ct_rmsprop_opts *o) {
    ct_optim_hyper h = rmsprop_hyper(o);
    return optim_from_module("ct_optim_rmsprop", &h, m);
}
ct_optim *ct_optim_rmsprop_from_tensors(ct_tensor *const *params, const char *const *names, int n,
                                        const ct_rmsprop_opts *o) {
    ct_optim_hyper h = rmsprop_hyper(o);
    return optim_new("ct_optim_rmsprop_from_tensors", &h, params, names, n);
}
ct_optim *ct_optim_adagrad(const ct_module *m, const ct_adagrad_opts *o) {
    ct_optim_hyper h = adagrad_hyper(o);
    return optim_from_module("ct_optim_adagrad", &h, m);
}
ct_optim *ct_optim_adagrad_from_tensors(ct_tensor *const *params, const char *const *names, int n,
                                        const ct_adagrad_opts *o) {
    ct_optim_hyper h = adagrad_hyper(o);
    return optim_new("ct_optim_adagrad_from_tensors", &h, params, names, n);
}

/* ---- accessors ------------------------------------------------------------------------- */

double ct_optim_lr(const ct_optim *opt) {
    return opt ? opt->hyper.lr : NAN;
}

ct_status ct_optim_set_lr(ct_optim *opt, double lr) {
    return ct_optim_set_hparam(opt, "lr", lr);
}

const char *ct_optim_name(const ct_optim *opt) {
    return opt ? rule_name(opt->hyper.rule) : NULL;
}
int ct_optim_num_params(const ct_optim *opt) {
    return opt ? opt->n : 0;
}
ct_tensor *const *ct_optim_params(const ct_optim *opt) {
    return opt ? opt->param_list : NULL;
}
const char *ct_optim_param_name(const ct_optim *opt, int i) {
    return opt && i >= 0 && i < opt->n ? opt->params[i].name : NULL;
}

static const hparam_desc *find_hparam(const char *op, const ct_optim *opt, const char *name) {
    if (!opt || !name) {
        ct__null_arg(op, opt ? "name" : "opt");
        return NULL;
    }
    int count;
    const hparam_desc *d = hparams_of(opt->hyper.rule, &count);
    for (int i = 0; i < count; i++)
        if (strcmp(d[i].name, name) == 0)
            return &d[i];
    ct__set_error(CT_ERR_VALUE, "%s: %s has no hyper-parameter \"%s\"", op, rule_name(opt->hyper.rule), name);
    return NULL;
}

double ct_optim_hparam(const ct_optim *opt, const char *name) {
    const hparam_desc *d = find_hparam("ct_optim_hparam", opt, name);
    return d ? hparam_get(&opt->hyper, d) : NAN;
}

ct_status ct_optim_set_hparam(ct_optim *opt, const char *name, double value) {
    const char *op = "ct_optim_set_hparam";
    const hparam_desc *d = find_hparam(op, opt, name);
    if (!d)
        return ct_last_error();
    if (d->is_bool && value != 0.0 && value != 1.0)
        return ct__set_error(CT_ERR_VALUE, "%s: %s is a flag (0 or 1), got %g", op, name, value);
    if (d->fixed && value != hparam_get(&opt->hyper, d))
        return ct__set_error(CT_ERR_VALUE, "%s: %s is fixed when the optimizer is made (it is %g, asked for %g)", op,
                             name, hparam_get(&opt->hyper, d), value);
    ct_optim_hyper h = opt->hyper;
    hparam_set(&h, d, value);
    char what[64];
    snprintf(what, sizeof what, "%s(%s)", op, name);
    if (!check_hyper(what, &h))
        return ct_last_error();
    opt->hyper = h;
    return CT_OK;
}

/* ---- the step ---------------------------------------------------------------------------- */

void ct_optim_zero_grad(ct_optim *opt) {
    if (!opt)
        return;
    for (int i = 0; i < opt->n; i++)
        ct_zero_grad(opt->params[i].param);
}

/* The gradient to use for parameter e: NULL when it has none (skipped); an error when it does
 * not fit the parameter. */
static bool usable_grad(const char *op, const ct_optim_param *e, ct_tensor **grad) {
    *grad = NULL;
    if (!ct__check(op, e->name, e->param))
        return false;
    ct_tensor *g = e->param->grad;
    if (!g)
        return true;
    if (g->dtype != e->param->dtype || !ct_device_equal(g->device, e->param->device) ||
        ct__numel(g->ndim, g->shape) != ct__numel(e->param->ndim, e->param->shape) || !ct__is_contiguous(g)) {
        ct__set_error(CT_ERR_VALUE, "%s: the gradient of \"%s\" is %s %s on %s, the parameter %s %s on %s", op, e->name,
                      ct_dtype_name(g->dtype), ct_shape_str(g), ct_device_name(g->device),
                      ct_dtype_name(e->param->dtype), ct_shape_str(e->param), ct_device_name(e->param->device));
        return false;
    }
    *grad = g;
    return true;
}

/* Make the state that the current hyper-parameters need (a momentum turned on later by a
 * schedule); `fresh` gets a bit per state made here. Nothing else changes. */
static bool make_state(const ct_optim *opt, ct_optim_param *e, unsigned *fresh) {
    *fresh = 0;
    for (int k = 0; k < CT_OPTIM_MAX_SLOTS; k++) {
        if (!ct__optim_slot_used(&opt->hyper, k) || e->state[k])
            continue;
        if (!(e->state[k] = ct__optim_state_new(e->param, 0.0)))
            return false;
        *fresh |= 1u << k;
    }
    return true;
}

/* Undo make_state: the states it made are dropped, as if the step had not begun. */
static void drop_fresh_state(ct_optim_param *e, unsigned fresh) {
    for (int k = 0; k < CT_OPTIM_MAX_SLOTS; k++)
        if (fresh & (1u << k)) {
            ct_tensor_free(e->state[k]);
            e->state[k] = NULL;
        }
}

/* Count the step and fill the slot for the kernels (the states exist: make_state). */
static void prepare(const ct_optim *opt, ct_optim_param *e, ct_tensor *grad, unsigned fresh, ct_optim_slot *slot) {
    const ct_optim_hyper *h = &opt->hyper;
    *slot = (ct_optim_slot){
        .param = ct__data(e->param), .grad = ct__data(grad), .numel = ct__numel(e->param->ndim, e->param->shape)};
    for (int k = 0; k < CT_OPTIM_MAX_SLOTS; k++) {
        if (!ct__optim_slot_used(h, k))
            continue;
        /* PyTorch's SGD starts its momentum buffer as a copy of the (decayed) gradient. */
        if ((fresh & (1u << k)) && h->rule == CT_RULE_SGD)
            slot->scalar[0] = 1.0;
        slot->state[k] = ct__data(e->state[k]);
    }
    double *step = ct__data(e->step);
    double t = *step + 1.0;
    *step = t;
    if (h->rule == CT_RULE_ADAM || h->rule == CT_RULE_ADAMW) {
        slot->scalar[0] = h->lr / (1.0 - pow(h->beta1, t));
        slot->scalar[1] = sqrt(1.0 - pow(h->beta2, t));
    } else if (h->rule == CT_RULE_ADAGRAD) {
        slot->scalar[0] = h->lr / (1.0 + (t - 1.0) * h->lr_decay);
    }
}

static void bump_versions(ct_optim_param *e) {
    ct__bump_version(e->param);
    for (int k = 0; k < CT_OPTIM_MAX_SLOTS; k++)
        if (e->state[k])
            ct__bump_version(e->state[k]);
}

ct_status ct_optim_step(ct_optim *opt) {
    const char *op = "ct_optim_step";
    if (!opt)
        return ct__null_arg(op, "opt");
    ct_tensor **grads = calloc((size_t)opt->n, sizeof *grads);
    ct_optim_slot *slots = calloc((size_t)opt->n, sizeof *slots);
    int *cuda = calloc((size_t)opt->n, sizeof *cuda);
    unsigned *fresh = calloc((size_t)opt->n, sizeof *fresh);
    if (!grads || !slots || !cuda || !fresh) {
        free(grads);
        free(slots);
        free(cuda);
        free(fresh);
        return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
    }
    ct_status st = CT_OK;
    /* Everything that can fail before anything changes, so that a failed step changes
     * nothing: the gradients, the state to make, each device's stream. (Past this point only
     * a failing CUDA launch can stop the step, and then the devices before it are updated.) */
    for (int i = 0; i < opt->n && st == CT_OK; i++) {
        const ct_tensor *p = opt->params[i].param;
        if (!usable_grad(op, &opt->params[i], &grads[i]))
            st = ct_last_error();
        else if (grads[i] && p->device.type == CT_DEVICE_CUDA && ct__cuda_capturing(p->device.index))
            st = ct__set_error(CT_ERR_STATE,
                               "%s: not allowed while this thread captures a CUDA graph on cuda:%d (the learning rate "
                               "and step count would be frozen into the graph); step after ct_graph_replay",
                               op, p->device.index);
    }
    ct_no_grad_begin();
    for (int i = 0; i < opt->n && st == CT_OK; i++) {
        ct_optim_param *e = &opt->params[i];
        if (grads[i] && (!make_state(opt, e, &fresh[i]) ||
                         (e->param->device.type == CT_DEVICE_CUDA && !ct__stream_for(e->param))))
            st = ct_last_error();
    }
    if (st != CT_OK)
        for (int i = 0; i < opt->n; i++)
            drop_fresh_state(&opt->params[i], fresh[i]);
    int n_cuda = 0;
    for (int i = 0; i < opt->n && st == CT_OK; i++) {
        ct_optim_param *e = &opt->params[i];
        if (!grads[i])
            continue;
        prepare(opt, e, grads[i], fresh[i], &slots[i]);
        if (e->param->device.type == CT_DEVICE_CUDA) {
            cuda[n_cuda++] = i;
        } else {
            ct__optim_cpu_update(&opt->hyper, e->param->dtype, &slots[i]);
            bump_versions(e);
        }
    }
    /* CUDA: one launch (per CT_CUDA_OPTIM_TENSORS_PER_LAUNCH parameters) per device, on the
     * current stream of that device. */
    for (int first = 0; first < n_cuda && st == CT_OK;) {
        const ct_tensor *lead = opt->params[cuda[first]].param;
        int device = lead->device.index, count = 0;
        ct_optim_slot *batch = calloc((size_t)n_cuda, sizeof *batch);
        if (!batch) {
            st = ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
            break;
        }
        for (int j = first; j < n_cuda; j++)
            if (cuda[j] >= 0 && opt->params[cuda[j]].param->device.index == device) {
                batch[count++] = slots[cuda[j]];
                bump_versions(&opt->params[cuda[j]]);
                cuda[j] = -1;
            }
        /* ct__stream_for makes the device current: the launch goes to the thread's current device */
        ct_stream *stream = ct__stream_for(lead);
        st = stream ? CT_ON_CUDA(ct_cuda_optim_step(&opt->hyper, count, batch, stream)) : ct_last_error();
        free(batch);
        while (first < n_cuda && cuda[first] < 0)
            first++;
    }
    ct_no_grad_end();
    free(grads);
    free(slots);
    free(cuda);
    free(fresh);
    return st;
}
