/* ferry: torch.distributed.rpc for C. The one header a program includes. */
#ifndef FERRY_FERRY_H
#define FERRY_FERRY_H

#include "ferry/error.h"
#include "ferry/value.h"
#include "ferry/tensor.h"
#include "ferry/device.h"
#include "ferry/future.h"
#include "ferry/rpc.h"
#include "ferry/launch.h"
#include "ferry/rref.h"
#include "ferry/object.h"
#include "ferry/ops.h"
#include "ferry/autograd.h"
#include "ferry/dist_autograd.h"
#include "ferry/nn.h"
#include "ferry/safetensors.h"
#include "ferry/optim.h"

#endif
