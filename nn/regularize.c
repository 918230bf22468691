/* L1/L2 penalties on a module's parameters, and early stopping. */
#include "runtime/internal.h"

#include <math.h>

/* lambda * sum over parameters of sum(|p|) (l1) or sum(p * p), built from differentiable ops
 * in a scope of its own so that only the result outlives the call. */
static ct_tensor *penalty(const char *op, const ct_module *m, double lambda, bool l1) {
    if (!m) {
        ct__null_arg(op, "m");
        return NULL;
    }
    if (!isfinite(lambda)) {
        ct__set_error(CT_ERR_VALUE, "%s: lambda must be finite, got %g", op, lambda);
        return NULL;
    }
    ct_named_tensors *params = ct_module_parameters(m);
    if (!params)
        return NULL;
    ct_scope_begin();
    ct_tensor *total = NULL;
    for (int i = 0; i < params->count; i++) {
        ct_tensor *p = params->tensors[i];
        ct_tensor *term = ct_sum(l1 ? ct_abs(p) : ct_mul(p, p), NULL, 0, false);
        total = total ? ct_add(total, term) : term;
        if (!total)
            break;
    }
    ct_tensor *result = params->count == 0 ? ct_scalar(0.0, CT_F32, CT_CPU) : ct_mul_scalar(total, lambda);
    if (result)
        ct_keep(result);
    ct_scope_end();
    ct_named_tensors_free(params);
    return result;
}

ct_tensor *ct_l1_penalty(const ct_module *m, double lambda) {
    return penalty("ct_l1_penalty", m, lambda, true);
}
ct_tensor *ct_l2_penalty(const ct_module *m, double lambda) {
    return penalty("ct_l2_penalty", m, lambda, false);
}

bool ct_early_stopping_update(ct_early_stopping *es, double metric) {
    if (!es) {
        ct__null_arg("ct_early_stopping_update", "es");
        return false;
    }
    /* A NaN metric never improves, and a NaN best (from a first NaN) is beaten by any number. */
    bool have_best = es->epochs > 0 && es->best == es->best;
    bool improved = metric == metric && (!have_best || (es->mode == CT_MODE_MAX ? metric > es->best + es->min_delta
                                                                                : metric < es->best - es->min_delta));
    es->epochs++;
    if (improved || es->epochs == 1) {
        es->best = metric;
        es->best_epoch = es->epochs - 1;
    }
    if (improved) {
        es->bad_epochs = 0;
        return false;
    }
    es->bad_epochs++;
    return es->bad_epochs >= es->patience;
}
