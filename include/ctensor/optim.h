/* ctensor — optimizers, learning-rate schedules, gradient clipping, penalties, early stopping.
 *
 * An optimizer updates a list of named parameters from their gradients. Create it from a
 * module (its trainable parameters, by dotted path) or from an explicit array of tensors:
 *
 *     ct_adam_opts o = CT_ADAMW_OPTS_DEFAULT;
 *     o.lr = 3e-4;
 *     ct_optim *opt = ct_optim_adamw(model, &o);
 *     ct_lr_schedule *sched = ct_schedule_cosine(opt, 500, 10000, 0.0);
 *     for (int step = 0; step < 10000; step++) {
 *         ct_scope_begin();
 *         ct_optim_zero_grad(opt);
 *         ct_backward(loss_of_batch(model, step));
 *         ct_clip_grad_norm(ct_optim_params(opt), ct_optim_num_params(opt), 1.0, 2.0);
 *         ct_optim_step(opt);
 *         ct_schedule_step(sched);
 *         ct_scope_end();
 *     }
 *     ct_schedule_free(sched);
 *     ct_optim_free(opt);
 *
 * The update rules are PyTorch 1.13's (torch.optim, single-tensor form), including their
 * order of floating-point operations where that is observable. Parameters are fp32 master
 * weights: F32 on any device, or F64 on the CPU; the optimizer's state tensors have the
 * parameter's dtype and live on its device. On the CPU each parameter is updated by one
 * OpenMP loop that reads and writes every element once; on CUDA one fused kernel launch
 * updates up to 32 parameters of a device ("multi-tensor apply").
 *
 * The optimizer holds a reference to each parameter, so freeing the module first is safe.
 * Free schedules before their optimizer.
 */
#ifndef CTENSOR_OPTIM_H
#define CTENSOR_OPTIM_H

#include "nn.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_optim ct_optim;

/* ---- options ------------------------------------------------------------------------ */

/* SGD: d = g + weight_decay p; with momentum, buf = d on the first step and
 * buf = momentum buf + (1 - dampening) d after, d = nesterov ? d + momentum buf : buf;
 * p -= lr d. Nesterov needs momentum > 0 and dampening = 0. */
typedef struct ct_sgd_opts {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
} ct_sgd_opts;
#define CT_SGD_OPTS_DEFAULT                                                                                            \
    { .lr = 0.01, .momentum = 0.0, .dampening = 0.0, .weight_decay = 0.0, .nesterov = false }

/* Adam (weight decay added to the gradient) and AdamW (decoupled: p *= 1 - lr weight_decay),
 * with PyTorch's bias correction: p -= lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
 * v replaced by its running maximum when amsgrad. Betas in [0, 1). */
typedef struct ct_adam_opts {
    double lr, beta1, beta2, eps, weight_decay;
    bool amsgrad;
} ct_adam_opts;
#define CT_ADAM_OPTS_DEFAULT                                                                                           \
    { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0, .amsgrad = false }
#define CT_ADAMW_OPTS_DEFAULT                                                                                          \
    { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-2, .amsgrad = false }

/* RMSprop: v = alpha v + (1 - alpha) g^2; centered subtracts the squared running mean of g;
 * the step is g / (sqrt(v) + eps), through a momentum buffer when momentum > 0. */
typedef struct ct_rmsprop_opts {
    double lr, alpha, eps, weight_decay, momentum;
    bool centered;
} ct_rmsprop_opts;
#define CT_RMSPROP_OPTS_DEFAULT                                                                                        \
    { .lr = 1e-2, .alpha = 0.99, .eps = 1e-8, .weight_decay = 0.0, .momentum = 0.0, .centered = false }

/* Adagrad: sum += g^2; p -= lr / (1 + (t - 1) lr_decay) g / (sqrt(sum) + eps). */
typedef struct ct_adagrad_opts {
    double lr, lr_decay, weight_decay, initial_accumulator_value, eps;
} ct_adagrad_opts;
#define CT_ADAGRAD_OPTS_DEFAULT                                                                                        \
    { .lr = 1e-2, .lr_decay = 0.0, .weight_decay = 0.0, .initial_accumulator_value = 0.0, .eps = 1e-10 }

/* ---- creation ----------------------------------------------------------------------- */

/* An optimizer over the module's trainable parameters (ct_module_parameters, named by
 * dotted path), or over `n` explicit tensors with `names` (NULL names: "0", "1", ...).
 * `opts` NULL means the defaults above. Errors (NULL on return): CT_ERR_VALUE for a
 * hyper-parameter out of range (negative lr, betas outside [0, 1), ...), no parameters, or
 * a tensor or name given twice; CT_ERR_DTYPE for a parameter that is not F32/F64;
 * CT_ERR_SHAPE for a non-contiguous parameter. */
