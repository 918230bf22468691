/* IDX reading (plain, gzip, corrupt files), the data loader, augmentation and metrics. */
#include "tests/common.h"

#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char dir[256];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/ct_test_data_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    cr_assert_eq(system(cmd), 0);
}
static void remove_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Write bytes to dir/name, gzip-compressed when `gz`. */
static void write_file(const char *name, const void *bytes, size_t n, bool gz) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(gzwrite(f, bytes, (unsigned)n), (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(bytes, 1, n, f), n);
        fclose(f);
    }
}

/* An IDX u8 file with dims and values i % 251. */
static size_t idx_u8(unsigned char *buf, const int *dims, int ndim) {
    size_t n = 1, off = 4 + 4 * (size_t)ndim;
    buf[0] = buf[1] = 0;
    buf[2] = 0x08;
    buf[3] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++) {
        buf[4 + 4 * d] = (unsigned char)(dims[d] >> 24);
        buf[5 + 4 * d] = (unsigned char)(dims[d] >> 16);
        buf[6 + 4 * d] = (unsigned char)(dims[d] >> 8);
        buf[7 + 4 * d] = (unsigned char)dims[d];
        n *= (size_t)dims[d];
    }
    for (size_t i = 0; i < n; i++)
        buf[off + i] = (unsigned char)(i % 251);
    return off + n;
}

static char *path_of(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

Test(idx, plain_gzip_and_big_endian_ints, .init = make_dir, .fini = remove_dir) {
    unsigned char buf[4096];
    size_t n = idx_u8(buf, (int[]){3, 4, 5}, 3);
    write_file("a.idx", buf, n, false);
    write_file("a.idx.gz", buf, n, true);
    T_NO_LEAK({
        for (int gz = 0; gz < 2; gz++) {
            ct_tensor *t = ct_idx_load(path_of(gz ? "a.idx.gz" : "a.idx"));
            t_assert_shape(t, (int64_t[]){3, 4, 5}, 3);
            cr_assert_eq(ct_tensor_dtype(t), CT_U8);
            double ref[60];
            for (int i = 0; i < 60; i++)
                ref[i] = i % 251;
            t_assert_close(t, ref, 0, 0);
        }
        unsigned char ints[4 + 4 + 8] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0x00, 0x00, 0x01, 0x02, 0xff, 0xff, 0xff, 0xfe};
        write_file("i.idx", ints, sizeof ints, false);
        t_assert_close(ct_idx_load(path_of("i.idx")), (double[]){258, -2}, 0, 0);
    });
}

Test(idx, corrupt_files_are_clear_errors, .init = make_dir, .fini = remove_dir) {
    unsigned char buf[4096];
    size_t n = idx_u8(buf, (int[]){10, 10}, 2);
    T_NO_LEAK({
        ct_clear_error();
        cr_assert_null(ct_idx_load(path_of("missing.idx")));
        t_assert_error(CT_ERR_IO, "cannot open", "missing.idx", NULL);
        write_file("short.idx", buf, 2, false);
        cr_assert_null(ct_idx_load(path_of("short.idx")));
        t_assert_error(CT_ERR_IO, "too short", NULL);
        unsigned char bad[sizeof buf];
        memcpy(bad, buf, n);
        bad[0] = 0x1f;
        write_file("magic.idx", bad, n, false);
        cr_assert_null(ct_idx_load(path_of("magic.idx")));
        t_assert_error(CT_ERR_IO, "bad magic", NULL);
        memcpy(bad, buf, n);
        bad[2] = 0x0B;
        write_file("type.idx", bad, n, false);
        cr_assert_null(ct_idx_load(path_of("type.idx")));
        t_assert_error(CT_ERR_IO, "unsupported", "0x0b", NULL);
        write_file("trunc.idx.gz", buf, n - 7, true);
        cr_assert_null(ct_idx_load(path_of("trunc.idx.gz")));
        t_assert_error(CT_ERR_IO, "truncated", "[10, 10]", NULL);
        write_file("hdr.idx", buf, 9, false);
        cr_assert_null(ct_idx_load(path_of("hdr.idx")));
        t_assert_error(CT_ERR_IO, "truncated in its header", NULL);
        memcpy(bad, buf, n);
        bad[n] = 7;
        write_file("long.idx", bad, n + 1, false);
        cr_assert_null(ct_idx_load(path_of("long.idx")));
        t_assert_error(CT_ERR_IO, "beyond", NULL);
        cr_assert_null(ct_idx_load(NULL));
        t_assert_error(CT_ERR_NULL, "path", NULL);
    });
}

