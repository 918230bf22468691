/* ctensor — data: IDX files (MNIST, Fashion-MNIST), a batching data loader with a
 * background thread, and image augmentation.
 *
 * The loader keeps the whole data set in host memory as U8 images (N, H, W) or (N, C, H, W)
 * and I32 labels (N). Each epoch it shuffles with a seeded permutation (the same seed and
 * epoch give the same order), and a background thread converts the next batches to f32,
 * applies the augmentation and normalization, and stages them in pinned host memory, so
 * the training loop only waits for a copy. Augmentation randomness comes from Philox keyed
 * by (seed, epoch, sample), so results do not depend on threads or timing.
 */
#ifndef CTENSOR_DATA_H
#define CTENSOR_DATA_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Read an IDX file, plain or gzip-compressed (detected from the content). Returns a tensor
 * with the file's dims and dtype (U8, I32 or F32 / F64 for those IDX types), on the CPU.
 * Bad magic, an unknown type, dims that do not match the file size, or a truncated file
 * are CT_ERR_IO errors naming the file and what is wrong. */
ct_tensor *ct_idx_load(const char *path);

/* Fashion-MNIST / MNIST from a directory holding {train,t10k}-{images-idx3,labels-idx1}-ubyte
 * (optionally .gz). `dir` NULL means $CT_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist
 * (Debian's dataset-fashion-mnist). images: U8 (N, 28, 28); labels: I32 (N). */
ct_status ct_mnist_load(const char *dir, bool train, ct_tensor **images, ct_tensor **labels);

/* Per-sample augmentation, applied in this order to f32 images in [0, 1]. */
typedef struct ct_augment_opts {
    bool hflip;            /* random horizontal flip with probability 1/2 */
    int crop_padding;      /* random crop of the original size after zero padding (0 = off) */
    int max_shift;         /* random shift by up to this many pixels in x and y (0 = off) */
    double max_rotation;   /* random rotation in degrees, uniform in [-r, r], bilinear (0 = off) */
} ct_augment_opts;
#define CT_AUGMENT_NONE ((ct_augment_opts){false, 0, 0, 0.0})

typedef struct ct_loader_opts {
    int64_t batch_size;
    bool shuffle;
    bool drop_last;
    uint64_t seed;
    int prefetch;           /* batches prepared ahead by the background thread (0 = no thread) */
    ct_device device;       /* where the batches are delivered */
    double mean, std;       /* normalization after scaling to [0, 1]: (x - mean) / std */
    ct_augment_opts augment;
} ct_loader_opts;
#define CT_LOADER_OPTS_DEFAULT ((ct_loader_opts){64, true, false, 0, 2, CT_CPU, 0.0, 1.0, CT_AUGMENT_NONE})

typedef struct ct_loader ct_loader;

/* images: U8 (N, H, W) or (N, C, H, W); labels: I32 (N). The loader keeps references. */
ct_loader *ct_loader_create(ct_tensor *images, ct_tensor *labels, const ct_loader_opts *opts);
/* Start epoch `epoch` (reshuffles; restarts the background thread's work). */
ct_status ct_loader_start_epoch(ct_loader *loader, int epoch);
/* The next batch: x f32 (B, C, H, W) and y I32 (B) on the loader's device, registered in the
 * current scope. Returns CT_OK with *x = *y = NULL at the end of the epoch. */
ct_status ct_loader_next(ct_loader *loader, ct_tensor **x, ct_tensor **y);
int64_t ct_loader_num_batches(const ct_loader *loader);
int64_t ct_loader_num_samples(const ct_loader *loader);
void ct_loader_free(ct_loader *loader);

/* Augment one f32 image (C, H, W) in place with the given randomness key. Exposed for tests
 * and for custom pipelines. */
ct_status ct_augment_image(float *image, int C, int H, int W, const ct_augment_opts *opts, uint64_t seed,
                           uint64_t sample_key);

#ifdef __cplusplus
}
#endif
#endif
