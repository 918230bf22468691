/* ctensor's CUDA emulator, host side (tests/emu/README.md): the CUDA runtime entry points
 * ctensor and its tests call, over host memory, and the launch of an emulated kernel.
 *
 * - Devices: CT_EMU_DEVICES of them (1 by default), each with CT_EMU_MEMORY bytes (2 GiB);
 *   "device memory" is host memory, filled with 0xff bytes (NaN, -1) when allocated. Frees
 *   and copies check their pointers against the allocations: a pointer that is not device
 *   memory where device memory is needed, or a copy that runs past an allocation's end, is an
 *   error (cudaErrorInvalidValue), as on a GPU where it would be a fault or a wrong answer.
 * - Streams are asynchronous, and lazy: work waits in its stream's queue until something
 *   needs it done (a synchronization of the stream, its device or an event after it, a copy
 *   the host waits for, a cudaFree or cudaFreeHost, which run every device's queues, a second
 *   query of a pending event, the process's exit), then runs in the thread that waits, after
 *   whatever it waits for (events, and the legacy stream's implicit order with blocking
 *   streams). So work on two streams that are not ordered by an event runs in the order the
 *   synchronizations force, often not the order of the calls: where that order gets a
 *   missing event wait or ct_tensor_record_stream wrong, it is wrong on every run, where a
 *   GPU would be wrong only sometimes. CT_EMU_STREAMS=eager runs work when it is enqueued
 *   instead (a fault is then reported from the call that enqueued it). Event times are host
 *   times.
 * - Stream capture records kernels, copies and fills, and graph launches replay them. The
 *   calls that are not permitted while a capture is underway (CUDA's "potentially unsafe"
 *   calls: allocations, the synchronous copies and fills, synchronizing the capturing stream;
 *   cuBLASLt's and cuDNN's handles and cudnnFind, which
 *   allocate) fail with cudaErrorStreamCaptureUnsupported and invalidate the captures they
 *   would break, with the capture modes' rules (global, thread-local, relaxed, and each
 *   thread's exchange mode); a device-wide synchronization (cudaDeviceSynchronize, cudaFree,
 *   cudaFreeHost) fails while any capture is underway, whatever the modes; work on the legacy
 *   stream while a blocking stream captures fails with cudaErrorStreamCaptureImplicit.
 *   Events are not part of the model (no fork/join of streams into a capture).
 * - A kernel's grid runs block after block; a block's threads are fibers (own stacks) that
 *   switch at __syncthreads, __syncwarp and the shuffles. Between two of those the threads
 *   run one after another, in ascending order in one launch of a launch site and descending
 *   in the next (blocks too; CT_EMU_ORDER=forward, reverse or alternate, the default), so a
 *   missing barrier between one thread's write and another's read gives a wrong answer in one
 *   of the two orders. A barrier some threads never reach,
 *   a shuffle whose mask names a lane that has exited or waits elsewhere, and a shuffle that
 *   reads a lane outside its mask are reported (with the launch's file and line) and abort,
 *   as they would hang or give undefined values on a GPU. An invalid launch configuration
 *   is the launch's error (cudaErrorInvalidConfiguration), as on a GPU.
 * - The cuBLASLt and cuDNN calls ctensor makes are emulated too (tests/emu/cublaslt_emu.cpp,
 *   tests/emu/cudnn_emu.cpp). */
#include "tests/emu/cuda_emu.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>

#if defined(__SANITIZE_ADDRESS__)
#define CT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CT_EMU_ASAN 1
#endif
#endif
#ifdef CT_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define EMU_API extern "C" __attribute__((visibility("default")))

namespace ct_emu {
thread_local thread_context *current;

void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ctensor CUDA emulator: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    abort();
}

size_t element_size(element t) { return t == ELEM_F32 ? 4 : 2; }
double load_element(const void *p, element t, int64_t i) {
    switch (t) {
    case ELEM_F32: return ((const float *)p)[i];
    case ELEM_F16: return __half2float(((const __half *)p)[i]);
    default: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    }
}
void store_element(void *p, element t, int64_t i, double v) {
    switch (t) {
    case ELEM_F32: ((float *)p)[i] = (float)v; break;
    case ELEM_F16: ((__half *)p)[i] = __double2half(v); break;
    default: ((__nv_bfloat16 *)p)[i] = __double2bfloat16(v); break;
    }
}

namespace {

/* ---- fibers ----------------------------------------------------------------------------- */

const size_t STACK_BYTES = 256 << 10;

/* The switch between fibers. On x86-64 a few instructions that save and restore the
 * callee-saved registers and the floating-point control words (ucontext's swapcontext makes
 * a system call for the signal mask every time, which made the emulator 2x slower);
 * elsewhere ucontext. */
#if defined(__x86_64__)
extern "C" void ct_emu_switch(void **save_sp, void *sp);
asm(".pushsection .text\n"
    ".globl ct_emu_switch\n"
    ".type ct_emu_switch,@function\n"
    "ct_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $8, %rsp\n"
    "  stmxcsr (%rsp)\n"
    "  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n"
    "  fldcw 4(%rsp)\n"
    "  addq $8, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size ct_emu_switch,.-ct_emu_switch\n"
    ".popsection\n");
struct context {
    void *sp;
};
/* A context that starts entry() on the stack [stack, stack + bytes): the frame
 * ct_emu_switch pops (control words, six registers, the return address), below a zero
 * return address for entry, which never returns. */
void make_context(context *c, char *stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 72);
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    memset(sp, 0, 72);
    memcpy(sp, &mxcsr, 4);
    memcpy((char *)sp + 4, &fpucw, 2);
    sp[7] = (uint64_t)(uintptr_t)entry;
    c->sp = sp;
}
void switch_context(context *from, context *to) { ct_emu_switch(&from->sp, to->sp); }
#else
struct context {
    ucontext_t uc;
};
void make_context(context *c, char *stack, size_t bytes, void (*entry)()) {
    if (getcontext(&c->uc) != 0)
        fatal("getcontext failed");
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = bytes;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, entry, 0);
}
void switch_context(context *from, context *to) {
    if (swapcontext(&from->uc, &to->uc) != 0)
        fatal("swapcontext failed");
}
#endif

enum fiber_state { F_READY, F_SYNC, F_SHUFFLE, F_WARP_SYNC, F_DONE };