Test(idx, mnist_layout, .init = make_dir, .fini = remove_dir) {
    unsigned char buf[8192];
    write_file("t10k-images-idx3-ubyte.gz", buf, idx_u8(buf, (int[]){5, 28, 28}, 3), true);
    unsigned char lab[8 + 5] = {0, 0, 8, 1, 0, 0, 0, 5, 3, 1, 4, 1, 5};
    write_file("t10k-labels-idx1-ubyte", lab, sizeof lab, false);
    T_NO_LEAK({
        ct_tensor *x, *y;
        cr_assert_eq(ct_mnist_load(dir, false, &x, &y), CT_OK, "%s", ct_last_error_message());
        t_assert_shape(x, (int64_t[]){5, 28, 28}, 3);
        cr_assert_eq(ct_tensor_dtype(y), CT_I32);
        t_assert_close(y, (double[]){3, 1, 4, 1, 5}, 0, 0);
        ct_tensor_free(x);
        ct_tensor_free(y);
        cr_assert_eq(ct_mnist_load(dir, true, &x, &y), CT_ERR_IO);
        t_assert_error(CT_ERR_IO, "train-images-idx3-ubyte", NULL);
    });
}

/* 10 images of 1x2x3 whose pixels all equal 10 * label, labels 0..9. */
static void tiny_set(ct_tensor **x, ct_tensor **y) {
    uint8_t px[60];
    int32_t lab[10];
    for (int i = 0; i < 10; i++) {
        lab[i] = i;
        for (int k = 0; k < 6; k++)
            px[i * 6 + k] = (uint8_t)(10 * i);
    }
    *x = ct_from_host(px, (int64_t[]){10, 2, 3}, 3, CT_U8, CT_CPU);
    *y = ct_from_host(lab, (int64_t[]){10}, 1, CT_I32, CT_CPU);
}

static void epoch_labels(ct_loader *l, int epoch, int32_t *seen, int *count, int64_t *batches) {
    cr_assert_eq(ct_loader_start_epoch(l, epoch), CT_OK);
    *count = 0;
    *batches = 0;
    ct_tensor *x, *y;
    while (ct_loader_next(l, &x, &y) == CT_OK && x) {
        float xv[4 * 6];
        int32_t yv[4];
        int64_t b = ct_tensor_size(x, 0);
        ct_to_host(x, xv, sizeof xv);
        ct_to_host(y, yv, sizeof yv);
        for (int i = 0; i < b; i++) {
            cr_assert_float_eq(xv[i * 6 + 5], (10 * yv[i] / 255.0 - 0.5) / 0.25, 1e-5, "image matches its label");
            seen[(*count)++] = yv[i];
        }
        (*batches)++;
        ct_tensor_free(x);
        ct_tensor_free(y);
    }
}

Test(loader, batches_shuffle_and_prefetch) {
    T_NO_LEAK({
        ct_tensor *x, *y;
        tiny_set(&x, &y);
        for (int prefetch = 0; prefetch <= 3; prefetch += 3) {
            ct_loader_opts o = CT_LOADER_OPTS_DEFAULT;
            o.batch_size = 4;
            o.seed = 7;
            o.prefetch = prefetch;
            o.mean = 0.5;
            o.std = 0.25;
            ct_loader *l = ct_loader_create(x, y, &o);
            cr_assert_not_null(l, "%s", ct_last_error_message());
            cr_assert_eq(ct_loader_num_batches(l), 3);
            int32_t a[10], b[10], c[10];
            int n;
            int64_t batches;
            epoch_labels(l, 0, a, &n, &batches);
            cr_assert_eq(n, 10);
            cr_assert_eq(batches, 3);
            int hits[10] = {0};
            for (int i = 0; i < 10; i++)
                hits[a[i]]++;
            for (int i = 0; i < 10; i++)
                cr_assert_eq(hits[i], 1, "every sample exactly once");
            epoch_labels(l, 1, b, &n, &batches);
            cr_assert(memcmp(a, b, sizeof a) != 0, "a new order each epoch");
            epoch_labels(l, 0, c, &n, &batches);
            cr_assert(memcmp(a, c, sizeof a) == 0, "same seed and epoch, same order");
            ct_loader_free(l);
        }
        ct_loader_opts o = CT_LOADER_OPTS_DEFAULT;
        o.batch_size = 4;
        o.drop_last = true;
        o.shuffle = false;
        o.mean = 0.5;
        o.std = 0.25;
        ct_loader *l = ct_loader_create(x, y, &o);
        int32_t a[10];
        int n;
        int64_t batches;
        epoch_labels(l, 0, a, &n, &batches);
        cr_assert_eq(n, 8);
        cr_assert_eq(batches, 2);
        for (int i = 0; i < 8; i++)
            cr_assert_eq(a[i], i, "no shuffle keeps the order");
        ct_loader_free(l);
        ct_tensor_free(x);
        ct_tensor_free(y);
    });
}

