/* The caching allocator engine. runtime/allocator.h states the rules and the choice of
 * data structures; this file keeps them. The end of the file holds the public memory API
 * that is plain C: ct_tensor_record_stream, and the CPU-only build's answers. */
#include "runtime/allocator.h"
#include "runtime/internal.h"

#include <ctype.h>
#include <pthread.h>
#include <string.h>

enum { POOL_SMALL, POOL_LARGE, NUM_POOLS };
/* A held block was freed with recorded streams during a capture; it records its events
 * (and becomes pending) when the last capture ends. */
enum { BLOCK_FREE, BLOCK_LIVE, BLOCK_PENDING, BLOCK_HELD };

typedef struct block block;
struct block {
    char *ptr;
    size_t size;
    uintptr_t stream;           /* the stream it was allocated on (its segment's) */
    block *prev, *next;         /* address neighbours in the segment; NULL at its ends */
    block *left, *right;        /* free tree links (free blocks) */
    block *hash_next;           /* live table chain (live blocks); the held list (held blocks) */
    block *seg_prev, *seg_next; /* segment list (only the first block of a segment) */
    uintptr_t *stream_uses;     /* other streams recorded on this block */
    int n_stream_uses, cap_stream_uses;
    int events_left;            /* pending: events still to complete */
    int8_t height;              /* free tree: AVL height */
    uint8_t state;              /* BLOCK_FREE, BLOCK_LIVE, BLOCK_PENDING, BLOCK_HELD */
    uint8_t pool;               /* POOL_SMALL or POOL_LARGE */
    bool stuck;                 /* pending forever: an event could not be recorded */
};

/* A freed block waits for this event before it can be reused. */
typedef struct pending_event {
    struct pending_event *next;
    void *event;
    uintptr_t stream;
    block *block;
} pending_event;

/* Fixed-size objects handed out from chunks, so the hot path allocates no host memory.
 * Free objects are linked through their first word, chunks through their first word. */
typedef struct slab {
    size_t object_size;
    void *free_list;
    void *chunks;
} slab;

#define SLAB_CHUNK_OBJECTS 128

struct ct_allocator {
    pthread_mutex_t lock;
    ct_segment_provider provider;
    void *ctx;
    block *free_trees[NUM_POOLS];
    block *segments;       /* first blocks of the segments, linked by seg_next */
    block **table;         /* live blocks by address; table_size is a power of two */
    size_t table_size, table_count;
    pending_event *pending, *pending_tail; /* events to query, oldest first */
    slab blocks, events;
    size_t limit;
    ct_memory_stats stats;
    int captures;            /* CUDA graph captures underway */
    block *held;             /* blocks freed with recorded streams during a capture */
    uintptr_t *pools;        /* retained capture pools: their segments are never given back */
    size_t n_pools, cap_pools;
};

/* ---- slabs ------------------------------------------------------------------------ */

static void *slab_take(slab *s) {
    if (!s->free_list) {
        size_t header = sizeof(max_align_t);
        char *chunk = malloc(header + SLAB_CHUNK_OBJECTS * s->object_size);
        if (!chunk)
            return NULL;
        *(void **)chunk = s->chunks;
        s->chunks = chunk;
        for (int i = SLAB_CHUNK_OBJECTS - 1; i >= 0; i--) {
            void *object = chunk + header + (size_t)i * s->object_size;
            *(void **)object = s->free_list;
            s->free_list = object;
        }
    }
    void *object = s->free_list;
    s->free_list = *(void **)object;
    return object;
}

static void slab_give(slab *s, void *object) {
    *(void **)object = s->free_list;
    s->free_list = object;
}

static void slab_destroy(slab *s) {
    while (s->chunks) {
        void *next = *(void **)s->chunks;
        free(s->chunks);
        s->chunks = next;
    }
}

/* ---- the free trees: AVL trees ordered by (stream, size, address) ---------------------- */

static bool block_less(const block *x, const block *y) {
    if (x->stream != y->stream)
        return x->stream < y->stream;
    if (x->size != y->size)
        return x->size < y->size;
    return (uintptr_t)x->ptr < (uintptr_t)y->ptr;
}

static int height(const block *b) { return b ? b->height : 0; }

static void fix_height(block *b) {
    int l = height(b->left), r = height(b->right);
    b->height = (int8_t)(1 + (l > r ? l : r));
}

static block *rotate_right(block *top) {
    block *up = top->left;
    top->left = up->right;
    up->right = top;
    fix_height(top);
    fix_height(up);
    return up;
}

static block *rotate_left(block *top) {
    block *up = top->right;
    top->right = up->left;
    up->left = top;
    fix_height(top);
    fix_height(up);
    return up;
}

