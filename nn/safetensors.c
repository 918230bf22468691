/* safetensors files: writing (atomically) and reading with full validation. */
#include "ctensor/checkpoint.h"
#include "kernels/cpu/copy.h"
#include "nn/json.h"
#include "runtime/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_HEADER (100u << 20) /* the reference implementation's limit */

struct ct_safetensors {
    int count;
    char **names;
    ct_tensor **tensors;
    int n_meta;
    char **meta_keys, **meta_values;
};

static const char *st_dtype(ct_dtype d) {
    switch (d) {
    case CT_F32: return "F32";
    case CT_F64: return "F64";
    case CT_F16: return "F16";
    case CT_BF16: return "BF16";
    case CT_I32: return "I32";
    case CT_U8: return "U8";
    default: return NULL;
    }
}

/* File dtype -> (ctensor dtype, bytes per element in the file). Integer types that ctensor
 * lacks are converted on load: I64/I16/I8 to I32 (range-checked), BOOL to U8. */
static bool parse_dtype(const char *s, ct_dtype *d, size_t *file_size) {
    static const struct { const char *name; ct_dtype dtype; size_t size; } table[] = {
        {"F32", CT_F32, 4}, {"F64", CT_F64, 8}, {"F16", CT_F16, 2}, {"BF16", CT_BF16, 2}, {"I32", CT_I32, 4},
        {"U8", CT_U8, 1},   {"BOOL", CT_U8, 1}, {"I64", CT_I32, 8}, {"I16", CT_I32, 2},  {"I8", CT_I32, 1},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(s, table[i].name) == 0) {
            *d = table[i].dtype;
            *file_size = table[i].size;
            return true;
        }
    return false;
}

/* ---- writing ------------------------------------------------------------------------- */

typedef struct growbuf {
    char *data;
    size_t len, cap;
} growbuf;