Test(loader, data_in_a_scope_is_released_with_it) {
    int64_t before = ct_live_tensors();
    ct_loader_opts o = CT_LOADER_OPTS_DEFAULT;
    o.batch_size = 4;
    o.mean = 0.5;
    o.std = 0.25;
    /* Freed inside the scope: the loader's references are its own, the scope keeps its. */
    ct_scope_begin();
    ct_tensor *x, *y;
    tiny_set(&x, &y);
    ct_loader *l = ct_loader_create(x, y, &o);
    cr_assert_not_null(l, "%s", ct_last_error_message());
    ct_loader_free(l);
    cr_assert_eq(ct_tensor_size(x, 0), 10, "the data set is still the caller's");
    ct_scope_end();
    cr_assert_eq(ct_live_tensors(), before, "leaked %lld tensors", (long long)(ct_live_tensors() - before));

    /* A loader outlives the scope its data set was made in. */
    ct_scope_begin();
    tiny_set(&x, &y);
    l = ct_loader_create(x, y, &o);
    cr_assert_not_null(l, "%s", ct_last_error_message());
    ct_scope_end();
    int32_t labels[10];
    int n;
    int64_t batches;
    epoch_labels(l, 0, labels, &n, &batches);
    cr_assert_eq(n, 10);
    ct_loader_free(l);
    cr_assert_eq(ct_live_tensors(), before, "leaked %lld tensors", (long long)(ct_live_tensors() - before));

    /* The caller frees its data set right after making the loader (prefetching batches). */
    ct_scope_begin();
    tiny_set(&x, &y);
    o.prefetch = 2;
    l = ct_loader_create(x, y, &o);
    cr_assert_not_null(l, "%s", ct_last_error_message());
    ct_tensor_free(x);
    ct_tensor_free(y);
    ct_scope_end();
    epoch_labels(l, 0, labels, &n, &batches);
    cr_assert_eq(n, 10);
    ct_loader_free(l);
    cr_assert_eq(ct_live_tensors(), before, "leaked %lld tensors", (long long)(ct_live_tensors() - before));
}

Test(loader, bad_arguments) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x, *y;
        tiny_set(&x, &y);
        ct_loader_opts o = CT_LOADER_OPTS_DEFAULT;
        o.batch_size = 0;
        cr_assert_null(ct_loader_create(x, y, &o));
        t_assert_error(CT_ERR_VALUE, "batch_size", NULL);
        ct_tensor *f = ct_zeros((int64_t[]){10, 2, 3}, 3, CT_F32, CT_CPU);
        cr_assert_null(ct_loader_create(f, y, NULL));
        t_assert_error(CT_ERR_SHAPE, "U8", NULL);
        ct_tensor *short_labels = ct_zeros((int64_t[]){9}, 1, CT_I32, CT_CPU);
        cr_assert_null(ct_loader_create(x, short_labels, NULL));
        t_assert_error(CT_ERR_SHAPE, "labels", NULL);
        ct_tensor_free(x);
        ct_tensor_free(y);
        ct_tensor_free(f);
        ct_tensor_free(short_labels);
    });
}

