/* ctensor — built-in modules: the layers of CNNs and MLPs, named and initialized like
 * PyTorch's, so that checkpoints carry the same names and shapes.
 *
 * Every constructor returns a new module (train mode, F32 parameters on the CPU: move the
 * model with ct_module_to) that the caller frees with ct_module_free, or NULL with an error
 * recorded: CT_ERR_VALUE naming the argument for a bad size or probability, CT_ERR_NULL for
 * a missing array. Like ops, a constructor given a NULL module (from a constructor that
 * failed) returns NULL and keeps the first error, so a whole network can be built in one
 * expression and checked once:
 *
 *     ct_module *net = ct_sequential(4, (ct_module *[]){
 *         ct_flatten_layer(1, -1), ct_linear(784, 128, true), ct_relu_layer(), ct_linear(128, 10, true)});
 *     if (!net) fprintf(stderr, "%s\n", ct_last_error_message());
 *
 * Forward passes take the input as ops do (NULL propagates) and check its shape, naming the
 * layer: "Linear(784, 128): x is [32, 100], expected [*, 784]".
 */
#ifndef CTENSOR_MODULES_H
#define CTENSOR_MODULES_H

#include "nn.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- affine ------------------------------------------------------------------------- */

/* y = x W^T + b over the last dim of x (*, in) -> (*, out). Parameters "weight" (out, in)
 * and, when `bias`, "bias" (out): both U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's default). */
ct_module *ct_linear(int64_t in_features, int64_t out_features, bool bias);

/* ---- activations (no parameters) ----------------------------------------------------- */
ct_module *ct_relu_layer(void);
ct_module *ct_leaky_relu_layer(double negative_slope); /* PyTorch's default: 0.01 */
ct_module *ct_gelu_layer(ct_gelu_approx approximate);
ct_module *ct_silu_layer(void);
ct_module *ct_sigmoid_layer(void);
ct_module *ct_tanh_layer(void);
ct_module *ct_elu_layer(double alpha);                       /* PyTorch's default: 1 */
ct_module *ct_softplus_layer(double beta, double threshold); /* PyTorch's: 1, 20; beta > 0 */

/* ---- regularization and reshaping ----------------------------------------------------- */

/* Collapse dims start_dim..end_dim (negative counts from the end) into one; PyTorch's
 * nn.Flatten() is ct_flatten_layer(1, -1). */
ct_module *ct_flatten_layer(int start_dim, int end_dim);

/* ---- containers ------------------------------------------------------------------------ */

/* Run `n` modules in order. The children are named "0", "1", ... as in PyTorch, so their
 * parameters are "0.weight", "2.bias". The sequential takes ownership of all `n` modules,
 * also when it fails (it then frees the non-NULL ones), so nested constructor calls never
 * leak. n = 0 gives the identity. */
ct_module *ct_sequential(int n, ct_module **modules);
/* Append `module` as the next numbered child of a module made by ct_sequential. On error
 * (not a Sequential, NULL module) ownership is NOT taken, as with ct_module_add_child. */
ct_status ct_sequential_append(ct_module *sequential, ct_module *module);

#ifdef __cplusplus
}
#endif
#endif
