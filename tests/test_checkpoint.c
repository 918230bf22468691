/* safetensors checkpoints: byte-level format, round trips, every corrupt header, strict and
 * partial loading, and a file written by PyTorch's safetensors. */
#include "tests/common.h"

#include <string.h>
#include <unistd.h>

static char dir[256];
static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/ct_test_ckpt_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    cr_assert_eq(system(cmd), 0);
}
static void remove_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
static const char *file(const char *name) {
    static char path[8][512];
    static int next;
    char *p = path[next++ & 7];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}
static size_t slurp(const char *path, unsigned char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}
static void spit(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
}

Test(safetensors, exact_bytes_on_disk, .init = make_dir, .fini = remove_dir) {
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((float[]){1, 2, 3, 4, 5, 6}, (int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *b = ct_from_host((uint8_t[]){7, 8}, (int64_t[]){2}, 1, CT_U8, CT_CPU);
        ct_tensor *at = ct_transpose(a, 0, 1); /* written row-major: 1 4 2 5 3 6 */
        cr_assert_eq(ct_safetensors_save(file("x.safetensors"), (const char *[]){"w", "b"}, (ct_tensor *[]){at, b}, 2,
                                         (const char *[]){"epoch"}, (const char *[]){"3"}, 1),
                     CT_OK, "%s", ct_last_error_message());
        unsigned char buf[4096];
        size_t n = slurp(file("x.safetensors"), buf, sizeof buf);
        uint64_t hlen = 0;
        for (int i = 0; i < 8; i++)
            hlen |= (uint64_t)buf[i] << (8 * i);
        cr_assert_eq(hlen % 8, 0, "header padded to 8 bytes");
        cr_assert_eq(n, 8 + hlen + 24 + 2);
        char header[1024];
        memcpy(header, buf + 8, hlen);
        header[hlen] = '\0';
        cr_assert(strstr(header, "\"__metadata__\":{\"epoch\":\"3\"}"), "%s", header);
        cr_assert(strstr(header, "\"w\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}"), "%s", header);
        cr_assert(strstr(header, "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[24,26]}"), "%s", header);
        float w[6];
        memcpy(w, buf + 8 + hlen, 24);
        float expect[6] = {1, 4, 2, 5, 3, 6};
        cr_assert_arr_eq(w, expect, sizeof w);
        cr_assert(buf[8 + hlen + 24] == 7 && buf[8 + hlen + 25] == 8);
        cr_assert_eq(access(file("x.safetensors.tmp"), F_OK), -1, "no temporary file left");
        ct_safetensors *f = ct_safetensors_load(file("x.safetensors"));
        cr_assert_not_null(f, "%s", ct_last_error_message());
        cr_assert_eq(ct_safetensors_count(f), 2);
        t_assert_close(ct_safetensors_get(f, "w"), (double[]){1, 4, 2, 5, 3, 6}, 0, 0);
        cr_assert_str_eq(ct_safetensors_metadata(f, "epoch"), "3");
        cr_assert_null(ct_safetensors_get(f, "nope"));
        ct_safetensors_free(f);
    });
}

/* Build a file from a header string and `data_len` zero bytes. */
static void forge(const char *name, const char *header, size_t data_len, int64_t claimed_len) {
    unsigned char buf[4096] = {0};
    size_t hlen = strlen(header);
    uint64_t l = claimed_len >= 0 ? (uint64_t)claimed_len : hlen;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(l >> (8 * i));
    memcpy(buf + 8, header, hlen);
    spit(file(name), buf, 8 + hlen + data_len);
}

static void expect_corrupt(const char *name, const char *fragment) {
    ct_clear_error();
    cr_assert_null(ct_safetensors_load(file(name)), "%s should be rejected", name);
    t_assert_error(CT_ERR_IO, fragment, NULL);
}

