/* IDX files, the batching data loader with a background thread, and augmentation. */
#include "ctensor/data.h"
#include "ctensor/memory.h"
#include "kernels/cpu/philox.h"
#include "runtime/internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* ---- IDX ---------------------------------------------------------------------------- */

static bool read_exact(gzFile f, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = (unsigned)((n - done) > (1u << 30) ? (1u << 30) : (n - done));
        int got = gzread(f, (char *)buf + done, chunk);
        if (got <= 0)
            return false;
        done += (size_t)got;
    }
    return true;
}

ct_tensor *ct_idx_load(const char *path) {
    if (!path) {
        ct__null_arg("ct_idx_load", "path");
        return NULL;
    }
    gzFile f = gzopen(path, "rb");
    if (!f) {
        ct__set_error(CT_ERR_IO, "ct_idx_load: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    ct_tensor *t = NULL;
    unsigned char magic[4];
    if (!read_exact(f, magic, 4)) {
        ct__set_error(CT_ERR_IO, "ct_idx_load: %s is too short to be an IDX file", path);
        goto done;
    }
    if (magic[0] != 0 || magic[1] != 0 || magic[3] < 1 || magic[3] > CT_MAX_DIMS) {
        ct__set_error(CT_ERR_IO, "ct_idx_load: %s: bad magic %02x %02x %02x %02x (expected 00 00 type ndim)", path,
                      magic[0], magic[1], magic[2], magic[3]);
        goto done;
    }
    ct_dtype dtype;
    size_t file_elsize;
    switch (magic[2]) {
    case 0x08: dtype = CT_U8; file_elsize = 1; break;
    case 0x0C: dtype = CT_I32; file_elsize = 4; break;
    case 0x0D: dtype = CT_F32; file_elsize = 4; break;
    case 0x0E: dtype = CT_F64; file_elsize = 8; break;
    default:
        ct__set_error(CT_ERR_IO, "ct_idx_load: %s: unsupported IDX element type 0x%02x", path, magic[2]);
        goto done;
    }
    int ndim = magic[3];
    int64_t shape[CT_MAX_DIMS];
    unsigned char dims[4 * CT_MAX_DIMS];
    if (!read_exact(f, dims, 4 * (size_t)ndim)) {
        ct__set_error(CT_ERR_IO, "ct_idx_load: %s is truncated in its header", path);
        goto done;
    }
    /* The product of the dims, zeros counted as 1, bounds the element count and the strides. */
    int64_t extent = 1;
    bool empty = false;
    for (int d = 0; d < ndim; d++) {
        shape[d] = ((int64_t)dims[4 * d] << 24) | (dims[4 * d + 1] << 16) | (dims[4 * d + 2] << 8) | dims[4 * d + 3];
        empty |= shape[d] == 0;
        if (shape[d] > (1ll << 31) || __builtin_mul_overflow(extent, shape[d] ? shape[d] : 1, &extent) ||
            extent > (1ll << 36)) {
            ct__set_error(CT_ERR_IO, "ct_idx_load: %s: implausible dims %s", path, ct__shape_fmt(d + 1, shape));
            goto done;
        }
    }
    int64_t n = empty ? 0 : extent;
    /* Refuse a header that promises more than the file can hold before allocating for it:
     * exactly its size when plain, at most deflate's 1032:1 ratio when compressed. */
    struct stat info;
    uint64_t data_bytes = (uint64_t)n * file_elsize, header_bytes = 4 + 4 * (uint64_t)ndim;
    if (stat(path, &info) == 0 && S_ISREG(info.st_mode)) {
        uint64_t file_bytes = (uint64_t)info.st_size;
        bool plain = gzdirect(f);
        if (plain ? file_bytes < header_bytes + data_bytes : data_bytes / 1032 > file_bytes) {
            ct__set_error(CT_ERR_IO,
                          "ct_idx_load: %s is truncated: its header promises %s (%llu bytes of data) but the file "
                          "has %llu bytes%s",
                          path, ct__shape_fmt(ndim, shape), (unsigned long long)data_bytes,
                          (unsigned long long)file_bytes, plain ? "" : " compressed");
            goto done;
        }
    }
    t = ct_empty(shape, ndim, dtype, CT_CPU);
    if (!t)
        goto done;
    unsigned char *data = ct__data(t);
    if (!read_exact(f, data, (size_t)n * file_elsize)) {
        ct__set_error(CT_ERR_IO, "ct_idx_load: %s is truncated: its header promises %lld elements of %s", path,
                      (long long)n, ct__shape_fmt(ndim, shape));
        ct_tensor_free(t);
        t = NULL;
        goto done;
    }
    unsigned char extra;
    if (gzread(f, &extra, 1) > 0) {
        ct__set_error(CT_ERR_IO, "ct_idx_load: %s has data beyond the %s its header describes", path,
                      ct__shape_fmt(ndim, shape));
        ct_tensor_free(t);
        t = NULL;
        goto done;
    }
    /* IDX stores big-endian values. */
    if (file_elsize > 1)
        for (int64_t i = 0; i < n; i++) {
            unsigned char *p = data + i * (int64_t)file_elsize;
            for (size_t a = 0, b = file_elsize - 1; a < b; a++, b--) {
                unsigned char tmp = p[a];
                p[a] = p[b];
                p[b] = tmp;
            }
        }
done:
    gzclose(f);
    return t;
}

static ct_tensor *load_part(const char *dir, const char *stem) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gz", dir, stem);
    FILE *probe = fopen(path, "rb");
    if (probe)
        fclose(probe);
    else
        snprintf(path, sizeof path, "%s/%s", dir, stem);
    return ct_idx_load(path);
}

ct_status ct_mnist_load(const char *dir, bool train, ct_tensor **images, ct_tensor **labels) {
    if (!images || !labels)
        return ct__null_arg("ct_mnist_load", images ? "labels" : "images");
    *images = *labels = NULL;
    if (!dir)
        dir = getenv("CT_FASHION_MNIST_DIR");
    if (!dir || !*dir)
        dir = "/usr/share/datasets/fashion-mnist";
    const char *prefix = train ? "train" : "t10k";
    char stem[64];
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", prefix);
    ct_tensor *x = load_part(dir, stem);
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", prefix);
    ct_tensor *y = x ? load_part(dir, stem) : NULL;
    ct_status st = CT_OK;
    if (!x || !y) {
        st = ct_last_error();
    } else if (x->dtype != CT_U8 || x->ndim != 3 || y->dtype != CT_U8 || y->ndim != 1 || y->shape[0] != x->shape[0]) {
        st = ct__set_error(CT_ERR_IO, "ct_mnist_load: %s: images %s and labels %s do not form a data set", dir,
                           ct_shape_str(x), ct_shape_str(y));
    }
    ct_tensor *labels32 = st == CT_OK ? ct_cast(y, CT_I32) : NULL;
    if (st == CT_OK && !labels32)
        st = ct_last_error();
    ct_tensor_free(y);
    if (st != CT_OK) {
        ct_tensor_free(x);
        return st;
    }
    *images = x;
    *labels = labels32;
    return CT_OK;
}

/* ---- augmentation ------------------------------------------------------------------- */

/* Random words for one sample: a Philox block keyed by the seed, counting by sample. */
static void sample_words(uint64_t seed, uint64_t key, uint32_t w[8]) {
    ct_philox_block((uint32_t)key, (uint32_t)(key >> 32), 0x61756731u, 0, (uint32_t)seed, (uint32_t)(seed >> 32), w);
    ct_philox_block((uint32_t)key, (uint32_t)(key >> 32), 0x61756731u, 1, (uint32_t)seed, (uint32_t)(seed >> 32), w + 4);
}

static double unit(uint32_t w) { return (double)(w >> 8) * 0x1p-24; }

/* out(y, x) = in(y - dy, x - dx), zero outside. */
static void shift(float *img, float *tmp, int H, int W, int dy, int dx) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int sy = y - dy, sx = x - dx;
            tmp[y * W + x] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? img[sy * W + sx] : 0.0f;
        }
    memcpy(img, tmp, sizeof(float) * (size_t)H * (size_t)W);
}