static block *rebalance(block *n) {
    fix_height(n);
    int balance = height(n->left) - height(n->right);
    if (balance > 1) {
        if (height(n->left->left) < height(n->left->right))
            n->left = rotate_left(n->left);
        return rotate_right(n);
    }
    if (balance < -1) {
        if (height(n->right->right) < height(n->right->left))
            n->right = rotate_right(n->right);
        return rotate_left(n);
    }
    return n;
}

static block *tree_insert(block *root, block *b) {
    if (!root) {
        b->left = b->right = NULL;
        b->height = 1;
        return b;
    }
    if (block_less(b, root))
        root->left = tree_insert(root->left, b);
    else
        root->right = tree_insert(root->right, b);
    return rebalance(root);
}

static block *tree_remove_min(block *root, block **min) {
    if (!root->left) {
        *min = root;
        return root->right;
    }
    root->left = tree_remove_min(root->left, min);
    return rebalance(root);
}

/* `b` must be in the tree (keys are unique: the address breaks ties). */
static block *tree_remove(block *root, block *b) {
    if (root == b) {
        block *left = root->left, *right = root->right, *min;
        if (!right)
            return left;
        right = tree_remove_min(right, &min);
        min->left = left;
        min->right = right;
        return rebalance(min);
    }
    if (block_less(b, root))
        root->left = tree_remove(root->left, b);
    else
        root->right = tree_remove(root->right, b);
    return rebalance(root);
}

/* The first block not less than (stream, size, 0): the best fit when it is on `stream`. */
static block *tree_best_fit(block *root, uintptr_t stream, size_t size) {
    block *best = NULL;
    while (root) {
        if (root->stream > stream || (root->stream == stream && root->size >= size)) {
            best = root;
            root = root->left;
        } else {
            root = root->right;
        }
    }
    return best && best->stream == stream ? best : NULL;
}

static bool tree_contains(const block *root, const block *b) {
    while (root && root != b)
        root = block_less(b, root) ? root->left : root->right;
    return root == b;
}

/* ---- the live table ----------------------------------------------------------------- */

static size_t table_slot(const ct_allocator *a, const void *ptr) {
    uint64_t x = (uint64_t)(uintptr_t)ptr >> 9; /* blocks are 512-byte aligned */
    return (size_t)((x * 0x9e3779b97f4a7c15ull) >> 32) & (a->table_size - 1);
}

/* Double the table when it is full; when host memory is short, keep the old one (chains
 * only grow longer). */
static void table_grow(ct_allocator *a) {
    size_t old_size = a->table_size;
    block **old = a->table;
    block **table = calloc(old_size * 2, sizeof *table);
    if (!table)
        return;
    a->table = table;
    a->table_size = old_size * 2;
    for (size_t i = 0; i < old_size; i++) {
        for (block *b = old[i], *next; b; b = next) {
            next = b->hash_next;
            size_t slot = table_slot(a, b->ptr);
            b->hash_next = table[slot];
            table[slot] = b;
        }
    }
    free(old);
}

static void table_insert(ct_allocator *a, block *b) {
    if (a->table_count >= a->table_size)
        table_grow(a);
    size_t slot = table_slot(a, b->ptr);
    b->hash_next = a->table[slot];
    a->table[slot] = b;
    a->table_count++;
}

static block *table_find(const ct_allocator *a, const void *ptr) {
    block *b = a->table[table_slot(a, ptr)];
    while (b && b->ptr != ptr)
        b = b->hash_next;
    return b;
}

static block *table_remove(ct_allocator *a, const void *ptr) {
    block **link = &a->table[table_slot(a, ptr)];
    while (*link && (*link)->ptr != ptr)
        link = &(*link)->hash_next;
    block *b = *link;
    if (b) {
        *link = b->hash_next;
        a->table_count--;
    }
    return b;
}

/* ---- sizes and statistics ------------------------------------------------------------ */

