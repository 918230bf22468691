/* The global Philox generator and the random tensor constructors (CPU). */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/philox.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng_seed = 0x5eed5eedull;
static uint64_t rng_offset = 0;
/* Counts ct_manual_seed and ct_random_set_offset calls: a CUDA graph capture compares it to
 * tell that the generator was moved under it, even back to the same seed and offset. */
static uint64_t rng_generation = 0;

void ct_manual_seed(uint64_t seed) {
    pthread_mutex_lock(&rng_lock);
    rng_seed = seed;
    rng_offset = 0;
    rng_generation++;
    pthread_mutex_unlock(&rng_lock);
}
uint64_t ct_random_seed(void) {
    pthread_mutex_lock(&rng_lock);
    uint64_t s = rng_seed;
    pthread_mutex_unlock(&rng_lock);
    return s;
}
uint64_t ct_random_offset(void) {
    pthread_mutex_lock(&rng_lock);
    uint64_t o = rng_offset;
    pthread_mutex_unlock(&rng_lock);
    return o;
}
void ct_random_set_offset(uint64_t offset) {
    pthread_mutex_lock(&rng_lock);
    rng_offset = offset;
    rng_generation++;
    pthread_mutex_unlock(&rng_lock);
}

uint64_t ct__philox_reserve(uint64_t words, uint64_t *seed) {
    pthread_mutex_lock(&rng_lock);
    uint64_t start = rng_offset;
    rng_offset += (words + 3) / 4;
    *seed = rng_seed;
    pthread_mutex_unlock(&rng_lock);
    return start;
}

void ct__philox_state(uint64_t *seed, uint64_t *offset, uint64_t *generation) {
    pthread_mutex_lock(&rng_lock);
    *seed = rng_seed;
    *offset = rng_offset;
    *generation = rng_generation;
    pthread_mutex_unlock(&rng_lock);
}

uint32_t ct__philox_word(uint64_t seed, uint64_t offset, uint64_t i) { return ct_philox_word(seed, offset, i); }

void ct_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    ct_philox_block(counter[0], counter[1], counter[2], counter[3], key[0], key[1], out);
}

/* ---- constructors ------------------------------------------------------------------- */

typedef enum { DIST_UNIFORM, DIST_NORMAL, DIST_BERNOULLI } dist_kind;

static ct_tensor *random_tensor(const char *op, dist_kind kind, const int64_t *shape, int ndim, double p0, double p1,
                                ct_dtype dtype, ct_device device) {
    if (ct_dtype_size(dtype) == 0) {
        ct__set_error(CT_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dtype);
        return NULL;
    }
    if (kind != DIST_BERNOULLI && !ct_dtype_is_float(dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: needs a floating dtype, not %s", op, ct_dtype_name(dtype));
        return NULL;
    }
    ct_tensor *t = ct_empty(shape, ndim, dtype, device);
    if (!t)
        return NULL;
    int64_t n = ct__numel(ndim, shape);
    bool f64 = dtype == CT_F64;
    uint64_t words = kind == DIST_NORMAL ? (uint64_t)(n + 1) / 2 * 2 : (uint64_t)n * (f64 && kind == DIST_UNIFORM ? 2 : 1);
    uint64_t seed;
    uint64_t offset = ct__philox_reserve(words, &seed);
    void *data = ct__data(t);
    if (device.type == CT_DEVICE_CUDA) {
        if (CT_ON_CUDA(ct_cuda_random((int)kind, data, dtype, n, seed, offset, p0, p1, ct__stream_for(t))) != CT_OK) {
            ct_tensor_free(t);
            return NULL;
        }
        return t;
    }
    /* One Philox block per iteration, shared with the CUDA kernel (kernels/cpu/philox.h). */
    const int per = ct_philox_per_block((int)kind, f64);
    const int64_t blocks = (n + per - 1) / per;
#pragma omp parallel for schedule(static) if (n >= 4096)
    for (int64_t b = 0; b < blocks; b++) {
        double v[4];
        int count = ct_philox_dist_block((int)kind, f64, seed, offset, (uint64_t)b, n, p0, p1, v);
        for (int k = 0; k < count; k++)
            ct_cpu_store(data, dtype, b * per + k, v[k]);
    }
    return t;
}

ct_tensor *ct_rand(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device) {
    return random_tensor("ct_rand", DIST_UNIFORM, shape, ndim, 0.0, 1.0, dtype, device);
}
ct_tensor *ct_uniform(const int64_t *shape, int ndim, double low, double high, ct_dtype dtype, ct_device device) {
    if (!(low <= high) || !isfinite(low) || !isfinite(high)) {
        ct__set_error(CT_ERR_VALUE, "ct_uniform: need finite low <= high, got [%g, %g)", low, high);
        return NULL;
    }
    return random_tensor("ct_uniform", DIST_UNIFORM, shape, ndim, low, high, dtype, device);
}
ct_tensor *ct_randn(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device) {
    return random_tensor("ct_randn", DIST_NORMAL, shape, ndim, 0.0, 1.0, dtype, device);
}
ct_tensor *ct_normal(const int64_t *shape, int ndim, double mean, double std, ct_dtype dtype, ct_device device) {
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std)) {
        ct__set_error(CT_ERR_VALUE, "ct_normal: need finite mean and std >= 0, got mean %g std %g", mean, std);
        return NULL;
    }
    return random_tensor("ct_normal", DIST_NORMAL, shape, ndim, mean, std, dtype, device);
}
ct_tensor *ct_bernoulli(const int64_t *shape, int ndim, double p, ct_dtype dtype, ct_device device) {
    if (!(p >= 0 && p <= 1)) {
        ct__set_error(CT_ERR_VALUE, "ct_bernoulli: p must be in [0, 1], got %g", p);
        return NULL;
    }
    return random_tensor("ct_bernoulli", DIST_BERNOULLI, shape, ndim, p, 0, dtype, device);
}

