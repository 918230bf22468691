/* ctbench, the "train" section: training throughput of the main job's CNN.
 *
 * The network, optimizer and batch of python_free_examples/fashion_mnist_cnn.c:
 *   conv 3x3 (1 -> 32) - batch norm - ReLU - max pool 2
 *   conv 3x3 (32 -> 64) - batch norm - ReLU - max pool 2
 *   dropout 0.25 - linear (64*7*7 -> 10), cross-entropy, AdamW (lr 2e-3, weight decay 1e-4),
 *   batch 128,
 * trained for a fixed number of steps after warmup. A step is the whole of it: forward, loss,
 * backward and the optimizer's update (zero_grad, forward, cross-entropy, backward, step, as
 * the main job's loop runs them; its LR schedule, a few scalar operations, is left out, as
 * in the PyTorch twin in bench/torch_train.py).
 *
 * Two rows (three on CUDA):
 *   train step (in memory)   the batches are slices of a tensor already on the device,
 *                            normalized f32: the step alone. bench/compare_torch.py runs the
 *                            same network in PyTorch on the same data this way.
 *   train step (ct_loader)   the main job's input pipeline: U8 images in host memory,
 *                            converted, normalized and staged by ct_loader's background
 *                            thread, copied to the device. No target: it shows what the
 *                            pipeline costs next to the first row.
 *   train step (in memory, CUDA graph)   CUDA only: the first row's step with its forward and
 *                            backward captured once in a CUDA graph (ctensor/graph.h) and
 *                            replayed; the batch is copied into the graph's input and the
 *                            optimizer steps eagerly. A model and optimizer of its own.
 * The data is Fashion-MNIST's training set when it is found (ct_mnist_load: $CT_FASHION_MNIST_DIR
 * or Debian's dataset-fashion-mnist), otherwise random U8 images and labels of its shape;
 * the run says which. The rows alternate, rep after rep, so that all see the same load.
 *
 * On CUDA the device is synchronized before and after each rep of `steps` steps and nowhere
 * else by the benchmark (the host wall time of a rep is then the device's time). */
#include "bench/bench.h"

#include "ctensor/ctensor.h"

#include "python_free_examples/fashion_cnn.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TRAIN_BATCH 128
#define IMAGE_SIDE 28
#define IMAGE_PIXELS (IMAGE_SIDE * IMAGE_SIDE)
#define HELD_IMAGES 8192 /* the in-memory row cycles over the first 64 batches */
/* Floating-point operations per image of one training step: forward convolutions
 * 28*28*32*9*2 + 14*14*64*32*9*2 and the linear layer 3136*10*2 (7.74 M), and backward twice
 * that except conv1's data gradient, which nothing needs (15.0 M). Pooling, batch norm and
 * the optimizer are memory-bound and not counted. */
#define FLOP_PER_IMAGE 22.8e6

static uint32_t mix32(uint64_t i) {
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return (uint32_t)(x >> 32);
}

/* Fashion-MNIST's training set, or random data of its shape. U8 (N, 28, 28) and I32 (N). */
static bool load_data(const bench_opts *o, ct_tensor **images, ct_tensor **labels) {
    if (ct_mnist_load(NULL, true, images, labels) == CT_OK) {
        bench_note(o, "train: data: Fashion-MNIST training set (%lld images)", (long long)ct_tensor_size(*images, 0));
        return true;
    }
    char why[200];
    snprintf(why, sizeof why, "%s", ct_last_error_message());
    ct_clear_error();
    const int64_t n = 60000;
    uint8_t *pixels = malloc((size_t)n * IMAGE_PIXELS);
    int32_t *classes = malloc((size_t)n * sizeof *classes);
    bool ok = pixels && classes;
    if (ok) {
        for (int64_t i = 0; i < n * IMAGE_PIXELS; i++)
            pixels[i] = (uint8_t)(mix32((uint64_t)i) >> 24);
        for (int64_t i = 0; i < n; i++)
            classes[i] = (int32_t)(mix32((uint64_t)i ^ (1ull << 40)) % 10);
        *images = ct_from_host(pixels, (int64_t[]){n, IMAGE_SIDE, IMAGE_SIDE}, 3, CT_U8, CT_CPU);
        *labels = ct_from_host(classes, (int64_t[]){n}, 1, CT_I32, CT_CPU);
        ok = *images && *labels;
    }
    free(pixels);
    free(classes);
    if (ok)
        bench_note(o, "train: data: random U8 images and labels of Fashion-MNIST's shape (%lld images); "
                      "the data set was not found: %.120s", (long long)n, why);
    return ok;
}

