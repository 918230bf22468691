/* ctensor — a small JSON reader for file headers (safetensors): parses a whole document
 * into a tree. Numbers are kept as text as well as doubles so that 64-bit integers are
 * exact. Internal to the library. */
#ifndef CT_NN_JSON_H
#define CT_NN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CT_JSON_NULL, CT_JSON_BOOL, CT_JSON_NUMBER, CT_JSON_STRING, CT_JSON_ARRAY, CT_JSON_OBJECT } ct_json_type;

typedef struct ct_json {
    ct_json_type type;
    bool boolean;
    double number;
    bool is_integer;   /* the number was written as an integer that fits in int64 */
    int64_t integer;
    char *string;      /* strings (decoded), NUL-terminated */
    int count;         /* array / object members */
    char **keys;       /* object member names */
    struct ct_json **items;
} ct_json;

/* Parse `len` bytes. NULL on error, with a description (position and reason) in `err`. */
ct_json *ct_json_parse(const char *text, size_t len, char *err, size_t err_size);
void ct_json_free(ct_json *v);
/* Member of an object by name (NULL when absent or not an object). */
const ct_json *ct_json_get(const ct_json *obj, const char *key);
/* Append `s` to buf as a JSON string literal (with quotes); returns the new length or
 * -1 when it does not fit. */
long ct_json_write_string(char *buf, size_t cap, size_t used, const char *s);

#endif