Test(safetensors, every_corrupt_header_is_an_error, .init = make_dir, .fini = remove_dir) {
    T_NO_LEAK({
        spit(file("short"), "abc", 3);
        expect_corrupt("short", "too short");
        forge("len", "{}", 0, 1000);
        expect_corrupt("len", "header length 1000");
        forge("huge", "{}", 0, (int64_t)1 << 40);
        expect_corrupt("huge", "header length");
        forge("notobj", "[1, 2]", 0, -1);
        expect_corrupt("notobj", "not a JSON object");
        forge("json", "{\"a\":{\"dtype\":\"F32\",", 0, -1);
        expect_corrupt("json", "bad JSON");
        forge("trail", "{} x", 0, -1);
        expect_corrupt("trail", "bad JSON");
        forge("range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, -1);
        expect_corrupt("range", "outside");
        forge("size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, -1);
        expect_corrupt("size", "offsets span 8 bytes");
        forge("dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, -1);
        expect_corrupt("dtype", "unsupported dtype F8_E4M3");
        forge("missingkey", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, -1);
        expect_corrupt("missingkey", "data_offsets");
        forge("overlap",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              8, -1);
        expect_corrupt("overlap", "overlap or gap");
        forge("gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1);
        expect_corrupt("gap", "overlap or gap");
        forge("extra", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, -1);
        expect_corrupt("extra", "cover 4");
        forge("dup",
              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
              2, -1);
        expect_corrupt("dup", "twice");
        forge("negshape", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, -1);
        expect_corrupt("negshape", "invalid shape");
        forge("meta", "{\"__metadata__\":{\"k\":3}}", 0, -1);
        expect_corrupt("meta", "not a string");
        unsigned char i64[8] = {0, 0, 0, 0, 1, 0, 0, 0}; /* 2^32 */
        unsigned char buf[256];
        const char *h = "{\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}";
        size_t hl = strlen(h);
        for (int i = 0; i < 8; i++)
            buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
        memcpy(buf + 8, h, hl);
        memcpy(buf + 8 + hl, i64, 8);
        spit(file("i64"), buf, 8 + hl + 8);
        expect_corrupt("i64", "outside the range of i32");
        cr_assert_null(ct_safetensors_load(file("does-not-exist")));
        t_assert_error(CT_ERR_IO, "cannot open", NULL);
    });
}

/* A two-layer module for the checkpoint tests. */
static ct_tensor *net_forward(ct_module *m, ct_tensor *x) { return x; }
static const ct_module_vtable net_vt = {"Net", net_forward, NULL, NULL};
static ct_module *net(int64_t hidden) {
    ct_module *root = ct_module_create(&net_vt, NULL);
    ct_module *a = ct_module_create(&net_vt, NULL), *b = ct_module_create(&net_vt, NULL);
    ct_module_add_parameter(a, "weight", ct_randn((int64_t[]){hidden, 4}, 2, CT_F32, CT_CPU));
    ct_module_add_buffer(a, "count", ct_full((int64_t[]){}, 0, 5, CT_I32, CT_CPU));
    ct_module_add_parameter(b, "weight", ct_randn((int64_t[]){2, hidden}, 2, CT_F32, CT_CPU));
    ct_module_add_parameter(b, "bias", ct_randn((int64_t[]){2}, 1, CT_F32, CT_CPU));
    ct_module_add_child(root, "body", a);
    ct_module_add_child(root, "head", b);
    return root;
}

Test(checkpoint, module_round_trip_strict_and_partial, .init = make_dir, .fini = remove_dir) {
    int64_t before = ct_live_tensors();
    ct_manual_seed(1);
    ct_module *src = net(3);
    cr_assert_eq(ct_module_save(src, file("m.safetensors"), NULL, NULL, 0), CT_OK, "%s", ct_last_error_message());
    ct_module *dst = net(3);
    ct_load_report r;
    cr_assert_eq(ct_module_load(dst, file("m.safetensors"), NULL, &r), CT_OK, "%s", ct_last_error_message());
    cr_assert(r.loaded == 4 && r.missing == 0 && r.unexpected == 0);
    ct_named_tensors *s = ct_module_state(src), *d = ct_module_state(dst);
    for (int i = 0; i < s->count; i++) {
        double *v = t_values(s->tensors[i]);
        t_assert_close(d->tensors[i], v, 0, 0);
        free(v);
    }
    ct_named_tensors_free(s);
    ct_named_tensors_free(d);
    /* shape mismatches are listed, and nothing is loaded */
    ct_module *other = net(5);
    double *before_vals = t_values(ct_module_find(other, "head.bias"));
    ct_clear_error();
    cr_assert_eq(ct_module_load(other, file("m.safetensors"), NULL, NULL), CT_ERR_VALUE);
    cr_assert(strstr(ct_last_error_message(), "2 mismatches"), "%s", ct_last_error_message());
    cr_assert(strstr(ct_last_error_message(), "body.weight: shape [3, 4] in the file, [5, 4] in the module"), "%s",
              ct_last_error_message());
    cr_assert(strstr(ct_last_error_message(), "head.weight"), "%s", ct_last_error_message());
    ct_clear_error();
    t_assert_close(ct_module_find(other, "head.bias"), before_vals, 0, 0);
    free(before_vals);
    /* transfer learning: load only the body, then strict fails on a missing name */
    ct_module *fresh = net(3);
    ct_load_opts partial = {false, "body."};
    cr_assert_eq(ct_module_load(fresh, file("m.safetensors"), &partial, &r), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(r.loaded, 2);
    double *bw = t_values(ct_module_find(src, "body.weight"));
    t_assert_close(ct_module_find(fresh, "body.weight"), bw, 0, 0);
    free(bw);
    ct_module *bigger = net(3);
    ct_module_add_parameter(ct_module_child(bigger, "head"), "scale", ct_ones((int64_t[]){2}, 1, CT_F32, CT_CPU));
    cr_assert_eq(ct_module_load(bigger, file("m.safetensors"), &CT_LOAD_OPTS_STRICT, NULL), CT_ERR_VALUE);
    cr_assert(strstr(ct_last_error_message(), "missing head.scale"), "%s", ct_last_error_message());
    ct_clear_error();
    cr_assert_eq(ct_module_load(bigger, file("m.safetensors"), &CT_LOAD_OPTS_PARTIAL, &r), CT_OK);
    cr_assert(r.loaded == 4 && r.missing == 1);
    ct_module *modules[] = {src, dst, other, fresh, bigger};
    for (int i = 0; i < 5; i++)
        ct_module_free(modules[i]);
    cr_assert_eq(ct_live_tensors(), before);
}

Test(checkpoint, write_failure_keeps_the_old_file, .init = make_dir, .fini = remove_dir) {
    ct_module *m = net(2);
    cr_assert_eq(ct_module_save(m, file("keep.safetensors"), NULL, NULL, 0), CT_OK);
    unsigned char a[4096], b[4096];
    size_t na = slurp(file("keep.safetensors"), a, sizeof a);
    ct_clear_error();
    cr_assert_eq(ct_module_save(m, "/nonexistent-dir/x.safetensors", NULL, NULL, 0), CT_ERR_IO);
    t_assert_error(CT_ERR_IO, "cannot create", NULL);
    size_t nb = slurp(file("keep.safetensors"), b, sizeof b);
    cr_assert(na == nb && memcmp(a, b, na) == 0);
    ct_module_free(m);
}

Test(checkpoint, loads_a_file_written_by_pytorch) {
    T_NO_LEAK({
        ct_safetensors *f = ct_safetensors_load(CT_TEST_DATA_DIR "/torch_cnn.safetensors");
        cr_assert_not_null(f, "%s", ct_last_error_message());
        cr_assert_str_eq(ct_safetensors_metadata(f, "producer"), "pytorch");
        ct_tensor *w = ct_safetensors_get(f, "0.weight");
        t_assert_shape(w, (int64_t[]){4, 1, 3, 3}, 4);
        double *v = t_values(w);
        cr_assert_float_eq(v[0], -0.0024956068955361843, 1e-9);
        cr_assert_float_eq(v[1], 0.17881453037261963, 1e-9);
        free(v);
        cr_assert_float_eq(ct_item(ct_sum(w, NULL, 0, false)), -1.43379245698452, 1e-5);
        cr_assert_float_eq(ct_item(ct_sum(ct_safetensors_get(f, "1.running_var"), NULL, 0, false)),
                           3.7067835330963135, 1e-6);
        ct_tensor *nbt = ct_safetensors_get(f, "1.num_batches_tracked"); /* int64 in the file */
        cr_assert_eq(ct_tensor_dtype(nbt), CT_I32);
        cr_assert_eq(ct_tensor_ndim(nbt), 0);
        cr_assert_eq(ct_item(nbt), 1);
        t_assert_close(ct_safetensors_get(f, "extra.half"), (double[]){1.5, -2.25}, 0, 0);
        t_assert_close(ct_safetensors_get(f, "extra.bf16"), (double[]){3.0, 0.10009765625}, 0, 0);
        t_assert_shape(ct_safetensors_get(f, "4.weight"), (int64_t[]){3, 100}, 2);
        ct_safetensors_free(f);
    });
}

/* Found by fuzzing (tests/fuzz): a negative I64/I16/I8 value was assembled by shifting
 * bytes into the sign bit of an int64_t, which is undefined (UBSan reported it). */
Test(safetensors, negative_narrow_integers_sign_extend, .init = make_dir, .fini = remove_dir) {
    T_NO_LEAK({
        const char *h = "{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                        "\"b\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[16,18]},"
                        "\"c\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[18,19]}}";
        static const unsigned char data[19] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* -2 */
                                               0x00, 0x00, 0x00, 0x80, 0xff, 0xff, 0xff, 0xff, /* INT32_MIN */
                                               0xfd, 0xff, 0xfc};                              /* -3, -4 */
        unsigned char buf[512];
        size_t hl = strlen(h);
        for (int i = 0; i < 8; i++)
            buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
        memcpy(buf + 8, h, hl);
        memcpy(buf + 8 + hl, data, sizeof data);
        spit(file("neg"), buf, 8 + hl + sizeof data);
        ct_safetensors *f = ct_safetensors_load(file("neg"));
        cr_assert_not_null(f, "%s", ct_last_error_message());
        t_assert_close(ct_safetensors_get(f, "a"), (double[]){-2, -2147483648.0}, 0, 0);
        t_assert_close(ct_safetensors_get(f, "b"), (double[]){-3}, 0, 0);
        t_assert_close(ct_safetensors_get(f, "c"), (double[]){-4}, 0, 0);
        ct_safetensors_free(f);
        buf[8 + hl + 8 + 7] = 0x7f; /* INT64_MAX - 2^31 + 1 is outside i32 */
        spit(file("neg"), buf, 8 + hl + sizeof data);
        expect_corrupt("neg", "outside the range of i32");
    });
}

/* A shape whose element count wraps around 2^64 (here to 0, matching empty offsets) is
 * refused by the loader itself, naming the file and the tensor. */
Test(safetensors, element_count_overflow_is_refused, .init = make_dir, .fini = remove_dir) {
    T_NO_LEAK({
        forge("wrap", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0, -1);
        expect_corrupt("wrap", "more elements than fit in 64 bits");
        forge("wrap0", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1099511627776,1099511627776,0],\"data_offsets\":[0,0]}}", 0,
              -1);
        expect_corrupt("wrap0", "\"a\" has shape [1099511627776, 1099511627776, 0]");
    });
}

/* Replace the value of metadata `key` in a safetensors file (the header grows or shrinks;
 * the data follows it). */
static void rewrite_metadata(const char *path, const char *key, const char *value) {
    static unsigned char in[1 << 16], out[1 << 16];
    size_t n = slurp(path, in, sizeof in);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)in[i] << (8 * i);
    char header[1 << 15];
    memcpy(header, in + 8, hlen);
    header[hlen] = '\0';
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    char *at = strstr(header, pattern);
    cr_assert_not_null(at, "%s not in %s", key, header);
    char *start = at + strlen(pattern), *end = strchr(start, '"');
    char rewritten[1 << 15];
    int len = snprintf(rewritten, sizeof rewritten, "%.*s%s%s", (int)(start - header), header, value, end);
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)len >> (8 * i));
    memcpy(out + 8, rewritten, (size_t)len);
    memcpy(out + 8 + len, in + 8 + hlen, n - 8 - hlen);
    spit(path, out, 8 + (size_t)len + n - 8 - hlen);
}

