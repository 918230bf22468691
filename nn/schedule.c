/* Learning-rate schedules. Every schedule but reduce-on-plateau is a closed form of the epoch
 * (PyTorch's _get_closed_form_lr where it has one), so a schedule restored from a checkpoint
 * gives exactly the rates of one that never stopped. */
#include "runtime/internal.h"

#include <math.h>
#include <string.h>

typedef enum schedule_kind { STEP, MULTISTEP, EXPONENTIAL, COSINE, ONE_CYCLE, PLATEAU } schedule_kind;

struct ct_lr_schedule {
    schedule_kind kind;
    ct_optim *opt;
    int64_t last_epoch;
    double base_lr, lr;
    /* step, multi-step, exponential */
    int64_t step_size;
    double gamma;
    int64_t *milestones;
    int n_milestones;
    /* cosine */
    int64_t warmup_steps, total_steps;
    double min_lr;
    /* one-cycle */
    ct_one_cycle_opts cycle;
    const char *momentum_name; /* "momentum" or "beta1"; NULL when not cycled */
    double initial_lr, final_lr;
    /* plateau */
    ct_plateau_opts plateau;
    double best;
    int64_t num_bad_epochs, cooldown_counter;
};

static const double pi = 3.14159265358979323846;

/* ---- one-cycle (torch.optim.lr_scheduler.OneCycleLR) ------------------------------------ */

static double anneal(const ct_lr_schedule *s, double start, double end, double pct) {
    if (s->cycle.anneal_linear)
        return (end - start) * pct + start;
    return end + (start - end) / 2.0 * (cos(pi * pct) + 1.0);
}

/* The rate and momentum at `step`, phase by phase as PyTorch lays them out. */
static void one_cycle_at(const ct_lr_schedule *s, int64_t step, double *lr, double *momentum) {
    const ct_one_cycle_opts *o = &s->cycle;
    double total = (double)o->total_steps, lo = o->base_momentum, hi = o->max_momentum;
    double ends[3], lr_from[3], lr_to[3], mom_from[3], mom_to[3];
    int phases;
    if (o->three_phase) {
        phases = 3;
        ends[0] = o->pct_start * total - 1.0, ends[1] = 2.0 * o->pct_start * total - 2.0, ends[2] = total - 1.0;
        lr_from[0] = s->initial_lr, lr_to[0] = o->max_lr, mom_from[0] = hi, mom_to[0] = lo;
        lr_from[1] = o->max_lr, lr_to[1] = s->initial_lr, mom_from[1] = lo, mom_to[1] = hi;
        lr_from[2] = s->initial_lr, lr_to[2] = s->final_lr, mom_from[2] = hi, mom_to[2] = hi;
    } else {
        phases = 2;
        ends[0] = o->pct_start * total - 1.0, ends[1] = total - 1.0;
        lr_from[0] = s->initial_lr, lr_to[0] = o->max_lr, mom_from[0] = hi, mom_to[0] = lo;
        lr_from[1] = o->max_lr, lr_to[1] = s->final_lr, mom_from[1] = lo, mom_to[1] = hi;
    }
    double start = 0.0;
    for (int i = 0; i < phases; i++) {
        if ((double)step <= ends[i] || i == phases - 1) {
            double pct = ((double)step - start) / (ends[i] - start);
            *lr = anneal(s, lr_from[i], lr_to[i], pct);
            *momentum = anneal(s, mom_from[i], mom_to[i], pct);
            return;
        }
        start = ends[i];
    }
}

/* ---- the closed forms ------------------------------------------------------------------- */