/* The first `n` images as normalized f32 (n, 1, 28, 28) on `device`, as the loader makes them. */
static ct_tensor *normalized_images(const ct_tensor *images, int64_t n, ct_device device) {
    const uint8_t *src = ct_tensor_data(images);
    float *dst = malloc((size_t)n * IMAGE_PIXELS * sizeof *dst);
    if (!dst) {
        fprintf(stderr, "ctbench: train: out of host memory\n");
        return NULL;
    }
    const float mean = 0.2860f, std = 0.3530f; /* the main job's normalization */
    for (int64_t i = 0; i < n * IMAGE_PIXELS; i++)
        dst[i] = ((float)src[i] / 255.0f - mean) / std;
    ct_tensor *t = ct_from_host(dst, (int64_t[]){n, 1, IMAGE_SIDE, IMAGE_SIDE}, 4, CT_F32, device);
    free(dst);
    return t;
}

typedef struct train_ctx {
    ct_module *model;
    ct_optim *opt;
    ct_tensor *x_all, *y_all; /* held batches, on the device */
    int64_t held_batches, next_batch;
    ct_loader *loader;
    int epoch;
    double last_loss; /* of the last step that read it */
    /* The CUDA graph row: its own model and optimizer; the graph reads gx, gy. */
    ct_module *gmodel;
    ct_optim *gopt;
    ct_graph *graph;
    ct_tensor *gx, *gy, *gloss;
} train_ctx;

static ct_optim *adamw_for(ct_module *model) {
    ct_adam_opts a = CT_ADAMW_OPTS_DEFAULT;
    a.lr = 2e-3;
    a.weight_decay = 1e-4;
    return ct_optim_adamw(model, &a);
}

/* The next held batch (views of the held tensors, in the open scope). */
static void held_batch(train_ctx *c, ct_tensor **x, ct_tensor **y) {
    int64_t b = c->next_batch;
    c->next_batch = (b + 1) % c->held_batches;
    *x = ct_slice(c->x_all, 0, b * TRAIN_BATCH, (b + 1) * TRAIN_BATCH, 1);
    *y = ct_slice(c->y_all, 0, b * TRAIN_BATCH, (b + 1) * TRAIN_BATCH, 1);
}

/* The CUDA graph row's set-up: one eager step of its model (warm-up), then the capture of
 * forward and backward reading gx and gy. */
static bool graph_setup(train_ctx *c, ct_device device) {
    c->gmodel = fashion_cnn();
    bool ok = c->gmodel && ct_module_to(c->gmodel, device) == CT_OK && (c->gopt = adamw_for(c->gmodel)) != NULL;
    ct_scope_begin();
    ct_tensor *x = NULL, *y = NULL;
    if (ok) {
        held_batch(c, &x, &y);
        ct_tensor *loss = ct_cross_entropy(ct_module_forward(c->gmodel, x), y, NULL);
        ok = loss && ct_backward(loss) == CT_OK && ct_optim_step(c->gopt) == CT_OK;
    }
    if (ok) {
        c->gx = ct_keep(ct_empty_like(x));
        c->gy = ct_keep(ct_empty_like(y));
        ct_optim_zero_grad(c->gopt); /* the capture makes the gradients that replays rewrite */
        ok = c->gx && c->gy && (c->graph = ct_graph_capture_begin(device.index)) != NULL;
    }
    if (ok) {
        c->gloss = ct_keep(ct_cross_entropy(ct_module_forward(c->gmodel, c->gx), c->gy, NULL));
        ok = c->gloss && ct_backward(c->gloss) == CT_OK;
        ok = ct_graph_capture_end(c->graph) == CT_OK && ok;
    }
    ct_scope_end();
    if (!ok) {
        fprintf(stderr, "ctbench: train: the CUDA graph row could not be set up: %s\n", ct_last_error_message());
        ct_clear_error();
    }
    return ok;
}

