/* ctensor's CUDA emulator, host side (tests/emu/README.md): the CUDA runtime entry points
 * ctensor and its tests call, over host memory, and the launch of an emulated kernel.
 *
 * - Devices: CT_EMU_DEVICES of them (1 by default), each with CT_EMU_MEMORY bytes (2 GiB);
 *   "device memory" is host memory, filled with 0xff bytes (NaN, -1) when allocated. Frees
 *   and copies check their pointers against the allocations: a pointer that is not device
 *   memory where device memory is needed, or a copy that runs past an allocation's end, is an
 *   error (cudaErrorInvalidValue), as on a GPU where it would be a fault or a wrong answer.
 * - Work runs when it is enqueued, in the calling thread: streams, events and their waits
 *   order nothing (everything is complete when the call returns), and event times are host
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
 *   switch at __syncthreads, __syncwarp and the shuffles. A barrier some threads never reach,
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

#include <map>
#include <mutex>
#include <set>

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
};

thread_local block_run *active;
/* Each host thread's free fiber stacks, unmapped when the thread exits. */
struct stack_pool_t {
    std::vector<char *> free;
    ~stack_pool_t() {
        for (char *s : free)
            munmap(s, STACK_BYTES);
    }
};
thread_local stack_pool_t stack_pool;

char *take_stack() {
    if (!stack_pool.free.empty()) {
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

void give_stack(char *s) { stack_pool.free.push_back(s); }

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
        for (int i = 0; i < n; i++)
            if (b->fibers[(size_t)i].state == F_READY)
                resume(b, &b->fibers[(size_t)i]);
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

void run_grid(const char *file, int line, dim3 grid, dim3 block, const std::function<void()> &body) {
    if (active)
        fatal("a kernel launched at %s:%d from inside a kernel", file, line);
    block_run b;
    b.body = &body;
    b.file = file;
    b.line = line;
    b.running = NULL;
    b.scheduler_stack = NULL;
    b.scheduler_stack_bytes = 0;
    const size_t threads = (size_t)block.x * block.y * block.z;
    b.fibers.resize(threads);
    active = &b;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
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
struct stream_t {
    int device;
    unsigned flags;
    int priority;
    capture *cap;
};
struct event_t {
    int device;
    unsigned flags;
    bool recorded;
    double ms;
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

std::mutex lock; /* allocations, captures, memory use */
std::map<uintptr_t, allocation> allocations;
std::set<capture *> captures;
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

/* Run work on stream s now, or record it in s's capture. */
cudaError_t enqueue(cudaStream_t s, std::function<void()> work) {
    stream_t *st = stream_of(s);
    {
        std::lock_guard<std::mutex> g(lock);
        if (st && st->cap) {
            st->cap->nodes.push_back(node{std::move(work)});
            return cudaSuccess;
        }
        if (legacy(s) && legacy_conflict_locked())
            return fail(cudaErrorStreamCaptureImplicit);
    }
    work();
    return cudaSuccess;
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
    std::lock_guard<std::mutex> g(lock);
    return device_sync_breaks_capture_locked() ? fail(cudaErrorStreamCaptureUnsupported) : cudaSuccess;
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

static cudaError_t free_allocation(void *ptr, bool host) {
    if (!ptr)
        return cudaSuccess;
    std::lock_guard<std::mutex> g(lock);
    if (device_sync_breaks_capture_locked())
        return fail(cudaErrorStreamCaptureUnsupported);
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

EMU_API cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
    cudaError_t e = check_copy(dst, src, bytes, kind);
    if (e != cudaSuccess)
        return e;
    if (capture_forbids_unsafe_call())
        return fail(cudaErrorStreamCaptureUnsupported);
    memmove(dst, src, bytes);
    return cudaSuccess;
}
EMU_API cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                                    cudaStream_t stream) {
    cudaError_t e = check_copy(dst, src, bytes, kind);
    if (e != cudaSuccess || bytes == 0)
        return e;
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
EMU_API cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    if (bytes && !device_accessible(dst, bytes))
        return fail(cudaErrorInvalidValue);
    if (capture_forbids_unsafe_call())
        return fail(cudaErrorStreamCaptureUnsupported);
    memset(dst, value, bytes);
    return cudaSuccess;
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
    stream_t *s = new stream_t{current_device, flags, priority, NULL};
    *stream = (cudaStream_t)s;
    return cudaSuccess;
}
EMU_API cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    return cudaStreamCreateWithPriority(stream, flags, 0);
}
EMU_API cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    stream_t *s = stream_of(stream);
    if (!s)
        return fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> g(lock);
    if (s->cap)
        fatal("cudaStreamDestroy of a stream that is capturing");
    delete s;
    return cudaSuccess;
}
EMU_API cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    std::lock_guard<std::mutex> g(lock);
    stream_t *s = stream_of(stream);
    if (s && s->cap) {
        s->cap->invalidated = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    if (legacy(stream) && legacy_conflict_locked())
        return fail(cudaErrorStreamCaptureImplicit);
    return cudaSuccess;
}
EMU_API cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags) {
    return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
EMU_API cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags) {
    *event = (cudaEvent_t) new event_t{current_device, flags, false, 0};
    return cudaSuccess;
}
EMU_API cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, 0); }
EMU_API cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    delete (event_t *)event;
    return cudaSuccess;
}
EMU_API cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    event_t *e = (event_t *)event;
    e->recorded = true;
    e->ms = now_ms();
    return cudaSuccess;
}
EMU_API cudaError_t cudaEventQuery(cudaEvent_t event) {
    return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
EMU_API cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
EMU_API cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    event_t *a = (event_t *)start, *b = (event_t *)end;
    if (!a || !b || !a->recorded || !b->recorded || (a->flags & cudaEventDisableTiming) ||
        (b->flags & cudaEventDisableTiming))
        return fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(b->ms - a->ms);
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
EMU_API cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    if (!exec)
        return fail(cudaErrorInvalidValue);
    for (const node &n : ((graph_t *)exec)->nodes) {
        cudaError_t e = enqueue(stream, n.work);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
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
