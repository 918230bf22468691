/* libFuzzer harness: ct_safetensors_load on an arbitrary file, then every accessor on what
 * it returns. */
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int64_t live = ct_live_tensors();
    ct_safetensors *f = ct_safetensors_load(fuzz_input_path(data, size));
    if (!f) {
        fuzz_expect_error("ct_safetensors_load");
    } else {
        for (int i = 0; i < ct_safetensors_count(f); i++) {
            const char *name = ct_safetensors_name(f, i);
            ct_tensor *t = ct_safetensors_get(f, name);
            if (!t || ct_tensor_numel(t) < 0)
                abort();
        }
        (void)ct_safetensors_metadata(f, "epoch");
        ct_safetensors_free(f);
    }
    fuzz_expect_no_live_tensors(live, "ct_safetensors_load");
    return 0;
}
