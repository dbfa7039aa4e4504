/* FERRY_LOG=debug's line for each message sent and received, written at the two points every
   message passes (send.c, receive.c). Callers check ferry__log_debug_on() first, so at the
   default level a message costs that one branch and nothing here runs. */
#ifndef FERRY_RPC_TRACE_H
#define FERRY_RPC_TRACE_H

#include <stddef.h>

#include "rpc/agent_impl.h"

/* What a message is, in a log line's words: "request", "response", "error", "remote call",
   "rref fetch", "rref user delete", "rref fork request", "rref child accept", "autograd
   backward", "autograd cleanup", "ping", or "unknown". */
const char *ferry__trace_kind(const ferry__msg *m);
/* m was encoded for `dst` and its parts are being handed to the fabric: its kind, id, peer,
   function (a request's; a response names what it answers from `request`) and `bytes`, the
   whole message with the tensors sent apart. */
void ferry__trace_sent(ferry__agent *a, int dst, const ferry__msg *m, const ferry__msg *request,
                       size_t bytes);
/* m's envelope arrived from `src` (len bytes with the inline attachments; the n_atts attachment
   sizes add the tensors coming apart). A response names the call it answers and how long ago
   that call was sent, from its pending entry (agent->lock taken here, so never held by the
   caller). */
void ferry__trace_received(ferry__agent *a, int src, const ferry__msg *m, size_t len,
                           const ferry__att *atts, size_t n_atts);

#endif
