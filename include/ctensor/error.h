/* ctensor — errors.
 *
 * No call aborts on bad input. A function returning a tensor returns NULL on error and
 * records a thread-local error; a function returning ct_status returns the code. Every op
 * given a NULL input returns NULL without overwriting an error that is already recorded, so
 * an error travels through an expression and the first cause is what the user reads:
 *
 *     ct_tensor *y = ct_relu(ct_matmul(x, w));       // x and w do not fit
 *     if (!y) fprintf(stderr, "%s\n", ct_last_error_message());
 *     // -> "ct_matmul: inner dimensions differ: a is [2, 3], b is [4, 5]"
 */
#ifndef CTENSOR_ERROR_H
#define CTENSOR_ERROR_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The code of the error recorded on this thread (CT_OK when none). */
ct_status ct_last_error(void);
/* Its message ("" when none). Valid until the next error on this thread. */
const char *ct_last_error_message(void);
/* Forget the recorded error. */
void ct_clear_error(void);
/* A short name for a status code: "CT_ERR_SHAPE". */
const char *ct_status_name(ct_status status);

#ifdef __cplusplus
}
#endif
#endif
