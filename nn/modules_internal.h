/* Helpers shared by the built-in modules (nn/modules*.c). */
#ifndef CT_NN_MODULES_INTERNAL_H
#define CT_NN_MODULES_INTERNAL_H

#include "ctensor/init.h"
#include "ctensor/modules.h"
#include "runtime/internal.h"

/* A module whose impl is a heap copy of the `size` bytes at `impl` (NULL: no impl), freed
 * with the module. NULL with an error on failure. */
ct_module *ct__layer_new(const ct_module_vtable *vt, const void *impl, size_t size);
/* free_impl for modules made by ct__layer_new. */
void ct__layer_free_impl(ct_module *m);

/* Register an uninitialized F32 CPU parameter (or buffer) of the given shape, returning it
 * (owned by m), or NULL with an error. */
ct_tensor *ct__layer_param(ct_module *m, const char *name, const int64_t *shape, int ndim);
ct_tensor *ct__layer_buffer(ct_module *m, const char *name, const int64_t *shape, int ndim, ct_dtype dtype);

/* PyTorch's default for Linear and the convolutions: weight kaiming_uniform(a = sqrt(5)),
 * i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
 * with the weight's fan_in (bias may be NULL). */
ct_status ct__layer_init_affine(ct_tensor *weight, ct_tensor *bias);

/* A new handle on x's data that keeps x's autograd history (for identity forwards). */
ct_tensor *ct__layer_identity(ct_tensor *x);

/* "Conv2d(1, 32, ...)"-like prefix for module error messages: the type name. */
static inline const char *ct__layer_name(const ct_module *m) {
    return ct_module_type(m);
}

#endif
