/* The autograd engine: recording nodes, running backward, accumulating leaf gradients. */
#include "runtime/internal.h"

#include <stdio.h>
#include <string.h>

static _Thread_local int no_grad_depth = 0;
static atomic_ullong node_seq;

void ct_no_grad_begin(void) { no_grad_depth++; }
void ct_no_grad_end(void) {
    if (no_grad_depth > 0)
        no_grad_depth--;
}
bool ct_grad_enabled(void) { return no_grad_depth == 0; }

/* ---- tensor-level API ---------------------------------------------------------------- */

ct_tensor *ct_requires_grad(ct_tensor *t, bool requires_grad) {
    if (!ct__check("ct_requires_grad", "t", t))
        return NULL;
    if (t->grad_fn) {
        ct__set_error(CT_ERR_AUTOGRAD,
                      "ct_requires_grad: only leaf tensors can change requires_grad (this one was made by %s); "
                      "use ct_detach",
                      t->grad_fn->name);
        return NULL;
    }
    if (requires_grad && !ct_dtype_is_float(t->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "ct_requires_grad: only floating tensors can require grad, not %s",
                      ct_dtype_name(t->dtype));
        return NULL;
    }
    t->requires_grad = requires_grad;
    return t;
}

bool ct_tensor_requires_grad(const ct_tensor *t) { return t && t->magic == CT_TENSOR_MAGIC && t->requires_grad; }
bool ct_tensor_is_leaf(const ct_tensor *t) { return t && t->magic == CT_TENSOR_MAGIC && !t->grad_fn; }
ct_tensor *ct_grad(const ct_tensor *t) { return ct__check("ct_grad", "t", t) ? t->grad : NULL; }
const char *ct_grad_fn_name(const ct_tensor *t) {
    return (t && t->magic == CT_TENSOR_MAGIC && t->grad_fn) ? t->grad_fn->name : NULL;
}

void ct_zero_grad(ct_tensor *t) {
    if (!ct__check("ct_zero_grad", "t", t) || !t->grad)
        return;
    ct__tensor_release(t->grad);
    t->grad = NULL;
}

ct_tensor *ct_detach(ct_tensor *t) {
    if (!ct__check("ct_detach", "t", t))
        return NULL;
    return ct__view_of(t, t->ndim, t->shape, t->strides, t->offset);
}

/* ---- recording ------------------------------------------------------------------------ */

bool ct__any_requires_grad(int n, const ct_tensor *const *inputs) {
    if (no_grad_depth > 0)
        return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad)
            return true;
    return false;
}

ct_node *ct__node_new(const char *name, ct_backward_fn backward, int n_inputs, const ct_tensor *const *inputs,
                      int n_outputs) {
    CT_ASSERT(n_inputs <= CT_NODE_MAX_INPUTS && n_outputs >= 1, NULL);
    ct_node *node = calloc(1, sizeof *node + (size_t)n_outputs * sizeof(struct ct_node_output));
    if (!node) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory recording the autograd graph", name);
        return NULL;
    }
    atomic_init(&node->refcount, 1);
    node->name = name;
    node->backward = backward;
    node->n_inputs = n_inputs;
    node->n_outputs = n_outputs;
    node->seq = atomic_fetch_add(&node_seq, 1);
    for (int i = 0; i < n_inputs; i++) {
        const ct_tensor *in = inputs[i];
        if (!in)
            continue;
        node->in_ndim[i] = in->ndim;
        memcpy(node->in_shape[i], in->shape, sizeof(int64_t) * (size_t)in->ndim);
        node->in_dtype[i] = in->dtype;
        node->in_device[i] = in->device;
        node->device = in->device;
        if (!in->requires_grad || !ct_dtype_is_float(in->dtype))
            continue;
        node->needs_grad[i] = true;
        if (in->grad_fn) {
            node->edges[i].node = in->grad_fn;
            node->edges[i].output_nr = in->output_nr;
            atomic_fetch_add(&in->grad_fn->refcount, 1);
        } else {
            node->edges[i].leaf = (ct_tensor *)in;
            atomic_fetch_add(&((ct_tensor *)in)->refcount, 1);
        }
    }
    return node;
}

