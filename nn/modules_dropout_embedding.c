/* Dropout and Embedding modules. */
#include "nn/modules_internal.h"

/* ---- Dropout ----------------------------------------------------------------------- */

static ct_tensor *dropout_forward(ct_module *m, ct_tensor *x) {
    const double *p = ct_module_impl(m);
    return ct_dropout(x, *p, ct_module_is_training(m));
}

static void dropout_describe(const ct_module *m, char *buf, size_t size) {
    snprintf(buf, size, "p=%g", *(const double *)ct_module_impl(m));
}

static const ct_module_vtable dropout_vt = {"Dropout", dropout_forward, dropout_describe, ct__layer_free_impl};

ct_module *ct_dropout_layer(double p) {
    if (!(p >= 0 && p < 1)) {
        ct__set_error(CT_ERR_VALUE, "ct_dropout_layer: p must be in [0, 1), got %g", p);
        return NULL;
    }
    return ct__layer_new(&dropout_vt, &p, sizeof p);
}

/* ---- Embedding --------------------------------------------------------------------- */

typedef struct embedding_impl {
    int64_t V, D;
    int padding_idx;
} embedding_impl;

static ct_tensor *embedding_forward(ct_module *m, ct_tensor *indices) {
    const embedding_impl *p = ct_module_impl(m);
    return ct_embedding(ct_module_param(m, "weight"), indices, p->padding_idx);
}

static void embedding_describe(const ct_module *m, char *buf, size_t size) {
    const embedding_impl *p = ct_module_impl(m);
    if (p->padding_idx >= 0)
        snprintf(buf, size, "%lld, %lld, padding_idx=%d", (long long)p->V, (long long)p->D, p->padding_idx);
    else
        snprintf(buf, size, "%lld, %lld", (long long)p->V, (long long)p->D);
}

static const ct_module_vtable embedding_vt = {"Embedding", embedding_forward, embedding_describe, ct__layer_free_impl};

ct_module *ct_embedding_layer(int64_t num_embeddings, int64_t embedding_dim, int padding_idx) {
    if (num_embeddings <= 0 || embedding_dim <= 0 || padding_idx < -1 || padding_idx >= num_embeddings) {
        ct__set_error(CT_ERR_VALUE,
                      "ct_embedding_layer: need positive sizes and padding_idx in [0, num_embeddings) or -1, got "
                      "%lld, %lld, padding_idx %d",
                      (long long)num_embeddings, (long long)embedding_dim, padding_idx);
        return NULL;
    }
    ct_module *m = ct__layer_new(&embedding_vt, &(embedding_impl){num_embeddings, embedding_dim, padding_idx},
                                 sizeof(embedding_impl));
    if (!m)
        return NULL;
    ct_tensor *w = ct__layer_param(m, "weight", (int64_t[]){num_embeddings, embedding_dim}, 2);
    ct_status st = w ? ct_init_normal(w, 0, 1) : ct_last_error();
    if (st == CT_OK && padding_idx >= 0) {
        ct_no_grad_begin();
        ct_scope_begin();
        st = ct_init_zeros(ct_select(w, 0, padding_idx));
        ct_scope_end();
        ct_no_grad_end();
    }
    if (st != CT_OK) {
        ct_module_free(m);
        return NULL;
    }
    return m;
}
