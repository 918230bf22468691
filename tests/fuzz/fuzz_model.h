/* The training setup that the checkpoint harness loads into and the seed generator saves
 * from: two linear layers, AdamW (with amsgrad, so that every slot exists) and a one-cycle
 * schedule. */
#ifndef CT_FUZZ_MODEL_H
#define CT_FUZZ_MODEL_H

#include "ctensor/ctensor.h"

typedef struct fuzz_setup {
    ct_module *model;
    ct_optim *optim;
    ct_lr_schedule *schedule;
} fuzz_setup;

static inline fuzz_setup fuzz_setup_create(void) {
    ct_manual_seed(1);
    fuzz_setup s = {0};
    s.model = ct_sequential(2, (ct_module *[]){ct_linear(3, 4, true), ct_linear(4, 2, false)});
    ct_adam_opts o = CT_ADAMW_OPTS_DEFAULT;
    o.amsgrad = true;
    s.optim = s.model ? ct_optim_adamw(s.model, &o) : NULL;
    ct_one_cycle_opts c = CT_ONE_CYCLE_OPTS_DEFAULT;
    c.total_steps = 100;
    s.schedule = s.optim ? ct_schedule_one_cycle(s.optim, &c) : NULL;
    return s;
}

static inline void fuzz_setup_free(fuzz_setup *s) {
    ct_schedule_free(s->schedule);
    ct_optim_free(s->optim);
    ct_module_free(s->model);
}

#endif