static bool gb_reserve(growbuf *b, size_t extra) {
    if (b->len + extra <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return false;
    b->data = d;
    b->cap = cap;
    return true;
}

static bool gb_printf(growbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool gb_printf(growbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !gb_reserve(b, (size_t)n + 1))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

static bool gb_string(growbuf *b, const char *s) {
    size_t need = 2 + 6 * strlen(s) + 1;
    if (!gb_reserve(b, need))
        return false;
    long n = ct_json_write_string(b->data, b->cap, b->len, s);
    if (n < 0)
        return false;
    b->len = (size_t)n;
    return true;
}

ct_status ct_safetensors_save(const char *path, const char *const *names, ct_tensor *const *tensors, int n,
                              const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    const char *op = "ct_safetensors_save";
    if (!path || (n > 0 && (!names || !tensors)) || (n_meta > 0 && (!meta_keys || !meta_values)))
        return ct__null_arg(op, !path ? "path" : "names/tensors/metadata");
    for (int i = 0; i < n; i++) {
        if (!names[i] || !ct__check(op, "tensor", tensors[i]))
            return ct_last_error() ? ct_last_error() : ct__null_arg(op, "name");
        if (!st_dtype(tensors[i]->dtype))
            return ct__set_error(CT_ERR_DTYPE, "%s: %s has unsupported dtype", op, names[i]);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return ct__set_error(CT_ERR_VALUE, "%s: the name \"%s\" appears twice", op, names[i]);
        if (strcmp(names[i], "__metadata__") == 0)
            return ct__set_error(CT_ERR_VALUE, "%s: \"__metadata__\" is reserved", op);
    }
    growbuf h = {0};
    bool ok = gb_printf(&h, "{");
    if (n_meta > 0) {
        ok = ok && gb_printf(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta && ok; i++)
            ok = gb_printf(&h, i ? "," : "") && gb_string(&h, meta_keys[i] ? meta_keys[i] : "") &&
                 gb_printf(&h, ":") && gb_string(&h, meta_values[i] ? meta_values[i] : "");
        ok = ok && gb_printf(&h, "}%s", n ? "," : "");
    }
    uint64_t offset = 0;
    for (int i = 0; i < n && ok; i++) {
        const ct_tensor *t = tensors[i];
        uint64_t bytes = (uint64_t)ct__numel(t->ndim, t->shape) * ct_dtype_size(t->dtype);
        ok = gb_printf(&h, i ? "," : "") && gb_string(&h, names[i]) &&
             gb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype(t->dtype));
        for (int d = 0; d < t->ndim && ok; d++)
            ok = gb_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        ok = ok && gb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                             (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    ok = ok && gb_printf(&h, "}");
    while (ok && h.len % 8 != 0) /* pad with spaces so the data is 8-byte aligned */
        ok = gb_printf(&h, " ");
    if (!ok) {
        free(h.data);
        return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory building the header", op);
    }
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    FILE *f = tmp ? (snprintf(tmp, tmp_len, "%s.tmp", path), fopen(tmp, "wb")) : NULL;
    if (!f) {
        ct_status st = ct__set_error(CT_ERR_IO, "%s: cannot create %s.tmp: %s", op, path, strerror(errno));
        free(h.data);
        free(tmp);
        return st;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.data, 1, h.len, f) == h.len;
    free(h.data);
    ct_status st = CT_OK;
    for (int i = 0; i < n && ok; i++) {
        const ct_tensor *t = tensors[i];
        size_t bytes = (size_t)ct__numel(t->ndim, t->shape) * ct_dtype_size(t->dtype);
        void *host = malloc(bytes ? bytes : 1);
        if (!host) {
            st = ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
            ok = false;
            break;
        }
        if (ct_to_host(t, host, bytes) != CT_OK) { /* row-major, any strides or device */
            st = ct_last_error();
            ok = false;
        } else {
            ok = fwrite(host, 1, bytes, f) == bytes;
        }
        free(host);
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = false;
    if (fclose(f) != 0)
        ok = false;
    if (ok && rename(tmp, path) != 0)
        ok = false;
    if (!ok) {
        if (st == CT_OK)
            st = ct__set_error(CT_ERR_IO, "%s: writing %s failed: %s", op, path, strerror(errno));
        remove(tmp);
    }
    free(tmp);
    return st;
}

/* ---- reading ------------------------------------------------------------------------- */

void ct_safetensors_free(ct_safetensors *f) {
    if (!f)
        return;
    for (int i = 0; i < f->count; i++) {
        free(f->names[i]);
        ct_tensor_free(f->tensors[i]);
    }
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->names);
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f);
}

int ct_safetensors_count(const ct_safetensors *f) { return f ? f->count : 0; }
const char *ct_safetensors_name(const ct_safetensors *f, int i) {
    return (f && i >= 0 && i < f->count) ? f->names[i] : NULL;
}
ct_tensor *ct_safetensors_get(const ct_safetensors *f, const char *name) {
    if (!f || !name)
        return NULL;
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->names[i], name) == 0)
            return f->tensors[i];
    return NULL;
}
const char *ct_safetensors_metadata(const ct_safetensors *f, const char *key) {
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

typedef struct entry {
    const char *name;
    ct_dtype dtype;
    size_t file_elsize;
    char file_dtype[8];
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    uint64_t begin, end;
} entry;

static int by_begin(const void *a, const void *b) {
    const entry *x = a, *y = b;
    return x->begin < y->begin ? -1 : (x->begin > y->begin);
}

/* Convert one entry's little-endian bytes into a new CPU tensor. */
static ct_tensor *decode(const entry *e, const unsigned char *bytes, const char *path) {
    ct_tensor *t = ct_empty(e->shape, e->ndim, e->dtype, CT_CPU);
    if (!t)
        return NULL;
    int64_t n = ct__numel(e->ndim, e->shape);
    if (strcmp(e->file_dtype, "I64") == 0 || strcmp(e->file_dtype, "I16") == 0 || strcmp(e->file_dtype, "I8") == 0) {
        int32_t *out = ct__data(t);
        for (int64_t i = 0; i < n; i++) {
            uint64_t bits = 0; /* unsigned: a shift into the sign bit of an int64_t is undefined */
            const unsigned char *p = bytes + i * (int64_t)e->file_elsize;
            for (size_t k = 0; k < e->file_elsize; k++)
                bits |= (uint64_t)p[k] << (8 * k);
            uint64_t sign = (uint64_t)1 << (8 * e->file_elsize - 1); /* two's complement, any width */
            int64_t v = (bits & sign) ? -(int64_t)(~bits & (sign - 1)) - 1 : (int64_t)bits;
            if (v < INT32_MIN || v > INT32_MAX) {
                ct__set_error(CT_ERR_IO, "ct_safetensors_load: %s: %s holds %lld, outside the range of i32", path,
                              e->name, (long long)v);
                ct_tensor_free(t);
                return NULL;
            }
            out[i] = (int32_t)v;
        }
    } else {
        memcpy(ct__data(t), bytes, (size_t)n * e->file_elsize); /* little-endian host */
    }
    return t;
}

ct_safetensors *ct_safetensors_load(const char *path) {
    const char *op = "ct_safetensors_load";
    if (!path) {
        ct__null_arg(op, "path");
        return NULL;
    }
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        ct__set_error(CT_ERR_IO, "%s: cannot open %s: %s", op, path, strerror(errno));
        return NULL;
    }
    ct_safetensors *out = NULL;
    unsigned char *file = NULL;
    ct_json *header = NULL;
    entry *entries = NULL;
    char err[256];
    long size = (fseek(fp, 0, SEEK_END) == 0) ? ftell(fp) : -1;
    if (size < 8) {
        ct__set_error(CT_ERR_IO, "%s: %s is too short (%ld bytes) to be a safetensors file", op, path, size);
        goto done;
    }
    rewind(fp);
    file = malloc((size_t)size);
    if (!file || fread(file, 1, (size_t)size, fp) != (size_t)size) {
        ct__set_error(CT_ERR_IO, "%s: cannot read %s", op, path);
        goto done;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)file[i] << (8 * i);
    if (hlen > MAX_HEADER || hlen > (uint64_t)size - 8) {
        ct__set_error(CT_ERR_IO, "%s: %s: header length %llu does not fit the file of %ld bytes", op, path,
                      (unsigned long long)hlen, size);
        goto done;
    }
    if (hlen < 2 || file[8] != '{') {
        ct__set_error(CT_ERR_IO, "%s: %s: the header is not a JSON object", op, path);
        goto done;
    }
    header = ct_json_parse((const char *)file + 8, (size_t)hlen, err, sizeof err);
    if (!header || header->type != CT_JSON_OBJECT) {
        ct__set_error(CT_ERR_IO, "%s: %s: bad JSON header: %s", op, path, header ? "not an object" : err);
        goto done;
    }
    const unsigned char *data = file + 8 + hlen;
    uint64_t data_len = (uint64_t)size - 8 - hlen;
    out = calloc(1, sizeof *out);
    entries = calloc((size_t)header->count + 1, sizeof *entries);
    if (!out || !entries) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        goto fail;
    }
    int ne = 0;
    for (int i = 0; i < header->count; i++) {
        const char *name = header->keys[i];
        const ct_json *v = header->items[i];
        if (strcmp(name, "__metadata__") == 0) {
            if (v->type != CT_JSON_OBJECT) {
                ct__set_error(CT_ERR_IO, "%s: %s: __metadata__ is not an object", op, path);
                goto fail;
            }
            if (out->meta_keys) { /* a second one would overrun the arrays sized for it */
                ct__set_error(CT_ERR_IO, "%s: %s: __metadata__ appears twice", op, path);
                goto fail;
            }
            out->meta_keys = calloc((size_t)v->count + 1, sizeof(char *));
            out->meta_values = calloc((size_t)v->count + 1, sizeof(char *));
            if (!out->meta_keys || !out->meta_values) {
                ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
                goto fail;
            }
            for (int k = 0; k < v->count; k++) {
                if (v->items[k]->type != CT_JSON_STRING) {
                    ct__set_error(CT_ERR_IO, "%s: %s: metadata value \"%s\" is not a string", op, path, v->keys[k]);
                    goto fail;
                }
                out->meta_keys[out->n_meta] = strdup(v->keys[k]);
                out->meta_values[out->n_meta++] = strdup(v->items[k]->string);
                if (!out->meta_keys[out->n_meta - 1] || !out->meta_values[out->n_meta - 1]) {
                    ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
                    goto fail;
                }
            }
            continue;
        }
        entry *e = &entries[ne];
        e->name = name;
        for (int k = 0; k < ne; k++)
            if (strcmp(entries[k].name, name) == 0) {
                ct__set_error(CT_ERR_IO, "%s: %s: the tensor \"%s\" appears twice", op, path, name);
                goto fail;
            }
        const ct_json *dt = ct_json_get(v, "dtype"), *shape = ct_json_get(v, "shape"),
                      *offs = ct_json_get(v, "data_offsets");
        if (!dt || dt->type != CT_JSON_STRING || !shape || shape->type != CT_JSON_ARRAY || !offs ||
            offs->type != CT_JSON_ARRAY || offs->count != 2) {
            ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" needs dtype, shape and data_offsets [begin, end]", op, path,
                          name);
            goto fail;
        }
        if (!parse_dtype(dt->string, &e->dtype, &e->file_elsize)) {
            ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" has unsupported dtype %s", op, path, name, dt->string);
            goto fail;
        }
        snprintf(e->file_dtype, sizeof e->file_dtype, "%s", dt->string);
        if (shape->count > CT_MAX_DIMS) {
            ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" has %d dims (at most %d)", op, path, name, shape->count,
                          CT_MAX_DIMS);
            goto fail;
        }
        e->ndim = shape->count;
        /* The product of the sizes, zeros counted as 1, bounds both the element count and the
         * strides: a wrapped count could match the offsets by chance, and a zero size does not
         * make the strides of the others fit. */
        uint64_t extent = 1;
        bool overflow = false, empty = false;
        for (int d = 0; d < shape->count; d++) {
            const ct_json *s = shape->items[d];
            if (s->type != CT_JSON_NUMBER || !s->is_integer || s->integer < 0 || s->integer > (1ll << 40)) {
                ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" has an invalid shape", op, path, name);
                goto fail;
            }
            e->shape[d] = s->integer;
            empty |= s->integer == 0;
            overflow |= __builtin_mul_overflow(extent, (uint64_t)(s->integer ? s->integer : 1), &extent);
        }
        if (overflow || extent > INT64_MAX / 8) {
            ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" has shape %s: more elements than fit in 64 bits", op, path,
                          name, ct__shape_fmt(e->ndim, e->shape));
            goto fail;
        }
        uint64_t numel = empty ? 0 : extent;
        for (int k = 0; k < 2; k++)
            if (offs->items[k]->type != CT_JSON_NUMBER || !offs->items[k]->is_integer || offs->items[k]->integer < 0) {
                ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" has invalid data_offsets", op, path, name);
                goto fail;
            }
        e->begin = (uint64_t)offs->items[0]->integer;
        e->end = (uint64_t)offs->items[1]->integer;
        if (e->begin > e->end || e->end > data_len) {
            ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" has data_offsets [%llu, %llu] outside the %llu data bytes", op,
                          path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)data_len);
            goto fail;
        }
        if (e->end - e->begin != numel * e->file_elsize) {
            ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" is %s %s (%llu bytes) but its offsets span %llu bytes", op, path,
                          name, dt->string, ct__shape_fmt(e->ndim, e->shape),
                          (unsigned long long)(numel * e->file_elsize), (unsigned long long)(e->end - e->begin));
            goto fail;
        }
        ne++;
    }
    /* The entries must tile the data exactly: no gaps, no overlaps, nothing left over. */
    qsort(entries, (size_t)ne, sizeof *entries, by_begin);
    uint64_t expect = 0;
    for (int i = 0; i < ne; i++) {
        if (entries[i].begin != expect) {
            ct__set_error(CT_ERR_IO, "%s: %s: \"%s\" starts at byte %llu, expected %llu (overlap or gap)", op, path,
                          entries[i].name, (unsigned long long)entries[i].begin, (unsigned long long)expect);
            goto fail;
        }
        expect = entries[i].end;
    }
    if (expect != data_len) {
        ct__set_error(CT_ERR_IO, "%s: %s: %llu data bytes but the tensors cover %llu", op, path,
                      (unsigned long long)data_len, (unsigned long long)expect);
        goto fail;
    }
    out->names = calloc((size_t)ne + 1, sizeof(char *));
    out->tensors = calloc((size_t)ne + 1, sizeof(ct_tensor *));
    if (!out->names || !out->tensors) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        goto fail;
    }
    for (int i = 0; i < ne; i++) {
        ct_tensor *t = decode(&entries[i], data + entries[i].begin, path);
        if (!t)
            goto fail;
        ct__scope_detach(t);
        out->names[out->count] = strdup(entries[i].name);
        out->tensors[out->count++] = t;
        if (!out->names[out->count - 1]) {
            ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
            goto fail;
        }
    }
    goto done;
fail:
    ct_safetensors_free(out);
    out = NULL;
done:
    free(entries);
    ct_json_free(header);
    free(file);
    fclose(fp);
    return out;
}
