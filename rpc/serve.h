/* Serving requests: run the called function (or a module's handler) and send the response. */
#ifndef FERRY_RPC_SERVE_H
#define FERRY_RPC_SERVE_H

#include "rpc/agent.h"

/* Takes ownership of m (a decoded, whole request from `src`). Progress thread. */
void ferry__serve_request(ferry__agent *agent, int src, ferry__msg *m);
/* Sends an error response to request `id` of `src`. */
void ferry__serve_reply_error(ferry__agent *agent, int src, uint64_t id, ferry_status code,
                              const char *message);

#endif
