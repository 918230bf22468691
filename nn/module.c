/* Modules: named parameters, buffers and children; traversal; train/eval; summary. */
#include "ctensor/nn.h"
#include "runtime/internal.h"

#include <string.h>

typedef struct named_tensor {
    char *name;
    ct_tensor *tensor;
    bool buffer;
} named_tensor;

typedef struct named_module {
    char *name;
    ct_module *module;
} named_module;

struct ct_module {
    const ct_module_vtable *vt;
    void *impl;
    bool training;
    ct_module *parent;
    const char *name_in_parent; /* borrowed from the parent's child entry */
    named_tensor *tensors;
    int n_tensors, cap_tensors;
    named_module *children;
    int n_children, cap_children;
};

ct_module *ct_module_create(const ct_module_vtable *vtable, void *impl) {
    if (!vtable || !vtable->forward) {
        ct__set_error(CT_ERR_NULL, "ct_module_create: the vtable and its forward function are required");
        return NULL;
    }
    ct_module *m = calloc(1, sizeof *m);
    if (!m) {
        ct__set_error(CT_ERR_MEMORY, "ct_module_create: out of host memory");
        return NULL;
    }
    m->vt = vtable;
    m->impl = impl;
    m->training = true;
    return m;
}

void *ct_module_impl(const ct_module *m) {
    return m ? m->impl : NULL;
}
const char *ct_module_type(const ct_module *m) {
    return m ? m->vt->type_name : NULL;
}

void ct_module_free(ct_module *m) {
    if (!m)
        return;
    for (int i = 0; i < m->n_children; i++) {
        ct_module_free(m->children[i].module);
        free(m->children[i].name);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        ct_tensor_free(m->tensors[i].tensor);
        free(m->tensors[i].name);
    }
    if (m->vt->free_impl)
        m->vt->free_impl(m);
    free(m->children);
    free(m->tensors);
    free(m);
}

static bool valid_name(const char *op, const ct_module *m, const char *name) {
    if (!m || !name) {
        ct__set_error(CT_ERR_NULL, "%s: %s is NULL", op, m ? "name" : "module");
        return false;
    }
    if (!*name || strchr(name, '.')) {
        ct__set_error(CT_ERR_VALUE, "%s: invalid name \"%s\" (non-empty, no dots)", op, name);
        return false;
    }
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) {
            ct__set_error(CT_ERR_VALUE, "%s: %s already has a tensor named \"%s\"", op, m->vt->type_name, name);
            return false;
        }
    for (int i = 0; i < m->n_children; i++)
        if (strcmp(m->children[i].name, name) == 0) {
            ct__set_error(CT_ERR_VALUE, "%s: %s already has a child named \"%s\"", op, m->vt->type_name, name);
            return false;
        }
    return true;
}