ct_optim *ct_optim_sgd(const ct_module *m, const ct_sgd_opts *opts);
ct_optim *ct_optim_sgd_from_tensors(ct_tensor *const *params, const char *const *names, int n, const ct_sgd_opts *opts);
ct_optim *ct_optim_adam(const ct_module *m, const ct_adam_opts *opts);
ct_optim *ct_optim_adam_from_tensors(ct_tensor *const *params, const char *const *names, int n,
                                     const ct_adam_opts *opts);
/* Defaults for NULL opts: CT_ADAMW_OPTS_DEFAULT. */
ct_optim *ct_optim_adamw(const ct_module *m, const ct_adam_opts *opts);
ct_optim *ct_optim_adamw_from_tensors(ct_tensor *const *params, const char *const *names, int n,
                                      const ct_adam_opts *opts);
ct_optim *ct_optim_rmsprop(const ct_module *m, const ct_rmsprop_opts *opts);
ct_optim *ct_optim_rmsprop_from_tensors(ct_tensor *const *params, const char *const *names, int n,
                                        const ct_rmsprop_opts *opts);
ct_optim *ct_optim_adagrad(const ct_module *m, const ct_adagrad_opts *opts);
ct_optim *ct_optim_adagrad_from_tensors(ct_tensor *const *params, const char *const *names, int n,
                                        const ct_adagrad_opts *opts);
/* Release the optimizer, its state and its references to the parameters. NULL is ignored. */
void ct_optim_free(ct_optim *opt);

/* ---- training ----------------------------------------------------------------------- */

/* Update every parameter that has a gradient (the others, and their step counts, are left
 * alone), under no-grad; bumps the version of each updated parameter. Each parameter keeps
 * its own step count t, as in PyTorch. A gradient that does not fit its parameter (dtype,
 * size, device) is CT_ERR_VALUE, reported before any parameter is updated. */
ct_status ct_optim_step(ct_optim *opt);
/* Drop every parameter's gradient (PyTorch's set_to_none). NULL is ignored. */
void ct_optim_zero_grad(ct_optim *opt);

/* The learning rate (NaN for NULL), and setting it (CT_ERR_VALUE when negative). */
double ct_optim_lr(const ct_optim *opt);
ct_status ct_optim_set_lr(ct_optim *opt, double lr);
/* "SGD", "Adam", "AdamW", "RMSprop" or "Adagrad". */
const char *ct_optim_name(const ct_optim *opt);
/* The parameters, in order (borrowed; valid while the optimizer lives), e.g. for
 * ct_clip_grad_norm, and their names. */
int ct_optim_num_params(const ct_optim *opt);
ct_tensor *const *ct_optim_params(const ct_optim *opt);
const char *ct_optim_param_name(const ct_optim *opt, int i);

/* Hyper-parameters by name (booleans as 0/1):
 *   SGD      lr momentum dampening weight_decay nesterov
 *   Adam(W)  lr beta1 beta2 eps weight_decay amsgrad
 *   RMSprop  lr alpha eps weight_decay momentum centered
 *   Adagrad  lr lr_decay weight_decay initial_accumulator_value eps
 * ct_optim_hparam returns NaN with CT_ERR_VALUE for an unknown name. ct_optim_set_hparam
 * validates like creation; amsgrad, centered and initial_accumulator_value shape the state
 * and are fixed at creation (setting another value is CT_ERR_VALUE). */
double ct_optim_hparam(const ct_optim *opt, const char *name);
ct_status ct_optim_set_hparam(ct_optim *opt, const char *name, double value);

/* ---- state, for checkpoints --------------------------------------------------------- */

/* The optimizer's state: per parameter "<name>.step" (a 0-dim F64 CPU tensor, the count of
 * updates, like PyTorch's non-capturable step) and the rule's tensors, of the parameter's
 * shape, dtype and device:
 *   SGD      momentum_buffer (only once momentum has been used)
 *   Adam(W)  exp_avg exp_avg_sq, and max_exp_avg_sq with amsgrad
 *   RMSprop  square_avg, momentum_buffer when momentum > 0, grad_avg when centered
 *   Adagrad  sum
 * and every hyper-parameter (as for ct_optim_hparam). The tensors are borrowed from the
 * optimizer (valid until its next step, load or free); names and the list are owned by the
 * list. Free it with ct_optim_state_dict_free. */
