/* libFuzzer harness: ct_idx_load on an arbitrary file, plain or gzip-compressed. */
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int64_t live = ct_live_tensors();
    ct_tensor *t = ct_idx_load(fuzz_input_path(data, size));
    if (!t)
        fuzz_expect_error("ct_idx_load");
    ct_tensor_free(t);
    fuzz_expect_no_live_tensors(live, "ct_idx_load");
    return 0;
}