struct fiber {
    context ctx;
    char *stack;
    bool started;
    fiber_state state;
    thread_context tc;
    unsigned mask; /* at a shuffle or __syncwarp */
    shuffle_kind kind;
    int arg, width;
    uint64_t value, result;
    const char *sync_file; /* the __syncthreads waited at */
    int sync_line;
    void *fake_stack;
};

struct block_run {
    std::vector<fiber> fibers;
    context scheduler;
    const std::function<void()> *body;
    fiber *running;
    const char *file;
    int line;
    const void *scheduler_stack;
    size_t scheduler_stack_bytes;
    bool reverse; /* run the threads (and blocks) in descending order */
    uint64_t serial; /* the block's number among all blocks this host thread has run, from 1 */
};

thread_local block_run *active;
/* Each host thread's free fiber stacks, unmapped when the thread exits. Work left queued at
 * exit runs after the main thread's thread-local destructors: stacks are then mapped and
 * unmapped one by one. */
thread_local bool stack_pool_gone;
struct stack_pool_t {
    std::vector<char *> free;
    ~stack_pool_t() {
        for (char *s : free)
            munmap(s, STACK_BYTES);
        stack_pool_gone = true;
    }
};
thread_local stack_pool_t stack_pool;

char *take_stack() {
    if (!stack_pool_gone && !stack_pool.free.empty()) {
        char *s = stack_pool.free.back();
        stack_pool.free.pop_back();
        return s;
    }
    void *s = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED)
        fatal("cannot map a fiber stack: %s", strerror(errno));
    if (mprotect(s, 4096, PROT_NONE) != 0) /* a guard page: an overflow faults */
        fatal("cannot protect a fiber stack's guard page: %s", strerror(errno));
    return (char *)s;
}

void give_stack(char *s) {
    if (stack_pool_gone)
        munmap(s, STACK_BYTES);
    else
        stack_pool.free.push_back(s);
}

void start_switch(void **fake_stack, const void *bottom, size_t bytes) {
#ifdef CT_EMU_ASAN
    __sanitizer_start_switch_fiber(fake_stack, bottom, bytes);
#else
    (void)fake_stack, (void)bottom, (void)bytes;
#endif
}
void finish_switch(void *fake_stack, const void **bottom, size_t *bytes) {
#ifdef CT_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, bottom, bytes);
#else
    (void)fake_stack, (void)bottom, (void)bytes;
#endif
}

void fiber_main() {
    block_run *b = active;
    finish_switch(NULL, &b->scheduler_stack, &b->scheduler_stack_bytes);
    (*b->body)();
    b->running->state = F_DONE;
    start_switch(NULL, b->scheduler_stack, b->scheduler_stack_bytes); /* this fiber ends */
    switch_context(&b->running->ctx, &b->scheduler);
    fatal("a finished fiber was resumed");
}

/* From a fiber: wait in `state` until the scheduler resumes this thread. */
void yield(fiber_state state) {
    block_run *b = active;
    if (!b || !b->running)
        fatal("a synchronization function was called outside a kernel");
    fiber *f = b->running;
    f->state = state;
    start_switch(&f->fake_stack, b->scheduler_stack, b->scheduler_stack_bytes);
    switch_context(&f->ctx, &b->scheduler);
    finish_switch(f->fake_stack, &b->scheduler_stack, &b->scheduler_stack_bytes);
}

void resume(block_run *b, fiber *f) {
    if (!f->started) {
        f->stack = take_stack();
        make_context(&f->ctx, f->stack, STACK_BYTES, fiber_main);
        f->started = true;
    }
    b->running = f;
    current = &f->tc;
    void *fake = NULL;
    start_switch(&fake, f->stack, STACK_BYTES);
    switch_context(&b->scheduler, &f->ctx);
    finish_switch(fake, NULL, NULL);
    b->running = NULL;
    current = NULL;
    if (f->state == F_DONE) {
        give_stack(f->stack);
        f->stack = NULL;
    }
}

const char *state_name(fiber_state s) {
    switch (s) {
    case F_READY: return "running";
    case F_SYNC: return "at __syncthreads";
    case F_SHUFFLE: return "at a shuffle";
    case F_WARP_SYNC: return "at __syncwarp";
    case F_DONE: return "exited";
    }
    return "?";
}

[[noreturn]] void block_fatal(block_run *b, const fiber &f, const char *what, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, what);
    vsnprintf(msg, sizeof msg, what, ap);
    va_end(ap);
    fatal("kernel launched at %s:%d, block (%u,%u,%u), thread (%u,%u,%u): %s", b->file, b->line, f.tc.block_idx.x,
          f.tc.block_idx.y, f.tc.block_idx.z, f.tc.thread_idx.x, f.tc.thread_idx.y, f.tc.thread_idx.z, msg);
}

/* Lanes of warp w waiting at a shuffle or __syncwarp: each group of lanes with one mask
 * goes on once every lane of its mask has arrived there. Returns whether any went on. */