Test(augment, flips_shifts_rotations) {
    float img[2 * 3], ref[2 * 3];
    for (int i = 0; i < 6; i++)
        img[i] = ref[i] = (float)i;
    ct_augment_opts flip = {true, 0, 0, 0};
    /* find keys that flip and that do not, and check both */
    int flipped = 0, kept = 0;
    for (uint64_t key = 0; key < 64; key++) {
        memcpy(img, ref, sizeof img);
        cr_assert_eq(ct_augment_image(img, 1, 2, 3, &flip, 1, key), CT_OK);
        if (img[0] == 2) {
            cr_assert(img[1] == 1 && img[2] == 0 && img[3] == 5 && img[5] == 3);
            flipped++;
        } else {
            cr_assert(memcmp(img, ref, sizeof img) == 0);
            kept++;
        }
    }
    cr_assert(flipped > 16 && kept > 16, "about half flip: %d / %d", flipped, kept);
    /* shifts keep the pixel sum only when nothing leaves the image; a 0-rotation is identity */
    ct_augment_opts rot = {false, 0, 0, 1e-9};
    float big[16 * 16], big_ref[16 * 16];
    for (int i = 0; i < 256; i++)
        big[i] = big_ref[i] = (float)(i % 7);
    cr_assert_eq(ct_augment_image(big, 1, 16, 16, &rot, 3, 5), CT_OK);
    for (int i = 0; i < 256; i++)
        cr_assert_float_eq(big[i], big_ref[i], 1e-5);
    ct_augment_opts shift = {false, 2, 1, 0};
    float s1[16 * 16], s2[16 * 16];
    memcpy(s1, big_ref, sizeof s1);
    memcpy(s2, big_ref, sizeof s2);
    ct_augment_image(s1, 1, 16, 16, &shift, 9, 42);
    ct_augment_image(s2, 1, 16, 16, &shift, 9, 42);
    cr_assert(memcmp(s1, s2, sizeof s1) == 0, "same key, same augmentation");
    cr_assert_eq(ct_augment_image(NULL, 1, 2, 2, &shift, 0, 0), CT_ERR_NULL);
    ct_clear_error();
}

