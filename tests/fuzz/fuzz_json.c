/* libFuzzer harness: the JSON reader of safetensors headers (nn/json.c), in memory. */
#include "nn/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Visit the tree and write every string back as a JSON literal, as the writer would. */
static void walk(const ct_json *v, char *buf, size_t cap) {
    if (v->type == CT_JSON_STRING)
        (void)ct_json_write_string(buf, cap, 0, v->string);
    for (int i = 0; i < v->count; i++) {
        if (v->type == CT_JSON_OBJECT) {
            (void)ct_json_write_string(buf, cap, 0, v->keys[i]);
            if (ct_json_get(v, v->keys[i]) == NULL)
                abort(); /* a member is found by its own name */
        }
        walk(v->items[i], buf, cap);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256] = "";
    ct_json *v = ct_json_parse((const char *)data, size, err, sizeof err);
    if (!v) {
        if (!err[0]) {
            fprintf(stderr, "ct_json_parse failed without a reason\n");
            abort();
        }
        return 0;
    }
    static char buf[4096];
    walk(v, buf, sizeof buf);
    ct_json_free(v);
    return 0;
}