static ct_status load_training(const char *path, int64_t *epoch) {
    ct_module *m = net(3);
    ct_sgd_opts o = CT_SGD_OPTS_DEFAULT;
    o.momentum = 0.9;
    ct_optim *opt = ct_optim_sgd(m, &o);
    ct_lr_schedule *s = ct_schedule_step_lr(opt, 2, 0.5);
    ct_status st = ct_checkpoint_load(path, m, opt, s, epoch);
    ct_schedule_free(s);
    ct_optim_free(opt);
    ct_module_free(m);
    return st;
}

/* Seen while writing tests/fuzz: an epoch such as "1e300" or "nan" was converted from double
 * to int64_t (undefined); a hyper-parameter or schedule value that is not a number was
 * skipped silently. All are errors now. */
Test(checkpoint, training_checkpoint_metadata_must_be_numbers, .init = make_dir, .fini = remove_dir) {
    int64_t before = ct_live_tensors();
    ct_manual_seed(2);
    ct_module *m = net(3);
    ct_sgd_opts o = CT_SGD_OPTS_DEFAULT;
    o.momentum = 0.9;
    ct_optim *opt = ct_optim_sgd(m, &o);
    ct_lr_schedule *s = ct_schedule_step_lr(opt, 2, 0.5);
    cr_assert_eq(ct_schedule_step(s), CT_OK);
    cr_assert_eq(ct_checkpoint_save(file("t.safetensors"), m, opt, s, 7), CT_OK, "%s", ct_last_error_message());
    ct_schedule_free(s);
    ct_optim_free(opt);
    ct_module_free(m);
    int64_t epoch = -1;
    cr_assert_eq(load_training(file("t.safetensors"), &epoch), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(epoch, 7);
    static const char *bad_epochs[] = {"1e300", "nan", "7.5", "", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_epochs / sizeof bad_epochs[0]; i++) {
        ct_module *fresh = net(3);
        cr_assert_eq(ct_checkpoint_save(file("e.safetensors"), fresh, NULL, NULL, 7), CT_OK);
        rewrite_metadata(file("e.safetensors"), "epoch", bad_epochs[i]);
        ct_clear_error();
        cr_assert_eq(ct_checkpoint_load(file("e.safetensors"), fresh, NULL, NULL, &epoch), CT_ERR_IO, "epoch %s",
                     bad_epochs[i]);
        t_assert_error(CT_ERR_IO, "e.safetensors", "the epoch", "not a 64-bit integer", NULL);
        ct_module_free(fresh);
    }
    rewrite_metadata(file("t.safetensors"), "optim.hparam.lr", "fast");
    cr_assert_eq(load_training(file("t.safetensors"), &epoch), CT_ERR_IO);
    t_assert_error(CT_ERR_IO, "optim.hparam.lr = \"fast\"", "not a number", NULL);
    rewrite_metadata(file("t.safetensors"), "optim.hparam.lr", "0.01");
    rewrite_metadata(file("t.safetensors"), "schedule.last_epoch", "one");
    cr_assert_eq(load_training(file("t.safetensors"), &epoch), CT_ERR_IO);
    t_assert_error(CT_ERR_IO, "schedule.last_epoch = \"one\"", "not a number", NULL);
    cr_assert_eq(ct_live_tensors(), before);
}

/* Seen while writing tests/fuzz (ASan confirmed it through fuzz_safetensors): a second
 * "__metadata__" object was written into the arrays sized for the first (heap overflow), and
 * the first arrays leaked. */
Test(safetensors, duplicate_metadata_is_refused, .init = make_dir, .fini = remove_dir) {
    T_NO_LEAK({
        forge("dupmeta", "{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"},\"__metadata__\":{\"c\":\"3\"}}", 0, -1);
        expect_corrupt("dupmeta", "__metadata__ appears twice");
    });
}