static double lr_at(const ct_lr_schedule *s, int64_t e) {
    switch (s->kind) {
    case STEP: return s->base_lr * pow(s->gamma, (double)(e / s->step_size));
    case MULTISTEP: {
        int passed = 0;
        for (int i = 0; i < s->n_milestones; i++)
            passed += s->milestones[i] <= e;
        return s->base_lr * pow(s->gamma, passed);
    }
    case EXPONENTIAL: return s->base_lr * pow(s->gamma, (double)e);
    case COSINE:
        if (e < s->warmup_steps)
            return s->base_lr * (double)e / (double)s->warmup_steps;
        if (e >= s->total_steps)
            return s->min_lr;
        return s->min_lr +
               (s->base_lr - s->min_lr) *
                   (1.0 + cos(pi * (double)(e - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps))) / 2.0;
    case ONE_CYCLE: {
        double lr, momentum;
        one_cycle_at(s, e, &lr, &momentum);
        return lr;
    }
    case PLATEAU: return s->lr;
    }
    return s->lr;
}

/* Set the optimizer's rate (and one-cycle's momentum) for epoch s->last_epoch. */
static ct_status apply(ct_lr_schedule *s) {
    double lr = lr_at(s, s->last_epoch);
    ct_status st = ct_optim_set_lr(s->opt, lr);
    if (st == CT_OK && s->kind == ONE_CYCLE && s->momentum_name) {
        double ignored, momentum;
        one_cycle_at(s, s->last_epoch, &ignored, &momentum);
        st = ct_optim_set_hparam(s->opt, s->momentum_name, momentum);
    }
    if (st == CT_OK)
        s->lr = lr;
    return st;
}

/* ---- creation ----------------------------------------------------------------------------- */

static ct_lr_schedule *schedule_new(const char *op, ct_optim *opt, schedule_kind kind) {
    if (!opt) {
        ct__null_arg(op, "opt");
        return NULL;
    }
    ct_lr_schedule *s = calloc(1, sizeof *s);
    if (!s) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        return NULL;
    }
    s->kind = kind;
    s->opt = opt;
    s->base_lr = s->lr = ct_optim_lr(opt);
    return s;
}

/* Set the rate of epoch 0, as PyTorch's schedulers do when made. */
static ct_lr_schedule *start(ct_lr_schedule *s) {
    if (apply(s) != CT_OK) {
        ct_schedule_free(s);
        return NULL;
    }
    return s;
}

static bool check_gamma(const char *op, double gamma) {
    if (gamma >= 0.0 && isfinite(gamma))
        return true;
    ct__set_error(CT_ERR_VALUE, "%s: gamma must be a finite number >= 0, got %g", op, gamma);
    return false;
}

ct_lr_schedule *ct_schedule_step_lr(ct_optim *opt, int64_t step_size, double gamma) {
    const char *op = "ct_schedule_step_lr";
    if (step_size <= 0) {
        ct__set_error(CT_ERR_VALUE, "%s: step_size must be > 0, got %lld", op, (long long)step_size);
        return NULL;
    }
    if (!check_gamma(op, gamma))
        return NULL;
    ct_lr_schedule *s = schedule_new(op, opt, STEP);
    if (!s)
        return NULL;
    s->step_size = step_size;
    s->gamma = gamma;
    return start(s);
}

ct_lr_schedule *ct_schedule_multistep(ct_optim *opt, const int64_t *milestones, int n, double gamma) {
    const char *op = "ct_schedule_multistep";
    if (n < 0 || (n > 0 && !milestones)) {
        if (n < 0)
            ct__set_error(CT_ERR_VALUE, "%s: n is %d", op, n);
        else
            ct__null_arg(op, "milestones");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (milestones[i] < 0) {
            ct__set_error(CT_ERR_VALUE, "%s: milestone %d is %lld (must be >= 0)", op, i, (long long)milestones[i]);
            return NULL;
        }
    if (!check_gamma(op, gamma))
        return NULL;
    ct_lr_schedule *s = schedule_new(op, opt, MULTISTEP);
    if (!s)
        return NULL;
    s->milestones = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!s->milestones) {
        ct_schedule_free(s);
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        return NULL;
    }
    if (n > 0)
        memcpy(s->milestones, milestones, sizeof(int64_t) * (size_t)n);
    s->n_milestones = n;
    s->gamma = gamma;
    return start(s);
}