bool settle_warp(block_run *b, int w) {
    const int n = (int)b->fibers.size(), first = w * 32, lanes = std::min(32, n - first);
    bool progressed = false;
    for (int l = 0; l < lanes; l++) {
        fiber &f = b->fibers[(size_t)(first + l)];
        if (f.state != F_SHUFFLE && f.state != F_WARP_SYNC)
            continue;
        const unsigned mask = f.mask;
        if (!(mask >> l & 1u))
            block_fatal(b, f, "a %s whose mask 0x%08x leaves out the calling lane %d",
                        f.state == F_SHUFFLE ? "shuffle" : "__syncwarp", mask, l);
        /* The lanes of the mask that have not exited (or do not exist: a partial last warp)
         * take part; CUDA allows the others to be named. */
        bool complete = true;
        for (int m = 0; m < 32; m++) {
            if (!(mask >> m & 1u) || m >= lanes || b->fibers[(size_t)(first + m)].state == F_DONE)
                continue;
            const fiber &o = b->fibers[(size_t)(first + m)];
            if (o.state == F_SYNC)
                block_fatal(b, f, "%s with mask 0x%08x waits for lane %d, which is %s",
                            f.state == F_SHUFFLE ? "a shuffle" : "__syncwarp", mask, m, state_name(o.state));
            if (o.state != f.state || o.mask != mask || (f.state == F_SHUFFLE && o.kind != f.kind))
                complete = false; /* another group's lane, or one still elsewhere: report below if stuck */
        }
        if (!complete)
            continue;
        for (int m = 0; m < 32; m++) {
            if (!(mask >> m & 1u) || m >= lanes)
                continue;
            fiber &o = b->fibers[(size_t)(first + m)];
            if (o.state == F_SHUFFLE) {
                const int width = o.width, seg = m / width * width;
                int src = m;
                switch (o.kind) {
                case SHFL_IDX: src = seg + (o.arg % width + width) % width; break;
                case SHFL_XOR: src = m ^ o.arg; if (src >= seg + width || src < 0) src = m; break;
                case SHFL_DOWN: src = (m - seg) + o.arg < width ? m + o.arg : m; break;
                case SHFL_UP: src = (m - seg) >= o.arg ? m - o.arg : m; break;
                }
                if (src < 0 || src >= lanes || !(mask >> src & 1u) ||
                    b->fibers[(size_t)(first + src)].state != F_SHUFFLE)
                    block_fatal(b, o, "a shuffle with mask 0x%08x reads lane %d, which is outside the mask or not "
                                "taking part (undefined on a GPU)", mask, src);
                o.result = b->fibers[(size_t)(first + src)].value;
            }
        }
        for (int m = 0; m < lanes; m++)
            if ((mask >> m & 1u) && b->fibers[(size_t)(first + m)].state != F_DONE)
                b->fibers[(size_t)(first + m)].state = F_READY;
        progressed = true;
    }
    return progressed;
}

void run_block(block_run *b) {
    const int n = (int)b->fibers.size();
    for (;;) {
        for (int k = 0; k < n; k++) {
            const int i = b->reverse ? n - 1 - k : k;
            if (b->fibers[(size_t)i].state == F_READY)
                resume(b, &b->fibers[(size_t)i]);
        }
        bool progressed = false;
        for (int w = 0; w * 32 < n; w++)
            progressed |= settle_warp(b, w);
        if (progressed)
            continue;
        int done = 0, at_sync = 0;
        for (const fiber &f : b->fibers) {
            done += f.state == F_DONE;
            at_sync += f.state == F_SYNC;
        }
        if (done == n)
            return;
        if (done + at_sync == n) {
            const fiber *first = NULL;
            for (const fiber &f : b->fibers) {
                if (f.state != F_SYNC)
                    continue;
                if (!first)
                    first = &f;
                else if (f.sync_line != first->sync_line || strcmp(f.sync_file, first->sync_file) != 0)
                    block_fatal(b, f, "waits at the __syncthreads of %s:%d while thread (%u,%u,%u) waits at %s:%d "
                                "(a barrier in divergent code)", f.sync_file, f.sync_line, first->tc.thread_idx.x,
                                first->tc.thread_idx.y, first->tc.thread_idx.z, first->sync_file, first->sync_line);
            }
            for (fiber &f : b->fibers)
                if (f.state == F_SYNC)
                    f.state = F_READY;
            continue;
        }
        for (const fiber &f : b->fibers)
            if (f.state == F_SHUFFLE || f.state == F_WARP_SYNC)
                block_fatal(b, f, "%s, mask 0x%08x, never completes: the lanes of its mask wait elsewhere "
                            "(a divergent shuffle or __syncwarp)", state_name(f.state), f.mask);
        fatal("kernel launched at %s:%d: deadlock", b->file, b->line);
    }
}

/* CT_EMU_ORDER: the order of a block's threads between barriers, and of a grid's blocks. */
enum run_order { ORDER_FORWARD, ORDER_REVERSE, ORDER_ALTERNATE };
run_order order_setting() {
    static const run_order order = [] {
        const char *e = getenv("CT_EMU_ORDER");
        if (!e || !*e || !strcmp(e, "alternate"))
            return ORDER_ALTERNATE;
        if (!strcmp(e, "forward"))
            return ORDER_FORWARD;
        if (!strcmp(e, "reverse"))
            return ORDER_REVERSE;
        fatal("CT_EMU_ORDER=%s: expected forward, reverse or alternate", e);
    }();
    return order;
}
/* Launches so far of each launch site (file and line, hashed), so that every kernel
 * alternates, whatever else runs between its launches. */
std::atomic<uint32_t> site_launches[4096];

/* Blocks run by this host thread so far, and the last block in which each __shared__
 * variable (by address) was made fresh. */
thread_local uint64_t blocks_run;
thread_local std::unordered_map<const void *, uint64_t> shared_made_fresh;

void run_grid(const char *file, int line, dim3 grid, dim3 block, const std::function<void()> &body) {
    if (active)
        fatal("a kernel launched at %s:%d from inside a kernel", file, line);
    block_run b;
    const run_order order = order_setting();
    const size_t site = ((uintptr_t)file * 31u + (unsigned)line) % 4096;
    b.reverse = order == ORDER_REVERSE || (order == ORDER_ALTERNATE && (site_launches[site]++ & 1));
    b.body = &body;
    b.file = file;
    b.line = line;
    b.running = NULL;
    b.scheduler_stack = NULL;
    b.scheduler_stack_bytes = 0;
    const size_t threads = (size_t)block.x * block.y * block.z;
    b.fibers.resize(threads);
    active = &b;
    for (unsigned kz = 0; kz < grid.z; kz++)
        for (unsigned ky = 0; ky < grid.y; ky++)
            for (unsigned kx = 0; kx < grid.x; kx++) {
                const unsigned bz = b.reverse ? grid.z - 1 - kz : kz, by = b.reverse ? grid.y - 1 - ky : ky,
                               bx = b.reverse ? grid.x - 1 - kx : kx;
                size_t t = 0;
                for (unsigned z = 0; z < block.z; z++)
                    for (unsigned y = 0; y < block.y; y++)
                        for (unsigned x = 0; x < block.x; x++, t++) {
                            fiber &f = b.fibers[t];
                            f.started = false;
                            f.stack = NULL;
                            f.state = F_READY;
                            f.fake_stack = NULL;
                            f.tc.thread_idx = make_uint3(x, y, z);
                            f.tc.block_idx = make_uint3(bx, by, bz);
                            f.tc.block_dim = block;
                            f.tc.grid_dim = grid;
                        }
                b.serial = ++blocks_run;
                run_block(&b);
            }
    active = NULL;
}