/* Found by fuzz_idx, the same in safetensors: [0, 2^40, 2^40] has no elements, but the
 * strides of the other sizes overflow. */
Test(safetensors, zero_size_shape_with_huge_dims_is_refused, .init = make_dir, .fini = remove_dir) {
    T_NO_LEAK({
        forge("zero", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0,1099511627776,1099511627776],\"data_offsets\":[0,0]}}", 0,
              -1);
        expect_corrupt("zero", "\"a\" has shape [0, 1099511627776, 1099511627776]: more elements than fit");
        forge("empty", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0,1048576,1048576],\"data_offsets\":[0,0]}}", 0, -1);
        ct_safetensors *f = ct_safetensors_load(file("empty"));
        cr_assert_not_null(f, "%s", ct_last_error_message());
        t_assert_shape(ct_safetensors_get(f, "a"), (int64_t[]){0, 1048576, 1048576}, 3);
        ct_safetensors_free(f);
    });
}

/* Found by clang-tidy (cert-err33-c, an unchecked snprintf): the loader looked each module
 * path up through a 1024-byte key, so a module whose path is longer could be saved but not
 * loaded back ("missing ..." and "unexpected ..." for its own file). */
Test(checkpoint, long_module_paths_round_trip, .init = make_dir, .fini = remove_dir) {
    int64_t before = ct_live_tensors();
    char name[1500];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    ct_module *src[2];
    for (int i = 0; i < 2; i++) {
        src[i] = ct_module_create(&net_vt, NULL);
        ct_module *child = ct_module_create(&net_vt, NULL);
        ct_module_add_parameter(child, "weight", ct_full((int64_t[]){2}, 1, i + 1, CT_F32, CT_CPU));
        cr_assert_eq(ct_module_add_child(src[i], name, child), CT_OK, "%s", ct_last_error_message());
    }
    cr_assert_eq(ct_module_save(src[0], file("long.safetensors"), NULL, NULL, 0), CT_OK, "%s", ct_last_error_message());
    ct_load_report r;
    cr_assert_eq(ct_module_load(src[1], file("long.safetensors"), NULL, &r), CT_OK, "%s", ct_last_error_message());
    cr_assert(r.loaded == 1 && r.missing == 0 && r.unexpected == 0);
    char path[1600];
    snprintf(path, sizeof path, "%s.weight", name);
    t_assert_close(ct_module_find(src[1], path), (double[]){1, 1}, 0, 0);
    for (int i = 0; i < 2; i++)
        ct_module_free(src[i]);
    cr_assert_eq(ct_live_tensors(), before);
}
