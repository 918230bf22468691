/* Streams and events in a build without CUDA: every call reports that no device exists. */
#include "runtime/internal.h"

#include <math.h>

#ifndef CT_HAVE_CUDA

static ct_status no_cuda(const char *op) {
    return ct__set_error(CT_ERR_DEVICE, "%s: this ctensor was built without CUDA", op);
}

ct_stream *ct_stream_current(int device) { no_cuda("ct_stream_current"); return NULL; }
ct_stream *ct_stream_default(int device) { no_cuda("ct_stream_default"); return NULL; }
ct_status ct_stream_set_current(ct_stream *stream) { return no_cuda("ct_stream_set_current"); }
ct_stream *ct_stream_from_pool(int device) { no_cuda("ct_stream_from_pool"); return NULL; }
ct_stream *ct_stream_copy(int device) { no_cuda("ct_stream_copy"); return NULL; }
ct_stream *ct_stream_comm(int device) { no_cuda("ct_stream_comm"); return NULL; }
int ct_stream_device(const ct_stream *stream) { return -1; }
ct_status ct_stream_synchronize(ct_stream *stream) { return no_cuda("ct_stream_synchronize"); }
ct_status ct_stream_wait_event(ct_stream *stream, ct_event *event) { return no_cuda("ct_stream_wait_event"); }
ct_status ct_stream_wait_stream(ct_stream *stream, ct_stream *other) { return no_cuda("ct_stream_wait_stream"); }
ct_event *ct_event_create(bool timing) { no_cuda("ct_event_create"); return NULL; }
void ct_event_free(ct_event *event) {}
ct_status ct_event_record(ct_event *event, ct_stream *stream) { return no_cuda("ct_event_record"); }
ct_status ct_event_synchronize(ct_event *event) { return no_cuda("ct_event_synchronize"); }
bool ct_event_query(ct_event *event) { no_cuda("ct_event_query"); return false; }
double ct_event_elapsed_ms(ct_event *start, ct_event *end) { no_cuda("ct_event_elapsed_ms"); return NAN; }
ct_status ct_device_synchronize(int device) { return no_cuda("ct_device_synchronize"); }
ct_status ct_cuda_set_device(int device) { return no_cuda("ct_cuda_set_device"); }
int ct_cuda_current_device(void) { return -1; }

ct_graph *ct_graph_capture_begin(int device) { no_cuda("ct_graph_capture_begin"); return NULL; }
ct_status ct_graph_capture_end(ct_graph *graph) {
    return graph ? no_cuda("ct_graph_capture_end") : ct__null_arg("ct_graph_capture_end", "graph");
}
ct_status ct_graph_replay(ct_graph *graph) {
    return graph ? no_cuda("ct_graph_replay") : ct__null_arg("ct_graph_replay", "graph");
}
int ct_graph_device(const ct_graph *graph) { return -1; }
void ct_graph_free(ct_graph *graph) {}
bool ct__cuda_capturing(int device) { return false; }
uint64_t ct__cuda_capture_id(int device) { return 0; }

#endif