static size_t round_up(size_t n, size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

static size_t segment_size(size_t size) {
    if (size <= CT_ALLOC_SMALL_MAX)
        return CT_ALLOC_SMALL_SEGMENT;
    if (size < CT_ALLOC_LARGE_SHARED_MAX)
        return CT_ALLOC_LARGE_SEGMENT;
    return round_up(size, CT_ALLOC_SEGMENT_ROUND);
}

/* Small blocks split down to 512 bytes; large ones only when the rest is itself a large
 * block, so the large pool never fills with slivers. */
static bool should_split(const block *b, size_t size) {
    size_t rest = b->size - size;
    return b->pool == POOL_SMALL ? rest >= CT_ALLOC_ROUND : rest > CT_ALLOC_SMALL_MAX;
}

static void add_allocated(ct_allocator *a, size_t bytes) {
    a->stats.allocated_bytes += bytes;
    if (a->stats.allocated_bytes > a->stats.peak_allocated_bytes)
        a->stats.peak_allocated_bytes = a->stats.allocated_bytes;
}

static void add_reserved(ct_allocator *a, size_t bytes) {
    a->stats.reserved_bytes += bytes;
    if (a->stats.reserved_bytes > a->stats.peak_reserved_bytes)
        a->stats.peak_reserved_bytes = a->stats.reserved_bytes;
}

/* ---- creation ------------------------------------------------------------------------ */

ct_allocator *ct_allocator_create(const ct_segment_provider *provider, void *provider_ctx) {
    bool has_events = provider && provider->event_record && provider->event_query && provider->event_free;
    bool no_events = provider && !provider->event_record && !provider->event_query && !provider->event_free;
    if (!provider || !provider->segment_alloc || !provider->segment_free || !(has_events || no_events)) {
        ct__set_error(CT_ERR_VALUE, "ct_allocator_create: the provider needs its segment functions, and all three "
                                    "event functions or none");
        return NULL;
    }
    ct_allocator *a = calloc(1, sizeof *a);
    if (a) {
        a->table_size = 256;
        a->table = calloc(a->table_size, sizeof *a->table);
    }
    if (!a || !a->table) {
        free(a);
        ct__set_error(CT_ERR_MEMORY, "ct_allocator_create: out of host memory");
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    a->provider = *provider;
    if (!a->provider.name)
        a->provider.name = "memory";
    a->ctx = provider_ctx;
    a->blocks.object_size = sizeof(block);
    a->events.object_size = sizeof(pending_event);
    return a;
}

void ct_allocator_destroy(ct_allocator *a) {
    if (!a)
        return;
    for (pending_event *e = a->pending; e; e = e->next)
        a->provider.event_free(a->ctx, e->event);
    for (block *s = a->segments; s; s = s->seg_next) {
        size_t bytes = 0;
        for (block *b = s; b; b = b->next) {
            bytes += b->size;
            free(b->stream_uses);
        }
        a->provider.segment_free(a->ctx, s->ptr, bytes);
    }
    slab_destroy(&a->blocks);
    slab_destroy(&a->events);
    free(a->pools);
    free(a->table);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

/* ---- freeing -------------------------------------------------------------------------- */

/* Make `b` (in neither the table nor a tree) free: merge it with its free neighbours and
 * put the result in its pool's tree. The first block of a segment absorbs the others and
 * is never absorbed itself, so the segment list stays valid. */
static void free_block(ct_allocator *a, block *b) {
    block **tree = &a->free_trees[b->pool];
    b->state = BLOCK_FREE;
    free(b->stream_uses);
    b->stream_uses = NULL;
    b->n_stream_uses = b->cap_stream_uses = 0;
    if (b->prev && b->prev->state == BLOCK_FREE) {
        block *prev = b->prev;
        *tree = tree_remove(*tree, prev);
        prev->size += b->size;
        prev->next = b->next;
        if (prev->next)
            prev->next->prev = prev;
        slab_give(&a->blocks, b);
        b = prev;
    }
    if (b->next && b->next->state == BLOCK_FREE) {
        block *next = b->next;
        *tree = tree_remove(*tree, next);
        b->size += next->size;
        b->next = next->next;
        if (b->next)
            b->next->prev = b;
        slab_give(&a->blocks, next);
    }
    *tree = tree_insert(*tree, b);
}

/* Free the blocks whose events have all completed. Events on one stream complete in the
 * order they were recorded, so after one that is not done, the later ones on its stream
 * are not queried (for up to MAX_BLOCKED streams). */
#define MAX_BLOCKED 8

static void process_events(ct_allocator *a) {
    uintptr_t blocked[MAX_BLOCKED];
    int n_blocked = 0;
    pending_event **link = &a->pending, *last = NULL;
    while (*link) {
        pending_event *e = *link;
        bool done = true;
        for (int i = 0; i < n_blocked && done; i++)
            done = blocked[i] != e->stream;
        if (done && !a->provider.event_query(a->ctx, e->event)) {
            done = false;
            if (n_blocked < MAX_BLOCKED)
                blocked[n_blocked++] = e->stream;
        }
        if (!done) {
            last = e;
            link = &e->next;
            continue;
        }
        a->provider.event_free(a->ctx, e->event);
        *link = e->next;
        block *b = e->block;
        slab_give(&a->events, e);
        if (--b->events_left == 0) {
            a->stats.pending_free_bytes -= b->size;
            free_block(a, b);
        }
    }
    a->pending_tail = last;
}

/* Hold `b` (counted in pending_free_bytes) until an event recorded now on each stream it
 * was used on has completed. When an event cannot be recorded, the block is held for good:
 * leaking it is safe, reusing it while another stream may still use it is not. */
static ct_status defer_until_events(ct_allocator *a, block *b) {
    ct_status status = CT_OK;
    b->state = BLOCK_PENDING;
    b->events_left = 0;
    for (int i = 0; i < b->n_stream_uses; i++) {
        pending_event *e = slab_take(&a->events);
        if (!e) {
            status = ct__set_error(CT_ERR_MEMORY, "%s: out of host memory for an allocator event", a->provider.name);
            b->stuck = true;
            break;
        }
        ct_status recorded = a->provider.event_record(a->ctx, b->stream_uses[i], &e->event);
        if (recorded != CT_OK) {
            slab_give(&a->events, e);
            status = recorded;
            b->stuck = true;
            break;
        }
        e->block = b;
        e->stream = b->stream_uses[i];
        e->next = NULL;
        if (a->pending_tail)
            a->pending_tail->next = e;
        else
            a->pending = e;
        a->pending_tail = e;
        b->events_left++;
    }
    if (b->stuck)
        b->events_left++; /* the count never reaches zero */
    return status;
}

static bool is_retained_pool(const ct_allocator *a, uintptr_t stream) {
    for (size_t i = 0; i < a->n_pools; i++)
        if (a->pools[i] == stream)
            return true;
    return false;
}

/* Give back every segment that is one free block, except those of retained capture pools;
 * nothing during a capture, where cudaFree would synchronize with the capturing stream. */
static void release_free_segments(ct_allocator *a) {
    if (a->captures)
        return;
    for (block *s = a->segments, *next; s; s = next) {
        next = s->seg_next;
        if (s->state != BLOCK_FREE || s->next || is_retained_pool(a, s->stream))
            continue;
        a->free_trees[s->pool] = tree_remove(a->free_trees[s->pool], s);
        if (s->seg_prev)
            s->seg_prev->seg_next = s->seg_next;
        else
            a->segments = s->seg_next;
        if (s->seg_next)
            s->seg_next->seg_prev = s->seg_prev;
        a->provider.segment_free(a->ctx, s->ptr, s->size);
        a->stats.reserved_bytes -= s->size;
        a->stats.segment_frees++;
        slab_give(&a->blocks, s);
    }
}

/* ---- allocating ----------------------------------------------------------------------- */

static ct_status try_segment(ct_allocator *a, size_t bytes, void **ptr) {
    if (a->limit && (bytes > a->limit || a->stats.reserved_bytes > a->limit - bytes))
        return CT_ERR_MEMORY;
    return a->provider.segment_alloc(a->ctx, bytes, ptr);
}

static void report_oom(ct_allocator *a, size_t nbytes) {
    size_t free_bytes = 0, total_bytes = 0;
    char device[96] = "unknown free and total bytes", limit[48] = "none";
    if (a->provider.mem_info && a->provider.mem_info(a->ctx, &free_bytes, &total_bytes))
        snprintf(device, sizeof device, "%zu bytes free of %zu bytes total", free_bytes, total_bytes);
    if (a->limit)
        snprintf(limit, sizeof limit, "%zu bytes", a->limit);
    ct__set_error(CT_ERR_MEMORY,
                  "%s: out of memory: requested %zu bytes; %s; allocated %zu bytes, reserved %zu bytes, limit %s%s",
                  a->provider.name, nbytes, device, a->stats.allocated_bytes, a->stats.reserved_bytes, limit,
                  a->captures ? "; a CUDA graph capture is underway, so no cached segment was released" : "");
}

/* A new segment holding one block of at least `size` bytes (not in any tree or table). */
static block *new_segment(ct_allocator *a, size_t nbytes, size_t size, uintptr_t stream, int pool) {
    block *b = slab_take(&a->blocks);
    if (!b) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory for allocator bookkeeping", a->provider.name);
        return NULL;
    }
    size_t bytes = segment_size(size), tight = round_up(size, CT_ALLOC_SEGMENT_ROUND);
    void *ptr = NULL;
    ct_status status = try_segment(a, bytes, &ptr);
    if (status == CT_ERR_MEMORY && tight < bytes)
        status = try_segment(a, bytes = tight, &ptr);
    if (status == CT_ERR_MEMORY && !a->captures) {
        a->stats.oom_retries++;
        release_free_segments(a);
        status = try_segment(a, bytes = tight, &ptr);
    }
    if (status != CT_OK) {
        if (status == CT_ERR_MEMORY)
            report_oom(a, nbytes);
        slab_give(&a->blocks, b);
        return NULL;
    }
    *b = (block){.ptr = ptr, .size = bytes, .stream = stream, .pool = (uint8_t)pool, .seg_next = a->segments};
    if (a->segments)
        a->segments->seg_prev = b;
    a->segments = b;
    add_reserved(a, bytes);
    a->stats.segment_allocs++;
    return b;
}

void *ct_allocator_malloc(ct_allocator *a, size_t nbytes, uintptr_t stream) {
    if (!a) {
        ct__null_arg("ct_allocator_malloc", "a");
        return NULL;
    }
    pthread_mutex_lock(&a->lock);
    block *b = NULL;
    if (nbytes > SIZE_MAX / 2) {
        report_oom(a, nbytes);
    } else {
        size_t size = round_up(nbytes ? nbytes : 1, CT_ALLOC_ROUND);
        int pool = size <= CT_ALLOC_SMALL_MAX ? POOL_SMALL : POOL_LARGE;
        if (a->pending && !a->captures) /* cudaEventQuery is illegal during a capture */
            process_events(a);
        b = tree_best_fit(a->free_trees[pool], stream, size);
        if (b) {
            a->free_trees[pool] = tree_remove(a->free_trees[pool], b);
            a->stats.cache_hits++;
        } else {
            b = new_segment(a, nbytes, size, stream, pool);
        }
        block *rest = b && should_split(b, size) ? slab_take(&a->blocks) : NULL;
        if (rest) { /* without a struct for the rest, the whole block is handed out */
            *rest = (block){.ptr = b->ptr + size, .size = b->size - size, .stream = stream, .pool = b->pool,
                            .prev = b, .next = b->next, .state = BLOCK_FREE};
            if (rest->next)
                rest->next->prev = rest;
            b->next = rest;
            b->size = size;
            a->free_trees[pool] = tree_insert(a->free_trees[pool], rest);
        }
    }
    if (b) {
        b->state = BLOCK_LIVE;
        table_insert(a, b);
        add_allocated(a, b->size);
        a->stats.allocations++;
    } else {
        a->stats.ooms++;
    }
    pthread_mutex_unlock(&a->lock);
    return b ? b->ptr : NULL;
}

ct_status ct_allocator_free(ct_allocator *a, void *ptr) {
    if (!a)
        return ct__null_arg("ct_allocator_free", "a");
    if (!ptr)
        return CT_OK;
    ct_status status = CT_OK;
    pthread_mutex_lock(&a->lock);
    block *b = table_remove(a, ptr);
    if (!b) {
        status = ct__set_error(CT_ERR_VALUE, "%s: free of %p, which is not a live block (freed twice, or not from "
                               "this allocator)", a->provider.name, ptr);
    } else {
        a->stats.allocated_bytes -= b->size;
        a->stats.frees++;
        if (b->n_stream_uses > 0) {
            a->stats.pending_free_bytes += b->size;
            if (a->captures) { /* an event recorded now would become part of the graph */
                b->state = BLOCK_HELD;
                b->hash_next = a->held;
                a->held = b;
            } else {
                status = defer_until_events(a, b);
            }
        } else {
            free_block(a, b);
        }
    }
    pthread_mutex_unlock(&a->lock);
    return status;
}

ct_status ct_allocator_record_stream(ct_allocator *a, void *ptr, uintptr_t stream) {
    if (!a)
        return ct__null_arg("ct_allocator_record_stream", "a");
    if (!a->provider.event_record)
        return ct__set_error(CT_ERR_UNSUPPORTED, "%s: this memory cannot be recorded on streams", a->provider.name);
    ct_status status = CT_OK;
    pthread_mutex_lock(&a->lock);
    block *b = table_find(a, ptr);
    if (!b) {
        status = ct__set_error(CT_ERR_VALUE, "%s: record_stream on %p, which is not a live block", a->provider.name,
                               ptr);
    } else if (stream != b->stream) {
        bool known = false;
        for (int i = 0; i < b->n_stream_uses && !known; i++)
            known = b->stream_uses[i] == stream;
        if (!known && b->n_stream_uses == b->cap_stream_uses) {
            int cap = b->cap_stream_uses ? 2 * b->cap_stream_uses : 4;
            uintptr_t *uses = realloc(b->stream_uses, (size_t)cap * sizeof *uses);
            if (uses) {
                b->stream_uses = uses;
                b->cap_stream_uses = cap;
            } else {
                status = ct__set_error(CT_ERR_MEMORY, "%s: out of host memory in record_stream", a->provider.name);
            }
        }
        if (!known && status == CT_OK)
            b->stream_uses[b->n_stream_uses++] = stream;
    }
    pthread_mutex_unlock(&a->lock);
    return status;
}

size_t ct_allocator_block_size(ct_allocator *a, void *ptr) {
    pthread_mutex_lock(&a->lock);
    block *b = table_find(a, ptr);
    size_t size = b ? b->size : 0;
    pthread_mutex_unlock(&a->lock);
    return size;
}

/* ---- cache control and statistics ------------------------------------------------------ */

void ct_allocator_empty_cache(ct_allocator *a) {
    pthread_mutex_lock(&a->lock);
    if (a->pending && !a->captures)
        process_events(a);
    release_free_segments(a);
    pthread_mutex_unlock(&a->lock);
}

void ct_allocator_set_limit(ct_allocator *a, size_t bytes) {
    pthread_mutex_lock(&a->lock);
    a->limit = bytes;
    if (bytes && a->stats.reserved_bytes > bytes)
        release_free_segments(a);
    pthread_mutex_unlock(&a->lock);
}

/* ---- CUDA graph capture ---------------------------------------------------------------- */

ct_status ct_allocator_capture_begin(ct_allocator *a, uintptr_t pool) {
    if (!a)
        return ct__null_arg("ct_allocator_capture_begin", "a");
    ct_status status = CT_OK;
    pthread_mutex_lock(&a->lock);
    if (is_retained_pool(a, pool)) {
        status = ct__set_error(CT_ERR_VALUE,
                               "%s: capture_begin into pool %#jx, which is already retained (a capture "
                               "into it is underway, or its graph was not released)",
                               a->provider.name, (uintmax_t)pool);
    } else if (a->n_pools == a->cap_pools) {
        size_t cap = a->cap_pools ? 2 * a->cap_pools : 4;
        uintptr_t *pools = realloc(a->pools, cap * sizeof *pools);
        if (pools) {
            a->pools = pools;
            a->cap_pools = cap;
        } else {
            status = ct__set_error(CT_ERR_MEMORY, "%s: out of host memory in capture_begin", a->provider.name);
        }
    }
    if (status == CT_OK) {
        a->pools[a->n_pools++] = pool;
        a->captures++;
    }
    pthread_mutex_unlock(&a->lock);
    return status;
}

ct_status ct_allocator_capture_end(ct_allocator *a) {
    if (!a)
        return ct__null_arg("ct_allocator_capture_end", "a");
    ct_status status = CT_OK;
    pthread_mutex_lock(&a->lock);
    if (a->captures == 0) {
        status = ct__set_error(CT_ERR_STATE, "%s: capture_end: no CUDA graph capture is underway", a->provider.name);
    } else if (--a->captures == 0) {
        /* The held frees record their events now; the last error is the one reported. */
        while (a->held) {
            block *b = a->held;
            a->held = b->hash_next;
            b->hash_next = NULL;
            ct_status recorded = defer_until_events(a, b);
            if (recorded != CT_OK)
                status = recorded;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return status;
}

void ct_allocator_release_pool(ct_allocator *a, uintptr_t pool) {
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_pools; i++) {
        if (a->pools[i] == pool) {
            a->pools[i] = a->pools[--a->n_pools];
            break;
        }
    }
    pthread_mutex_unlock(&a->lock);
}

void ct_allocator_stats(ct_allocator *a, ct_memory_stats *out) {
    pthread_mutex_lock(&a->lock);
    *out = a->stats;
    out->limit_bytes = a->limit;
    pthread_mutex_unlock(&a->lock);
}

void ct_allocator_reset_peak(ct_allocator *a) {
    pthread_mutex_lock(&a->lock);
    a->stats.peak_allocated_bytes = a->stats.allocated_bytes;
    a->stats.peak_reserved_bytes = a->stats.reserved_bytes;
    pthread_mutex_unlock(&a->lock);
}

/* ---- invariants (tests) ------------------------------------------------------------------ */

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond))                                                                              \
            return ct__set_error(CT_ERR_INTERNAL, "allocator check: " __VA_ARGS__);              \
    } while (0)