static ct_status add_tensor(const char *op, ct_module *m, const char *name, ct_tensor *t, bool buffer) {
    if (!valid_name(op, m, name) || !ct__check(op, "tensor", t))
        return ct_last_error();
    if (!buffer && !ct_dtype_is_float(t->dtype))
        return ct__set_error(CT_ERR_DTYPE, "%s: parameter \"%s\" must be floating, not %s", op, name,
                             ct_dtype_name(t->dtype));
    if (m->n_tensors == m->cap_tensors) {
        int cap = m->cap_tensors ? 2 * m->cap_tensors : 4;
        named_tensor *grown = realloc(m->tensors, (size_t)cap * sizeof *grown);
        if (!grown)
            return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        m->tensors = grown;
        m->cap_tensors = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
    ct__scope_detach(t);
    if (!buffer)
        ct_requires_grad(t, true);
    m->tensors[m->n_tensors++] = (named_tensor){copy, t, buffer};
    return CT_OK;
}

ct_status ct_module_add_parameter(ct_module *m, const char *name, ct_tensor *t) {
    return add_tensor("ct_module_add_parameter", m, name, t, false);
}
ct_status ct_module_add_buffer(ct_module *m, const char *name, ct_tensor *t) {
    return add_tensor("ct_module_add_buffer", m, name, t, true);
}

ct_status ct_module_add_child(ct_module *m, const char *name, ct_module *child) {
    if (!child)
        return ct_last_error() ? ct_last_error() : ct__set_error(CT_ERR_NULL, "ct_module_add_child: child is NULL");
    if (!valid_name("ct_module_add_child", m, name))
        return ct_last_error();
    if (child->parent)
        return ct__set_error(CT_ERR_VALUE, "ct_module_add_child: the module already belongs to a parent");
    if (m->n_children == m->cap_children) {
        int cap = m->cap_children ? 2 * m->cap_children : 4;
        named_module *grown = realloc(m->children, (size_t)cap * sizeof *grown);
        if (!grown)
            return ct__set_error(CT_ERR_MEMORY, "ct_module_add_child: out of host memory");
        m->children = grown;
        m->cap_children = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return ct__set_error(CT_ERR_MEMORY, "ct_module_add_child: out of host memory");
    m->children[m->n_children++] = (named_module){copy, child};
    child->parent = m;
    child->name_in_parent = copy;
    child->training = m->training;
    return CT_OK;
}

ct_status ct_module_set_child(ct_module *m, const char *name, ct_module *child) {
    if (!m || !name || !child)
        return ct_last_error() ? ct_last_error()
                               : ct__null_arg("ct_module_set_child", !m ? "module" : (!name ? "name" : "child"));
    if (child->parent)
        return ct__set_error(CT_ERR_VALUE, "ct_module_set_child: the module already belongs to a parent");
    for (int i = 0; i < m->n_children; i++) {
        if (strcmp(m->children[i].name, name) != 0)
            continue;
        ct_module *old = m->children[i].module;
        old->parent = NULL;
        ct_module_free(old);
        m->children[i].module = child;
        child->parent = m;
        child->name_in_parent = m->children[i].name;
        child->training = m->training;
        return CT_OK;
    }
    return ct_module_add_child(m, name, child);
}

static ct_tensor *member(const ct_module *m, const char *name, int want_buffer) {
    if (!m || !name)
        return NULL;
    for (int i = 0; i < m->n_tensors; i++)
        if ((want_buffer < 0 || m->tensors[i].buffer == want_buffer) && strcmp(m->tensors[i].name, name) == 0)
            return m->tensors[i].tensor;
    return NULL;
}
ct_tensor *ct_module_param(const ct_module *m, const char *name) {
    return member(m, name, 0);
}
ct_tensor *ct_module_buffer(const ct_module *m, const char *name) {
    return member(m, name, 1);
}

ct_module *ct_module_child(const ct_module *m, const char *name) {
    if (!m || !name)
        return NULL;
    for (int i = 0; i < m->n_children; i++)
        if (strcmp(m->children[i].name, name) == 0)
            return m->children[i].module;
    return NULL;
}
int ct_module_num_children(const ct_module *m) {
    return m ? m->n_children : 0;
}
ct_module *ct_module_child_at(const ct_module *m, int i) {
    return (m && i >= 0 && i < m->n_children) ? m->children[i].module : NULL;
}

/* ---- forward and the summary recorder ---------------------------------------------- */

typedef struct summary_row {
    const ct_module *module;
    int depth;
    int ndim;
    int64_t shape[CT_MAX_DIMS];
} summary_row;

static _Thread_local summary_row *recording;
static _Thread_local int recorded, record_cap;

ct_tensor *ct_module_forward(ct_module *m, ct_tensor *x) {
    if (!m) {
        ct__null_arg("ct_module_forward", "module");
        return NULL;
    }
    if (!ct__check("ct_module_forward", "x", x))
        return NULL;
    int slot = -1;
    if (recording && recorded < record_cap)
        slot = recorded++; /* reserve before the children, so rows come in call order */
    ct_tensor *y = m->vt->forward(m, x);
    if (slot >= 0) {
        summary_row *row = &recording[slot];
        row->module = m;
        row->depth = 0;
        for (const ct_module *p = m->parent; p; p = p->parent)
            row->depth++;
        row->ndim = y ? y->ndim : -1;
        if (y)
            memcpy(row->shape, y->shape, sizeof row->shape);
    }
    return y;
}

void ct_module_train(ct_module *m, bool training) {
    if (!m)
        return;
    m->training = training;
    for (int i = 0; i < m->n_children; i++)
        ct_module_train(m->children[i].module, training);
}
bool ct_module_is_training(const ct_module *m) {
    return m && m->training;
}

/* ---- traversal -------------------------------------------------------------------- */

typedef struct collector {
    ct_named_tensors *list;
    int cap;
    bool ok;
} collector;

static void collect(const ct_module *m, const char *prefix, bool trainable_only, bool with_buffers, collector *c) {
    for (int i = 0; i < m->n_tensors && c->ok; i++) {
        named_tensor *nt = &m->tensors[i];
        if ((nt->buffer && !with_buffers) || (trainable_only && !nt->tensor->requires_grad))
            continue;
        if (c->list->count == c->cap) {
            int cap = c->cap ? 2 * c->cap : 16;
            char **names = realloc(c->list->names, (size_t)cap * sizeof *names);
            if (names)
                c->list->names = names;
            ct_tensor **tensors = realloc(c->list->tensors, (size_t)cap * sizeof *tensors);
            if (tensors)
                c->list->tensors = tensors;
            if (!names || !tensors) {
                c->ok = false;
                return;
            }
            c->cap = cap;
        }
        size_t len = strlen(prefix) + strlen(nt->name) + 2;
        char *path = malloc(len);
        if (!path) {
            c->ok = false;
            return;
        }
        snprintf(path, len, "%s%s%s", prefix, *prefix ? "." : "", nt->name);
        c->list->names[c->list->count] = path;
        c->list->tensors[c->list->count++] = nt->tensor;
    }
    for (int i = 0; i < m->n_children && c->ok; i++) {
        size_t len = strlen(prefix) + strlen(m->children[i].name) + 2;
        char *child_prefix = malloc(len);
        if (!child_prefix) {
            c->ok = false;
            return;
        }
        snprintf(child_prefix, len, "%s%s%s", prefix, *prefix ? "." : "", m->children[i].name);
        collect(m->children[i].module, child_prefix, trainable_only, with_buffers, c);
        free(child_prefix);
    }
}

static ct_named_tensors *gather(const char *op, const ct_module *m, bool trainable_only, bool with_buffers) {
    if (!m) {
        ct__null_arg(op, "module");
        return NULL;
    }
    ct_named_tensors *list = calloc(1, sizeof *list);
    collector c = {list, 0, list != NULL};
    if (list)
        collect(m, "", trainable_only, with_buffers, &c);
    if (!c.ok) {
        ct_named_tensors_free(list);
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
        return NULL;
    }
    return list;
}

ct_named_tensors *ct_module_parameters(const ct_module *m) {
    return gather("ct_module_parameters", m, true, false);
}
ct_named_tensors *ct_module_state(const ct_module *m) {
    return gather("ct_module_state", m, false, true);
}

void ct_named_tensors_free(ct_named_tensors *list) {
    if (!list)
        return;
    for (int i = 0; i < list->count; i++)
        free(list->names[i]);
    free(list->names);
    free(list->tensors);
    free(list);
}

ct_tensor *ct_module_find(const ct_module *m, const char *path) {
    if (!m || !path)
        return NULL;
    const char *dot = strchr(path, '.');
    if (!dot)
        return member(m, path, -1);
    for (int i = 0; i < m->n_children; i++) {
        size_t n = strlen(m->children[i].name);
        if (n == (size_t)(dot - path) && strncmp(m->children[i].name, path, n) == 0)
            return ct_module_find(m->children[i].module, dot + 1);
    }
    return NULL;
}

int ct_module_freeze(ct_module *m, const char *prefix, bool frozen) {
    ct_named_tensors *all = gather("ct_module_freeze", m, false, false);
    if (!all)
        return -1;
    size_t plen = prefix ? strlen(prefix) : 0;
    int changed = 0;
    for (int i = 0; i < all->count; i++) {
        /* Match whole path parts: "1" selects "1.weight" and "1.0.bias" but not "10.weight". */
        if (plen && (strncmp(all->names[i], prefix, plen) != 0 ||
                     (prefix[plen - 1] != '.' && all->names[i][plen] != '.' && all->names[i][plen] != '\0')))
            continue;
        ct_tensor *t = all->tensors[i];
        if (t->requires_grad == frozen) {
            t->requires_grad = !frozen;
            if (frozen)
                ct_zero_grad(t);
            changed++;
        }
    }
    ct_named_tensors_free(all);
    return changed;
}

int64_t ct_module_num_parameters(const ct_module *m, bool trainable_only) {
    ct_named_tensors *all = gather("ct_module_num_parameters", m, trainable_only, false);
    if (!all)
        return -1;
    int64_t n = 0;
    for (int i = 0; i < all->count; i++)
        n += ct_tensor_numel(all->tensors[i]);
    ct_named_tensors_free(all);
    return n;
}

static ct_status move_tree(ct_module *m, ct_device device) {
    for (int i = 0; i < m->n_tensors; i++) {
        ct_tensor *old = m->tensors[i].tensor;
        if (ct_device_equal(old->device, device))
            continue;
        ct_no_grad_begin();
        ct_tensor *moved = ct_to_device(old, device);
        ct_no_grad_end();
        if (!moved)
            return ct_last_error();
        ct__scope_detach(moved);
        moved->requires_grad = old->requires_grad;
        if (old->name)
            ct_tensor_set_name(moved, old->name);
        m->tensors[i].tensor = moved;
        ct_tensor_free(old);
    }
    for (int i = 0; i < m->n_children; i++) {
        ct_status st = move_tree(m->children[i].module, device);
        if (st != CT_OK)
            return st;
    }
    return CT_OK;
}

ct_status ct_module_to(ct_module *m, ct_device device) {
    if (!m)
        return ct__null_arg("ct_module_to", "module");
    return move_tree(m, device);
}

/* ---- summary ------------------------------------------------------------------------ */

static int64_t own_parameters(const ct_module *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].buffer)
            n += ct__numel(m->tensors[i].tensor->ndim, m->tensors[i].tensor->shape);
    return n;
}

