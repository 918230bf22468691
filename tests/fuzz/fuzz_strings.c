/* libFuzzer harness: the parsers of user-given strings: device names (CT_DEVICE,
 * ct_device_parse) and byte sizes (CT_CUDA_MEMORY_LIMIT). */
#include "runtime/allocator.h"
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    ct_device dev;
    if (ct_device_parse(text, &dev) != CT_OK)
        fuzz_expect_error("ct_device_parse");
    else if (dev.type == CT_DEVICE_CUDA && (dev.index < 0 || dev.index >= 1024))
        abort();
    size_t bytes;
    (void)ct__parse_byte_size(text, &bytes);
    free(text);
    return 0;
}