ct_lr_schedule *ct_schedule_exponential(ct_optim *opt, double gamma) {
    const char *op = "ct_schedule_exponential";
    if (!check_gamma(op, gamma))
        return NULL;
    ct_lr_schedule *s = schedule_new(op, opt, EXPONENTIAL);
    if (!s)
        return NULL;
    s->gamma = gamma;
    return start(s);
}

ct_lr_schedule *ct_schedule_cosine(ct_optim *opt, int64_t warmup_steps, int64_t total_steps, double min_lr) {
    const char *op = "ct_schedule_cosine";
    if (warmup_steps < 0 || total_steps <= warmup_steps) {
        ct__set_error(CT_ERR_VALUE, "%s: need 0 <= warmup_steps < total_steps, got %lld and %lld", op,
                      (long long)warmup_steps, (long long)total_steps);
        return NULL;
    }
    if (!(min_lr >= 0.0) || !isfinite(min_lr)) {
        ct__set_error(CT_ERR_VALUE, "%s: min_lr must be a finite number >= 0, got %g", op, min_lr);
        return NULL;
    }
    ct_lr_schedule *s = schedule_new(op, opt, COSINE);
    if (!s)
        return NULL;
    s->warmup_steps = warmup_steps;
    s->total_steps = total_steps;
    s->min_lr = min_lr;
    return start(s);
}

ct_lr_schedule *ct_schedule_one_cycle(ct_optim *opt, const ct_one_cycle_opts *opts) {
    const char *op = "ct_schedule_one_cycle";
    if (!opts) {
        ct__null_arg(op, "opts");
        return NULL;
    }
    const ct_one_cycle_opts *o = opts;
    double warm = o->pct_start * (double)o->total_steps;
    const char *bad = NULL;
    if (o->total_steps <= 0)
        bad = "total_steps must be > 0";
    else if (!(o->max_lr >= 0.0) || !isfinite(o->max_lr))
        bad = "max_lr must be a finite number >= 0";
    else if (!(o->div_factor > 0.0) || !(o->final_div_factor > 0.0))
        bad = "div_factor and final_div_factor must be > 0";
    else if (!(o->pct_start >= 0.0 && o->pct_start <= 1.0))
        bad = "pct_start must be in [0, 1]";
    /* PyTorch divides by the length of each phase: none may be empty. */
    else if (!(warm > 1.0) || (!o->three_phase && !(o->pct_start < 1.0)) ||
             (o->three_phase && !(2.0 * warm - 2.0 < (double)o->total_steps - 1.0)))
        bad = "pct_start * total_steps leaves an empty phase";
    if (bad) {
        ct__set_error(CT_ERR_VALUE,
                      "%s: %s (max_lr %g, total_steps %lld, pct_start %g, div_factor %g, "
                      "final_div_factor %g)",
                      op, bad, o->max_lr, (long long)o->total_steps, o->pct_start, o->div_factor, o->final_div_factor);
        return NULL;
    }
    const char *momentum_name = NULL;
    if (o->cycle_momentum) {
        const char *name = ct_optim_name(opt);
        if (!opt) {
            ct__null_arg(op, "opt");
            return NULL;
        }
        if (strcmp(name, "Adam") == 0 || strcmp(name, "AdamW") == 0)
            momentum_name = "beta1";
        else if (strcmp(name, "SGD") == 0 || strcmp(name, "RMSprop") == 0)
            momentum_name = "momentum";
        else {
            ct__set_error(CT_ERR_VALUE, "%s: cycle_momentum needs an optimizer with momentum (%s has none)", op, name);
            return NULL;
        }
    }
    ct_lr_schedule *s = schedule_new(op, opt, ONE_CYCLE);
    if (!s)
        return NULL;
    s->cycle = *o;
    s->momentum_name = momentum_name;
    s->initial_lr = o->max_lr / o->div_factor;
    s->final_lr = s->initial_lr / o->final_div_factor;
    return start(s);
}

