/* The data loader: seeded shuffling, batching, and a background thread that prepares the
 * next batches (convert, augment, normalize) into pinned host buffers, which a GPU copies
 * from directly (images_to_gpu). */
#include "ctensor/data.h"
#include "ctensor/memory.h"
#include "runtime/internal.h"

#include <pthread.h>
#include <string.h>

typedef enum { SLOT_EMPTY, SLOT_READY } slot_state;

typedef struct slot {
    float *x;   /* (B, C, H, W), pinned */
    int32_t *y; /* (B) */
    int64_t batch;
    int64_t count;
    slot_state state;
} slot;

struct ct_loader {
    ct_tensor *images, *labels;
    ct_loader_opts o;
    int64_t N, C, H, W;
    int64_t num_batches;
    int64_t batch_capacity; /* samples a slot holds: batch_size, or N when that is smaller */
    int64_t *order;
    int epoch;
    int64_t next_batch;      /* the batch ct_loader_next hands out next */
    /* background production */
    int nslots;
    slot *slots;
    pthread_t thread;
    bool running, stop;
    int64_t produce_next;
    pthread_mutex_t lock;
    pthread_cond_t changed;
};

static int64_t batch_count(const ct_loader *l, int64_t b) {
    int64_t start = b * l->o.batch_size;
    int64_t left = l->N - start;
    return left < l->o.batch_size ? left : l->o.batch_size;
}

/* Fill one batch: gather, scale to [0, 1], augment, normalize. Pure C on host buffers. */
static void fill_batch(const ct_loader *l, int64_t b, float *x, int32_t *y) {
    int64_t count = batch_count(l, b), per = l->C * l->H * l->W;
    const uint8_t *src = ct__data(l->images);
    const int32_t *labels = ct__data(l->labels);
    bool augment = l->o.augment.hflip || l->o.augment.crop_padding || l->o.augment.max_shift ||
                   l->o.augment.max_rotation > 0;
    float scale = (float)(1.0 / (255.0 * l->o.std)), shift = (float)(l->o.mean / l->o.std);
    for (int64_t i = 0; i < count; i++) {
        int64_t idx = l->order[b * l->o.batch_size + i];
        const uint8_t *img = src + idx * per;
        float *dst = x + i * per;
        y[i] = labels[idx];
        if (augment) {
            for (int64_t k = 0; k < per; k++)
                dst[k] = img[k] * (1.0f / 255.0f);
            ct_augment_image(dst, (int)l->C, (int)l->H, (int)l->W, &l->o.augment, l->o.seed,
                             ((uint64_t)l->epoch << 32) ^ (uint64_t)idx);
            float inv_std = (float)(1.0 / l->o.std), mean = (float)l->o.mean;
            for (int64_t k = 0; k < per; k++)
                dst[k] = (dst[k] - mean) * inv_std;
        } else {
            for (int64_t k = 0; k < per; k++)
                dst[k] = img[k] * scale - shift;
        }
    }
}

