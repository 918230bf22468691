/* The optimizer object, shared by nn/optim.c (creation, step), nn/optim_state.c (state
 * dicts) and nn/optim_cpu.c (the CPU update loops). */
#ifndef CT_NN_OPTIM_INTERNAL_H
#define CT_NN_OPTIM_INTERNAL_H

#include "ctensor/optim.h"
#include "kernels/cuda/launch.h"
#include "runtime/internal.h"

#define CT_OPTIM_MAX_SLOTS 3

typedef struct ct_optim_param {
    ct_tensor *param;                     /* a reference */
    char *name;                           /* owned */
    ct_tensor *state[CT_OPTIM_MAX_SLOTS]; /* owned; NULL where the rule does not use the slot */
    ct_tensor *step;                      /* 0-dim F64 on the CPU: updates so far (owned) */
} ct_optim_param;

struct ct_optim {
    ct_optim_hyper hyper;
    int n;
    ct_optim_param *params;
    ct_tensor **param_list; /* the n parameters, for ct_optim_params */
};

/* The names of the rule's state slots (NULL where unused by the rule at all). */
const char *ct__optim_slot_name(ct_optim_rule rule, int slot);
/* Whether slot `slot` exists with the optimizer's current hyper-parameters, and whether it
 * must appear in a loaded state (momentum buffers are optional: they start afresh). */
bool ct__optim_slot_used(const ct_optim_hyper *h, int slot);
bool ct__optim_slot_required(const ct_optim_hyper *h, int slot);
/* A new state tensor like `param` (zeros, or `fill`), owned by no scope. */
ct_tensor *ct__optim_state_new(const ct_tensor *param, double fill);

/* The hyper-parameter table: name -> value, for ct_optim_hparam and the state dict. */
int ct__optim_num_hparams(ct_optim_rule rule);
const char *ct__optim_hparam_name(ct_optim_rule rule, int i);

/* One update of one parameter on the CPU (F32 or F64), in one pass over its elements. */
void ct__optim_cpu_update(const ct_optim_hyper *h, ct_dtype dtype, const ct_optim_slot *slot);

#endif