ct_lr_schedule *ct_schedule_plateau(ct_optim *opt, const ct_plateau_opts *opts) {
    const char *op = "ct_schedule_plateau";
    const ct_plateau_opts defaults = CT_PLATEAU_OPTS_DEFAULT;
    const ct_plateau_opts *o = opts ? opts : &defaults;
    const char *bad = NULL;
    if (o->mode != CT_MODE_MIN && o->mode != CT_MODE_MAX)
        bad = "mode must be CT_MODE_MIN or CT_MODE_MAX";
    else if (!(o->factor >= 0.0 && o->factor < 1.0))
        bad = "factor must be in [0, 1)";
    else if (o->patience < 0 || o->cooldown < 0)
        bad = "patience and cooldown must be >= 0";
    else if (!(o->threshold >= 0.0) || !isfinite(o->threshold))
        bad = "threshold must be a finite number >= 0";
    else if (!(o->min_lr >= 0.0) || !isfinite(o->min_lr) || !(o->eps >= 0.0))
        bad = "min_lr and eps must be >= 0";
    if (bad) {
        ct__set_error(CT_ERR_VALUE, "%s: %s (factor %g, patience %d, threshold %g, cooldown %d, min_lr %g)", op, bad,
                      o->factor, o->patience, o->threshold, o->cooldown, o->min_lr);
        return NULL;
    }
    ct_lr_schedule *s = schedule_new(op, opt, PLATEAU);
    if (!s)
        return NULL;
    s->plateau = *o;
    s->best = o->mode == CT_MODE_MIN ? INFINITY : -INFINITY;
    return s;
}

void ct_schedule_free(ct_lr_schedule *s) {
    if (!s)
        return;
    free(s->milestones);
    free(s);
}

/* ---- stepping ----------------------------------------------------------------------------- */

ct_status ct_schedule_step(ct_lr_schedule *s) {
    const char *op = "ct_schedule_step";
    if (!s)
        return ct__null_arg(op, "s");
    if (s->kind == PLATEAU)
        return ct__set_error(CT_ERR_VALUE, "%s: reduce-on-plateau needs the metric: use ct_schedule_step_metric", op);
    if (s->kind == ONE_CYCLE && s->last_epoch + 1 > s->cycle.total_steps)
        return ct__set_error(CT_ERR_VALUE, "%s: tried to step %lld times; the one-cycle schedule has total_steps %lld",
                             op, (long long)(s->last_epoch + 2), (long long)s->cycle.total_steps);
    s->last_epoch++;
    ct_status st = apply(s);
    if (st != CT_OK)
        s->last_epoch--;
    return st;
}

static bool plateau_better(const ct_lr_schedule *s, double a) {
    const ct_plateau_opts *o = &s->plateau;
    if (o->mode == CT_MODE_MIN)
        return o->threshold_abs ? a < s->best - o->threshold : a < s->best * (1.0 - o->threshold);
    return o->threshold_abs ? a > s->best + o->threshold : a > s->best * (1.0 + o->threshold);
}

ct_status ct_schedule_step_metric(ct_lr_schedule *s, double metric) {
    if (!s)
        return ct__null_arg("ct_schedule_step_metric", "s");
    if (s->kind != PLATEAU)
        return ct_schedule_step(s);
    /* ReduceLROnPlateau.step, line by line. */
    s->last_epoch++;
    if (plateau_better(s, metric)) {
        s->best = metric;
        s->num_bad_epochs = 0;
    } else {
        s->num_bad_epochs++;
    }
    if (s->cooldown_counter > 0) {
        s->cooldown_counter--;
        s->num_bad_epochs = 0;
    }
    if (s->num_bad_epochs > s->plateau.patience) {
        double old_lr = ct_optim_lr(s->opt);
        double new_lr = fmax(old_lr * s->plateau.factor, s->plateau.min_lr);
        if (old_lr - new_lr > s->plateau.eps) {
            ct_status st = ct_optim_set_lr(s->opt, new_lr);
            if (st != CT_OK)
                return st;
        }
        s->cooldown_counter = s->plateau.cooldown;
        s->num_bad_epochs = 0;
    }
    s->lr = ct_optim_lr(s->opt);
    return CT_OK;
}

