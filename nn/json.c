/* A small recursive-descent JSON parser (RFC 8259) for file headers. */
#include "nn/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const char *s;
    size_t len, pos;
    int depth;
    char *err;
    size_t err_size;
    bool failed;
} parser;

static void fail(parser *p, const char *why) {
    if (!p->failed)
        snprintf(p->err, p->err_size, "%s at byte %zu", why, p->pos);
    p->failed = true;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                               p->s[p->pos] == '\r'))
        p->pos++;
}

static ct_json *value(parser *p);

static int hex4(parser *p) {
    if (p->pos + 4 > p->len) {
        fail(p, "truncated \\u escape");
        return -1;
    }
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else {
            fail(p, "bad \\u escape");
            return -1;
        }
    }
    return v;
}

static void put_utf8(char *out, size_t *n, unsigned cp) {
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xc0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xe0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*n)++] = (char)(0xf0 | (cp >> 18));
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static char *string(parser *p) {
    if (p->pos >= p->len || p->s[p->pos] != '"') {
        fail(p, "expected a string");
        return NULL;
    }
    p->pos++;
    size_t start = p->pos;
    /* the decoded string is never longer than the raw one */
    size_t end = start;
    while (end < p->len && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    char *out = malloc(end - start + 1);
    if (!out) {
        fail(p, "out of memory");
        return NULL;
    }
    size_t n = 0;
    while (p->pos < p->len && p->s[p->pos] != '"') {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c < 0x20) {
            fail(p, "control character in a string");
            break;
        }
        if (c != '\\') {
            out[n++] = (char)c;
            continue;
        }
        if (p->pos >= p->len) {
            fail(p, "truncated escape");
            break;
        }
        char e = p->s[p->pos++];
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            int cp = hex4(p);
            if (cp < 0)
                break;
            if (cp >= 0xd800 && cp < 0xdc00 && p->pos + 6 <= p->len && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                p->pos += 2;
                int lo = hex4(p);
                if (lo >= 0xdc00 && lo < 0xe000)
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                    fail(p, "bad surrogate pair");
            }
            if (n + 4 > end - start) { /* escapes are 6 bytes, UTF-8 at most 4: always fits */
                fail(p, "string too long");
                break;
            }
            put_utf8(out, &n, (unsigned)cp);
            break;
        }
        default: fail(p, "bad escape");
        }
        if (p->failed)
            break;
    }
    if (!p->failed && p->pos >= p->len)
        fail(p, "unterminated string");
    if (p->failed) {
        free(out);
        return NULL;
    }
    p->pos++; /* closing quote */
    out[n] = '\0';
    return out;
}

static ct_json *new_value(parser *p, ct_json_type t) {
    ct_json *v = calloc(1, sizeof *v);
    if (!v)
        fail(p, "out of memory");
    else
        v->type = t;
    return v;
}

static bool push(parser *p, ct_json *container, char *key, ct_json *item) {
    if (container->count % 8 == 0) {
        size_t cap = (size_t)container->count + 8;
        ct_json **items = realloc(container->items, cap * sizeof *items);
        if (items)
            container->items = items;
        if (container->type == CT_JSON_OBJECT) {
            char **keys = realloc(container->keys, cap * sizeof *keys);
            if (keys)
                container->keys = keys;
            if (!keys)
                items = NULL;
        }
        if (!items) {
            fail(p, "out of memory");
            return false;
        }
    }
    if (container->type == CT_JSON_OBJECT)
        container->keys[container->count] = key;
    container->items[container->count++] = item;
    return true;
}