void ct__node_set_output(ct_node *node, int k, ct_tensor *out) {
    node->outputs[k].ndim = out->ndim;
    node->outputs[k].dtype = out->dtype;
    memcpy(node->outputs[k].shape, out->shape, sizeof out->shape);
    node->device = out->device;
    if (out->grad_fn)
        ct__node_release(out->grad_fn);
    atomic_fetch_add(&node->refcount, 1);
    out->grad_fn = node;
    out->output_nr = k;
    out->requires_grad = true;
}

ct_node *ct__record(const char *name, ct_backward_fn backward, ct_tensor *out, int n_inputs,
                    const ct_tensor *const *inputs) {
    if (!out || !ct__any_requires_grad(n_inputs, inputs))
        return NULL;
    ct_node *node = ct__node_new(name, backward, n_inputs, inputs, 1);
    if (!node)
        return NULL;
    ct__node_set_output(node, 0, out);
    ct__node_release(node); /* `out` holds it now */
    return node;
}

void ct__node_save(ct_node *node, const ct_tensor *t) {
    if (!node || !t)
        return;
    if (node->n_saved >= CT_NODE_MAX_SAVED) {
        ct__set_error(CT_ERR_INTERNAL, "%s: too many saved tensors", node->name);
        return;
    }
    /* An alias with no grad_fn: saving an op's own output must not make a cycle. */
    ct_tensor *alias = ct__alias(t);
    if (!alias)
        return;
    node->saved[node->n_saved].tensor = alias;
    node->saved[node->n_saved].version = ct__version(t);
    node->n_saved++;
}

ct_tensor *ct__node_saved(ct_node *node, int i) {
    if (i >= node->n_saved || !node->saved[i].tensor) {
        ct__set_error(CT_ERR_AUTOGRAD,
                      "ct_backward: the tensors saved by %s were already freed by a previous backward (pass "
                      "retain_graph to backward twice)",
                      node->name);
        return NULL;
    }
    ct_tensor *t = node->saved[i].tensor;
    uint64_t now = ct__version(t);
    if (now != node->saved[i].version) {
        ct__set_error(CT_ERR_AUTOGRAD,
                      "ct_backward: a tensor of shape %s saved by %s was modified in place after it was saved "
                      "(version %llu, saved at version %llu)",
                      ct_shape_str(t), node->name, (unsigned long long)now,
                      (unsigned long long)node->saved[i].version);
        return NULL;
    }
    return t;
}

static void node_free_saved(ct_node *node) {
    for (int i = 0; i < node->n_saved; i++) {
        if (node->saved[i].tensor)
            ct__tensor_release(node->saved[i].tensor);
        node->saved[i].tensor = NULL;
    }
}

/* Free one node whose count reached zero; push its input nodes on `stack` (growing it). */
static void node_destroy(ct_node *node, ct_node ***stack, size_t *count, size_t *cap) {
    node_free_saved(node);
    for (int i = 0; i < node->n_inputs; i++) {
        if (node->edges[i].leaf)
            ct__tensor_release(node->edges[i].leaf);
        ct_node *in = node->edges[i].node;
        if (!in || atomic_fetch_sub(&in->refcount, 1) != 1)
            continue;
        if (*count == *cap) {
            size_t grown = *cap ? 2 * *cap : 64;
            ct_node **bigger = realloc(*stack, grown * sizeof *bigger);
            if (!bigger) { /* no memory for the work list: leak this subgraph rather than crash */
                ct__set_error(CT_ERR_MEMORY, "freeing the autograd graph: out of host memory");
                continue;
            }
            *stack = bigger;
            *cap = grown;
        }
        (*stack)[(*count)++] = in;
    }
    if (node->ctx)
        (node->ctx_free ? node->ctx_free : free)(node->ctx);
    free(node->grad_buf);
    free(node);
}

void ct__node_release(ct_node *node) {
    /* With an explicit work list, so graphs of any depth and fan-in free without recursion. */
    if (!node || atomic_fetch_sub(&node->refcount, 1) != 1)
        return;
    ct_node **stack = NULL;
    size_t count = 0, cap = 0;
    node_destroy(node, &stack, &count, &cap);
    while (count > 0)
        node_destroy(stack[--count], &stack, &count, &cap);
    free(stack);
}

/* ---- backward ----------------------------------------------------------------------- */

typedef struct node_list {
    ct_node **items;
    int64_t count, capacity;
} node_list;

static bool list_push(node_list *l, ct_node *n) {
    if (l->count == l->capacity) {
        int64_t cap = l->capacity ? l->capacity * 2 : 64;
        ct_node **items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items)
            return false;
        l->items = items;
        l->capacity = cap;
    }
    l->items[l->count++] = n;
    return true;
}