Test(metrics, accuracy_topk_and_confusion) {
    T_NO_LEAK({
        float logits[4 * 3] = {0.1f, 0.7f, 0.2f, /* pred 1 */ 0.9f, 0.05f, 0.05f, /* pred 0 */
                               0.2f, 0.3f, 0.5f, /* pred 2 */ 0.5f, 0.4f, 0.1f /* pred 0 */};
        int32_t labels[4] = {1, 0, 1, 2};
        ct_tensor *l = ct_from_host(logits, (int64_t[]){4, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *y = ct_from_host(labels, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        cr_assert_eq(ct_correct_count(l, y), 2);
        cr_assert_float_eq(ct_topk_accuracy(l, y, 1), 0.5, 1e-12);
        cr_assert_float_eq(ct_topk_accuracy(l, y, 2), 0.75, 1e-12);
        cr_assert_float_eq(ct_topk_accuracy(l, y, 3), 1.0, 1e-12);
        ct_confusion *cm = ct_confusion_create(3);
        cr_assert_eq(ct_confusion_update(cm, l, y), CT_OK);
        cr_assert_eq(ct_confusion_count(cm, 1, 2), 1);
        cr_assert_eq(ct_confusion_count(cm, 2, 0), 1);
        cr_assert_float_eq(ct_confusion_accuracy(cm), 0.5, 1e-12);
        /* class 1: predicted once (right), true twice; class 0: predicted twice (1 right) */
        cr_assert_float_eq(ct_confusion_precision(cm, 1), 1.0, 1e-12);
        cr_assert_float_eq(ct_confusion_recall(cm, 1), 0.5, 1e-12);
        cr_assert_float_eq(ct_confusion_f1(cm, 0), 2.0 / 3.0, 1e-12);
        cr_assert_float_eq(ct_confusion_f1(cm, 2), 0.0, 1e-12);
        cr_assert_float_eq(ct_confusion_macro_f1(cm), 4.0 / 9.0, 1e-12);
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        ct_confusion_print(cm, (const char *const[]){"a", "b", "c"}, out);
        fclose(out);
        cr_assert(strstr(text, "macro avg") && strstr(text, "1 b"), "%s", text);
        free(text);
        int32_t bad[4] = {0, 0, 3, 0};
        ct_tensor *yb = ct_from_host(bad, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        cr_assert_eq(ct_confusion_update(cm, l, yb), CT_ERR_DIM);
        t_assert_error(CT_ERR_DIM, "label 3", NULL);
        cr_assert(isnan(ct_topk_accuracy(l, y, 4)));
        t_assert_error(CT_ERR_VALUE, "k = 4", NULL);
        ct_confusion_free(cm);
    });
}

/* An IDX header: magic for `type`, then big-endian dims (as unsigned 32-bit). */
static size_t idx_header(unsigned char *buf, int type, const uint32_t *dims, int ndim) {
    buf[0] = buf[1] = 0;
    buf[2] = (unsigned char)type;
    buf[3] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++)
        for (int k = 0; k < 4; k++)
            buf[4 + 4 * d + k] = (unsigned char)(dims[d] >> (8 * (3 - k)));
    return 4 + 4 * (size_t)ndim;
}

/* Seen while writing tests/fuzz: a header promising 2^36 f64 elements (512 GiB) made the
 * loader allocate for them before reading; now it is refused from the file's size, plain or
 * compressed. And dims whose product overflows int64 were multiplied (undefined). */
Test(idx, header_claims_are_checked_before_allocating, .init = make_dir, .fini = remove_dir) {
    unsigned char buf[64] = {0};
    size_t n = idx_header(buf, 0x0E, (uint32_t[]){262144, 262144}, 2);
    T_NO_LEAK({
        write_file("huge.idx", buf, n + 16, false);
        ct_clear_error();
        cr_assert_null(ct_idx_load(path_of("huge.idx")));
        t_assert_error(CT_ERR_IO, "truncated", "[262144, 262144]", "549755813888 bytes of data", "has 28 bytes", NULL);
        write_file("huge.idx.gz", buf, n + 16, true);
        cr_assert_null(ct_idx_load(path_of("huge.idx.gz")));
        t_assert_error(CT_ERR_IO, "truncated", "549755813888 bytes of data", "compressed", NULL);
        n = idx_header(buf, 0x08, (uint32_t[]){1048576, 65536, 2147483648u}, 3);
        write_file("overflow.idx", buf, n, false);
        cr_assert_null(ct_idx_load(path_of("overflow.idx")));
        t_assert_error(CT_ERR_IO, "implausible dims", "[1048576, 65536, 2147483648]", NULL);
        /* found by fuzz_idx: no elements, but dims whose strides overflow (UBSan in
         * ct__contiguous_strides) */
        n = idx_header(buf, 0x0E, (uint32_t[]){0, 16777216, 134152192, 3}, 4);
        write_file("empty.idx", buf, n, false);
        cr_assert_null(ct_idx_load(path_of("empty.idx")));
        t_assert_error(CT_ERR_IO, "implausible dims", "[0, 16777216, 134152192]", NULL);
        n = idx_header(buf, 0x08, (uint32_t[]){0, 28, 28}, 3);
        write_file("zero.idx", buf, n, false);
        ct_tensor *t = ct_idx_load(path_of("zero.idx"));
        t_assert_shape(t, (int64_t[]){0, 28, 28}, 3);
    });
}

/* Found while triaging gcc -fanalyzer's reports on ct_loader_create: a batch_size beyond the
 * data set sized each prefetch buffer by batch_size (a product that overflowed for INT64_MAX,
 * and a refused allocation for 2^40), and N + batch_size - 1 overflowed the batch count. It
 * is one batch of everything, or none with drop_last, as in PyTorch. */
Test(loader, batch_size_beyond_the_data_set) {
    T_NO_LEAK({
        ct_tensor *x, *y;
        tiny_set(&x, &y);
        const int64_t sizes[] = {11, (int64_t)1 << 40, INT64_MAX};
        for (int drop_last = 0; drop_last < 2; drop_last++)
            for (int i = 0; i < 3; i++) {
                ct_loader_opts o = CT_LOADER_OPTS_DEFAULT;
                o.batch_size = sizes[i];
                o.shuffle = false;
                o.drop_last = drop_last;
                ct_loader *l = ct_loader_create(x, y, &o);
                cr_assert_not_null(l, "batch_size %lld: %s", (long long)sizes[i], ct_last_error_message());
                cr_assert_eq(ct_loader_num_batches(l), drop_last ? 0 : 1, "batch_size %lld", (long long)sizes[i]);
                cr_assert_eq(ct_loader_start_epoch(l, 0), CT_OK);
                ct_tensor *bx, *by;
                cr_assert_eq(ct_loader_next(l, &bx, &by), CT_OK, "%s", ct_last_error_message());
                if (!drop_last) {
                    t_assert_shape(bx, (int64_t[]){10, 1, 2, 3}, 4);
                    int32_t labels[10];
                    cr_assert_eq(ct_to_host(by, labels, sizeof labels), CT_OK);
                    for (int k = 0; k < 10; k++)
                        cr_assert_eq(labels[k], k);
                    ct_tensor_free(bx);
                    ct_tensor_free(by);
                    cr_assert_eq(ct_loader_next(l, &bx, &by), CT_OK);
                }
                cr_assert_null(bx, "batch_size %lld: the epoch has ended", (long long)sizes[i]);
                ct_loader_free(l);
            }
        ct_tensor_free(x);
        ct_tensor_free(y);
    });
}
