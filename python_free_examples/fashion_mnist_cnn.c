/* Train a CNN on Fashion-MNIST, in C.
 *
 *   conv 3x3 (1 -> 32) - batch norm - ReLU - max pool 2
 *   conv 3x3 (32 -> 64) - batch norm - ReLU - max pool 2
 *   dropout - linear (64*7*7 -> 10)
 *
 * AdamW with a cosine schedule after a linear warmup; evaluates on the test set
 * after every epoch, writes metrics as JSON Lines and a checkpoint (model, optimizer,
 * schedule, epoch) it can resume from, and ends with the confusion matrix and per-class F1.
 * The data comes from Debian's dataset-fashion-mnist package, or --data / CT_FASHION_MNIST_DIR.
 *
 *   fashion_mnist_cnn [--device cpu|cuda|cuda:N] [--epochs N] [--batch-size N] [--lr X]
 *                     [--optimizer adamw|adam|sgd] [--seed N] [--data DIR] [--checkpoint PATH]
 *                     [--resume] [--metrics PATH] [--train-limit N] [--min-accuracy X]
 *                     [--cuda-graph]
 *
 * --cuda-graph (CUDA only) captures the forward and backward of a full batch in a CUDA graph
 * once (after one eager step) and replays it for every later full batch, which saves the
 * host the cost of launching each kernel; a last, smaller batch runs eagerly. The optimizer
 * and the schedule step eagerly after each replay.
 *
 * Exit status: 0 on success, 1 on a failure, 2 on bad arguments, 77 when the data set is
 * not found (so a test harness can report the run as skipped), and 1 when the final test
 * accuracy is below --min-accuracy.
 */
#include <ctensor/ctensor.h>

#include "fashion_cnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *class_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

typedef struct options {
    const char *device, *optimizer, *data, *checkpoint, *metrics;
    int epochs;
    int64_t batch_size, train_limit;
    double lr, min_accuracy;
    uint64_t seed;
    bool resume, cuda_graph;
} options;

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [--device cpu|cuda|cuda:N] [--epochs N] [--batch-size N] [--lr X]\n"
            "          [--optimizer adamw|adam|sgd] [--seed N] [--data DIR] [--checkpoint PATH] [--resume]\n"
            "          [--metrics PATH] [--train-limit N] [--min-accuracy X] [--cuda-graph]\n",
            prog);
}

static bool parse_args(int argc, char **argv, options *o) {
    *o = (options){.device = NULL, .optimizer = "adamw", .data = NULL, .checkpoint = "fashion_mnist_cnn.safetensors",
                   .metrics = "fashion_mnist_cnn.jsonl", .epochs = 10, .batch_size = 128, .train_limit = 0,
                   .lr = 2e-3, .min_accuracy = 0, .seed = 42, .resume = false, .cuda_graph = false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (!strcmp(a, "--device") && v) o->device = v;
        else if (!strcmp(a, "--epochs") && v) o->epochs = atoi(v);
        else if (!strcmp(a, "--batch-size") && v) o->batch_size = atoll(v);
        else if (!strcmp(a, "--lr") && v) o->lr = atof(v);
        else if (!strcmp(a, "--optimizer") && v) o->optimizer = v;
        else if (!strcmp(a, "--seed") && v) o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--data") && v) o->data = v;
        else if (!strcmp(a, "--checkpoint") && v) o->checkpoint = v;
        else if (!strcmp(a, "--metrics") && v) o->metrics = v;
        else if (!strcmp(a, "--train-limit") && v) o->train_limit = atoll(v);
        else if (!strcmp(a, "--min-accuracy") && v) o->min_accuracy = atof(v);
        else if (!strcmp(a, "--resume")) { o->resume = true; takes = false; }
        else if (!strcmp(a, "--cuda-graph")) { o->cuda_graph = true; takes = false; }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(argv[0]); exit(0); }
        else { fprintf(stderr, "unknown or incomplete option: %s\n", a); usage(argv[0]); return false; }
        i += takes;
    }
    if (o->epochs < 1 || o->batch_size < 1 || !(o->lr > 0)) {
        fprintf(stderr, "--epochs, --batch-size and --lr must be positive\n");
        return false;
    }
    return true;
}