/* One step of the CUDA graph row. */
static bool graph_step(train_ctx *c, bool read_loss) {
    ct_scope_begin();
    ct_tensor *x, *y;
    held_batch(c, &x, &y);
    bool ok = ct_copy_(c->gx, x) == CT_OK && ct_copy_(c->gy, y) == CT_OK && ct_graph_replay(c->graph) == CT_OK &&
              ct_optim_step(c->gopt) == CT_OK;
    if (ok && read_loss) {
        double loss = ct_item(c->gloss);
        ok = isfinite(loss);
        if (!ok)
            fprintf(stderr, "ctbench: train: the CUDA graph row's loss is %g\n", loss);
    }
    ct_scope_end();
    if (!ok && ct_last_error() != CT_OK) {
        fprintf(stderr, "ctbench: train: CUDA graph step failed: %s\n", ct_last_error_message());
        ct_clear_error();
    }
    return ok;
}

/* One step: forward, loss, backward, update. The batch comes from the held tensors or the
 * loader. `read_loss` reads the loss back (a synchronization on CUDA): only outside timing. */
static bool train_step(train_ctx *c, bool from_loader, bool read_loss) {
    ct_scope_begin();
    ct_tensor *x = NULL, *y = NULL;
    bool ok = true;
    if (from_loader) {
        ok = ct_loader_next(c->loader, &x, &y) == CT_OK;
        if (ok && !x) { /* end of an epoch: start the next */
            ok = ct_loader_start_epoch(c->loader, ++c->epoch) == CT_OK && ct_loader_next(c->loader, &x, &y) == CT_OK &&
                 x;
        }
    } else {
        held_batch(c, &x, &y);
    }
    ct_tensor *loss = ok ? ct_cross_entropy(ct_module_forward(c->model, x), y, NULL) : NULL;
    ct_optim_zero_grad(c->opt);
    ok = loss && ct_backward(loss) == CT_OK && ct_optim_step(c->opt) == CT_OK;
    if (ok && read_loss) {
        c->last_loss = ct_item(loss);
        ok = isfinite(c->last_loss);
        if (!ok)
            fprintf(stderr, "ctbench: train: the loss is %g\n", c->last_loss);
    }
    ct_scope_end();
    if (!ok && ct_last_error() != CT_OK) {
        fprintf(stderr, "ctbench: train step failed: %s\n", ct_last_error_message());
        ct_clear_error();
    }
    return ok;
}

static bool sync_device(ct_device device) {
    if (device.type != CT_DEVICE_CUDA)
        return true;
    if (ct_device_synchronize(device.index) == CT_OK)
        return true;
    fprintf(stderr, "ctbench: train: %s\n", ct_last_error_message());
    ct_clear_error();
    return false;
}

/* `steps` steps of row `row` (0 in memory, 1 ct_loader, 2 CUDA graph), timed from an idle
 * device to an idle device; seconds, or -1 on failure. */
static double timed_steps(train_ctx *c, ct_device device, int row, int steps) {
    if (!sync_device(device))
        return -1;
    double t0 = bench_now();
    for (int s = 0; s < steps; s++)
        if (!(row == 2 ? graph_step(c, false) : train_step(c, row == 1, false)))
            return -1;
    if (!sync_device(device))
        return -1;
    return bench_now() - t0;
}