static ct_json *number(parser *p) {
    size_t start = p->pos;
    if (p->pos < p->len && p->s[p->pos] == '-')
        p->pos++;
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
        fail(p, "unexpected character");
        return NULL;
    }
    bool integer = true;
    while (p->pos < p->len && ((p->s[p->pos] >= '0' && p->s[p->pos] <= '9') || p->s[p->pos] == '.' ||
                               p->s[p->pos] == 'e' || p->s[p->pos] == 'E' || p->s[p->pos] == '+' ||
                               p->s[p->pos] == '-')) {
        if (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E')
            integer = false;
        p->pos++;
    }
    char buf[64];
    size_t n = p->pos - start;
    if (n >= sizeof buf) {
        fail(p, "number too long");
        return NULL;
    }
    memcpy(buf, p->s + start, n);
    buf[n] = '\0';
    ct_json *v = new_value(p, CT_JSON_NUMBER);
    if (!v)
        return NULL;
    char *end;
    v->number = strtod(buf, &end);
    if (*end) {
        fail(p, "malformed number");
        free(v);
        return NULL;
    }
    if (integer) {
        errno = 0;
        long long ll = strtoll(buf, &end, 10);
        v->is_integer = errno == 0 && !*end;
        v->integer = ll;
    }
    return v;
}

static ct_json *value(parser *p) {
    skip_ws(p);
    if (p->pos >= p->len) {
        fail(p, "unexpected end of input");
        return NULL;
    }
    if (++p->depth > 64) {
        fail(p, "nesting too deep");
        return NULL;
    }
    ct_json *v = NULL;
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        bool obj = c == '{';
        v = new_value(p, obj ? CT_JSON_OBJECT : CT_JSON_ARRAY);
        p->pos++;
        skip_ws(p);
        if (v && p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
            p->pos++;
        } else {
            while (v && !p->failed) {
                char *key = NULL;
                if (obj) {
                    skip_ws(p);
                    key = string(p);
                    skip_ws(p);
                    if (key && (p->pos >= p->len || p->s[p->pos++] != ':'))
                        fail(p, "expected ':'");
                }
                ct_json *item = p->failed ? NULL : value(p);
                if (!item || !push(p, v, key, item)) {
                    free(key);
                    ct_json_free(item);
                    break;
                }
                skip_ws(p);
                if (p->pos < p->len && p->s[p->pos] == ',') {
                    p->pos++;
                    continue;
                }
                if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
                    p->pos++;
                    break;
                }
                fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            }
        }
    } else if (c == '"') {
        char *s = string(p);
        if (s && (v = new_value(p, CT_JSON_STRING)))
            v->string = s;
        else
            free(s);
    } else if (p->len - p->pos >= 4 && strncmp(p->s + p->pos, "true", 4) == 0) {
        p->pos += 4;
        if ((v = new_value(p, CT_JSON_BOOL)))
            v->boolean = true;
    } else if (p->len - p->pos >= 5 && strncmp(p->s + p->pos, "false", 5) == 0) {
        p->pos += 5;
        v = new_value(p, CT_JSON_BOOL);
    } else if (p->len - p->pos >= 4 && strncmp(p->s + p->pos, "null", 4) == 0) {
        p->pos += 4;
        v = new_value(p, CT_JSON_NULL);
    } else {
        v = number(p);
    }
    p->depth--;
    if (p->failed) {
        ct_json_free(v);
        return NULL;
    }
    return v;
}

ct_json *ct_json_parse(const char *text, size_t len, char *err, size_t err_size) {
    parser p = {text, len, 0, 0, err, err_size, false};
    ct_json *v = value(&p);
    skip_ws(&p);
    if (v && p.pos != len) {
        fail(&p, "trailing characters after the JSON value");
        ct_json_free(v);
        return NULL;
    }
    return v;
}

void ct_json_free(ct_json *v) {
    if (!v)
        return;
    for (int i = 0; i < v->count; i++) {
        ct_json_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

const ct_json *ct_json_get(const ct_json *obj, const char *key) {
    if (!obj || obj->type != CT_JSON_OBJECT)
        return NULL;
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

long ct_json_write_string(char *buf, size_t cap, size_t used, const char *s) {
    size_t n = used;
    if (n + 1 >= cap)
        return -1;
    buf[n++] = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (n + 7 >= cap)
            return -1;
        if (*c == '"' || *c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)*c;
        } else if (*c < 0x20) {
            n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", *c);
        } else {
            buf[n++] = (char)*c;
        }
    }
    if (n + 1 >= cap)
        return -1;
    buf[n++] = '"';
    return (long)n;
}