/* A one-line progress display: redrawn in place on a terminal, every 100 batches otherwise. */
static void progress(bool tty, int epoch, int epochs, int64_t b, int64_t nb, double loss, double acc, double ips) {
    if (tty) {
        int width = 30, filled = (int)(width * (b + 1) / nb);
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[width] = '\0';
        printf("\repoch %d/%d [%s] %lld/%lld loss %.4f acc %.4f %.0f img/s ", epoch + 1, epochs, bar,
               (long long)(b + 1), (long long)nb, loss, acc, ips);
        fflush(stdout);
    } else if ((b + 1) % 100 == 0 || b + 1 == nb) {
        printf("epoch %d/%d batch %lld/%lld loss %.4f acc %.4f %.0f img/s\n", epoch + 1, epochs, (long long)(b + 1),
               (long long)nb, loss, acc, ips);
        fflush(stdout);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Test-set accuracy (and the confusion matrix when cm is not NULL). */
static double evaluate(ct_module *model, ct_loader *test, ct_confusion *cm, double *loss_out) {
    ct_module_train(model, false);
    ct_loader_start_epoch(test, 0);
    int64_t correct = 0, seen = 0;
    double loss_sum = 0;
    ct_no_grad_begin();
    for (;;) {
        ct_scope_begin();
        ct_tensor *x, *y;
        if (ct_loader_next(test, &x, &y) != CT_OK || !x) {
            ct_scope_end();
            break;
        }
        ct_tensor *logits = ct_module_forward(model, x);
        ct_tensor *loss = ct_cross_entropy(logits, y, NULL);
        int64_t n = ct_tensor_size(y, 0);
        loss_sum += ct_item(loss) * (double)n;
        correct += ct_correct_count(logits, y);
        seen += n;
        if (cm)
            ct_confusion_update(cm, logits, y);
        ct_scope_end();
    }
    ct_no_grad_end();
    ct_module_train(model, true);
    *loss_out = seen ? loss_sum / (double)seen : NAN;
    return seen ? (double)correct / (double)seen : 0;
}

/* --cuda-graph: the forward and backward of a full batch, captured once and replayed. The
 * graph reads x and y and rewrites logits, loss and the parameters' gradients (made during the
 * capture), so gradients are zeroed in place from then on, never released. */
typedef struct step_graph {
    ct_graph *graph;
    ct_tensor *x, *y, *logits, *loss;
} step_graph;

static void zero_grads(ct_optim *opt, const ct_module *model, const step_graph *sg) {
    if (!sg->graph) {
        ct_optim_zero_grad(opt);
        return;
    }
    ct_named_tensors *params = ct_module_parameters(model);
    for (int i = 0; params && i < params->count; i++)
        if (ct_grad(params->tensors[i]))
            ct_fill_(ct_grad(params->tensors[i]), 0.0);
    ct_named_tensors_free(params);
}

/* Forward and backward of a batch, eagerly or through the step graph (capturing it at the
 * first full batch after `warm`); *logits and *loss are the results. */
static ct_status forward_backward(ct_module *model, ct_optim *opt, step_graph *sg, bool use_graph, bool warm,
                                  int64_t batch_size, ct_tensor *x, ct_tensor *y, ct_tensor **logits, ct_tensor **loss) {
    if (!use_graph || !warm || ct_tensor_size(x, 0) != batch_size) {
        zero_grads(opt, model, sg);
        *logits = ct_module_forward(model, x);
        *loss = ct_cross_entropy(*logits, y, NULL);
        return *loss ? ct_backward(*loss) : ct_last_error();
    }
    if (!sg->graph) {
        int dev = ct_tensor_device(x).index;
        sg->x = ct_keep(ct_empty_like(x));
        sg->y = ct_keep(ct_empty_like(y));
        if (!sg->x || !sg->y)
            return ct_last_error();
        ct_optim_zero_grad(opt); /* the capture makes the gradients the graph rewrites */
        sg->graph = ct_graph_capture_begin(dev);
        if (!sg->graph)
            return ct_last_error();
        sg->logits = ct_keep(ct_module_forward(model, sg->x));
        sg->loss = ct_keep(ct_cross_entropy(sg->logits, sg->y, NULL));
        ct_status st = sg->loss ? ct_backward(sg->loss) : ct_last_error();
        ct_status end = ct_graph_capture_end(sg->graph);
        if (st != CT_OK || end != CT_OK)
            return st != CT_OK ? st : end;
    }
    *logits = sg->logits;
    *loss = sg->loss;
    if (ct_copy_(sg->x, x) != CT_OK || ct_copy_(sg->y, y) != CT_OK)
        return ct_last_error();
    return ct_graph_replay(sg->graph);
}

int main(int argc, char **argv) {
    options o;
    if (!parse_args(argc, argv, &o))
        return 2;
    ct_device device = ct_device_default();
    if (o.device && ct_device_parse(o.device, &device) != CT_OK) {
        fprintf(stderr, "%s\n", ct_last_error_message());
        return 2;
    }
    if (device.type == CT_DEVICE_CUDA && !ct_cuda_is_available()) {
        fprintf(stderr, "--device %s: no usable CUDA device on this machine\n", o.device);
        return 2;
    }
    if (o.cuda_graph && device.type != CT_DEVICE_CUDA) {
        fprintf(stderr, "--cuda-graph needs a CUDA device (--device cuda)\n");
        return 2;
    }
    ct_manual_seed(o.seed);

    /* ---- data ---- */
    ct_tensor *train_x, *train_y, *test_x, *test_y;
    if (ct_mnist_load(o.data, true, &train_x, &train_y) != CT_OK ||
        ct_mnist_load(o.data, false, &test_x, &test_y) != CT_OK) {
        fprintf(stderr, "cannot load Fashion-MNIST: %s\n"
                        "install it with `apt-get install dataset-fashion-mnist`, or pass --data DIR "
                        "(or set CT_FASHION_MNIST_DIR) to a directory with the IDX files\n",
                ct_last_error_message());
        return 77;
    }
    if (o.train_limit > 0 && o.train_limit < ct_tensor_size(train_x, 0)) {
        ct_tensor *x = ct_slice(train_x, 0, 0, o.train_limit, 1); /* views: they keep the data alive */
        ct_tensor *y = ct_slice(train_y, 0, 0, o.train_limit, 1);
        ct_tensor_free(train_x);
        ct_tensor_free(train_y);
        train_x = x;
        train_y = y;
    }
    ct_loader_opts lo = CT_LOADER_OPTS_DEFAULT;
    lo.batch_size = o.batch_size;
    lo.seed = o.seed;
    lo.device = device;
    lo.mean = 0.2860; /* Fashion-MNIST's pixel mean and standard deviation */
    lo.std = 0.3530;
    ct_loader *train = ct_loader_create(train_x, train_y, &lo);
    lo.shuffle = false;
    lo.batch_size = 1000;
    ct_loader *test = ct_loader_create(test_x, test_y, &lo);
    if (!train || !test) {
        fprintf(stderr, "data loader: %s\n", ct_last_error_message());
        return 1;
    }

    /* ---- model, optimizer, schedule ---- */
    ct_module *model = fashion_cnn();
    if (!model || ct_module_to(model, device) != CT_OK) {
        fprintf(stderr, "model: %s\n", ct_last_error_message());
        return 1;
    }
    ct_module_summary(model, (int64_t[]){o.batch_size, 1, 28, 28}, 4, CT_F32, stdout);
    ct_optim *opt = NULL;
    if (!strcmp(o.optimizer, "adamw")) {
        ct_adam_opts a = CT_ADAMW_OPTS_DEFAULT;
        a.lr = o.lr;
        a.weight_decay = 1e-4;
        opt = ct_optim_adamw(model, &a);
    } else if (!strcmp(o.optimizer, "adam")) {
        ct_adam_opts a = CT_ADAM_OPTS_DEFAULT;
        a.lr = o.lr;
        opt = ct_optim_adam(model, &a);
    } else if (!strcmp(o.optimizer, "sgd")) {
        ct_sgd_opts s = CT_SGD_OPTS_DEFAULT;
        s.lr = o.lr;
        s.momentum = 0.9;
        s.nesterov = true;
        s.weight_decay = 5e-4;
        opt = ct_optim_sgd(model, &s);
    } else {
        fprintf(stderr, "--optimizer must be adamw, adam or sgd\n");
        return 2;
    }
    int64_t steps_per_epoch = ct_loader_num_batches(train);
    /* Warm up over the first epoch (a fifth of the run when it is shorter), then cosine to 0. */
    int64_t total_steps = steps_per_epoch * o.epochs;
    int64_t warmup = steps_per_epoch < total_steps / 5 ? steps_per_epoch : total_steps / 5;
    ct_lr_schedule *sched = opt ? ct_schedule_cosine(opt, warmup, total_steps, 0) : NULL;
    if (!opt || !sched) {
        fprintf(stderr, "optimizer: %s\n", ct_last_error_message());
        return 1;
    }
    int64_t start_epoch = 0;
    if (o.resume) {
        int64_t saved;
        if (ct_checkpoint_load(o.checkpoint, model, opt, sched, &saved) != CT_OK) {
            fprintf(stderr, "--resume: %s\n", ct_last_error_message());
            return 1;
        }
        start_epoch = saved + 1;
        printf("resumed from %s after epoch %lld\n", o.checkpoint, (long long)saved + 1);
    }
    FILE *metrics = fopen(o.metrics, o.resume ? "a" : "w");
    if (!metrics) {
        perror(o.metrics);
        return 1;
    }

    /* ---- training ---- */
    bool tty = isatty(STDOUT_FILENO);
    printf("training on %s: %lld images, %lld batches of %lld per epoch, %d epochs\n", ct_device_name(device),
           (long long)ct_loader_num_samples(train), (long long)steps_per_epoch, (long long)o.batch_size, o.epochs);
    double test_acc = 0, test_loss = 0;
    step_graph sg = {0};
    bool warm = false;
    for (int epoch = (int)start_epoch; epoch < o.epochs; epoch++) {
        ct_loader_start_epoch(train, epoch);
        double t0 = now(), loss_sum = 0;
        int64_t correct = 0, seen = 0;
        for (int64_t b = 0;; b++) {
            ct_scope_begin();
            ct_tensor *x, *y;
            if (ct_loader_next(train, &x, &y) != CT_OK || !x) {
                ct_scope_end();
                break;
            }
            ct_tensor *logits = NULL, *loss = NULL;
            if (forward_backward(model, opt, &sg, o.cuda_graph, warm, o.batch_size, x, y, &logits, &loss) != CT_OK ||
                ct_optim_step(opt) != CT_OK || ct_schedule_step(sched) != CT_OK) {
                fprintf(stderr, "\nstep failed: %s\n", ct_last_error_message());
                return 1;
            }
            warm = warm || ct_tensor_size(x, 0) == o.batch_size;
            int64_t n = ct_tensor_size(y, 0);
            loss_sum += ct_item(loss) * (double)n;
            correct += ct_correct_count(logits, y);
            seen += n;
            progress(tty, epoch, o.epochs, b, steps_per_epoch, loss_sum / (double)seen, (double)correct / (double)seen,
                     (double)seen / (now() - t0));
            ct_scope_end();
        }
        double train_time = now() - t0;
        test_acc = evaluate(model, test, NULL, &test_loss);
        printf("%sepoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.1f s, %.0f img/s\n",
               tty ? "\n" : "", epoch + 1, o.epochs, loss_sum / (double)seen, (double)correct / (double)seen,
               test_loss, test_acc, train_time, (double)seen / train_time);
        fprintf(metrics,
                "{\"epoch\": %d, \"train_loss\": %.6f, \"train_accuracy\": %.6f, \"test_loss\": %.6f, "
                "\"test_accuracy\": %.6f, \"lr\": %.6g, \"seconds\": %.3f, \"images_per_second\": %.1f}\n",
                epoch + 1, loss_sum / (double)seen, (double)correct / (double)seen, test_loss, test_acc,
                ct_optim_lr(opt), train_time, (double)seen / train_time);
        fflush(metrics);
        if (ct_checkpoint_save(o.checkpoint, model, opt, sched, epoch) != CT_OK) {
            fprintf(stderr, "checkpoint: %s\n", ct_last_error_message());
            return 1;
        }
    }

    /* ---- final report ---- */
    ct_confusion *cm = ct_confusion_create(10);
    test_acc = evaluate(model, test, cm, &test_loss);
    printf("\n");
    ct_confusion_print(cm, class_names, stdout);
    printf("\ntest accuracy %.4f, macro F1 %.4f; checkpoint %s, metrics %s\n", test_acc, ct_confusion_macro_f1(cm),
           o.checkpoint, o.metrics);
    ct_confusion_free(cm);
    fclose(metrics);
    ct_graph_free(sg.graph);
    ct_tensor_free(sg.x);
    ct_tensor_free(sg.y);
    ct_tensor_free(sg.logits);
    ct_tensor_free(sg.loss);
    ct_schedule_free(sched);
    ct_optim_free(opt);
    ct_module_free(model);
    ct_loader_free(train);
    ct_loader_free(test);
    ct_tensor_free(train_x);
    ct_tensor_free(train_y);
    ct_tensor_free(test_x);
    ct_tensor_free(test_y);
    if (test_acc < o.min_accuracy) {
        fprintf(stderr, "test accuracy %.4f is below --min-accuracy %.4f\n", test_acc, o.min_accuracy);
        return 1;
    }
    return 0;
}