typedef struct key_index {
    uint32_t key;
    int32_t index;
} key_index;

static int cmp_key_index(const void *x, const void *y) {
    const key_index *a = x, *b = y;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->index < b->index ? -1 : (a->index > b->index);
}

/* ct_randperm on a GPU (kernels/cuda/random.cu): the same words sorted there, stably. */
static ct_status randperm_cuda(ct_tensor *t, int64_t n) {
    ct_stream *stream = ct__stream_for(t);
    size_t bytes = 0;
    if (!stream || CT_ON_CUDA(ct_cuda_randperm_workspace(n, &bytes)) != CT_OK)
        return ct_last_error();
    int64_t nbytes = (int64_t)bytes;
    ct_tensor *ws = bytes ? ct__new(CT_U8, t->device, 1, &nbytes) : NULL;
    if (bytes && !ws)
        return ct_last_error();
    uint64_t seed, offset = ct__philox_reserve((uint64_t)n, &seed);
    ct_status st =
        CT_ON_CUDA(ct_cuda_randperm(ct__data(t), n, seed, offset, ws ? ct__data(ws) : NULL, bytes, stream));
    ct_tensor_free(ws);
    return st;
}

ct_tensor *ct_randperm(int64_t n, ct_device device) {
    if (n < 0 || n > INT32_MAX) {
        ct__set_error(CT_ERR_VALUE, "ct_randperm: n must be in [0, 2^31), got %lld", (long long)n);
        return NULL;
    }
    ct_tensor *t = ct_empty(&n, 1, CT_I32, device);
    if (!t)
        return NULL;
    if (device.type == CT_DEVICE_CUDA) {
        if (randperm_cuda(t, n) != CT_OK) {
            ct_tensor_free(t);
            return NULL;
        }
        return t;
    }
    key_index *items = malloc((size_t)(n ? n : 1) * sizeof *items);
    if (!items) {
        ct_tensor_free(t);
        ct__set_error(CT_ERR_MEMORY, "ct_randperm: out of host memory");
        return NULL;
    }
    uint64_t seed, offset = ct__philox_reserve((uint64_t)n, &seed);
    for (int64_t i = 0; i < n; i++) {
        items[i].key = ct_philox_word(seed, offset, (uint64_t)i);
        items[i].index = (int32_t)i;
    }
    qsort(items, (size_t)n, sizeof *items, cmp_key_index);
    int32_t *out = ct__data(t);
    for (int64_t i = 0; i < n; i++)
        out[i] = items[i].index;
    free(items);
    return t;
}
