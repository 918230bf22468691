/* A two-layer perceptron learns XOR.
 *
 * XOR is the classic function a single linear layer cannot represent: here a hidden layer
 * of 8 tanh units and a sigmoid output learn it with full-batch gradient descent on the
 * binary cross-entropy, written out with ctensor ops. Prints the loss as it goes and the
 * four predictions at the end. */
#include <ctensor/ctensor.h>
#include <math.h>
#include <stdio.h>

/* Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), like PyTorch's nn.Linear. */
static ct_tensor *param(int64_t rows, int64_t cols, double fan_in) {
    double bound = 1.0 / sqrt(fan_in);
    return ct_requires_grad(ct_uniform((int64_t[]){rows, cols}, 2, -bound, bound, CT_F32, CT_CPU), true);
}

int main(void) {
    const int hidden = 8, steps = 2000;
    const double lr = 0.5;
    ct_manual_seed(1);
    float inputs[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    float targets[4] = {0, 1, 1, 0};
    ct_tensor *x = ct_from_host(inputs, (int64_t[]){4, 2}, 2, CT_F32, CT_CPU);
    ct_tensor *y = ct_from_host(targets, (int64_t[]){4, 1}, 2, CT_F32, CT_CPU);
    ct_tensor *params[4] = {param(2, hidden, 2), param(1, hidden, 2), param(hidden, 1, hidden), param(1, 1, hidden)};
    ct_tensor *w1 = params[0], *b1 = params[1], *w2 = params[2], *b2 = params[3];
    if (!x || !y || !w1 || !b1 || !w2 || !b2) {
        fprintf(stderr, "setup failed: %s\n", ct_last_error_message());
        return 1;
    }

    ct_tensor *prob = NULL;
    for (int step = 0; step <= steps; step++) {
        ct_scope_begin();
        ct_tensor *h = ct_tanh(ct_add(ct_matmul(x, w1), b1));
        ct_tensor *p = ct_sigmoid(ct_add(ct_matmul(h, w2), b2));
        /* BCE = -mean(y log p + (1 - y) log(1 - p)), with p kept away from 0 and 1 */
        ct_tensor *pc = ct_clamp(p, 1e-6, 1 - 1e-6);
        ct_tensor *one_minus_y = ct_add_scalar(ct_neg(y), 1);
        ct_tensor *ll = ct_add(ct_mul(y, ct_log(pc)), ct_mul(one_minus_y, ct_log(ct_add_scalar(ct_neg(pc), 1))));
        ct_tensor *loss = ct_neg(ct_mean(ll, NULL, 0, false));
        if (!loss || ct_backward(loss) != CT_OK) {
            fprintf(stderr, "step %d failed: %s\n", step, ct_last_error_message());
            return 1;
        }
        if (step % 200 == 0)
            printf("step %4d  loss %.5f\n", step, ct_item(loss));
        ct_no_grad_begin();
        for (int i = 0; i < 4; i++) {
            ct_add_scaled_(params[i], ct_grad(params[i]), -lr);
            ct_zero_grad(params[i]);
        }
        ct_no_grad_end();
        if (step == steps)
            prob = ct_keep(ct_detach(p));
        ct_scope_end();
    }
    float out[4];
    ct_to_host(prob, out, sizeof out);
    int correct = 0;
    for (int i = 0; i < 4; i++) {
        printf("xor(%g, %g) = %.3f (target %g)\n", inputs[i][0], inputs[i][1], out[i], targets[i]);
        correct += (out[i] > 0.5f) == (targets[i] > 0.5f);
    }
    ct_tensor_free(prob);
    ct_tensor_free(x);
    ct_tensor_free(y);
    for (int i = 0; i < 4; i++)
        ct_tensor_free(params[i]);
    return correct == 4 ? 0 : 1;
}
