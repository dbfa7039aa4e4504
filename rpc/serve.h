/* Serving requests: run the called function (or a module's handler) and send the response. */
#ifndef FERRY_RPC_SERVE_H
#define FERRY_RPC_SERVE_H

#include "rpc/agent_impl.h"

/* Takes ownership of m (a decoded, whole request from `src`). Where the message was read: the
   progress thread or a thread driving the fabric. */
void ferry__serve_request(ferry__agent *agent, int src, ferry__msg *m);
/* Lends the agent's idle pool threads to the fabric, one at a time: the thread polls for a
   while before it sleeps and runs the call it reads itself (a leader/follower pool). The net
   is running. */
void ferry__serve_start(ferry__agent *agent);
/* Sends an error response to `request` (its id is what is used; its other fields may be
   empty) of `src`. */
void ferry__serve_reply_error(ferry__agent *agent, int src, const ferry__msg *request,
                              ferry_status code, const char *message);

#endif