/* ---- devices, memory, streams ------------------------------------------------------------- */

struct allocation {
    size_t bytes;
    int device; /* -1: page-locked host memory */
};

struct capture;
struct stream_t;
/* An event's record on a stream: done once the stream has run everything queued before it. */
struct record_t {
    stream_t *stream; /* NULL: done when made (recorded in a capture) */
    uint64_t seq;     /* its place in the stream's queue */
    bool done;
    bool queried; /* a query found it pending once: the next one runs the work */
    double ms;
};
/* What a stream's queue holds: work, a wait for another stream's queue up to a place (an
 * event wait, or the legacy stream's implicit order), or an event's record. */
struct item {
    std::function<void()> work;
    stream_t *after;
    uint64_t after_seq;
    std::shared_ptr<record_t> record;
};
struct stream_t {
    int device;
    unsigned flags;
    int priority;
    bool is_legacy; /* the device's legacy default stream (handle 0) */
    capture *cap;
    std::deque<item> items;
    uint64_t enqueued, done; /* items ever queued; items run (the queue's first is done + 1) */
    bool destroyed;          /* kept, so that records and waits may still name it */
};
struct event_t {
    int device;
    unsigned flags;
    bool recorded;
    std::shared_ptr<record_t> last; /* the latest record */
};
struct node {
    std::function<void()> work;
};
struct capture {
    stream_t *stream;
    cudaStreamCaptureMode mode;
    pthread_t thread;
    bool invalidated;
    std::vector<node> nodes;
};
struct graph_t {
    std::vector<node> nodes;
};

std::mutex lock; /* allocations, captures, memory use, streams' queues and records */
std::map<uintptr_t, allocation> allocations;
std::set<capture *> captures;
/* Every stream ever made, the legacy ones included (never freed: records and waits may name
 * a destroyed one; held through a pointer so that LeakSanitizer sees them reachable). */
std::vector<stream_t *> &streams = *new std::vector<stream_t *>;
stream_t *legacy_streams[64];
size_t used[64];
thread_local int current_device;
thread_local cudaError_t last_error = cudaSuccess;
thread_local cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;

int device_count() {
    static const int count = [] {
        const char *e = getenv("CT_EMU_DEVICES");
        int n = e && *e ? atoi(e) : 1;
        return n < 0 ? 0 : n > 64 ? 64 : n;
    }();
    return count;
}
size_t device_memory() {
    static const size_t bytes = [] {
        const char *e = getenv("CT_EMU_MEMORY");
        return e && *e ? (size_t)strtoull(e, NULL, 0) : (size_t)2 << 30;
    }();
    return bytes;
}

double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

/* The allocation holding [p, p + bytes), or NULL. Caller holds the lock. */
const allocation *find_locked(const void *p, size_t bytes, uintptr_t *base) {
    uintptr_t a = (uintptr_t)p;
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin())
        return NULL;
    --it;
    if (a < it->first || a - it->first >= (it->second.bytes ? it->second.bytes : 1))
        return NULL;
    if (bytes > it->second.bytes - (a - it->first))
        fatal("%zu bytes at %p run past the end of the allocation at %p (%zu bytes)", bytes, p, (void *)it->first,
              it->second.bytes);
    if (base)
        *base = it->first;
    return &it->second;
}

bool legacy(cudaStream_t s) { return s == NULL || s == cudaStreamLegacy; }
stream_t *stream_of(cudaStream_t s) {
    return legacy(s) || s == cudaStreamPerThread ? NULL : (stream_t *)s;
}

stream_t *new_stream_locked(int device, unsigned flags, int priority, bool is_legacy) {
    stream_t *s = new stream_t{device, flags, priority, is_legacy, NULL, {}, 0, 0, false};
    streams.push_back(s);
    return s;
}
/* The queue that work on s goes to: a created stream's own, or the current device's legacy
 * stream (cudaStreamPerThread too: ctensor does not use it, and the legacy stream orders at
 * least as much). Caller holds the lock. */
stream_t *queue_of_locked(cudaStream_t s) {
    if (stream_t *st = stream_of(s))
        return st;
    stream_t *&l = legacy_streams[current_device];
    if (!l)
        l = new_stream_locked(current_device, 0, 0, true);
    return l;
}

bool eager() {
    static const bool e = [] {
        const char *v = getenv("CT_EMU_STREAMS");
        if (!v || !*v || !strcmp(v, "lazy"))
            return false;
        if (!strcmp(v, "eager"))
            return true;
        fatal("CT_EMU_STREAMS=%s: expected lazy or eager", v);
    }();
    return e;
}

/* Queue `it` on q, after the waits the legacy stream's implicit order asks for: work on the
 * legacy stream waits for the work queued before it on the device's blocking streams, and
 * work on a blocking stream for the legacy stream's (ctensor's streams are non-blocking).
 * Returns its place. Caller holds the lock. */
uint64_t push_locked(stream_t *q, item it) {
    if (q->destroyed)
        fatal("work queued on a destroyed stream");
    auto wait_for = [q](stream_t *t) {
        if (t && t != q && t->done < t->enqueued) {
            q->items.push_back(item{{}, t, t->enqueued, NULL});
            q->enqueued++;
        }
    };
    if (q->is_legacy) {
        for (stream_t *t : streams)
            if (t->device == q->device && !t->is_legacy && !(t->flags & cudaStreamNonBlocking))
                wait_for(t);
    } else if (!(q->flags & cudaStreamNonBlocking)) {
        wait_for(legacy_streams[q->device]);
    }
    q->items.push_back(std::move(it));
    return ++q->enqueued;
}

/* Work runs one item at a time, whichever host thread needs it done. */
std::recursive_mutex running;

/* Run stream s's queue up to its place seq, and first what its items wait for (a work list,
 * not recursion: chains of waits can be long). */
