/* ctensor — the table behind conv.cu's cache of cuDNN algorithm choices: a key (pass, dtype,
 * determinism, device, geometry) to the plan chosen for it. Plain C with no CUDA, so that
 * tests/test_conv_cache.c runs it on the host in every build. The caller holds a lock around
 * every call (conv.cu's dnn_lock); nothing here is thread-safe on its own.
 *
 * Two threads that miss on the same key both time the algorithms, and their timings may pick
 * different ones: the first insert wins and the second gets the stored plan back, so every
 * thread runs the same algorithm for a key. A full table evicts the new key's home slot
 * rather than refusing it, so a program with more geometries than slots still times each one
 * once per eviction, not on every pass. Eviction never empties a slot, so linear probing's
 * chains stay intact: while the table has a free slot a probe stops there, and once it is
 * full (it stays full) a probe walks every slot. */
#ifndef CT_KERNELS_CUDA_CONV_CACHE_H
#define CT_KERNELS_CUDA_CONV_CACHE_H

#include "kernels/cpu/conv.h"
#include "kernels/cuda/launch.h"

#include <stdbool.h>
#include <string.h>

#define CT_CONV_CACHE_SLOTS 256

typedef struct ct_conv_cache_key {
    int pass, dtype, deterministic, device;
    ct_conv2d_geom geom;
} ct_conv_cache_key;

typedef struct ct_conv_cache {
    struct {
        bool used;
        ct_conv_cache_key key;
        ct_cuda_conv_plan plan;
    } slots[CT_CONV_CACHE_SLOTS];
} ct_conv_cache; /* zeroed: empty */

/* The key of a pass, its padding zeroed (keys are compared and hashed as bytes). */
static inline ct_conv_cache_key ct_conv_cache_key_of(int pass, int dtype, bool deterministic, int device,
                                                     const ct_conv2d_geom *g) {
    ct_conv_cache_key key;
    memset(&key, 0, sizeof key);
    key.pass = pass;
    key.dtype = dtype;
    key.deterministic = deterministic;
    key.device = device;
    key.geom = *g;
    return key;
}

static inline unsigned ct_conv_cache_home(const ct_conv_cache_key *key) {
    const unsigned char *p = (const unsigned char *)key;
    unsigned h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < sizeof *key; i++)
        h = (h ^ p[i]) * 16777619u;
    return h % CT_CONV_CACHE_SLOTS;
}

/* The key's slot, or where it would go: the first free slot of its probe; -1 when the table is
 * full and the key is not in it. */
static inline int ct_conv_cache_probe(const ct_conv_cache *c, const ct_conv_cache_key *key) {
    unsigned slot = ct_conv_cache_home(key);
    for (int probe = 0; probe < CT_CONV_CACHE_SLOTS; probe++, slot = (slot + 1) % CT_CONV_CACHE_SLOTS)
        if (!c->slots[slot].used || memcmp(&c->slots[slot].key, key, sizeof *key) == 0)
            return (int)slot;
    return -1;
}

/* The stored plan of `key` in *plan: true when there is one. */
static inline bool ct_conv_cache_find(const ct_conv_cache *c, const ct_conv_cache_key *key, ct_cuda_conv_plan *plan) {
    int slot = ct_conv_cache_probe(c, key);
    if (slot < 0 || !c->slots[slot].used)
        return false;
    *plan = c->slots[slot].plan;
    return true;
}

/* Store *plan for `key`; when the key has a plan already, that one stays and is returned in
 * *plan. A full table gives the key's home slot to it. */
static inline void ct_conv_cache_insert(ct_conv_cache *c, const ct_conv_cache_key *key, ct_cuda_conv_plan *plan) {
    int slot = ct_conv_cache_probe(c, key);
    if (slot >= 0 && c->slots[slot].used) {
        *plan = c->slots[slot].plan;
        return;
    }
    if (slot < 0)
        slot = (int)ct_conv_cache_home(key);
    c->slots[slot].used = true;
    c->slots[slot].key = *key;
    c->slots[slot].plan = *plan;
}

#endif
