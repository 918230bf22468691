/* Transfer learning: reuse the Fashion-MNIST CNN's convolutional layers for a new task.
 *
 * Loads the checkpoint that fashion_mnist_cnn writes, freezes the convolution and batch
 * norm layers (their parameters stop requiring grad, batch norm keeps its running
 * statistics), replaces the 10-way head with a new 4-way one, and trains only the head to
 * tell apart the four upper-body garments that the full model confuses most: T-shirt/top,
 * Pullover, Coat and Shirt.
 *
 *   transfer_learning [--checkpoint PATH] [--device D] [--epochs N] [--data DIR]
 */
#include <ctensor/ctensor.h>

#include "fashion_cnn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int subset[4] = {0, 2, 4, 6}; /* T-shirt/top, Pullover, Coat, Shirt */
static const char *subset_names[4] = {"T-shirt/top", "Pullover", "Coat", "Shirt"};

/* Keep the images whose label is in `subset`, relabelled 0..3. */
static void select_subset(ct_tensor **images, ct_tensor **labels) {
    int64_t n = ct_tensor_size(*images, 0), kept = 0, per = 28 * 28;
    uint8_t *px = malloc((size_t)(n * per));
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)n);
    uint8_t *out_px = malloc((size_t)(n * per));
    int32_t *out_lab = malloc(sizeof(int32_t) * (size_t)n);
    ct_to_host(*images, px, (size_t)(n * per));
    ct_to_host(*labels, lab, sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            if (lab[i] == subset[k]) {
                memcpy(out_px + kept * per, px + i * per, (size_t)per);
                out_lab[kept++] = k;
            }
    ct_tensor_free(*images);
    ct_tensor_free(*labels);
    *images = ct_from_host(out_px, (int64_t[]){kept, 28, 28}, 3, CT_U8, CT_CPU);
    *labels = ct_from_host(out_lab, &kept, 1, CT_I32, CT_CPU);
    free(px);
    free(lab);
    free(out_px);
    free(out_lab);
}

static double evaluate(ct_module *model, ct_loader *test, ct_confusion *cm) {
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
        ct_tensor *logits = ct_module_forward(model, x);
        correct += ct_correct_count(logits, y);
        total += ct_tensor_size(y, 0);
        if (cm)
            ct_confusion_update(cm, logits, y);
        ct_scope_end();
    }
    ct_no_grad_end();
    return total ? (double)correct / (double)total : 0;
}

int main(int argc, char **argv) {
    const char *checkpoint = "fashion_mnist_cnn.safetensors", *device_name = NULL, *data = NULL;
    int epochs = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--checkpoint")) checkpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) device_name = argv[i + 1];
        else if (!strcmp(argv[i], "--epochs")) epochs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--data")) data = argv[i + 1];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    ct_device device = ct_device_default();
    if (device_name && ct_device_parse(device_name, &device) != CT_OK) {
        fprintf(stderr, "%s\n", ct_last_error_message());
        return 2;
    }
    ct_manual_seed(3);

    /* 1. the pretrained network, exactly as saved */
    ct_module *model = fashion_cnn();
    ct_safetensors *file = ct_safetensors_load(checkpoint);
    if (!model || !file) {
        fprintf(stderr, "%s\n(run fashion_mnist_cnn first to produce the checkpoint)\n", ct_last_error_message());
        return 1;
    }
    ct_load_report report;
    if (ct_module_load_from(model, file, "model.", &CT_LOAD_OPTS_STRICT, &report) != CT_OK) {
        fprintf(stderr, "loading %s: %s\n", checkpoint, ct_last_error_message());
        return 1;
    }
    ct_safetensors_free(file);
    printf("loaded %d tensors from %s\n", report.loaded, checkpoint);

    /* 2. freeze the feature extractor, give it a new head */
    const char *frozen[] = {"0.", "1.", "4.", "5."};
    int n_frozen = 0;
    for (int i = 0; i < 4; i++)
        n_frozen += ct_module_freeze(model, frozen[i], true);
    ct_module_set_child(model, "10", ct_linear(64 * 7 * 7, 4, true));
    if (ct_module_to(model, device) != CT_OK) {
        fprintf(stderr, "%s\n", ct_last_error_message());
        return 1;
    }
    printf("froze %d parameters; trainable now: %lld of %lld\n", n_frozen,
           (long long)ct_module_num_parameters(model, true), (long long)ct_module_num_parameters(model, false));

    /* 3. the four-class data */
    ct_tensor *train_x, *train_y, *test_x, *test_y;
    if (ct_mnist_load(data, true, &train_x, &train_y) != CT_OK || ct_mnist_load(data, false, &test_x, &test_y) != CT_OK) {
        fprintf(stderr, "cannot load Fashion-MNIST: %s\n", ct_last_error_message());
        return 1;
    }
    select_subset(&train_x, &train_y);
    select_subset(&test_x, &test_y);
    ct_loader_opts lo = CT_LOADER_OPTS_DEFAULT;
    lo.batch_size = 128;
    lo.device = device;
    lo.mean = 0.2860;
    lo.std = 0.3530;
    ct_loader *train = ct_loader_create(train_x, train_y, &lo);
    lo.shuffle = false;
    lo.batch_size = 1000;
    ct_loader *test = ct_loader_create(test_x, test_y, &lo);
    ct_adam_opts ao = CT_ADAM_OPTS_DEFAULT;
    ct_optim *opt = ct_optim_adam(model, &ao); /* only the trainable (head) parameters */
    if (!train || !test || !opt) {
        fprintf(stderr, "%s\n", ct_last_error_message());
        return 1;
    }
    printf("before training the head: %.4f on the 4-class test set (chance 0.25)\n", evaluate(model, test, NULL));

    /* 4. train the head; frozen batch norm layers stay in eval mode */
    for (int epoch = 0; epoch < epochs; epoch++) {
        ct_module_train(model, true);
        ct_module_train(ct_module_child(model, "1"), false);
        ct_module_train(ct_module_child(model, "5"), false);
        ct_loader_start_epoch(train, epoch);
        for (;;) {
            ct_scope_begin();
            ct_tensor *x, *y;
            if (ct_loader_next(train, &x, &y) != CT_OK || !x) {
                ct_scope_end();
                break;
            }
            ct_tensor *loss = ct_cross_entropy(ct_module_forward(model, x), y, NULL);
            ct_optim_zero_grad(opt);
            if (!loss || ct_backward(loss) != CT_OK || ct_optim_step(opt) != CT_OK) {
                fprintf(stderr, "step failed: %s\n", ct_last_error_message());
                return 1;
            }
            ct_scope_end();
        }
        printf("epoch %d/%d: 4-class test accuracy %.4f\n", epoch + 1, epochs, evaluate(model, test, NULL));
    }
    ct_confusion *cm = ct_confusion_create(4);
    double acc = evaluate(model, test, cm);
    ct_confusion_print(cm, subset_names, stdout);
    printf("transfer learning: %.4f on T-shirt/Pullover/Coat/Shirt\n", acc);
    ct_confusion_free(cm);
    ct_optim_free(opt);
    ct_module_free(model);
    ct_loader_free(train);
    ct_loader_free(test);
    ct_tensor *owned[] = {train_x, train_y, test_x, test_y};
    for (int i = 0; i < 4; i++)
        ct_tensor_free(owned[i]);
    return 0;
}