void run_until(stream_t *s, uint64_t seq) {
    std::lock_guard<std::recursive_mutex> r(running);
    std::vector<std::pair<stream_t *, uint64_t>> todo{{s, seq}};
    while (!todo.empty()) {
        stream_t *t = todo.back().first;
        item it;
        {
            std::lock_guard<std::mutex> g(lock);
            if (t->done >= todo.back().second || t->items.empty()) {
                todo.pop_back();
                continue;
            }
            item &first = t->items.front();
            if (first.after && first.after->done < first.after_seq) {
                todo.emplace_back(first.after, first.after_seq);
                continue;
            }
            it = std::move(first);
            t->items.pop_front();
        }
        if (it.work)
            it.work();
        std::lock_guard<std::mutex> g(lock);
        if (it.record) {
            it.record->ms = now_ms();
            it.record->done = true;
        }
        t->done++;
    }
}

void run_all(int device);
/* At exit, whatever is still queued runs (so that kernels whose results nothing read are
 * still checked), unless another thread is running work. Registered before main, so it runs
 * after the exit handlers registered later and before this file's earlier statics go. */
struct run_at_exit_t {
    run_at_exit_t() {
        atexit([] {
            if (running.try_lock()) {
                run_all(-1);
                running.unlock();
            }
        });
    }
} run_at_exit;

/* Run everything queued so far on the streams of `device` (-1: of every device). */
void run_all(int device) {
    std::vector<std::pair<stream_t *, uint64_t>> todo;
    {
        std::lock_guard<std::mutex> g(lock);
        for (stream_t *t : streams)
            if ((device < 0 || t->device == device) && t->done < t->enqueued)
                todo.emplace_back(t, t->enqueued);
    }
    for (auto &t : todo)
        run_until(t.first, t.second);
}

/* Would a potentially unsafe call from this thread break a capture underway? If so the
 * captures it breaks are invalidated and the call fails. Caller holds the lock. */
bool unsafe_call_locked() {
    if (thread_mode == cudaStreamCaptureModeRelaxed)
        return false;
    bool prohibited = false;
    for (capture *c : captures) {
        bool own = pthread_equal(c->thread, pthread_self());
        if (c->mode == cudaStreamCaptureModeRelaxed)
            continue;
        if (own || (c->mode == cudaStreamCaptureModeGlobal && thread_mode == cudaStreamCaptureModeGlobal)) {
            prohibited = true;
            c->invalidated = true;
        }
    }
    return prohibited;
}
} // namespace

bool device_accessible(const void *p, size_t bytes) {
    std::lock_guard<std::mutex> g(lock);
    return find_locked(p, bytes, NULL) != NULL;
}

bool capture_forbids_unsafe_call() {
    std::lock_guard<std::mutex> g(lock);
    return unsafe_call_locked();
}

namespace {

/* Work on (or a synchronization of) the legacy default stream while a blocking stream is
 * capturing: it would make the legacy stream wait for the capture, which CUDA refuses with
 * cudaErrorStreamCaptureImplicit (the capture goes on). Caller holds the lock. */
bool legacy_conflict_locked() {
    for (capture *c : captures)
        if (!(c->stream->flags & cudaStreamNonBlocking))
            return true;
    return false;
}

/* A device-wide synchronization (cudaDeviceSynchronize, and the one cudaFree and cudaFreeHost
 * make) while any capture is underway, whatever the modes: invalid (CUDA Programming Guide,
 * "Prohibited and Unhandled Operations"); the captures are invalidated. Caller holds the lock. */
bool device_sync_breaks_capture_locked() {
    for (capture *c : captures)
        c->invalidated = true;
    return !captures.empty();
}

/* Queue work on stream s (CT_EMU_STREAMS=eager: and run it), or record it in s's capture.
 * *q and *seq (where given): the queue and the place, or NULL when captured. */
cudaError_t enqueue(cudaStream_t s, std::function<void()> work, stream_t **q = NULL, uint64_t *seq = NULL) {
    stream_t *st = stream_of(s), *to = NULL;
    uint64_t at = 0;
    {
        std::lock_guard<std::mutex> g(lock);
        if (st && st->cap) {
            st->cap->nodes.push_back(node{std::move(work)});
        } else {
            if (legacy(s) && legacy_conflict_locked())
                return fail(cudaErrorStreamCaptureImplicit);
            to = queue_of_locked(s);
            at = push_locked(to, item{std::move(work), NULL, 0, NULL});
        }
    }
    if (to && eager())
        run_until(to, at);
    if (q)
        *q = to;
    if (seq)
        *seq = at;
    return cudaSuccess;
}

/* Enqueue, then run up to the work: the calls that are synchronous with the host. */
cudaError_t enqueue_and_wait(cudaStream_t s, std::function<void()> work) {
    stream_t *q = NULL;
    uint64_t seq = 0;
    cudaError_t e = enqueue(s, std::move(work), &q, &seq);
    if (e == cudaSuccess && q)
        run_until(q, seq);
    return e;
}

} // namespace

/* ---- called by the rewritten kernels/cuda/*.cu files --------------------------------------- */

void syncthreads(const char *file, int line) {
    if (active && active->running) {
        active->running->sync_file = file;
        active->running->sync_line = line;
    }
    yield(F_SYNC);
}

void shared_fresh(void *p, size_t bytes) {
    block_run *b = active;
    if (!b)
        fatal("a __shared__ variable outside a kernel");
    uint64_t &last = shared_made_fresh[p];
    if (last != b->serial) {
        memset(p, 0xff, bytes);
        last = b->serial;
    }
}

void syncwarp(unsigned mask) {
    if (active && active->running)
        active->running->mask = mask;
    yield(F_WARP_SYNC);
}

uint64_t shuffle(unsigned mask, uint64_t value, shuffle_kind kind, int arg, int width) {
    block_run *b = active;
    if (!b || !b->running)
        fatal("a shuffle outside a kernel");
    fiber *f = b->running;
    if (width < 1 || width > 32 || (width & (width - 1)))
        block_fatal(b, *f, "shuffle width %d is not a power of two up to 32", width);
    f->mask = mask;
    f->value = value;
    f->kind = kind;
    f->arg = arg;
    f->width = width;
    yield(F_SHUFFLE);
    return f->result;
}

void launch(const char *file, int line, dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
            std::function<void()> body) {
    const uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 || shared > (48 << 10)) {
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    cudaError_t e = enqueue(stream, [file, line, grid, block, body]() { run_grid(file, line, grid, block, body); });
    if (e != cudaSuccess)
        fail(e);
}