static void module_path(const ct_module *m, char *buf, size_t size) {
    if (!m->parent) {
        snprintf(buf, size, "(model)");
        return;
    }
    const char *parts[64];
    int n = 0;
    for (const ct_module *p = m; p->parent && n < 64; p = p->parent)
        parts[n++] = p->name_in_parent;
    size_t used = 0;
    buf[0] = '\0';
    for (int i = n - 1; i >= 0 && used < size; i--)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", parts[i], i ? "." : "");
}

static int count_modules(const ct_module *m) {
    int n = 1;
    for (int i = 0; i < m->n_children; i++)
        n += count_modules(m->children[i].module);
    return n;
}

/* One printed row of the summary. */
typedef struct summary_line {
    char path[160], type[240], shape[96], count[32];
    int depth;
} summary_line;

ct_status ct_module_summary(ct_module *m, const int64_t *input_shape, int ndim, ct_dtype dtype, FILE *out) {
    if (!m)
        return ct__null_arg("ct_module_summary", "module");
    if (!out)
        out = stdout;
    /* A module may run more than once per forward (shared layers): leave room for that. */
    int cap = 4 * count_modules(m) + 16;
    summary_row *rows = malloc(sizeof *rows * (size_t)cap);
    summary_line *lines = malloc(sizeof *lines * (size_t)cap);
    if (!rows || !lines) {
        free(rows);
        free(lines);
        return ct__set_error(CT_ERR_MEMORY, "ct_module_summary: out of host memory");
    }
    bool was_training = m->training;
    recording = rows;
    recorded = 0;
    record_cap = cap;
    ct_status st = CT_OK;
    ct_device device = CT_CPU;
    ct_named_tensors *all = ct_module_state(m);
    if (all && all->count > 0)
        device = all->tensors[0]->device;
    ct_named_tensors_free(all);
    ct_module_train(m, false);
    ct_scope_begin();
    ct_no_grad_begin();
    ct_tensor *x = ct_zeros(input_shape, ndim, dtype, device);
    ct_tensor *y = ct_module_forward(m, x);
    if (!y)
        st = ct_last_error();
    ct_no_grad_end();
    ct_scope_end();
    recording = NULL;
    ct_module_train(m, was_training);
    if (st != CT_OK) {
        free(rows);
        free(lines);
        return st;
    }
    /* Build the rows, then size the columns to fit them. */
    int wpath = 5, wtype = 4, wshape = 12;
    char desc[200];
    for (int i = 0; i < recorded; i++) {
        const ct_module *mod = rows[i].module;
        summary_line *l = &lines[i];
        l->depth = rows[i].depth;
        module_path(mod, l->path, sizeof l->path);
        desc[0] = '\0';
        if (mod->vt->describe)
            mod->vt->describe(mod, desc, sizeof desc);
        snprintf(l->type, sizeof l->type, "%s%s%s%s", mod->vt->type_name, *desc ? "(" : "", desc, *desc ? ")" : "");
        snprintf(l->shape, sizeof l->shape, "%s",
                 rows[i].ndim >= 0 ? ct__shape_fmt(rows[i].ndim, rows[i].shape) : "?");
        int64_t own = own_parameters(mod);
        l->count[0] = '\0';
        if (own)
            snprintf(l->count, sizeof l->count, "%lld", (long long)own);
        int wp = 2 * l->depth + (int)strlen(l->path), wt = (int)strlen(l->type), ws = (int)strlen(l->shape);
        wpath = wp > wpath ? wp : wpath;
        wtype = wt > wtype ? wt : wtype;
        wshape = ws > wshape ? ws : wshape;
    }
    int width = wpath + wtype + wshape + 12 + 3;
    fprintf(out, "%-*s %-*s %-*s %12s\n", wpath, "Layer", wtype, "Type", wshape, "Output shape", "Params");
    for (int i = 0; i < width; i++)
        fputc('=', out);
    fprintf(out, "\n%-*s %-*s %-*s %12s\n", wpath, "input", wtype, "", wshape, ct__shape_fmt(ndim, input_shape), "");
    for (int i = 0; i < recorded; i++) {
        const summary_line *l = &lines[i];
        fprintf(out, "%*s%-*s %-*s %-*s %12s\n", 2 * l->depth, "", wpath - 2 * l->depth, l->path, wtype, l->type,
                wshape, l->shape, l->count);
    }
    for (int i = 0; i < width; i++)
        fputc('=', out);
    int64_t total = ct_module_num_parameters(m, false), trainable = ct_module_num_parameters(m, true);
    fprintf(out, "\nTotal params: %lld\nTrainable params: %lld\nNon-trainable params: %lld\n", (long long)total,
            (long long)trainable, (long long)(total - trainable));
    free(rows);
    free(lines);
    return CT_OK;
}