int bench_train(const bench_opts *o, ct_device device) {
    int warmup = o->quick ? 2 : 5;
    int reps = o->reps ? o->reps : (o->quick ? 2 : 5);
    int steps = device.type == CT_DEVICE_CUDA ? (o->quick ? 10 : 50) : (o->quick ? 3 : 20);
    if (reps > 256)
        reps = 256;
    ct_manual_seed(42);
    ct_tensor *images = NULL, *labels = NULL;
    train_ctx c = {0};
    bool ok = load_data(o, &images, &labels);
    if (ok) {
        int64_t held = ct_tensor_size(images, 0) < HELD_IMAGES ? ct_tensor_size(images, 0) : HELD_IMAGES;
        c.held_batches = held / TRAIN_BATCH;
        c.x_all = normalized_images(images, c.held_batches * TRAIN_BATCH, device);
        ct_tensor *y_head = ct_slice(labels, 0, 0, c.held_batches * TRAIN_BATCH, 1);
        c.y_all = ct_to_device(y_head, device);
        ct_tensor_free(y_head);
        ct_loader_opts lo = CT_LOADER_OPTS_DEFAULT;
        lo.batch_size = TRAIN_BATCH;
        lo.drop_last = true;
        lo.seed = 42;
        lo.device = device;
        lo.mean = 0.2860;
        lo.std = 0.3530;
        c.loader = ct_loader_create(images, labels, &lo);
        c.model = fashion_cnn();
        ok = c.held_batches > 0 && c.x_all && c.y_all && c.loader && c.model &&
             ct_module_to(c.model, device) == CT_OK;
        if (ok)
            ok = (c.opt = adamw_for(c.model)) != NULL && ct_loader_start_epoch(c.loader, 0) == CT_OK;
        if (!ok) {
            fprintf(stderr, "ctbench: train: setting up failed: %s\n", ct_last_error_message());
            ct_clear_error();
        }
    }
    /* Warm up both inputs (the allocator's caches, cuDNN's algorithm search, the loader's
     * thread), then alternate timed reps of the rows. */
    for (int i = 0; i < warmup && ok; i++)
        ok = train_step(&c, false, i == warmup - 1) && train_step(&c, true, false);
    /* The CUDA graph row is left out (with a message) if it cannot be set up. */
    int rows = device.type == CT_DEVICE_CUDA && ok && graph_setup(&c, device) ? 3 : 2;
    for (int i = 0; rows == 3 && i < warmup && ok; i++)
        ok = graph_step(&c, i == warmup - 1);
    double held_t[256], loader_t[256], graph_t[256];
    for (int r = 0; r < reps && ok; r++) {
        held_t[r] = timed_steps(&c, device, 0, steps);
        loader_t[r] = timed_steps(&c, device, 1, steps);
        graph_t[r] = rows == 3 ? timed_steps(&c, device, 2, steps) : 1;
        ok = held_t[r] > 0 && loader_t[r] > 0 && graph_t[r] > 0;
    }
    double first_loss = c.last_loss;
    ok = ok && train_step(&c, false, true);
    if (ok) {
        const char *names[3] = {"train step (in memory)", "train step (ct_loader)",
                                "train step (in memory, CUDA graph)"};
        double *times[3] = {held_t, loader_t, graph_t};
        double best_ips = 0;
        for (int k = 0; k < rows; k++) {
            bench_stats s = bench_stats_of(times[k], reps);
            bench_row r = {"train", names[k], "", omp_get_max_threads(), reps * steps, s.best / steps,
                           s.median / steps, TRAIN_BATCH * steps / s.best, "img/s", NULL, 0, 0, NULL, -1};
            snprintf(r.size, sizeof r.size, "batch %d", TRAIN_BATCH);
            bench_emit(o, &r);
            if (k == 0)
                best_ips = r.value;
        }
        bench_note(o, "train: %s, AdamW, %d steps per rep after %d warmup steps; images/s from the best rep; "
                      "%.1f GFLOP/s at %.1f MFLOP per image; loss %.3f after warmup, %.3f at the end",
                   ct_device_name(device), steps, warmup, best_ips * FLOP_PER_IMAGE * 1e-9, FLOP_PER_IMAGE * 1e-6,
                   first_loss, c.last_loss);
        bench_note(o, "train: target >= 1.2x PyTorch's images/s, in memory: bench/compare_torch.py --only train "
                      "--ctbench <this ctbench>%s",
                   device.type == CT_DEVICE_CUDA ? " --device cuda" : "");
    }
    ct_graph_free(c.graph);
    ct_tensor_free(c.gx);
    ct_tensor_free(c.gy);
    ct_tensor_free(c.gloss);
    ct_optim_free(c.gopt);
    ct_module_free(c.gmodel);
    ct_optim_free(c.opt);
    ct_module_free(c.model);
    ct_loader_free(c.loader);
    ct_tensor_free(c.x_all);
    ct_tensor_free(c.y_all);
    ct_tensor_free(images);
    ct_tensor_free(labels);
    return ok ? 0 : 1;
}