void run_on_stream(cudaStream_t stream, std::function<void()> work) {
    cudaError_t e = enqueue(stream, std::move(work));
    if (e != cudaSuccess)
        fail(e);
}

} // namespace ct_emu

using namespace ct_emu;

/* ---- devices and errors --------------------------------------------------------------------- */

EMU_API cudaError_t cudaGetDeviceCount(int *count) {
    *count = device_count();
    return *count ? cudaSuccess : fail(cudaErrorNoDevice);
}
EMU_API cudaError_t cudaGetDevice(int *device) {
    *device = current_device;
    return cudaSuccess;
}
EMU_API cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count())
        return fail(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}
EMU_API cudaError_t cudaDeviceSynchronize(void) {
    {
        std::lock_guard<std::mutex> g(lock);
        if (device_sync_breaks_capture_locked())
            return fail(cudaErrorStreamCaptureUnsupported);
    }
    run_all(current_device);
    return cudaSuccess;
}
EMU_API cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) {
    if (least)
        *least = 0;
    if (greatest)
        *greatest = -5;
    return cudaSuccess;
}
EMU_API cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    if (device < 0 || device >= device_count())
        return fail(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "ctensor CUDA emulator (CPU), device %d", device);
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 2;
    prop->totalGlobalMem = device_memory();
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff;
    prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
    prop->sharedMemPerBlock = 48 << 10;
    prop->canMapHostMemory = 1;
    prop->unifiedAddressing = 1;
    prop->pciBusID = device;
    return cudaSuccess;
}
EMU_API cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    if (device < 0 || device >= device_count())
        return fail(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMultiProcessorCount: *value = 2; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 48 << 10; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrCanMapHostMemory: *value = 1; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    default: *value = 0; break;
    }
    return cudaSuccess;
}
EMU_API cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, const void *fun) {
    memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = 1024;
    attr->numRegs = 32;
    attr->ptxVersion = 90;
    attr->binaryVersion = 90;
    return cudaSuccess;
}
EMU_API cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *blocks, const void *fun,
                                                                           int block_size, size_t shared,
                                                                           unsigned flags) {
    if (block_size <= 0 || block_size > 1024)
        return fail(cudaErrorInvalidValue);
    *blocks = std::min(32, 2048 / block_size);
    return cudaSuccess;
}
EMU_API cudaError_t cudaRuntimeGetVersion(int *version) {
    *version = CUDART_VERSION;
    return cudaSuccess;
}
EMU_API cudaError_t cudaDriverGetVersion(int *version) {
    *version = CUDART_VERSION;
    return cudaSuccess;
}
EMU_API cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
EMU_API cudaError_t cudaPeekAtLastError(void) { return last_error; }
EMU_API const char *cudaGetErrorName(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    default: return "cudaErrorUnknown";
    }
}
EMU_API const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error (ctensor CUDA emulator)";
    }
}

/* ---- memory ---------------------------------------------------------------------------------- */

static cudaError_t new_allocation(void **ptr, size_t bytes, int device) {
    *ptr = NULL;
    size_t rounded = (bytes + 255) / 256 * 256;
    {
        std::lock_guard<std::mutex> g(lock);
        if (unsafe_call_locked()) /* cudaMalloc and cudaHostAlloc are "potentially unsafe" */
            return fail(cudaErrorStreamCaptureUnsupported);
        if (device >= 0 && used[device] + rounded > device_memory())
            return fail(cudaErrorMemoryAllocation);
        if (device >= 0)
            used[device] += rounded;
    }
    void *p = aligned_alloc(256, rounded ? rounded : 256);
    if (!p) {
        std::lock_guard<std::mutex> g(lock);
        if (device >= 0)
            used[device] -= rounded;
        return fail(cudaErrorMemoryAllocation);
    }
    memset(p, 0xff, rounded ? rounded : 256);
    std::lock_guard<std::mutex> g(lock);
    allocations[(uintptr_t)p] = allocation{rounded, device};
    *ptr = p;
    return cudaSuccess;
}

/* cudaFree and cudaFreeHost synchronize: everything queued runs first (on every device, so
 * that no queued work is left to touch the memory). */
static cudaError_t free_allocation(void *ptr, bool host) {
    if (!ptr)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> g(lock);
        if (device_sync_breaks_capture_locked())
            return fail(cudaErrorStreamCaptureUnsupported);
    }
    run_all(-1);
    std::lock_guard<std::mutex> g(lock);
    auto it = allocations.find((uintptr_t)ptr);
    if (it == allocations.end() || (it->second.device < 0) != host)
        fatal("%s(%p): not the start of %s allocation", host ? "cudaFreeHost" : "cudaFree", ptr,
              host ? "a page-locked host" : "a device");
    if (!host)
        used[it->second.device] -= it->second.bytes;
    allocations.erase(it);
    free(ptr);
    return cudaSuccess;
}

EMU_API cudaError_t cudaMalloc(void **ptr, size_t bytes) { return new_allocation(ptr, bytes, current_device); }
EMU_API cudaError_t cudaFree(void *ptr) { return free_allocation(ptr, false); }
EMU_API cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags) {
    return new_allocation(ptr, bytes, -1);
}
EMU_API cudaError_t cudaFreeHost(void *ptr) { return free_allocation(ptr, true); }
EMU_API cudaError_t cudaHostGetDevicePointer(void **device_ptr, void *host_ptr, unsigned flags) {
    std::lock_guard<std::mutex> g(lock);
    const allocation *a = find_locked(host_ptr, 0, NULL);
    if (!a || a->device >= 0)
        return fail(cudaErrorInvalidValue);
    *device_ptr = host_ptr;
    return cudaSuccess;
}
EMU_API cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    std::lock_guard<std::mutex> g(lock);
    *total_bytes = device_memory();
    *free_bytes = device_memory() - used[current_device];
    return cudaSuccess;
}
EMU_API cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *ptr) {
    memset(attr, 0, sizeof *attr);
    std::lock_guard<std::mutex> g(lock);
    const allocation *a = find_locked(ptr, 0, NULL);
    if (!a) {
        attr->type = cudaMemoryTypeUnregistered;
        attr->device = -2;
    } else if (a->device < 0) {
        attr->type = cudaMemoryTypeHost;
        attr->device = current_device;
        attr->devicePointer = (void *)ptr;
        attr->hostPointer = (void *)ptr;
    } else {
        attr->type = cudaMemoryTypeDevice;
        attr->device = a->device;
        attr->devicePointer = (void *)ptr;
    }
    return cudaSuccess;
}

