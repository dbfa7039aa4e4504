/* The debug trace of messages: one line per message sent or received, naming its kind, id, peer
   (name and rank), function, size and, for a response, how long its call took as the caller saw
   it (from the start time its pending entry keeps for the heartbeat). Only reached when the
   level is debug; the README ("Running programs") shows the lines. */
#include "rpc/trace.h"

#include <stdbool.h>
#include <stdio.h>

#include "core/clock.h"
#include "core/log.h"
#include "rpc/pending.h"

const char *ferry__trace_kind(const ferry__msg *m)
{
    switch (m->type) {
    case FERRY__MSG_CALL:
        return "request";
    case FERRY__MSG_RESPONSE:
        return m->is_error ? "error" : "response";
    case FERRY__MSG_REMOTE_CALL:
        return "remote call";
    case FERRY__MSG_RREF_FETCH:
        return "rref fetch";
    case FERRY__MSG_RREF_USER_DELETE:
        return "rref user delete";
    case FERRY__MSG_RREF_FORK_REQUEST:
        return "rref fork request";
    case FERRY__MSG_RREF_CHILD_ACCEPT:
        return "rref child accept";
    case FERRY__MSG_AUTOGRAD_BACKWARD:
        return "autograd backward";
    case FERRY__MSG_AUTOGRAD_CLEANUP:
        return "autograd cleanup";
    case FERRY__MSG_PING:
        return "ping";
    default:
        return "unknown";
    }
}

static const char *peer_name(const ferry__agent *a, int rank)
{
    return rank >= 0 && rank < a->world_size && a->workers && a->workers[rank].name
               ? a->workers[rank].name
               : "?";
}

/* ", fn 'f'" for a request that has a function name (a call, a remote call) or a local one
   (the name its pending call goes by), else nothing. */
static void fn_part(char *buf, size_t cap, const char *fn)
{
    if (fn && *fn)
        snprintf(buf, cap, ", fn '%s'", fn);
    else
        buf[0] = '\0';
}

/* An error's code and message, for the end of its line. */
static void error_part(char *buf, size_t cap, const ferry__msg *m)
{
    if (m->type == FERRY__MSG_RESPONSE && m->is_error)
        snprintf(buf, cap, ": %s: %.300s", ferry_strerror(m->err_code),
                 m->err_message ? m->err_message : "");
    else
        buf[0] = '\0';
}

void ferry__trace_sent(ferry__agent *a, int dst, const ferry__msg *m, const ferry__msg *request,
                       size_t bytes)
{
    char what[FERRY_MAX_NAME_LEN + 64], err[384];
    if (m->type == FERRY__MSG_RESPONSE && request) {
        char fn[FERRY_MAX_NAME_LEN + 16];
        fn_part(fn, sizeof fn, request->fn);
        snprintf(what, sizeof what, " answering the %s%s", ferry__trace_kind(request), fn);
    } else {
        fn_part(what, sizeof what, m->fn);
    }
    error_part(err, sizeof err, m);
    ferry__log_debug("msg", "sent %s %llu to '%s' (rank %d)%s%s, %zu bytes%s",
                     ferry__trace_kind(m), (unsigned long long)m->id, peer_name(a, dst), dst,
                     what, m->no_reply ? ", no reply wanted" : "", bytes, err);
}

void ferry__trace_received(ferry__agent *a, int src, const ferry__msg *m, size_t len,
                           const ferry__att *atts, size_t n_atts)
{
    size_t bytes = len;
    for (size_t i = 0; i < n_atts; i++)
        if (!atts[i].is_inline)
            bytes += atts[i].len;
    char what[FERRY_MAX_NAME_LEN + 96], err[384];
    error_part(err, sizeof err, m);
    if (m->type != FERRY__MSG_RESPONSE) {
        fn_part(what, sizeof what, m->fn);
        ferry__log_debug("msg", "received %s %llu from '%s' (rank %d)%s%s, %zu bytes",
                         ferry__trace_kind(m), (unsigned long long)m->id, peer_name(a, src), src,
                         what, m->no_reply ? ", no reply wanted" : "", bytes);
        return;
    }
    char fn[FERRY_MAX_NAME_LEN];
    long long start_ns = 0;
    int dst = -1;
    pthread_mutex_lock(&a->lock);
    const ferry__pending *p = ferry__pending_find(a, m->id);
    bool is_waited_for = p != NULL;
    if (is_waited_for) { /* copied: the entry may go as soon as the lock does */
        snprintf(fn, sizeof fn, "%s", p->fn);
        start_ns = p->start_ns;
        dst = p->dst;
    }
    pthread_mutex_unlock(&a->lock);
    char took[48] = "";
    if (!is_waited_for)
        snprintf(what, sizeof what, " for no waiting call (it timed out or failed)");
    else if (dst != src)
        snprintf(what, sizeof what, " for a call to rank %d, fn '%s'", dst, fn);
    else
        snprintf(what, sizeof what, " for fn '%s'", fn);
    if (is_waited_for)
        snprintf(took, sizeof took, ", call took %.3f ms", (ferry__now_ns() - start_ns) / 1e6);
    ferry__log_debug("msg", "received %s %llu from '%s' (rank %d)%s, %zu bytes%s%s",
                     ferry__trace_kind(m), (unsigned long long)m->id, peer_name(a, src), src,
                     what, bytes, took, err);
}