/* Add g into *slot (which owns one non-scope reference). */
static ct_status accumulate(ct_tensor **slot, ct_tensor *g) {
    if (!*slot) {
        *slot = ct__tensor_ref(g);
        return CT_OK;
    }
    ct_tensor *sum = ct_add(*slot, g);
    if (!sum)
        return ct_last_error();
    ct__tensor_release(*slot);
    *slot = ct__tensor_ref(sum);
    return CT_OK;
}

static ct_status accumulate_leaf(ct_tensor *leaf, ct_tensor *g) {
    if (leaf->grad)
        return ct_add_(leaf->grad, g);
    /* The leaf's gradient is its own contiguous tensor, never a view of something else. */
    ct_tensor *own = ct__new(g->dtype, g->device, g->ndim, g->shape);
    if (!own)
        return ct_last_error();
    ct_status st = ct_copy_(own, g);
    if (st != CT_OK)
        return st;
    leaf->grad = ct__tensor_ref(own);
    return CT_OK;
}

static bool same_shape(int ndim, const int64_t *shape, const ct_tensor *t) {
    if (t->ndim != ndim)
        return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d])
            return false;
    return true;
}

static ct_status run_node(ct_node *node, bool retain_graph) {
    if (!node->backward)
        return ct__set_error(CT_ERR_AUTOGRAD,
                             "ct_backward: the graph through %s was already freed by a previous backward (pass "
                             "retain_graph to ct_backward_ex to run backward twice)",
                             node->name);
    ct_tensor *grad_outputs[64];
    ct_tensor **gout = node->n_outputs <= 64 ? grad_outputs : calloc((size_t)node->n_outputs, sizeof *gout);
    if (!gout)
        return ct__set_error(CT_ERR_MEMORY, "ct_backward: out of host memory");
    ct_status st = CT_OK;
    for (int k = 0; k < node->n_outputs && st == CT_OK; k++) {
        gout[k] = node->grad_buf[k];
        if (!gout[k]) {
            gout[k] = ct_zeros(node->outputs[k].shape, node->outputs[k].ndim, node->outputs[k].dtype, node->device);
            if (!gout[k])
                st = ct_last_error();
        }
    }
    ct_tensor *grad_inputs[CT_NODE_MAX_INPUTS] = {0};
    if (st == CT_OK)
        st = node->backward(node, gout, grad_inputs);
    if (gout != grad_outputs)
        free(gout);
    for (int i = 0; i < node->n_inputs && st == CT_OK; i++) {
        if (!node->needs_grad[i])
            continue;
        ct_tensor *g = grad_inputs[i];
        if (!g) {
            st = ct__set_error(CT_ERR_INTERNAL, "%s backward produced no gradient for input %d", node->name, i);
            break;
        }
        if (!same_shape(node->in_ndim[i], node->in_shape[i], g) || g->dtype != node->in_dtype[i] ||
            !ct_device_equal(g->device, node->in_device[i])) {
            char got_on[32]; /* ct_device_name has one buffer per thread */
            snprintf(got_on, sizeof got_on, "%s", ct_device_name(g->device));
            st = ct__set_error(CT_ERR_INTERNAL, "%s backward: gradient %d is %s %s on %s, input was %s %s on %s",
                               node->name, i, ct_dtype_name(g->dtype), ct_shape_str(g), got_on,
                               ct_dtype_name(node->in_dtype[i]), ct__shape_fmt(node->in_ndim[i], node->in_shape[i]),
                               ct_device_name(node->in_device[i]));
            break;
        }
        ct_edge *e = &node->edges[i];
        if (e->node)
            st = accumulate(&e->node->grad_buf[e->output_nr], g);
        else if (e->leaf)
            st = accumulate_leaf(e->leaf, g);
    }
    if (!retain_graph) {
        node_free_saved(node);
        node->backward = NULL;
    }
    return st;
}

ct_status ct_backward(ct_tensor *loss) { return ct_backward_ex(loss, NULL, false); }

