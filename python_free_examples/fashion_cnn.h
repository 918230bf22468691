/* The Fashion-MNIST CNN of the main job (fashion_mnist_cnn.c), written once: the transfer
 * learning example loads its checkpoints into the same network, and bench/bench_train.c
 * measures its training step. conv-BN-ReLU-pool twice, dropout, linear; 50,378 parameters. */
#ifndef CT_EXAMPLES_FASHION_CNN_H
#define CT_EXAMPLES_FASHION_CNN_H

#include <ctensor/ctensor.h>

static inline ct_module *fashion_cnn(void) {
    ct_conv2d_opts same = CT_CONV2D_OPTS_DEFAULT;
    same.padding[0] = same.padding[1] = 1;
    ct_pool2d_opts pool = CT_POOL2D_OPTS_DEFAULT; /* 2x2, stride 2 */
    ct_module *layers[] = {
        ct_conv2d_layer(1, 32, 3, &same, true),  ct_batchnorm2d(32, 1e-5, 0.1), ct_relu_layer(),
        ct_maxpool2d_layer(&pool),              ct_conv2d_layer(32, 64, 3, &same, true),
        ct_batchnorm2d(64, 1e-5, 0.1),          ct_relu_layer(),               ct_maxpool2d_layer(&pool),
        ct_flatten_layer(1, -1),                ct_dropout_layer(0.25),        ct_linear(64 * 7 * 7, 10, true),
    };
    return ct_sequential(sizeof layers / sizeof layers[0], layers);
}

#endif
