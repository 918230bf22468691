/* libFuzzer harness: ct_checkpoint_load of an arbitrary file into a small model, optimizer
 * and schedule (safetensors, module state, optimizer state, hyper-parameters and schedule
 * state from the metadata, and the epoch). */
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_path(data, size);
    int64_t live = ct_live_tensors();
    fuzz_setup s = fuzz_setup_create();
    if (!s.schedule)
        abort();
    int64_t epoch = -1;
    if (ct_checkpoint_load(path, s.model, s.optim, s.schedule, &epoch) != CT_OK)
        fuzz_expect_error("ct_checkpoint_load");
    fuzz_setup_free(&s);
    fuzz_expect_no_live_tensors(live, "ct_checkpoint_load");
    return 0;
}