double ct_schedule_lr(const ct_lr_schedule *s) {
    return s ? s->lr : NAN;
}
int64_t ct_schedule_epoch(const ct_lr_schedule *s) {
    return s ? s->last_epoch : -1;
}

/* ---- state -------------------------------------------------------------------------------- */

int ct_schedule_state(const ct_lr_schedule *s, const char **names, double *values, int max) {
    if (!s) {
        ct__null_arg("ct_schedule_state", "s");
        return -1;
    }
    const char *all_names[CT_SCHEDULE_MAX_STATE] = {"last_epoch",      "lr", "base_lr", "best", "num_bad_epochs",
                                                    "cooldown_counter"};
    double all_values[CT_SCHEDULE_MAX_STATE] = {
        (double)s->last_epoch, s->lr, s->base_lr, s->best, (double)s->num_bad_epochs, (double)s->cooldown_counter};
    int count = s->kind == PLATEAU ? 6 : 3;
    for (int i = 0; i < count && i < max; i++) {
        if (names)
            names[i] = all_names[i];
        if (values)
            values[i] = all_values[i];
    }
    return count;
}

static bool is_count(double v) {
    return v >= 0.0 && v <= 9007199254740992.0 && v == floor(v);
}

ct_status ct_schedule_load_state(ct_lr_schedule *s, const char *const *names, const double *values, int n) {
    const char *op = "ct_schedule_load_state";
    if (!s || ((!names || !values) && n > 0))
        return ct__null_arg(op, !s ? "s" : !names ? "names" : "values");
    ct_lr_schedule next = *s;
    bool lr_given = false;
    for (int i = 0; i < n; i++) {
        const char *name = names[i] ? names[i] : "(NULL)";
        double v = values[i];
        bool plateau = s->kind == PLATEAU, ok = true;
        if (strcmp(name, "last_epoch") == 0 && (ok = is_count(v)))
            next.last_epoch = (int64_t)v;
        else if (strcmp(name, "lr") == 0 && (ok = v >= 0.0 && isfinite(v)))
            next.lr = v, lr_given = true;
        else if (strcmp(name, "base_lr") == 0 && (ok = v >= 0.0 && isfinite(v)))
            next.base_lr = v;
        else if (plateau && strcmp(name, "best") == 0 && (ok = v == v))
            next.best = v;
        else if (plateau && strcmp(name, "num_bad_epochs") == 0 && (ok = is_count(v)))
            next.num_bad_epochs = (int64_t)v;
        else if (plateau && strcmp(name, "cooldown_counter") == 0 && (ok = is_count(v)))
            next.cooldown_counter = (int64_t)v;
        else if (ok)
            return ct__set_error(CT_ERR_VALUE, "%s: unknown schedule state \"%s\"", op, name);
        if (!ok)
            return ct__set_error(CT_ERR_VALUE, "%s: invalid %s = %g", op, name, v);
    }
    if (s->kind == ONE_CYCLE && next.last_epoch > next.cycle.total_steps)
        return ct__set_error(CT_ERR_VALUE, "%s: last_epoch %lld is past total_steps %lld", op,
                             (long long)next.last_epoch, (long long)next.cycle.total_steps);
    if (s->kind == PLATEAU) {
        ct_status st = lr_given ? ct_optim_set_lr(s->opt, next.lr) : CT_OK;
        if (st != CT_OK)
            return st;
        *s = next;
        return CT_OK;
    }
    ct_status st = apply(&next);
    if (st == CT_OK)
        *s = next;
    return st;
}