static void *producer(void *arg) {
    ct_loader *l = arg;
    pthread_mutex_lock(&l->lock);
    while (!l->stop && l->produce_next < l->num_batches) {
        slot *s = &l->slots[l->produce_next % l->nslots];
        while (!l->stop && s->state != SLOT_EMPTY)
            pthread_cond_wait(&l->changed, &l->lock);
        if (l->stop)
            break;
        int64_t b = l->produce_next++;
        pthread_mutex_unlock(&l->lock);
        fill_batch(l, b, s->x, s->y);
        pthread_mutex_lock(&l->lock);
        s->batch = b;
        s->count = batch_count(l, b);
        s->state = SLOT_READY;
        pthread_cond_broadcast(&l->changed);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

static void stop_thread(ct_loader *l) {
    if (!l->running)
        return;
    pthread_mutex_lock(&l->lock);
    l->stop = true;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    l->running = false;
}

void ct_loader_free(ct_loader *l) {
    if (!l)
        return;
    stop_thread(l);
    for (int i = 0; l->slots && i < l->nslots; i++) { /* NULL when ct_loader_create ran out of memory */
        ct_pinned_free(l->slots[i].x);
        free(l->slots[i].y);
    }
    free(l->slots);
    free(l->order);
    if (l->images)
        ct__tensor_release(l->images);
    if (l->labels)
        ct__tensor_release(l->labels);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->changed);
    free(l);
}

/* The loader's own reference to a data set tensor, released by ct__tensor_release in
 * ct_loader_free: a library reference to a contiguous one (the caller's scope keeps its
 * own), else a contiguous copy that belongs to no scope. */
static ct_tensor *hold(ct_tensor *t) {
    if (ct__is_contiguous(t))
        return ct__tensor_ref(t);
    ct_tensor *copy = ct_contiguous(t);
    if (copy)
        ct__scope_detach(copy);
    return copy;
}

ct_loader *ct_loader_create(ct_tensor *images, ct_tensor *labels, const ct_loader_opts *opts) {
    const char *op = "ct_loader_create";
    if (!ct__check(op, "images", images) || !ct__check(op, "labels", labels))
        return NULL;
    ct_loader_opts o = opts ? *opts : CT_LOADER_OPTS_DEFAULT;
    if (images->dtype != CT_U8 || (images->ndim != 3 && images->ndim != 4) || images->device.type != CT_DEVICE_CPU) {
        ct__set_error(CT_ERR_SHAPE, "%s: images must be U8 (N, H, W) or (N, C, H, W) on the CPU, got %s %s on %s", op,
                      ct_dtype_name(images->dtype), ct_shape_str(images), ct_device_name(images->device));
        return NULL;
    }
    if (labels->dtype != CT_I32 || labels->ndim != 1 || labels->shape[0] != images->shape[0] ||
        labels->device.type != CT_DEVICE_CPU) {
        ct__set_error(CT_ERR_SHAPE, "%s: labels must be I32 (%lld) on the CPU, got %s %s", op,
                      (long long)images->shape[0], ct_dtype_name(labels->dtype), ct_shape_str(labels));
        return NULL;
    }
    if (o.batch_size < 1 || o.prefetch < 0 || o.prefetch > 64 || !(o.std > 0)) {
        ct__set_error(CT_ERR_VALUE, "%s: need batch_size >= 1, prefetch in [0, 64], std > 0 (got %lld, %d, %g)", op,
                      (long long)o.batch_size, o.prefetch, o.std);
        return NULL;
    }
    ct_loader *l = calloc(1, sizeof *l);
    if (!l) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->changed, NULL);
    l->o = o;
    l->N = images->shape[0];
    l->C = images->ndim == 4 ? images->shape[1] : 1;
    l->H = images->shape[images->ndim - 2];
    l->W = images->shape[images->ndim - 1];
    /* batch_size may exceed N (up to INT64_MAX): no sum or buffer size may scale with it. */
    l->num_batches = l->N / o.batch_size + (!o.drop_last && l->N % o.batch_size != 0);
    l->batch_capacity = o.batch_size < l->N ? o.batch_size : l->N > 0 ? l->N : 1;
    l->images = hold(images);
    l->labels = hold(labels);
    l->order = malloc(sizeof(int64_t) * (size_t)(l->N ? l->N : 1));
    l->nslots = o.prefetch > 0 ? o.prefetch : 1;
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    bool ok = l->images && l->labels && l->order && l->slots;
    size_t xbytes = sizeof(float) * (size_t)(l->batch_capacity * l->C * l->H * l->W);
    for (int i = 0; ok && i < l->nslots; i++) {
        l->slots[i].x = ct_pinned_alloc(xbytes);
        l->slots[i].y = malloc(sizeof(int32_t) * (size_t)l->batch_capacity);
        ok = l->slots[i].x && l->slots[i].y;
    }
    if (!ok) {
        if (ct_last_error() == CT_OK)
            ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        ct_loader_free(l);
        return NULL;
    }
    l->epoch = -1;
    return l;
}

int64_t ct_loader_num_batches(const ct_loader *l) { return l ? l->num_batches : -1; }
int64_t ct_loader_num_samples(const ct_loader *l) { return l ? l->N : -1; }