/* Order, AVL heights and balance of a subtree strictly between `low` and `high` (NULL:
 * unbounded); counts its nodes. */
static ct_status check_tree(const block *n, int pool, const block *low, const block *high, size_t *count,
                            int *out_height) {
    if (!n) {
        *out_height = 0;
        return CT_OK;
    }
    CHECK(n->state == BLOCK_FREE && n->pool == pool, "a tree node at %p is not a free block of its pool",
          (void *)n->ptr);
    CHECK((!low || block_less(low, n)) && (!high || block_less(n, high)), "the free tree is out of order at %p",
          (void *)n->ptr);
    int l, r;
    ct_status status = check_tree(n->left, pool, low, n, count, &l);
    if (status == CT_OK)
        status = check_tree(n->right, pool, n, high, count, &r);
    if (status != CT_OK)
        return status;
    CHECK(n->height == 1 + (l > r ? l : r) && l - r <= 1 && r - l <= 1, "the free tree is unbalanced at %p",
          (void *)n->ptr);
    (*count)++;
    *out_height = n->height;
    return CT_OK;
}

static ct_status check_locked(ct_allocator *a) {
    size_t reserved = 0, allocated = 0, pending = 0, live = 0, free_blocks = 0, events_expected = 0, segments = 0;
    size_t held = 0;
    for (const block *s = a->segments; s; s = s->seg_next, segments++) {
        CHECK(!s->prev, "segment %p does not start with its first block", (void *)s->ptr);
        CHECK(!s->seg_next || s->seg_next->seg_prev == s, "the segment list is broken after %p", (void *)s->ptr);
        size_t bytes = 0;
        for (const block *b = s; b; b = b->next) {
            CHECK(b->size > 0 && b->size % CT_ALLOC_ROUND == 0, "block %p has size %zu", (void *)b->ptr, b->size);
            CHECK(b->stream == s->stream && b->pool == s->pool, "block %p differs from its segment's stream or pool",
                  (void *)b->ptr);
            CHECK(!b->next || (b->next->prev == b && b->ptr + b->size == b->next->ptr),
                  "blocks %p and the next do not tile the segment", (void *)b->ptr);
            CHECK(b->pool == POOL_LARGE || b->size <= CT_ALLOC_SMALL_SEGMENT, "small block %p is too big",
                  (void *)b->ptr);
            if (b->state == BLOCK_FREE) {
                free_blocks++;
                CHECK(!b->next || b->next->state != BLOCK_FREE, "free block %p is not merged with the next",
                      (void *)b->ptr);
                CHECK(tree_contains(a->free_trees[b->pool], b), "free block %p is not in its tree", (void *)b->ptr);
            } else if (b->state == BLOCK_LIVE) {
                live++;
                allocated += b->size;
                CHECK(table_find(a, b->ptr) == b, "live block %p is not in the table", (void *)b->ptr);
            } else if (b->state == BLOCK_HELD) {
                held++;
                pending += b->size;
                CHECK(b->n_stream_uses > 0, "held block %p has no recorded stream", (void *)b->ptr);
                CHECK(!table_find(a, b->ptr) && !tree_contains(a->free_trees[b->pool], b),
                      "held block %p is in the table or a tree", (void *)b->ptr);
            } else {
                pending += b->size;
                events_expected += (size_t)(b->events_left - (b->stuck ? 1 : 0));
            }
            bytes += b->size;
        }
        CHECK(s->pool == POOL_LARGE ? bytes % CT_ALLOC_SEGMENT_ROUND == 0 : bytes == CT_ALLOC_SMALL_SEGMENT,
              "segment %p has %zu bytes", (void *)s->ptr, bytes);
        reserved += bytes;
    }
    size_t in_trees = 0, events = 0;
    for (int pool = 0; pool < NUM_POOLS; pool++) {
        int h;
        ct_status status = check_tree(a->free_trees[pool], pool, NULL, NULL, &in_trees, &h);
        if (status != CT_OK)
            return status;
    }
    for (const pending_event *e = a->pending; e; e = e->next) {
        CHECK(e->block->state == BLOCK_PENDING, "an event waits on block %p, which is not pending",
              (void *)e->block->ptr);
        CHECK(e->next || e == a->pending_tail, "the event queue's tail is not its last event");
        events++;
    }
    CHECK(a->pending || !a->pending_tail, "the event queue is empty but has a tail");
    size_t in_held_list = 0;
    for (const block *b = a->held; b && in_held_list <= held; b = b->hash_next, in_held_list++)
        CHECK(b->state == BLOCK_HELD, "block %p is in the held list but not held", (void *)b->ptr);
    CHECK(in_held_list == held, "%zu blocks in the held list, %zu held blocks", in_held_list, held);
    CHECK(a->captures > 0 || !a->held, "blocks are held with no capture underway");
    CHECK(a->captures >= 0 && a->n_pools <= a->cap_pools, "%d captures, %zu pools of %zu", a->captures, a->n_pools,
          a->cap_pools);
    for (size_t i = 0; i < a->n_pools; i++)
        for (size_t j = i + 1; j < a->n_pools; j++)
            CHECK(a->pools[i] != a->pools[j], "pool %#jx is retained twice", (uintmax_t)a->pools[i]);
    CHECK(in_trees == free_blocks, "%zu blocks in the trees, %zu free blocks", in_trees, free_blocks);
    CHECK(a->table_count == live, "%zu blocks in the table, %zu live blocks", a->table_count, live);
    CHECK(events == events_expected, "%zu events queued, %zu expected", events, events_expected);
    CHECK(a->stats.reserved_bytes == reserved, "reserved_bytes is %zu, segments hold %zu", a->stats.reserved_bytes,
          reserved);
    CHECK(a->stats.allocated_bytes == allocated, "allocated_bytes is %zu, live blocks hold %zu",
          a->stats.allocated_bytes, allocated);
    CHECK(a->stats.pending_free_bytes == pending, "pending_free_bytes is %zu, pending blocks hold %zu",
          a->stats.pending_free_bytes, pending);
    CHECK(a->stats.peak_allocated_bytes >= allocated && a->stats.peak_reserved_bytes >= reserved,
          "a peak is below the current value");
    CHECK(a->stats.allocations - a->stats.frees == live, "%llu allocations and %llu frees for %zu live blocks",
          (unsigned long long)a->stats.allocations, (unsigned long long)a->stats.frees, live);
    CHECK(a->stats.segment_allocs - a->stats.segment_frees == segments,
          "%llu segment allocations and %llu segment frees for %zu segments",
          (unsigned long long)a->stats.segment_allocs, (unsigned long long)a->stats.segment_frees, segments);
    return CT_OK;
}

