/* ctensor — CUDA graphs: capture a sequence of ops once, replay it for the cost of one launch.
 *
 * A training step of small tensors spends more time launching kernels than running them
 * (a few microseconds of host time per op). Capturing the step into a CUDA graph and replaying
 * it removes that cost, as torch.cuda.CUDAGraph does:
 *
 *     ct_tensor *x = ct_empty(shape, 2, CT_F32, dev);          // static input, made before
 *     ... run the step once eagerly (warm-up: cuDNN algorithm timing, cuBLASLt and cuDNN
 *         handles, the device's error record are set up outside the capture) ...
 *     ct_optim_zero_grad(opt);                                 // the capture makes the grads
 *     ct_graph *g = ct_graph_capture_begin(dev.index);
 *     ct_tensor *loss = ct_cross_entropy(ct_module_forward(model, x), y, NULL);
 *     ct_backward(loss);                                       // nothing runs yet
 *     ct_graph_capture_end(g);
 *     for (;;) {
 *         ct_copy_(x, next_batch);                             // new data into the static input
 *         ct_graph_replay(g);                                  // forward + backward, one launch
 *         ct_optim_step(opt);                                  // eager, after the replay
 *     }
 *     ct_graph_free(g);
 *
 * Rules (those of CUDA stream capture, made explicit):
 *   - Between begin and end, the calling thread's ops on cuda:`device` are recorded, not run.
 *     They go to the graph's own stream (made current for the capture and restored after; do
 *     not keep ct_stream_current's answer from that time). Other threads are not captured and
 *     keep running; the capturing thread itself works on cuda:`device` only until the end.
 *     What would synchronize the whole device, and so invalidate the capture, is done
 *     differently on other threads meanwhile: ct_device_synchronize waits for ctensor's
 *     streams of the device one by one, a graph they free is released when the last capture
 *     on its device ends, and a convolution not yet timed takes cuDNN's heuristic choice.
 *   - If anything fails on the capturing thread during the capture (an op's error, a refused
 *     call below, a NULL argument), ct_graph_capture_end returns CT_ERR_STATE quoting the first
 *     error and the graph cannot be replayed: a graph never silently lacks an op.
 *   - Tensors made during the capture are the graph's: their memory comes from a pool private
 *     to the graph, every replay rewrites them (read them after a replay), and the pool is
 *     held (ct_cuda_empty_cache keeps it) until the graph is freed; so are the graph's own
 *     stream and its cuBLASLt handle and 32 MiB workspace (made when the capture begins,
 *     outside the caching allocator and its statistics). Tensors made before the
 *     capture and used in it (inputs, parameters, gradients that already existed) are read and
 *     written in place by every replay: keep them alive while the graph is used.
 *   - Gradients: a .grad made during the capture (call ct_optim_zero_grad before capturing)
 *     is rewritten by each replay; one that existed before is added to by each replay, as
 *     ct_backward does. Do not zero the gradients between replays: ct_optim_zero_grad
 *     releases them, and the optimizer would then see none (as with PyTorch's
 *     zero_grad(set_to_none=True) between replays).
 *   - Random ops (dropout, ct_rand, ...) draw fresh numbers at every replay: each replay takes
 *     its Philox offsets from the global generator when it is launched, so a replay gives the
 *     numbers that running the same ops eagerly at that moment would give. Hence, refused
 *     with CT_ERR_STATE: ct_manual_seed or ct_random_set_offset during a capture that draws
 *     random numbers (ct_graph_capture_end fails, even for a reseed back to the same seed),
 *     and the backward of a dropout anywhere but in the capture its forward ran in (run
 *     eagerly after a replay, it would rebuild the capture's mask, not the replay's).
 *   - Refused with CT_ERR_STATE on the capturing thread, because they would wait for work that
 *     has not run, bake host data into the graph or break CUDA's capture: ct_item, ct_to_host
 *     and every synchronization (ct_stream_synchronize, ct_event_synchronize, ct_event_query,
 *     ct_device_synchronize, ct_stream_wait_event, ct_stream_wait_stream); ct_event_record and
 *     ct_tensor_record_stream on the capture's stream (nothing outside could wait for them);
 *     copies from host memory (ct_from_host, ct_to_device from the CPU) and between devices;
 *     ops and allocations on another device; ct_optim_step (its learning rate and step count
 *     would be frozen into the graph: step after the replay); making another stream current;
 *     a nested capture, a replay, freeing another graph. Hence ops that need one of these
 *     cannot be captured: the backward of max/min over a dim (it builds its indices on the
 *     host), batch norm with cumulative_average (it reads its count), clipping by norm,
 *     metrics.
 *   - Convolutions whose algorithm was not timed before the capture use cuDNN's heuristic
 *     choice in the graph (timing would run kernels during the capture).
 *   - While any capture is underway on a device, its caching allocator and the pinned host
 *     allocator, for every thread, give no memory back (ct_cuda_empty_cache does nothing
 *     there) and recycle no block freed after use on another stream, and an allocation that
 *     needs the cache flushed fails with CT_ERR_MEMORY. End (or free) every capture: one left
 *     open keeps this so.
 *   - A replay runs on the calling thread's current stream of the graph's device, after the
 *     work queued there before; replays of one graph are ordered after one another, even on
 *     different streams or threads. Errors only the GPU sees (a bad index) are reported at the
 *     next synchronization, as for eager ops.
 *
 * In a build without CUDA, or without a usable GPU, every call reports CT_ERR_DEVICE. */
#ifndef CTENSOR_GRAPH_H
#define CTENSOR_GRAPH_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_graph ct_graph;

/* Start capturing the calling thread's work on cuda:`device`. NULL on error (no such device,
 * a capture already underway on this thread, on any device; out of memory). */
ct_graph *ct_graph_capture_begin(int device);
/* End the capture (on the thread that began it) and prepare the graph for replay. If an op
 * during the capture failed or CUDA invalidated the capture, the error is returned here, the
 * graph cannot be replayed, and it must still be freed. */
ct_status ct_graph_capture_end(ct_graph *graph);
/* Run the captured work on the calling thread's current stream of the graph's device. Does not
 * wait for it. */
ct_status ct_graph_replay(ct_graph *graph);
/* The device the graph was captured on (-1 for NULL). */
int ct_graph_device(const ct_graph *graph);
/* Free the graph. A capture still underway is abandoned (on the capturing thread only). Its
 * memory pool becomes ordinary cache: once the tensors made during the capture are freed too,
 * ct_cuda_empty_cache (or a shortage of memory) gives it back. NULL is ignored. */
void ct_graph_free(ct_graph *graph);

#ifdef __cplusplus
}
#endif
#endif