ct_status ct_loader_start_epoch(ct_loader *l, int epoch) {
    if (!l)
        return ct__null_arg("ct_loader_start_epoch", "loader");
    stop_thread(l);
    l->epoch = epoch;
    for (int64_t i = 0; i < l->N; i++)
        l->order[i] = i;
    if (l->o.shuffle && l->N > 1) {
        /* Fisher-Yates driven by Philox words keyed by (seed, epoch): reproducible. */
        uint64_t base = (uint64_t)epoch * (uint64_t)(l->N + 3);
        for (int64_t i = l->N - 1; i > 0; i--) {
            uint64_t r = ((uint64_t)ct__philox_word(l->o.seed, base, 2 * (uint64_t)i) << 32) |
                         ct__philox_word(l->o.seed, base, 2 * (uint64_t)i + 1);
            int64_t j = (int64_t)(r % (uint64_t)(i + 1));
            int64_t t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    l->next_batch = 0;
    l->produce_next = 0;
    l->stop = false;
    for (int i = 0; i < l->nslots; i++)
        l->slots[i].state = SLOT_EMPTY;
    if (l->o.prefetch > 0 && l->num_batches > 0) {
        if (pthread_create(&l->thread, NULL, producer, l) != 0)
            return ct__set_error(CT_ERR_STATE, "ct_loader_start_epoch: could not start the loader thread");
        l->running = true;
    }
    return CT_OK;
}

/* The slot's images onto the GPU without another host copy: the filled pinned buffer is
 * copied from directly and freed at once (the pinned cache reuses it only once the copy has
 * read it), and the slot gets a fresh buffer for its next batch. NULL (and no error) if no
 * fresh buffer could be had: the caller then copies the usual way. */
static ct_tensor *images_to_gpu(ct_loader *l, slot *s, const int64_t *xshape) {
    size_t xbytes = sizeof(float) * (size_t)(l->batch_capacity * l->C * l->H * l->W);
    float *fresh = ct_pinned_alloc(xbytes);
    if (!fresh) {
        ct_clear_error();
        return NULL;
    }
    ct_tensor *x = ct__new(CT_F32, l->o.device, 4, xshape);
    if (!x || ct__memcpy_from_pinned(l->o.device, ct__data(x), s->x, s->x,
                                     sizeof(float) * (size_t)ct__numel(4, xshape)) != CT_OK) {
        ct_tensor_free(x);
        ct_pinned_free(fresh);
        ct_clear_error();
        return NULL;
    }
    ct_pinned_free(s->x);
    s->x = fresh;
    return x;
}

ct_status ct_loader_next(ct_loader *l, ct_tensor **x, ct_tensor **y) {
    if (!l || !x || !y)
        return ct__null_arg("ct_loader_next", !l ? "loader" : (!x ? "x" : "y"));
    *x = *y = NULL;
    if (l->epoch < 0) {
        ct_status st = ct_loader_start_epoch(l, 0);
        if (st != CT_OK)
            return st;
    }
    if (l->next_batch >= l->num_batches)
        return CT_OK;
    int64_t b = l->next_batch++;
    slot *s = &l->slots[b % l->nslots];
    if (l->o.prefetch > 0) {
        pthread_mutex_lock(&l->lock);
        while (!(s->state == SLOT_READY && s->batch == b))
            pthread_cond_wait(&l->changed, &l->lock);
        pthread_mutex_unlock(&l->lock);
    } else {
        fill_batch(l, b, s->x, s->y);
        s->count = batch_count(l, b);
    }
    int64_t xshape[4] = {s->count, l->C, l->H, l->W};
    *x = l->o.device.type == CT_DEVICE_CUDA ? images_to_gpu(l, s, xshape) : NULL;
    if (!*x)
        *x = ct_from_host(s->x, xshape, 4, CT_F32, l->o.device);
    *y = *x ? ct_from_host(s->y, &s->count, 1, CT_I32, l->o.device) : NULL;
    if (l->o.prefetch > 0) {
        pthread_mutex_lock(&l->lock);
        s->state = SLOT_EMPTY;
        pthread_cond_broadcast(&l->changed);
        pthread_mutex_unlock(&l->lock);
    }
    if (!*x || !*y) {
        ct_tensor_free(*x);
        *x = *y = NULL;
        return ct_last_error();
    }
    return CT_OK;
}