ct_status ct_allocator_check(ct_allocator *a) {
    pthread_mutex_lock(&a->lock);
    ct_status status = check_locked(a);
    pthread_mutex_unlock(&a->lock);
    return status;
}

/* ---- byte sizes ----------------------------------------------------------------------- */

bool ct__parse_byte_size(const char *text, size_t *out) {
    if (!text || !out)
        return false;
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    uint64_t whole = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (whole > (UINT64_MAX - 9) / 10)
            return false;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    double fraction = 0, scale = 0.1;
    bool has_fraction = *p == '.';
    if (has_fraction) {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        for (; isdigit((unsigned char)*p); p++, scale /= 10)
            fraction += scale * (*p - '0');
    }
    uint64_t unit = 1;
    const char *units = "KMGT";
    const char *found = *p ? strchr(units, toupper((unsigned char)*p)) : NULL;
    if (found) {
        for (const char *u = units; u <= found; u++)
            unit *= 1024;
        p++;
        if (tolower((unsigned char)*p) == 'i' && toupper((unsigned char)p[1]) == 'B')
            p += 2;
        else if (toupper((unsigned char)*p) == 'B')
            p++;
    } else if (toupper((unsigned char)*p) == 'B') {
        p++;
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p || (has_fraction && unit == 1) || whole > UINT64_MAX / unit)
        return false;
    uint64_t bytes = whole * unit, extra = (uint64_t)(fraction * (double)unit);
    if (bytes > UINT64_MAX - extra || (uint64_t)(size_t)(bytes + extra) != bytes + extra)
        return false;
    *out = (size_t)(bytes + extra);
    return true;
}

