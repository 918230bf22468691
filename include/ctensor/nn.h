/* ctensor — modules: the building blocks of networks.
 *
 * A module holds named parameters (trainable tensors), named buffers (state that is saved
 * but not trained, like batch norm's running statistics) and named child modules; names
 * join with dots into paths ("layer1.0.conv1.weight") used by optimizers, checkpoints and
 * the summary. A module owns its tensors and children: ct_module_free releases them all.
 * Parameters live outside scopes, so a training step's ct_scope_end never frees them.
 *
 * Custom modules are plain C: fill a ct_module_vtable (forward, optional describe and
 * free) and create the module with ct_module_create, then add parameters and children.
 *
 *     static ct_tensor *mlp_forward(ct_module *m, ct_tensor *x) {
 *         return ct_module_forward(ct_module_child(m, "fc2"),
 *                                  ct_relu(ct_module_forward(ct_module_child(m, "fc1"), x)));
 *     }
 *     static const ct_module_vtable mlp_vt = {"MLP", mlp_forward, NULL, NULL};
 *     ct_module *mlp = ct_module_create(&mlp_vt, NULL);
 *     ct_module_add_child(mlp, "fc1", ct_linear(784, 128, true));
 *     ct_module_add_child(mlp, "fc2", ct_linear(128, 10, true));
 */
#ifndef CTENSOR_NN_H
#define CTENSOR_NN_H

#include <stdio.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_module ct_module;

typedef struct ct_module_vtable {
    const char *type_name; /* "Conv2d", shown by the summary */
    /* The forward pass; returns NULL with an error recorded on failure. */
    ct_tensor *(*forward)(ct_module *m, ct_tensor *x);
    /* Optional: a one-line description of the hyper-parameters ("1, 32, kernel_size=3"). */
    void (*describe)(const ct_module *m, char *buf, size_t size);
    /* Optional: free the module's private data (m->impl); tensors and children are freed
     * by ct_module_free itself. */
    void (*free_impl)(ct_module *m);
} ct_module_vtable;

/* A new module with no parameters; `impl` is private data for the vtable's functions. */
ct_module *ct_module_create(const ct_module_vtable *vtable, void *impl);
void *ct_module_impl(const ct_module *m);
const char *ct_module_type(const ct_module *m);
/* Free the module, its parameters, buffers and children. NULL is ignored. */
void ct_module_free(ct_module *m);

/* Register a parameter / buffer / child under `name` (no dots). The module takes the
 * caller's reference (and takes the tensor out of a scope if one holds it). Parameters
 * are set to require grad. Returns CT_OK, or an error (duplicate name, NULL...) in which
 * case ownership is NOT taken. */
ct_status ct_module_add_parameter(ct_module *m, const char *name, ct_tensor *t);
ct_status ct_module_add_buffer(ct_module *m, const char *name, ct_tensor *t);
ct_status ct_module_add_child(ct_module *m, const char *name, ct_module *child);

/* Replace the child `name` with `child` (freeing the old one and its tensors), like
 * PyTorch's `model.fc = nn.Linear(...)`; adds it when absent. On error nothing changes and
 * `child` stays the caller's. */
ct_status ct_module_set_child(ct_module *m, const char *name, ct_module *child);

/* Direct members by name (NULL when absent; no error recorded). */
ct_tensor *ct_module_param(const ct_module *m, const char *name);
ct_tensor *ct_module_buffer(const ct_module *m, const char *name);
ct_module *ct_module_child(const ct_module *m, const char *name);
int ct_module_num_children(const ct_module *m);
ct_module *ct_module_child_at(const ct_module *m, int i);

/* Run the forward pass. NULL input propagates like an op. */
ct_tensor *ct_module_forward(ct_module *m, ct_tensor *x);

/* Training / evaluation mode, recursively (dropout and batch norm behave differently). */
void ct_module_train(ct_module *m, bool training);
bool ct_module_is_training(const ct_module *m);

/* A flat list of named tensors of a module tree, in registration order (depth first). */
typedef struct ct_named_tensors {
    int count;
    char **names;        /* dotted paths, owned by the list */
    ct_tensor **tensors; /* borrowed from the modules */
} ct_named_tensors;

/* Trainable parameters (requires_grad set), buffers excluded. */
ct_named_tensors *ct_module_parameters(const ct_module *m);
/* Everything a checkpoint saves: parameters (frozen ones too) and buffers. */
ct_named_tensors *ct_module_state(const ct_module *m);
void ct_named_tensors_free(ct_named_tensors *list);
/* The tensor at a dotted path (parameter or buffer), NULL when absent. */
ct_tensor *ct_module_find(const ct_module *m, const char *path);

/* Freeze (requires_grad off, so optimizers skip them) or unfreeze every parameter whose
 * path starts with `prefix` as whole parts ("conv" or "conv." selects "conv.weight", not
 * "conv2.weight"; "" = all). Returns how many parameters changed. */
int ct_module_freeze(ct_module *m, const char *prefix, bool frozen);
/* Total number of parameter elements (trainable only when `trainable_only`). */
int64_t ct_module_num_parameters(const ct_module *m, bool trainable_only);

/* Move every parameter and buffer to `device` (in place: the module's tensors are
 * replaced; optimizers must be created after the move). */
ct_status ct_module_to(ct_module *m, ct_device device);

/* Print a Keras-style table to `out`: layer path, type, output shape and parameter count
 * for every module, found by running one forward pass on zeros of `input_shape` (batch
 * included) under no-grad and eval mode, then totals. */
ct_status ct_module_summary(ct_module *m, const int64_t *input_shape, int ndim, ct_dtype dtype, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