/* Rotate about the centre by `deg` degrees, bilinear, zero outside. */
static void rotate(float *img, float *tmp, int H, int W, double deg) {
    double a = deg * M_PI / 180.0, c = cos(a), s = sin(a);
    double cy = (H - 1) / 2.0, cx = (W - 1) / 2.0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            /* inverse map: where in the source does (y, x) come from */
            double sx = c * (x - cx) + s * (y - cy) + cx;
            double sy = -s * (x - cx) + c * (y - cy) + cy;
            int x0 = (int)floor(sx), y0 = (int)floor(sy);
            double fx = sx - x0, fy = sy - y0, v = 0;
            for (int k = 0; k < 4; k++) {
                int yy = y0 + (k >> 1), xx = x0 + (k & 1);
                double wgt = ((k >> 1) ? fy : 1 - fy) * ((k & 1) ? fx : 1 - fx);
                if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                    v += wgt * img[yy * W + xx];
            }
            tmp[y * W + x] = (float)v;
        }
    memcpy(img, tmp, sizeof(float) * (size_t)H * (size_t)W);
}

ct_status ct_augment_image(float *image, int C, int H, int W, const ct_augment_opts *o, uint64_t seed,
                           uint64_t sample_key) {
    if (!image || !o)
        return ct__null_arg("ct_augment_image", image ? "opts" : "image");
    if (C < 1 || H < 1 || W < 1 || o->crop_padding < 0 || o->max_shift < 0 || !(o->max_rotation >= 0))
        return ct__set_error(CT_ERR_VALUE, "ct_augment_image: invalid geometry or options");
    uint32_t w[8];
    sample_words(seed, sample_key, w);
    bool flip = o->hflip && (w[0] & 1u);
    int dy = 0, dx = 0;
    if (o->crop_padding > 0) { /* crop after padding p == shift by [-p, p] */
        int span = 2 * o->crop_padding + 1;
        dy += (int)(w[1] % (uint32_t)span) - o->crop_padding;
        dx += (int)(w[2] % (uint32_t)span) - o->crop_padding;
    }
    if (o->max_shift > 0) {
        int span = 2 * o->max_shift + 1;
        dy += (int)(w[3] % (uint32_t)span) - o->max_shift;
        dx += (int)(w[4] % (uint32_t)span) - o->max_shift;
    }
    double deg = o->max_rotation > 0 ? (2.0 * unit(w[5]) - 1.0) * o->max_rotation : 0.0;
    float stack_tmp[64 * 64];
    float *tmp = (size_t)H * (size_t)W <= 64 * 64 ? stack_tmp : malloc(sizeof(float) * (size_t)H * (size_t)W);
    if (!tmp)
        return ct__set_error(CT_ERR_MEMORY, "ct_augment_image: out of host memory");
    for (int ch = 0; ch < C; ch++) {
        float *img = image + (size_t)ch * (size_t)H * (size_t)W;
        if (flip)
            for (int y = 0; y < H; y++)
                for (int a = 0, b = W - 1; a < b; a++, b--) {
                    float t = img[y * W + a];
                    img[y * W + a] = img[y * W + b];
                    img[y * W + b] = t;
                }
        if (dy || dx)
            shift(img, tmp, H, W, dy, dx);
        if (deg != 0.0)
            rotate(img, tmp, H, W, deg);
    }
    if (tmp != stack_tmp)
        free(tmp);
    return CT_OK;
}
