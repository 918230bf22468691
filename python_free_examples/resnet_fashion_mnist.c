/* A small ResNet on Fashion-MNIST, with augmentation and a cosine schedule.
 *
 *   stem: conv 3x3 (1 -> 32) - batch norm - ReLU                      28 x 28
 *   stage 1: 2 basic blocks, 32 channels                                28 x 28
 *   stage 2: 2 basic blocks, 64 channels, the first with stride 2       14 x 14
 *   stage 3: 2 basic blocks, 128 channels, the first with stride 2       7 x 7
 *   global average pool - linear (128 -> 10)
 *
 * Training images are randomly flipped and cropped (padding 2); SGD with Nesterov momentum,
 * weight decay and a cosine learning rate with one epoch of warmup. Target: >= 93.5% test
 * accuracy. Much heavier than fashion_mnist_cnn: meant for a GPU (--device cuda), though it
 * runs on the CPU too.
 *
 *   resnet_fashion_mnist [--device D] [--epochs N] [--batch-size N] [--lr X] [--data DIR]
 *                        [--checkpoint PATH] [--train-limit N]
 */
#include <ctensor/ctensor.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static ct_module *stage(int64_t in, int64_t out, int stride) {
    ct_module *blocks[] = {ct_residual_block(in, out, stride), ct_residual_block(out, out, 1)};
    return ct_sequential(2, blocks);
}

static ct_module *resnet(void) {
    ct_conv2d_opts same = CT_CONV2D_OPTS_DEFAULT;
    same.padding[0] = same.padding[1] = 1;
    ct_module *stem[] = {ct_conv2d_layer(1, 32, 3, &same, false), ct_batchnorm2d(32, 1e-5, 0.1), ct_relu_layer()};
    ct_module *layers[] = {ct_sequential(3, stem),      stage(32, 32, 1),         stage(32, 64, 2),
                           stage(64, 128, 2),           ct_global_avgpool2d_layer(), ct_flatten_layer(1, -1),
                           ct_linear(128, 10, true)};
    return ct_sequential(sizeof layers / sizeof layers[0], layers);
}

