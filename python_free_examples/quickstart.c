/* The README's example: fit y = x @ [1, -2, 3] by gradient descent. */
#include <ctensor/ctensor.h>
#include <stdio.h>

int main(void) {
    ct_scope_begin(); /* owns every tensor made below until ct_scope_end */
    ct_tensor *x = ct_randn((int64_t[]){64, 3}, 2, CT_F32, CT_CPU);
    ct_tensor *y = ct_matmul(x, ct_from_host((float[]){1, -2, 3}, (int64_t[]){3, 1}, 2, CT_F32, CT_CPU));
    ct_tensor *w = ct_requires_grad(ct_zeros((int64_t[]){3, 1}, 2, CT_F32, CT_CPU), true);
    for (int step = 0; step < 100; step++) {
        ct_scope_begin(); /* the step's activations and graph are freed at its end */
        ct_tensor *loss = ct_mse_loss(ct_matmul(x, w), y, CT_REDUCTION_MEAN);
        if (ct_backward(loss) != CT_OK) { /* errors travel: the first cause is reported */
            fprintf(stderr, "%s\n", ct_last_error_message());
            return 1;
        }
        ct_no_grad_begin(); /* the update itself is not recorded */
        ct_add_scaled_(w, ct_grad(w), -0.1);
        ct_no_grad_end();
        ct_zero_grad(w);
        ct_scope_end();
    }
    ct_tensor_print(w, "w (expect 1, -2, 3)", 3);
    return ct_scope_end();
}
