/* ctensor — reverse-mode automatic differentiation.
 *
 * An op whose inputs require grad records a node while grad mode is on. ct_backward()
 * runs the recorded nodes in reverse topological order, accumulates into the `grad` of
 * every leaf that requires grad, and frees the graph unless asked to retain it. A tensor
 * saved for backward and then modified in place makes backward fail with CT_ERR_AUTOGRAD,
 * naming the op that saved it.
 */
#ifndef CTENSOR_AUTOGRAD_H
#define CTENSOR_AUTOGRAD_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Mark a leaf as requiring grad (floating dtypes only). Returns `t`, or NULL on error. */
ct_tensor *ct_requires_grad(ct_tensor *t, bool requires_grad);
bool ct_tensor_requires_grad(const ct_tensor *t);
/* True for tensors created by the user rather than by a recorded op. */
bool ct_tensor_is_leaf(const ct_tensor *t);
/* The accumulated gradient of a leaf (NULL when none); owned by `t`. */
ct_tensor *ct_grad(const ct_tensor *t);
/* Drop the gradient of a leaf (PyTorch's set_to_none). */
void ct_zero_grad(ct_tensor *t);
/* The op name of the node that produced `t` ("ct_mul"), NULL for leaves. */
const char *ct_grad_fn_name(const ct_tensor *t);

/* Backward from a scalar `loss` (grad 1). */
ct_status ct_backward(ct_tensor *loss);
/* Backward from any `output` with gradient `grad_output` (same shape; NULL allowed only
 * for a scalar); keep the graph for another backward when `retain_graph`. */
ct_status ct_backward_ex(ct_tensor *output, const ct_tensor *grad_output, bool retain_graph);

/* Grad mode: nested no-grad regions, per thread. */
void ct_no_grad_begin(void);
void ct_no_grad_end(void);
bool ct_grad_enabled(void);
/* A view of `t` that shares its storage but is cut from the graph. */
ct_tensor *ct_detach(ct_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