int main(int argc, char **argv) {
    const char *device_name = NULL, *data = NULL, *checkpoint = "resnet_fashion_mnist.safetensors";
    int epochs = 15;
    int64_t batch_size = 128, train_limit = 0;
    double lr = 0.1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--device")) device_name = argv[i + 1];
        else if (!strcmp(argv[i], "--epochs")) epochs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch-size")) batch_size = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--lr")) lr = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--data")) data = argv[i + 1];
        else if (!strcmp(argv[i], "--checkpoint")) checkpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--train-limit")) train_limit = atoll(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    ct_device device = ct_device_default();
    if (device_name && ct_device_parse(device_name, &device) != CT_OK) {
        fprintf(stderr, "%s\n", ct_last_error_message());
        return 2;
    }
    ct_manual_seed(0);
    ct_tensor *train_x, *train_y, *test_x, *test_y;
    if (ct_mnist_load(data, true, &train_x, &train_y) != CT_OK || ct_mnist_load(data, false, &test_x, &test_y) != CT_OK) {
        fprintf(stderr, "cannot load Fashion-MNIST: %s (apt-get install dataset-fashion-mnist, or --data DIR)\n",
                ct_last_error_message());
        return 1;
    }
    if (train_limit > 0 && train_limit < ct_tensor_size(train_x, 0)) {
        ct_tensor *x = ct_slice(train_x, 0, 0, train_limit, 1); /* views: they keep the data alive */
        ct_tensor *y = ct_slice(train_y, 0, 0, train_limit, 1);
        ct_tensor_free(train_x);
        ct_tensor_free(train_y);
        train_x = x;
        train_y = y;
    }
    ct_loader_opts lo = CT_LOADER_OPTS_DEFAULT;
    lo.batch_size = batch_size;
    lo.device = device;
    lo.mean = 0.2860;
    lo.std = 0.3530;
    lo.augment.hflip = true;
    lo.augment.crop_padding = 2;
    ct_loader *train = ct_loader_create(train_x, train_y, &lo);
    lo.augment = CT_AUGMENT_NONE;
    lo.shuffle = false;
    lo.batch_size = 500;
    ct_loader *test = ct_loader_create(test_x, test_y, &lo);
    ct_module *model = resnet();
    if (!train || !test || !model || ct_module_to(model, device) != CT_OK) {
        fprintf(stderr, "setup: %s\n", ct_last_error_message());
        return 1;
    }
    ct_module_summary(model, (int64_t[]){batch_size, 1, 28, 28}, 4, CT_F32, stdout);
    ct_sgd_opts so = CT_SGD_OPTS_DEFAULT;
    so.lr = lr;
    so.momentum = 0.9;
    so.nesterov = true;
    so.weight_decay = 5e-4;
    ct_optim *opt = ct_optim_sgd(model, &so);
    int64_t steps = ct_loader_num_batches(train);
    int64_t warmup = steps < steps * epochs / 5 ? steps : steps * epochs / 5;
    ct_lr_schedule *sched = ct_schedule_cosine(opt, warmup, steps * epochs, 0);
    if (!opt || !sched) {
        fprintf(stderr, "optimizer: %s\n", ct_last_error_message());
        return 1;
    }
    double acc = 0;
    for (int epoch = 0; epoch < epochs; epoch++) {
        ct_loader_start_epoch(train, epoch);
        double t0 = now(), loss_sum = 0;
        int64_t seen = 0;
        for (;;) {
            ct_scope_begin();
            ct_tensor *x, *y;
            if (ct_loader_next(train, &x, &y) != CT_OK || !x) {
                ct_scope_end();
                break;
            }
            ct_tensor *loss = ct_cross_entropy(ct_module_forward(model, x), y, NULL);
            ct_optim_zero_grad(opt);
            if (!loss || ct_backward(loss) != CT_OK || ct_optim_step(opt) != CT_OK || ct_schedule_step(sched) != CT_OK) {
                fprintf(stderr, "step failed: %s\n", ct_last_error_message());
                return 1;
            }
            loss_sum += ct_item(loss) * (double)ct_tensor_size(y, 0);
            seen += ct_tensor_size(y, 0);
            ct_scope_end();
        }
        double seconds = now() - t0;
        /* evaluation */
        ct_module_train(model, false);
        ct_loader_start_epoch(test, 0);
        int64_t correct = 0, total = 0;
        ct_no_grad_begin();
        for (;;) {
            ct_scope_begin();
            ct_tensor *x, *y;
            if (ct_loader_next(test, &x, &y) != CT_OK || !x) {
                ct_scope_end();
                break;
            }
            correct += ct_correct_count(ct_module_forward(model, x), y);
            total += ct_tensor_size(y, 0);
            ct_scope_end();
        }
        ct_no_grad_end();
        ct_module_train(model, true);
        acc = (double)correct / (double)total;
        printf("epoch %2d/%d: train loss %.4f | test acc %.4f | lr %.4f | %.1f s, %.0f img/s\n", epoch + 1, epochs,
               loss_sum / (double)seen, acc, ct_optim_lr(opt), seconds, (double)seen / seconds);
        fflush(stdout);
        if (ct_checkpoint_save(checkpoint, model, opt, sched, epoch) != CT_OK)
            fprintf(stderr, "checkpoint: %s\n", ct_last_error_message());
    }
    printf("final test accuracy %.4f (target 0.935)\n", acc);
    ct_schedule_free(sched);
    ct_optim_free(opt);
    ct_module_free(model);
    ct_loader_free(train);
    ct_loader_free(test);
    ct_tensor *owned[] = {train_x, train_y, test_x, test_y};
    for (int i = 0; i < 4; i++)
        ct_tensor_free(owned[i]);
    return 0;
}