ct_status ct_backward_ex(ct_tensor *output, const ct_tensor *grad_output, bool retain_graph) {
    if (!ct__check("ct_backward", "output", output))
        return ct_last_error();
    if (grad_output && !ct__check("ct_backward", "grad_output", grad_output))
        return ct_last_error();
    if (!output->requires_grad)
        return ct__set_error(CT_ERR_AUTOGRAD,
                             "ct_backward: the output does not require grad (no input requires grad, or it was "
                             "computed inside ct_no_grad_begin/end)");
    if (!grad_output && ct__numel(output->ndim, output->shape) != 1)
        return ct__set_error(CT_ERR_SHAPE,
                             "ct_backward: output of shape %s is not a scalar; pass its gradient with "
                             "ct_backward_ex",
                             ct_shape_str(output));
    if (grad_output && !same_shape(output->ndim, output->shape, grad_output))
        return ct__set_error(CT_ERR_SHAPE, "ct_backward: grad_output is %s, output is %s", ct_shape_str(grad_output),
                             ct_shape_str(output));
    if (grad_output && !ct__same_device_dtype("ct_backward", output, grad_output))
        return ct_last_error();

    ct_status st = CT_OK;
    ct_scope_begin();
    ct_no_grad_begin();
    ct_tensor *root_grad = grad_output ? (ct_tensor *)grad_output : ct_ones_like(output);
    node_list all = {0}, ready = {0};
    if (!root_grad) {
        st = ct_last_error();
        goto done;
    }
    if (!output->grad_fn) { /* a leaf: its gradient is the seed */
        st = accumulate_leaf(output, root_grad);
        goto done;
    }
    /* Find every node reachable from the root and count its consumers. */
    ct_node *root = output->grad_fn;
    root->visited = true;
    if (!list_push(&all, root)) {
        st = ct__set_error(CT_ERR_MEMORY, "ct_backward: out of host memory");
        goto done;
    }
    for (int64_t k = 0; k < all.count; k++) {
        ct_node *n = all.items[k];
        for (int i = 0; i < n->n_inputs; i++) {
            ct_node *in = n->edges[i].node;
            if (!in)
                continue;
            in->pending++;
            if (!in->visited) {
                in->visited = true;
                if (!list_push(&all, in)) {
                    st = ct__set_error(CT_ERR_MEMORY, "ct_backward: out of host memory");
                    goto done;
                }
            }
        }
    }
    for (int64_t k = 0; k < all.count; k++) {
        ct_node *n = all.items[k];
        n->grad_buf = calloc((size_t)n->n_outputs, sizeof(ct_tensor *));
        if (!n->grad_buf) {
            st = ct__set_error(CT_ERR_MEMORY, "ct_backward: out of host memory");
            goto done;
        }
    }
    root->grad_buf[output->output_nr] = ct__tensor_ref(root_grad);
    list_push(&ready, root);
    while (ready.count > 0 && st == CT_OK) {
        ct_node *n = ready.items[--ready.count];
        ct_scope_begin();
        st = run_node(n, retain_graph);
        ct_scope_end();
        for (int k = 0; k < n->n_outputs; k++) {
            if (n->grad_buf[k])
                ct__tensor_release(n->grad_buf[k]);
            n->grad_buf[k] = NULL;
        }
        for (int i = 0; i < n->n_inputs && st == CT_OK; i++) {
            ct_node *in = n->edges[i].node;
            if (in && --in->pending == 0 && !list_push(&ready, in))
                st = ct__set_error(CT_ERR_MEMORY, "ct_backward: out of host memory");
        }
    }
done:
    for (int64_t k = 0; k < all.count; k++) {
        ct_node *n = all.items[k];
        if (n->grad_buf) {
            for (int j = 0; j < n->n_outputs; j++)
                if (n->grad_buf[j])
                    ct__tensor_release(n->grad_buf[j]);
            free(n->grad_buf);
            n->grad_buf = NULL;
        }
        n->visited = false;
        n->pending = 0;
    }
    free(all.items);
    free(ready.items);
    ct_no_grad_end();
    ct_scope_end();
    return st;
}

/* ---- broadcasting in reverse ------------------------------------------------------- */

ct_tensor *ct__sum_to_shape(ct_tensor *g, int ndim, const int64_t *shape) {
    if (!g)
        return NULL;
    if (same_shape(ndim, shape, g))
        return ct__view_of(g, g->ndim, g->shape, g->strides, g->offset);
    int dims[CT_MAX_DIMS], n = 0;
    int lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1))
            dims[n++] = d;
    ct_tensor *s = ct_sum(g, dims, n, true);
    return s ? ct_reshape(s, shape, ndim) : NULL;
}