typedef struct ct_optim_state_dict {
    int count;
    char **names;
    ct_tensor **tensors;
    int num_hparams;
    const char **hparam_names; /* static strings */
    double *hparam_values;
} ct_optim_state_dict;
ct_optim_state_dict *ct_optim_state(const ct_optim *opt);
void ct_optim_state_dict_free(ct_optim_state_dict *state);

/* Load state tensors (as ct_optim_state names them) into the optimizer: values are copied
 * (from any device) into its own state. Every name must belong to a parameter and to the
 * rule, with the expected shape and dtype, and every required entry (step and the state
 * above; momentum_buffer is optional) must be present: otherwise nothing is loaded and the
 * CT_ERR_VALUE message lists every mismatch. Hyper-parameters are set separately with
 * ct_optim_set_hparam. */
ct_status ct_optim_load_state(ct_optim *opt, const char *const *names, ct_tensor *const *tensors, int n);

/* ---- learning-rate schedules ------------------------------------------------------------
 * A schedule is attached to an optimizer and sets its learning rate. As in PyTorch, making
 * one sets the rate for epoch 0 at once, and each ct_schedule_step advances one epoch (or one
 * batch: the unit is the caller's) and sets the rate of the new epoch. The base rate is the
 * optimizer's rate when the schedule is made. Closed forms, with e the epoch:
 *   step         base gamma^floor(e / step_size)
 *   multi-step   base gamma^(number of milestones <= e)
 *   exponential  base gamma^e
 *   cosine       base e / warmup while e < warmup, then
 *                min_lr + (base - min_lr) (1 + cos(pi (e - warmup) / (total - warmup))) / 2,
 *                and min_lr from e = total on
 *   one-cycle    PyTorch's OneCycleLR (below)
 *   plateau      PyTorch's ReduceLROnPlateau (below)
 * Schedules hold a pointer to their optimizer: free them first. */
typedef struct ct_lr_schedule ct_lr_schedule;

ct_lr_schedule *ct_schedule_step_lr(ct_optim *opt, int64_t step_size, double gamma);
/* `milestones` (copied) need not be sorted; repeated ones apply gamma repeatedly. */
ct_lr_schedule *ct_schedule_multistep(ct_optim *opt, const int64_t *milestones, int n, double gamma);
ct_lr_schedule *ct_schedule_exponential(ct_optim *opt, double gamma);
/* Linear warmup from 0 over warmup_steps (0: none), then cosine annealing to min_lr at
 * total_steps (> warmup_steps). */
ct_lr_schedule *ct_schedule_cosine(ct_optim *opt, int64_t warmup_steps, int64_t total_steps, double min_lr);

/* One-cycle: from max_lr / div_factor up to max_lr over the first pct_start of total_steps,
 * then down to max_lr / div_factor / final_div_factor at step total_steps - 1 (cosine
 * annealing, or linear with anneal_linear). With cycle_momentum the momentum (SGD, RMSprop)
 * or beta1 (Adam, AdamW) moves the other way between max_momentum and base_momentum.
 * Stepping past total_steps is CT_ERR_VALUE, as in PyTorch. */
typedef struct ct_one_cycle_opts {
    double max_lr;
    int64_t total_steps;
    double pct_start, div_factor, final_div_factor;
    bool anneal_linear, three_phase;
    bool cycle_momentum;
    double base_momentum, max_momentum;
} ct_one_cycle_opts;
#define CT_ONE_CYCLE_OPTS_DEFAULT                                                                                      \
    {                                                                                                                  \
        .max_lr = 0.1, .total_steps = 0, .pct_start = 0.3, .div_factor = 25.0, .final_div_factor = 1e4,                \
        .anneal_linear = false, .three_phase = false, .cycle_momentum = true, .base_momentum = 0.85,                   \
        .max_momentum = 0.95                                                                                           \
    }
ct_lr_schedule *ct_schedule_one_cycle(ct_optim *opt, const ct_one_cycle_opts *opts);

/* Whether a smaller or a larger metric is better (plateau schedule, early stopping). */
typedef enum ct_metric_mode { CT_MODE_MIN = 0, CT_MODE_MAX = 1 } ct_metric_mode;

/* Reduce-on-plateau: a metric is better than the best so far when it is below
 * best (1 - threshold) (rel) or best - threshold (abs) in min mode (above best (1 + threshold)
 * or best + threshold in max mode). After more than `patience` epochs without improvement the
 * rate becomes max(lr factor, min_lr) (unless that changes it by eps or less) and `cooldown`
 * epochs follow in which bad epochs are not counted. */
