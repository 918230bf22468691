/* ctensor — a tensor runtime in C for training CNNs and Transformers.
 * Include this one header; it includes every area's header. */
#ifndef CTENSOR_H
#define CTENSOR_H

#include "types.h"
#include "error.h"
#include "tensor.h"
#include "autograd.h"
#include "ops.h"
#include "conv.h"
#include "random.h"
#include "memory.h"
#include "stream.h"
#include "graph.h"
#include "nnops.h"
#include "loss.h"
#include "nn.h"
#include "modules.h"
#include "init.h"
#include "optim.h"
#include "data.h"
#include "metrics.h"
#include "checkpoint.h"

#define CT_VERSION_MAJOR 0
#define CT_VERSION_MINOR 1
#define CT_VERSION_PATCH 0

#endif
