/* Linear regression by gradient descent: fit y = 2x + 1 from noisy samples.
 *
 * The textbook first program, written with ctensor ops and autograd: a weight and a bias
 * that require grad, a mean-squared-error loss, backward, and a plain SGD update done
 * without recording (ct_no_grad_begin/end). Prints the loss as it goes. */
#include <ctensor/ctensor.h>
#include <stdio.h>

int main(void) {
    const int64_t n = 256;
    const int steps = 200;
    const double lr = 0.1;
    ct_manual_seed(0);

    /* Data: x in [-1, 1), y = 2x + 1 + noise(0.1). */
    ct_tensor *x = ct_uniform((int64_t[]){n, 1}, 2, -1, 1, CT_F32, CT_CPU);
    ct_tensor *noise = ct_normal((int64_t[]){n, 1}, 2, 0, 0.1, CT_F32, CT_CPU);
    ct_tensor *y = ct_add(ct_add_scalar(ct_mul_scalar(x, 2), 1), noise);

    /* Parameters, owned by this program (no scope is open here). */
    ct_tensor *w = ct_requires_grad(ct_zeros((int64_t[]){1}, 1, CT_F32, CT_CPU), true);
    ct_tensor *b = ct_requires_grad(ct_zeros((int64_t[]){1}, 1, CT_F32, CT_CPU), true);
    if (!y || !w || !b) {
        fprintf(stderr, "setup failed: %s\n", ct_last_error_message());
        return 1;
    }

    for (int step = 0; step <= steps; step++) {
        ct_scope_begin();
        ct_tensor *pred = ct_add(ct_mul(x, w), b);
        ct_tensor *loss = ct_mean(ct_pow_scalar(ct_sub(pred, y), 2), NULL, 0, false);
        if (!loss || ct_backward(loss) != CT_OK) {
            fprintf(stderr, "step %d failed: %s\n", step, ct_last_error_message());
            return 1;
        }
        if (step % 20 == 0)
            printf("step %3d  loss %.5f  w %.4f  b %.4f\n", step, ct_item(loss), ct_item(w), ct_item(b));
        ct_no_grad_begin();
        ct_add_scaled_(w, ct_grad(w), -lr);
        ct_add_scaled_(b, ct_grad(b), -lr);
        ct_no_grad_end();
        ct_zero_grad(w);
        ct_zero_grad(b);
        ct_scope_end();
    }
    double wf = ct_item(w), bf = ct_item(b);
    printf("fitted y = %.3f x + %.3f (true: y = 2x + 1)\n", wf, bf);
    int ok = wf > 1.9 && wf < 2.1 && bf > 0.95 && bf < 1.05;
    ct_tensor *owned[] = {x, noise, y, w, b};
    for (int i = 0; i < 5; i++)
        ct_tensor_free(owned[i]);
    return ok ? 0 : 1;
}
