/* Seed corpora for the harnesses, written by the library itself: small valid safetensors
 * files and training checkpoints, IDX files (plain and gzip), their JSON headers, and device
 * and byte-size strings. Usage: make_seeds DIR (creates DIR/<harness>/...). */
#include "tests/fuzz/fuzz_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static const char *root;

static const char *path_in(const char *sub, const char *name) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, sub);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", root, sub, name);
    return path;
}

static void write_bytes(const char *path, const void *bytes, size_t n, bool gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f || gzwrite(f, bytes, (unsigned)n) != (int)n || gzclose(f) != Z_OK) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(1);
        }
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void check(ct_status st) {
    if (st != CT_OK) {
        fprintf(stderr, "make_seeds: %s\n", ct_last_error_message());
        exit(1);
    }
}

/* The JSON header of a safetensors file, as a seed of the JSON harness. */
static void header_seed(const char *safetensors_path, const char *name) {
    FILE *f = fopen(safetensors_path, "rb");
    unsigned char len8[8];
    if (!f || fread(len8, 1, 8, f) != 8)
        exit(1);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)len8[i] << (8 * i);
    char *h = malloc(n);
    if (!h || fread(h, 1, n, f) != n)
        exit(1);
    fclose(f);
    write_bytes(path_in("json", name), h, n, false);
    free(h);
}

static void safetensors_seeds(void) {
    int64_t shape[] = {2, 3};
    ct_tensor *f32 = ct_arange(0, 6, 1, CT_F32, CT_CPU), *w = ct_reshape(f32, shape, 2);
    ct_tensor *half = ct_cast(w, CT_F16), *bf = ct_cast(w, CT_BF16), *f64 = ct_cast(w, CT_F64);
    ct_tensor *i32 = ct_cast(f32, CT_I32), *u8 = ct_cast(f32, CT_U8);
    ct_tensor *scalar = ct_full(NULL, 0, 7, CT_F32, CT_CPU);
    check(ct_safetensors_save(path_in("safetensors", "one.safetensors"), (const char *[]){"w"}, (ct_tensor *[]){w},
                              1, NULL, NULL, 0));
    check(ct_safetensors_save(path_in("safetensors", "dtypes.safetensors"),
                              (const char *[]){"f16", "bf16", "f64", "i32", "u8", "scalar"},
                              (ct_tensor *[]){half, bf, f64, i32, u8, scalar}, 6, (const char *[]){"epoch", "note"},
                              (const char *[]){"3", "tab\there \"quoted\" \\ \xc3\xa9"}, 2));
    check(ct_safetensors_save(path_in("safetensors", "empty.safetensors"), NULL, NULL, 0, NULL, NULL, 0));
    header_seed(path_in("safetensors", "one.safetensors"), "one.json");
    header_seed(path_in("safetensors", "dtypes.safetensors"), "dtypes.json");
    ct_tensor *all[] = {f32, w, half, bf, f64, i32, u8, scalar};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ct_tensor_free(all[i]);
    /* The dtypes that are converted on load, written by hand. */
    static const char h[] = "{\"i64\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                            "\"i16\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[8,10]},"
                            "\"i8\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[10,11]},"
                            "\"b\":{\"dtype\":\"BOOL\",\"shape\":[1,1],\"data_offsets\":[11,12]}}";
    unsigned char buf[8 + sizeof h + 12] = {0};
    size_t hl = sizeof h - 1;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    memcpy(buf + 8 + hl, "\xfe\xff\xff\xff\xff\xff\xff\xff\x02\x00\x81\x01", 12);
    write_bytes(path_in("safetensors", "converted.safetensors"), buf, 8 + hl + 12, false);
    write_bytes(path_in("json", "escapes.json"), "{\"a\\u00e9\\ud83d\\ude00\\n\":[1,-2.5e3,true,false,null,{}]}", 50,
                false);
}

static void checkpoint_seeds(void) {
    fuzz_setup s = fuzz_setup_create();
    if (!s.schedule)
        check(ct_last_error());
    check(ct_schedule_step(s.schedule));
    check(ct_checkpoint_save(path_in("checkpoint", "train.safetensors"), s.model, s.optim, s.schedule, 4));
    check(ct_checkpoint_save(path_in("checkpoint", "model_only.safetensors"), s.model, NULL, NULL, 0));
    header_seed(path_in("checkpoint", "train.safetensors"), "train.json");
    fuzz_setup_free(&s);
}

/* An IDX file: magic, big-endian dims, then n elements of `elsize` bytes (i % 251). */
static size_t idx_file(unsigned char *buf, int type, int elsize, const int *dims, int ndim) {
    buf[0] = buf[1] = 0;
    buf[2] = (unsigned char)type;
    buf[3] = (unsigned char)ndim;
    size_t n = 1, off = 4;
    for (int d = 0; d < ndim; d++, off += 4) {
        buf[off] = (unsigned char)(dims[d] >> 24);
        buf[off + 1] = (unsigned char)(dims[d] >> 16);
        buf[off + 2] = (unsigned char)(dims[d] >> 8);
        buf[off + 3] = (unsigned char)dims[d];
        n *= (size_t)dims[d];
    }
    for (size_t i = 0; i < n * (size_t)elsize; i++)
        buf[off + i] = (unsigned char)(i % 251);
    return off + n * (size_t)elsize;
}

static void idx_seeds(void) {
    unsigned char buf[4096];
    size_t n = idx_file(buf, 0x08, 1, (int[]){3, 4, 5}, 3);
    write_bytes(path_in("idx", "u8.idx"), buf, n, false);
    write_bytes(path_in("idx", "u8.idx.gz"), buf, n, true);
    n = idx_file(buf, 0x0C, 4, (int[]){7}, 1);
    write_bytes(path_in("idx", "i32.idx"), buf, n, false);
    n = idx_file(buf, 0x0D, 4, (int[]){2, 3}, 2);
    write_bytes(path_in("idx", "f32.idx.gz"), buf, n, true);
    n = idx_file(buf, 0x0E, 8, (int[]){1, 1, 2, 1}, 4);
    write_bytes(path_in("idx", "f64.idx"), buf, n, false);
}

static void string_seeds(void) {
    static const char *strings[] = {"cpu", "cuda", "cuda:0", "cuda:1023", "8G", "512M", "1.5GiB", " 64 KB ", "0"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%zu", i);
        write_bytes(path_in("strings", name), strings[i], strlen(strings[i]), false);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) {
        perror(root);
        return 1;
    }
    safetensors_seeds();
    checkpoint_seeds();
    idx_seeds();
    string_seeds();
    printf("seeds written under %s\n", root);
    return 0;
}