/* The pointers of a copy: the device side(s) of `kind` must be addressable by a GPU. */
static cudaError_t check_copy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
    if (bytes == 0)
        return cudaSuccess;
    if (!dst || !src)
        return fail(cudaErrorInvalidValue);
    bool dst_dev = device_accessible(dst, bytes), src_dev = device_accessible(src, bytes);
    switch (kind) {
    case cudaMemcpyHostToDevice: return dst_dev ? cudaSuccess : fail(cudaErrorInvalidValue);
    case cudaMemcpyDeviceToHost: return src_dev ? cudaSuccess : fail(cudaErrorInvalidValue);
    case cudaMemcpyDeviceToDevice: return dst_dev && src_dev ? cudaSuccess : fail(cudaErrorInvalidValue);
    case cudaMemcpyHostToHost:
    case cudaMemcpyDefault: return cudaSuccess;
    }
    return fail(cudaErrorInvalidValue);
}

/* What kind of memory p is in. */
enum memory_kind { PAGEABLE, PINNED, DEVICE };
static memory_kind kind_of(const void *p) {
    std::lock_guard<std::mutex> g(lock);
    const allocation *a = find_locked(p, 0, NULL);
    return !a ? PAGEABLE : a->device < 0 ? PINNED : DEVICE;
}

/* The source of a copy from pageable memory, taken now (the driver's staging copy). */
static std::function<void()> staged_copy(void *dst, const void *src, size_t bytes) {
    auto staged = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + bytes);
    return [=]() { memcpy(dst, staged->data(), bytes); };
}

/* On the legacy stream, as CUDA's "API synchronization behavior" says: between device memory
 * nothing waits; from pageable memory the stream's earlier work is waited for and the source
 * staged, and the transfer is done later; every other copy returns when done. */
EMU_API cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
    cudaError_t e = check_copy(dst, src, bytes, kind);
    if (e != cudaSuccess || bytes == 0)
        return e;
    if (capture_forbids_unsafe_call())
        return fail(cudaErrorStreamCaptureUnsupported);
    const memory_kind d = kind_of(dst), s = kind_of(src);
    if (d == DEVICE && s == DEVICE)
        return enqueue(0, [=]() { memmove(dst, src, bytes); });
    if (d == DEVICE && s == PAGEABLE) {
        e = cudaStreamSynchronize(0);
        return e != cudaSuccess ? e : enqueue(0, staged_copy(dst, src, bytes));
    }
    return enqueue_and_wait(0, [=]() { memmove(dst, src, bytes); });
}
/* As CUDA's "API synchronization behavior" says: a copy from pageable host memory to the
 * device takes the source when called (staged) and is done later; one into pageable host
 * memory, or between host buffers, returns when done; between device memory and page-locked
 * host memory it is done when its stream gets to it (the host must not touch the buffer
 * before then). */
EMU_API cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                                    cudaStream_t stream) {
    cudaError_t e = check_copy(dst, src, bytes, kind);
    if (e != cudaSuccess || bytes == 0)
        return e;
    const memory_kind d = kind_of(dst), s = kind_of(src);
    if (d == PAGEABLE || (d != DEVICE && s != DEVICE))
        return enqueue_and_wait(stream, [=]() { memmove(dst, src, bytes); });
    if (s == PAGEABLE)
        return enqueue(stream, staged_copy(dst, src, bytes));
    return enqueue(stream, [=]() { memmove(dst, src, bytes); });
}
EMU_API cudaError_t cudaMemcpyPeerAsync(void *dst, int dst_device, const void *src, int src_device, size_t bytes,
                                        cudaStream_t stream) {
    if (dst_device < 0 || dst_device >= device_count() || src_device < 0 || src_device >= device_count())
        return fail(cudaErrorInvalidDevice);
    cudaError_t e = check_copy(dst, src, bytes, cudaMemcpyDeviceToDevice);
    if (e != cudaSuccess || bytes == 0)
        return e;
    return enqueue(stream, [=]() { memmove(dst, src, bytes); });
}
/* On the legacy stream; as in CUDA, asynchronous with the host for device memory and
 * synchronous for page-locked host memory. */
EMU_API cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    if (bytes == 0)
        return cudaSuccess;
    if (!device_accessible(dst, bytes))
        return fail(cudaErrorInvalidValue);
    if (capture_forbids_unsafe_call())
        return fail(cudaErrorStreamCaptureUnsupported);
    if (kind_of(dst) == PINNED)
        return enqueue_and_wait(0, [=]() { memset(dst, value, bytes); });
    return enqueue(0, [=]() { memset(dst, value, bytes); });
}
EMU_API cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream) {
    if (bytes == 0)
        return cudaSuccess;
    if (!device_accessible(dst, bytes))
        return fail(cudaErrorInvalidValue);
    return enqueue(stream, [=]() { memset(dst, value, bytes); });
}

/* ---- streams and events ------------------------------------------------------------------------ */

EMU_API cudaError_t cudaStreamCreateWithPriority(cudaStream_t *stream, unsigned flags, int priority) {
    std::lock_guard<std::mutex> g(lock);
    *stream = (cudaStream_t)new_stream_locked(current_device, flags, priority, false);
    return cudaSuccess;
}
EMU_API cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    return cudaStreamCreateWithPriority(stream, flags, 0);
}
/* As in CUDA, the call returns at once and the stream's queued work is still done (when
 * something waits for it: the stream is kept for that). */
EMU_API cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    stream_t *s = stream_of(stream);
    if (!s)
        return fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> g(lock);
    if (s->destroyed)
        fatal("cudaStreamDestroy of a destroyed stream");
    if (s->cap)
        fatal("cudaStreamDestroy of a stream that is capturing");
    s->destroyed = true;
    return cudaSuccess;
}
EMU_API cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    stream_t *q;
    uint64_t all;
    {
        std::lock_guard<std::mutex> g(lock);
        stream_t *s = stream_of(stream);
        if (s && s->cap) {
            s->cap->invalidated = true;
            return fail(cudaErrorStreamCaptureUnsupported);
        }
        if (legacy(stream) && legacy_conflict_locked())
            return fail(cudaErrorStreamCaptureImplicit);
        q = queue_of_locked(stream);
        all = q->enqueued;
    }
    run_until(q, all);
    return cudaSuccess;
}
/* Work queued on `stream` after this waits for the work before the event's latest record
 * (not modelled inside a capture). */