/* ---- the public memory API that is plain C ---------------------------------------------- */

ct_status ct_tensor_record_stream(ct_tensor *t, ct_stream *stream) {
    if (!ct__check("ct_tensor_record_stream", "t", t))
        return ct_last_error();
    if (!stream)
        return ct__null_arg("ct_tensor_record_stream", "stream");
    if (t->device.type == CT_DEVICE_CPU)
        return CT_OK;
#ifdef CT_HAVE_CUDA
    if (ct_stream_device(stream) != t->device.index)
        return ct__set_error(CT_ERR_DEVICE, "ct_tensor_record_stream: the tensor is on %s, the stream on cuda:%d",
                             ct_device_name(t->device), ct_stream_device(stream));
    return ct__cuda_allocator_record_stream(t->device.index, t->storage->data, stream);
#else
    return ct__set_error(CT_ERR_DEVICE, "ct_tensor_record_stream: this ctensor was built without CUDA");
#endif
}

#ifndef CT_HAVE_CUDA
static ct_status no_cuda(const char *op, int device) {
    return ct__set_error(CT_ERR_DEVICE, "%s: cuda:%d is not available: this ctensor was built without CUDA", op,
                         device);
}

ct_status ct_cuda_memory_stats(int device, ct_memory_stats *out) {
    if (!out)
        return ct__null_arg("ct_cuda_memory_stats", "out");
    memset(out, 0, sizeof *out);
    return no_cuda("ct_cuda_memory_stats", device);
}

ct_status ct_cuda_reset_peak_stats(int device) { return no_cuda("ct_cuda_reset_peak_stats", device); }
ct_status ct_cuda_set_memory_limit(int device, size_t bytes) { return no_cuda("ct_cuda_set_memory_limit", device); }
void ct_cuda_empty_cache(void) {}

/* Without CUDA, "pinned" memory is ordinary aligned host memory, and nothing is cached. */
void *ct_pinned_alloc(size_t nbytes) { return ct__host_alloc(nbytes); }
void ct_pinned_free(void *ptr) { ct__host_free(ptr); }
bool ct__pinned_is_page_locked(void) { return false; }

ct_status ct_pinned_memory_stats(ct_memory_stats *out) {
    if (!out)
        return ct__null_arg("ct_pinned_memory_stats", "out");
    memset(out, 0, sizeof *out);
    return CT_OK;
}
#endif
