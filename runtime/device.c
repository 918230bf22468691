/* Devices: parsing, naming, the default device. The CUDA side lives in kernels/cuda. */
#include "runtime/internal.h"

#include <string.h>

#ifdef CT_HAVE_CUDA
int ct__cuda_device_count(void); /* kernels/cuda: 0 when no driver or GPU */
#endif

int ct_cuda_device_count(void) {
#ifdef CT_HAVE_CUDA
    return ct__cuda_device_count();
#else
    return 0;
#endif
}

bool ct_cuda_is_available(void) { return ct_cuda_device_count() > 0; }

/* cpu, cuda or cuda:N into *out; false (nothing recorded) otherwise. */
static bool parse_device(const char *text, ct_device *out) {
    if (strcmp(text, "cpu") == 0) {
        *out = CT_CPU;
        return true;
    }
    if (strcmp(text, "cuda") == 0) {
        *out = CT_CUDA(0);
        return true;
    }
    if (strncmp(text, "cuda:", 5) == 0 && text[5] >= '0' && text[5] <= '9') {
        char *end;
        long index = strtol(text + 5, &end, 10);
        if (*end == '\0' && index < 1024) {
            *out = CT_CUDA((int)index);
            return true;
        }
    }
    return false;
}

ct_status ct_device_parse(const char *text, ct_device *out) {
    if (!text || !out)
        return ct__set_error(CT_ERR_NULL, "ct_device_parse: argument is NULL");
    if (parse_device(text, out))
        return CT_OK;
    return ct__set_error(CT_ERR_VALUE, "ct_device_parse: unknown device \"%s\" (expected cpu, cuda or cuda:N)",
                         text);
}

const char *ct_device_name(ct_device device) {
    static _Thread_local char buf[32];
    if (device.type == CT_DEVICE_CPU)
        return "cpu";
    snprintf(buf, sizeof buf, "cuda:%d", device.index);
    return buf;
}

bool ct_device_equal(ct_device a, ct_device b) {
    return a.type == b.type && (a.type == CT_DEVICE_CPU || a.index == b.index);
}

ct_device ct_device_default(void) {
    static atomic_int noticed = 0;
    const char *env = getenv("CT_DEVICE");
    ct_device dev = CT_CPU;
    bool asked_cuda = false;
    if (env && *env) {
        /* Not through ct_device_parse: a bad CT_DEVICE is a notice, not an error, and the
         * caller's pending error (or a CUDA graph capture's error count) stays as it was. */
        if (!parse_device(env, &dev)) {
            if (!atomic_exchange(&noticed, 1))
                fprintf(stderr, "ctensor: CT_DEVICE=%s is not a device; using the CPU\n", env);
            return CT_CPU;
        }
        if (dev.type == CT_DEVICE_CPU)
            return CT_CPU;
        asked_cuda = true;
    }
    int count = ct_cuda_device_count();
    if (count > 0) {
        if (dev.type == CT_DEVICE_CUDA && dev.index < count)
            return dev;
        if (!asked_cuda)
            return CT_CUDA(0);
    }
    if (asked_cuda && !atomic_exchange(&noticed, 1))
        fprintf(stderr, "ctensor: CT_DEVICE=%s but no usable CUDA device (%d found); using the CPU\n", env, count);
    return CT_CPU;
}