EMU_API cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> g(lock);
    stream_t *s = stream_of(stream);
    const std::shared_ptr<record_t> &r = ((event_t *)event)->last;
    if ((s && s->cap) || !r || r->done)
        return cudaSuccess;
    stream_t *q = queue_of_locked(stream);
    if (q != r->stream)
        push_locked(q, item{{}, r->stream, r->seq, NULL});
    return cudaSuccess;
}
EMU_API cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags) {
    *event = (cudaEvent_t) new event_t{current_device, flags, false, NULL};
    return cudaSuccess;
}
EMU_API cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, 0); }
EMU_API cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> g(lock);
    delete (event_t *)event;
    return cudaSuccess;
}
EMU_API cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    event_t *e = (event_t *)event;
    stream_t *q = NULL;
    uint64_t seq = 0;
    {
        std::lock_guard<std::mutex> g(lock);
        stream_t *s = stream_of(stream);
        e->recorded = true;
        if (s && s->cap) { /* events are not modelled in captures: done at once */
            e->last = std::make_shared<record_t>(record_t{NULL, 0, true, false, now_ms()});
            return cudaSuccess;
        }
        if (legacy(stream) && legacy_conflict_locked())
            return fail(cudaErrorStreamCaptureImplicit);
        q = queue_of_locked(stream);
        if (q->device != e->device) /* CUDA: the event and the stream must share a device */
            return fail(cudaErrorInvalidResourceHandle);
        auto r = std::make_shared<record_t>(record_t{q, 0, false, false, 0});
        seq = r->seq = push_locked(q, item{{}, NULL, 0, r});
        e->last = r;
    }
    if (eager())
        run_until(q, seq);
    return cudaSuccess;
}
/* The event's latest record if it is still pending (NULL: done, or never recorded). With
 * first_query: whether this is the first query that finds it pending. */
static std::shared_ptr<record_t> pending_record(cudaEvent_t event, bool *first_query) {
    std::lock_guard<std::mutex> g(lock);
    std::shared_ptr<record_t> r = ((event_t *)event)->last;
    if (!r || r->done)
        return NULL;
    if (first_query) {
        *first_query = !r->queried;
        r->queried = true;
    }
    return r;
}
/* A pending record is reported not ready once; the next query runs the work before it (a
 * GPU finishes work eventually; code that polls must see both answers). */
EMU_API cudaError_t cudaEventQuery(cudaEvent_t event) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    bool first = false;
    std::shared_ptr<record_t> r = pending_record(event, &first);
    if (r && first)
        return cudaErrorNotReady;
    if (r)
        run_until(r->stream, r->seq);
    return cudaSuccess;
}
EMU_API cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    if (std::shared_ptr<record_t> r = pending_record(event, NULL))
        run_until(r->stream, r->seq);
    return cudaSuccess;
}
/* As in CUDA: cudaErrorNotReady until both records are done. */
EMU_API cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    event_t *a = (event_t *)start, *b = (event_t *)end;
    std::lock_guard<std::mutex> g(lock);
    if (!a || !b || !a->recorded || !b->recorded || (a->flags & cudaEventDisableTiming) ||
        (b->flags & cudaEventDisableTiming))
        return fail(cudaErrorInvalidResourceHandle);
    if (!a->last->done || !b->last->done)
        return fail(cudaErrorNotReady);
    *ms = (float)(b->last->ms - a->last->ms);
    return cudaSuccess;
}

/* ---- stream capture and graphs ------------------------------------------------------------------- */

EMU_API cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
    cudaStreamCaptureMode old = thread_mode;
    thread_mode = *mode;
    *mode = old;
    return cudaSuccess;
}
EMU_API cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    stream_t *s = stream_of(stream);
    if (!s)
        return fail(cudaErrorStreamCaptureUnsupported);
    std::lock_guard<std::mutex> g(lock);
    if (s->cap)
        return fail(cudaErrorIllegalState);
    capture *c = new capture{s, mode, pthread_self(), false, {}};
    s->cap = c;
    captures.insert(c);
    return cudaSuccess;
}
EMU_API cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    stream_t *s = stream_of(stream);
    *graph = NULL;
    std::lock_guard<std::mutex> g(lock);
    if (!s || !s->cap)
        return fail(cudaErrorIllegalState);
    capture *c = s->cap;
    if (c->mode != cudaStreamCaptureModeRelaxed && !pthread_equal(c->thread, pthread_self()))
        return fail(cudaErrorStreamCaptureWrongThread);
    s->cap = NULL;
    captures.erase(c);
    bool invalidated = c->invalidated;
    if (!invalidated)
        *graph = (cudaGraph_t) new graph_t{std::move(c->nodes)};
    delete c;
    return invalidated ? fail(cudaErrorStreamCaptureInvalidated) : cudaSuccess;
}
EMU_API cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    if (!graph)
        return fail(cudaErrorInvalidValue);
    *exec = (cudaGraphExec_t) new graph_t(*(graph_t *)graph);
    return cudaSuccess;
}
/* The graph's nodes as one item of the stream's queue. */
EMU_API cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    if (!exec)
        return fail(cudaErrorInvalidValue);
    std::vector<node> nodes = ((graph_t *)exec)->nodes;
    return enqueue(stream, [nodes]() {
        for (const node &n : nodes)
            n.work();
    });
}
EMU_API cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete (graph_t *)graph;
    return cudaSuccess;
}
EMU_API cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete (graph_t *)exec;
    return cudaSuccess;
}

/* ---- what the emulator cannot do --------------------------------------------------------------- */

/* A kernel compiled by nvcc (bench's empty kernel) has no host code to run. */
EMU_API cudaError_t cudaLaunchKernel(const void *fun, dim3 grid, dim3 block, void **args, size_t shared,
                                     cudaStream_t stream) {
    return fail(cudaErrorNotSupported);
}