typedef struct ct_plateau_opts {
    ct_metric_mode mode;
    double factor;
    int patience;
    double threshold;
    bool threshold_abs;
    int cooldown;
    double min_lr, eps;
} ct_plateau_opts;
#define CT_PLATEAU_OPTS_DEFAULT                                                                                        \
    {                                                                                                                  \
        .mode = CT_MODE_MIN, .factor = 0.1, .patience = 10, .threshold = 1e-4, .threshold_abs = false, .cooldown = 0,  \
        .min_lr = 0.0, .eps = 1e-8                                                                                     \
    }
ct_lr_schedule *ct_schedule_plateau(ct_optim *opt, const ct_plateau_opts *opts);

/* Advance one epoch. ct_schedule_step on a plateau schedule is CT_ERR_VALUE (it needs the
 * metric); the other schedules ignore the metric of ct_schedule_step_metric. */
ct_status ct_schedule_step(ct_lr_schedule *s);
ct_status ct_schedule_step_metric(ct_lr_schedule *s, double metric);
/* The rate the schedule set last (NaN for NULL) and the current epoch. */
double ct_schedule_lr(const ct_lr_schedule *s);
int64_t ct_schedule_epoch(const ct_lr_schedule *s);

/* The schedule's position as named numbers, for checkpoints: "last_epoch", "lr", "base_lr",
 * and for plateau "best", "num_bad_epochs", "cooldown_counter". Writes up to `max` entries
 * and returns how many there are (CT_SCHEDULE_MAX_STATE at most; -1 for NULL).
 * ct_schedule_load_state restores them (unknown names are CT_ERR_VALUE; missing ones keep
 * their value) and sets the optimizer's rate (and, for one-cycle, momentum) for that epoch. */
#define CT_SCHEDULE_MAX_STATE 8
int ct_schedule_state(const ct_lr_schedule *s, const char **names, double *values, int max);
ct_status ct_schedule_load_state(ct_lr_schedule *s, const char *const *names, const double *values, int n);
void ct_schedule_free(ct_lr_schedule *s);

/* ---- gradient clipping and penalties ---------------------------------------------------- */

/* Scale the gradients of `params` (those that have one) so that their global norm is at most
 * max_norm, like torch.nn.utils.clip_grad_norm_: total = (sum over grads of |g|^p)^(1/p)
 * (norm_type p > 0, or INFINITY for the largest |g|), accumulated in double; every gradient
 * is multiplied by max_norm / (total + 1e-6) when that is below 1. Returns the total norm
 * before clipping (0 when no parameter has a gradient), or NaN with an error recorded. */
double ct_clip_grad_norm(ct_tensor *const *params, int n, double max_norm, double norm_type);
/* Clamp every gradient element into [-clip, clip] (clip >= 0). */
ct_status ct_clip_grad_value(ct_tensor *const *params, int n, double clip);

/* lambda sum |p| and lambda sum p^2 over the module's trainable parameters (the Keras
 * regularizers; weight decay wd in SGD matches ct_l2_penalty with lambda = wd / 2): a
 * differentiable scalar to add to the loss, registered in the current scope. */
ct_tensor *ct_l1_penalty(const ct_module *m, double lambda);
ct_tensor *ct_l2_penalty(const ct_module *m, double lambda);

/* ---- early stopping --------------------------------------------------------------------- */

/* Stop when the metric has not improved by more than min_delta for `patience` updates in a
 * row. Fill the first three fields (CT_EARLY_STOPPING_DEFAULT: patience 5, min_delta 0, min
 * mode); the others are tracked by ct_early_stopping_update. */
typedef struct ct_early_stopping {
    int patience;
    double min_delta;
    ct_metric_mode mode;
    int64_t epochs;     /* updates seen */
    double best;        /* best metric so far (valid once epochs > 0) */
    int64_t best_epoch; /* 0-based index of the update that gave it */
    int64_t bad_epochs; /* updates since the last improvement */
} ct_early_stopping;
#define CT_EARLY_STOPPING_DEFAULT                                                                                      \
    { .patience = 5, .min_delta = 0.0, .mode = CT_MODE_MIN }
/* Record one metric; returns true when training should stop (bad_epochs >= patience). A NaN
 * metric never improves. NULL: false with CT_ERR_NULL. */
bool ct_early_stopping_update(ct_early_stopping *es, double metric);

#ifdef __cplusplus
}
#endif
#endif
