/* Serving requests: run the called function (or a module's handler) and send the response. */
#ifndef FERRY_RPC_SERVE_H
#define FERRY_RPC_SERVE_H

#include "rpc/agent_impl.h"

/* Takes ownership of m (a decoded, whole request from `src`). Where the message was read: the
   progress thread or a thread driving the fabric. */
void ferry__serve_request(ferry__agent *agent, int src, ferry__msg *m);
/* Sends an error response to `request` (its id is what is used; its other fields may be
   empty) of `src`. */
void ferry__serve_reply_error(ferry__agent *agent, int src, const ferry__msg *request,
                              ferry_status code, const char *message);

#endif
