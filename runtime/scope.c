/* Scopes: per-thread stacks of tensor lists. A scope owns one reference of each tensor
 * registered in it. Freed tensor handles wait in a quarantine ring before their memory is
 * reused, so a use after free is usually caught by the magic-number check in ct__check. */
#include "runtime/internal.h"

#include <pthread.h>
#include <string.h>

typedef struct ct_scope {
    ct_tensor **slots;
    int64_t count, capacity;
    struct ct_scope *parent;
    int phantoms_below; /* failed begins between the parent and this scope */
} ct_scope;

static _Thread_local ct_scope *current_scope = NULL;
static _Thread_local int scope_depth = 0;

/* When a scope cannot be allocated, the depth still counts it, so that the matching
 * ct_scope_end does not close the caller's scope; tensors then go to the enclosing scope. */
static _Thread_local int phantom_scopes = 0;

void ct_scope_begin(void) {
    ct_scope *s = calloc(1, sizeof *s);
    if (!s) {
        ct__set_error(CT_ERR_MEMORY, "ct_scope_begin: out of host memory");
        phantom_scopes++;
        scope_depth++;
        return;
    }
    s->parent = current_scope;
    s->phantoms_below = phantom_scopes;
    phantom_scopes = 0;
    current_scope = s;
    scope_depth++;
}

int ct_scope_depth(void) { return scope_depth; }

static bool scope_add(ct_scope *s, ct_tensor *t) {
    if (s->count == s->capacity) {
        int64_t cap = s->capacity ? s->capacity * 2 : 64;
        ct_tensor **slots = realloc(s->slots, (size_t)cap * sizeof *slots);
        if (!slots)
            return false;
        s->slots = slots;
        s->capacity = cap;
    }
    t->scope = s;
    t->scope_slot = s->count;
    s->slots[s->count++] = t;
    return true;
}

void ct__scope_register(ct_tensor *t) {
    t->scope = NULL;
    if (current_scope && !scope_add(current_scope, t))
        ct__set_error(CT_ERR_MEMORY, "scope: out of host memory; the tensor is owned by the caller");
}

/* Detach `t` from its scope without releasing (the caller takes over the reference). */
static void scope_remove(ct_tensor *t) {
    ct_scope *s = t->scope;
    if (!s)
        return;
    s->slots[t->scope_slot] = NULL;
    t->scope = NULL;
}

void ct__scope_detach(ct_tensor *t) { scope_remove(t); }

ct_status ct_scope_end(void) {
    ct_scope *s = current_scope;
    if (phantom_scopes > 0) {
        phantom_scopes--;
        scope_depth--;
        return CT_OK;
    }
    if (!s)
        return ct__set_error(CT_ERR_STATE, "ct_scope_end: no scope is open");
    current_scope = s->parent;
    phantom_scopes = s->phantoms_below;
    scope_depth--;
    /* Release in reverse creation order: outputs before the tensors they reference. */
    for (int64_t i = s->count - 1; i >= 0; i--) {
        ct_tensor *t = s->slots[i];
        if (t) {
            t->scope = NULL;
            ct__tensor_release(t);
        }
    }
    free(s->slots);
    free(s);
    return CT_OK;
}

ct_tensor *ct_keep(ct_tensor *t) {
    if (!ct__check("ct_keep", "t", t))
        return NULL;
    ct_scope *s = t->scope;
    if (!s)
        return t; /* already owned by the caller */
    scope_remove(t);
    if (s->parent && !scope_add(s->parent, t))
        ct__set_error(CT_ERR_MEMORY, "ct_keep: out of host memory; the tensor is owned by the caller");
    return t;
}

void ct_tensor_free(ct_tensor *t) {
    if (!t)
        return;
    if (t->magic != CT_TENSOR_MAGIC) {
        ct__set_error(CT_ERR_STATE, "ct_tensor_free: the tensor was already freed");
        return;
    }
    scope_remove(t);
    ct__tensor_release(t);
}
