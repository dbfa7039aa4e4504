/* Receiving messages (progress thread): decode the envelope, copy inline attachments into the
   tensors the decoder allocated, post bulk receives straight into tensor storage for the large
   ones, and once a message is whole dispatch it: responses complete their call's future;
   requests go to serve.c, which answers non-blocking ones right here and queues the rest on
   the pool. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "rpc/agent_impl.h"
#include "rpc/msg_tags.h"
#include "rpc/pending.h"
#include "rpc/serve.h"
#include "rpc/trace.h"

typedef struct {
    atomic_int parts;
    atomic_bool failed;
    _Atomic int fail_rc;   /* the first failed part's code */
    ferry__agent *agent;
    int src;
    ferry__msg m;
    ferry__att *atts;
    size_t n_atts;
} recv_ctx;

/* Global; guards itself (core/cache.h). */
static ferry__cache recv_cache = FERRY__CACHE_INIT("receive", sizeof(recv_ctx), NULL, NULL, 16);

static void recv_ctx_free(recv_ctx *r)
{
    ferry__msg_clear(&r->m);
    ferry__wire_atts_free(r->atts, r->n_atts);
    ferry__agent_release(r->agent);
    ferry__cache_put(&recv_cache, r);
}

/* Completes the call a response from `src` answers. Only the worker that was called may answer:
   a response from anyone else (a member answering another's call) is dropped and counted, and
   the call keeps waiting for its own. */
static void complete_response(ferry__agent *a, int src, ferry__msg *m)
{
    bool is_foreign = false;
    pthread_mutex_lock(&a->lock);
    ferry__pending *p = ferry__pending_take_from(a, m->id, src, &is_foreign);
    pthread_mutex_unlock(&a->lock);
    if (is_foreign) {
        atomic_fetch_add(&a->dropped_foreign_responses, 1);
        ferry__log_debug("rpc", "dropping a response to call %llu from rank %d, which was not "
                         "called", (unsigned long long)m->id, src);
        return;
    }
    if (!p) {
        /* Timed out (or failed) already: the caller was told; drop the late answer. */
        atomic_fetch_add(&a->dropped_late_responses, 1);
        ferry__log_debug("rpc", "dropping late response to call %llu", (unsigned long long)m->id);
        return;
    }
    atomic_fetch_sub(&a->client_active, 1);
    if (m->is_error) {
        ferry__future_set_error_remote(p->future, m->err_code ? m->err_code : FERRY_EREMOTE,
                                       m->err_remote, m->err_message ? m->err_message
                                                                     : "remote error");
    } else {
        ferry_value *v = m->value;
        m->value = NULL;
        ferry__future_complete_steal(p->future, v);
    }
    ferry_future_release(p->future);
    ferry__pending_free(p);
}

/* Turns the response in r into the error `rc`, `why` (borrowed), and completes its call. */
static void response_error(recv_ctx *r, ferry_status rc, const char *why)
{
    r->m.is_error = true;
    r->m.err_code = rc;
    ferry__free(r->m.err_message);
    r->m.err_message = ferry__strdup(why);
    ferry_value_release(r->m.value);
    r->m.value = NULL;
    complete_response(r->agent, r->src, &r->m);
}

/* The modules' on_receive hooks refused the message: a request is answered with their error, a
   response fails its call. */
static void refuse(recv_ctx *r, ferry_status rc)
{
    char why[512];
    snprintf(why, sizeof why, "%s", ferry_last_error());
    if (r->m.type != FERRY__MSG_RESPONSE) {
        ferry__serve_reply_error(r->agent, r->src, &r->m, rc, why);
        return;
    }
    response_error(r, rc, why);
}

/* Fails the call a response answers with `rc` and the error on the thread. */
static void fail_response(recv_ctx *r, ferry_status rc)
{
    char why[1024];
    snprintf(why, sizeof why, "the response from worker '%s' could not be received: %s",
             r->agent->workers[r->src].name, ferry_last_error());
    response_error(r, rc, why);
}

/* Pool: a response's side-channel tensors arrive before its future completes, within its
   call's own timeout (the agent's default, else 60 s, for a call that has none). */
static void response_sides_task(void *arg)
{
    recv_ctx *r = arg;
    ferry__agent *a = r->agent;
    pthread_mutex_lock(&a->lock);
    const ferry__pending *p = ferry__pending_find(a, r->m.id);
    double timeout_s = p ? p->timeout_s : 0;
    pthread_mutex_unlock(&a->lock);
    if (timeout_s <= 0)
        timeout_s = atomic_load(&a->default_timeout_s);
    ferry_status rc = ferry__wire_sides_recv(a, &r->m, timeout_s > 0 ? timeout_s : 60.0);
    if (rc != FERRY_OK)
        fail_response(r, rc);
    else
        complete_response(a, r->src, &r->m);
    recv_ctx_free(r);
}

/* The message is whole: hand it on. Takes ownership of r. */
static void dispatch(recv_ctx *r)
{
    if (!atomic_load(&r->failed) && r->n_atts) {
        /* Staged device tensors: into device memory before anyone uses the values. */
        ferry_status rc = ferry__wire_atts_land(r->atts, r->n_atts);
        if (rc != FERRY_OK) {
            ferry_set_error(rc, "worker '%s' could not place the tensors of %s from worker "
                            "'%s': %s", r->agent->name,
                            r->m.type == FERRY__MSG_RESPONSE ? "a response" : "a call",
                            r->agent->workers[r->src].name, ferry_last_error());
            refuse(r, rc);
            recv_ctx_free(r);
            return;
        }
    }
    if (!atomic_load(&r->failed) && r->agent->hooks.n_on_receive) {
        ferry_status rc = ferry__agent_hooks_receive(r->agent, r->src, &r->m);
        if (rc != FERRY_OK) {
            refuse(r, rc);
            recv_ctx_free(r);
            return;
        }
    }
    if (atomic_load(&r->failed)) {
        /* A part failed or did not arrive within the receive timeout: the message is dropped
           and its call fails (a response's here; a request's caller gets an error reply). */
        ferry_status rc = (ferry_status)atomic_load(&r->fail_rc);
        const char *why = rc == FERRY_ETIMEDOUT
                              ? "its tensor data did not all arrive within the receive timeout"
                              : "receiving its tensor data failed";
        if (r->m.type == FERRY__MSG_RESPONSE) {
            r->m.is_error = true;
            r->m.err_code = rc;
            ferry__free(r->m.err_message);
            r->m.err_message = ferry__strdup(why);
            ferry_value_release(r->m.value);
            r->m.value = NULL;
            complete_response(r->agent, r->src, &r->m);
        } else if (!r->m.no_reply && rc == FERRY_ETIMEDOUT) {
            /* (after a transport failure the caller is gone or learns it from its own side) */
            ferry__serve_reply_error(r->agent, r->src, &r->m, rc, why);
        }
        recv_ctx_free(r);
        return;
    }
    if (r->m.type == FERRY__MSG_RESPONSE && r->m.n_sides) {
        /* Never here: a channel's recv may wait for bytes this thread would have to read. */
        ferry_status rc = ferry__agent_submit(r->agent, response_sides_task, r);
        if (rc == FERRY_OK)
            return;
        fail_response(r, rc);
        recv_ctx_free(r);
        return;
    }
    if (r->m.type == FERRY__MSG_RESPONSE) {
        complete_response(r->agent, r->src, &r->m);
        recv_ctx_free(r);
        return;
    }
    ferry__msg *m = ferry__msg_new();
    if (!m) {
        ferry__log_error("rpc", "out of memory dispatching a request from rank %d", r->src);
        recv_ctx_free(r);
        return;
    }
    *m = r->m;
    memset(&r->m, 0, sizeof r->m);
    ferry__serve_request(r->agent, r->src, m);
    recv_ctx_free(r);
}

static void bulk_done(void *arg, ferry_status rc)
{
    recv_ctx *r = arg;
    int ok = FERRY_OK;
    if (rc != FERRY_OK && atomic_compare_exchange_strong(&r->fail_rc, &ok, (int)rc))
        atomic_store(&r->failed, true);
    if (atomic_fetch_sub(&r->parts, 1) == 1)
        dispatch(r);
}

static ferry_status fill_inline(recv_ctx *r, const uint8_t *p, size_t left)
{
    for (size_t i = 0; i < r->n_atts; i++) {
        ferry__att *a = &r->atts[i];
        if (!a->is_inline || a->len == 0)
            continue;
        if (a->len > left)
            return ferry__fail(FERRY_EPROTO, "inline attachment %zu is cut short", i);
        memcpy(a->data, p, a->len);
        p += a->len;
        left -= a->len;
    }
    if (left != 0)
        return ferry__fail(FERRY_EPROTO, "%zu stray bytes after the inline attachments", left);
    return FERRY_OK;
}

/* A request that cannot be read is still answered when its id is known, so its caller learns
   why now instead of at its timeout. A kind this build does not know (m->type is
   FERRY__MSG_INVALID then) is a request too: every response travels as one of the two response
   kinds. */
static void reject(ferry__agent *a, int src, ferry__msg *m, ferry_status rc, const char *why)
{
    ferry__log_warn("rpc", "dropping a message from rank %d: %s", src, why);
    /* Out of (device) memory or a failing device is this worker's state, not a bad message. */
    bool local = rc == FERRY_ENOMEM || rc == FERRY_EDEVICE;
    char text[1024] = "";
    if (local && m->type != FERRY__MSG_RESPONSE)
        snprintf(text, sizeof text, "worker '%s' could not receive the call: %s", a->name, why);
    else if (local)
        snprintf(text, sizeof text, "the response from worker '%s' could not be received: %s",
                 a->workers[src].name, why);
    if (m->id && m->type != FERRY__MSG_RESPONSE)
        ferry__serve_reply_error(a, src, m,
                                 local ? rc
                                 : m->type == FERRY__MSG_INVALID ? FERRY_ENOTSUP : FERRY_EPROTO,
                                 local ? text : why);
    if (m->id && m->type == FERRY__MSG_RESPONSE && local) {
        ferry__msg fail = {.type = FERRY__MSG_RESPONSE, .id = m->id, .src = src,
                           .is_error = true, .err_code = rc, .err_message = ferry__strdup(text)};
        complete_response(a, src, &fail);
        ferry__msg_clear(&fail);
    }
}

void ferry__agent_on_message(void *ctx, int src, const void *buf, size_t len)
{
    ferry__agent *a = ctx;
    const uint8_t *p = buf;
    if (len < 4) {
        ferry__log_warn("rpc", "dropping a %zu-byte message from rank %d", len, src);
        return;
    }
    size_t hlen = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
    if (hlen > len - 4) {
        ferry__log_warn("rpc", "dropping a message from rank %d: header length %zu > %zu", src,
                        hlen, len - 4);
        return;
    }
    recv_ctx *r = ferry__cache_get(&recv_cache); /* decode fills m and atts; the rest below */
    if (!r) {
        ferry__log_error("rpc", "out of memory receiving from rank %d", src);
        return;
    }
    ferry_status rc = ferry__wire_decode(p + 4, hlen, &a->codec, &r->m, &r->atts, &r->n_atts);
    if (rc == FERRY_OK && r->m.src != src)
        rc = ferry__fail(FERRY_EPROTO, "message claims to come from rank %d", r->m.src);
    if (rc == FERRY_OK)
        rc = fill_inline(r, p + 4 + hlen, len - 4 - hlen);
    if (rc != FERRY_OK) {
        reject(a, src, &r->m, rc, ferry_last_error());
        ferry__msg_clear(&r->m);
        ferry__wire_atts_free(r->atts, r->n_atts);
        ferry__cache_put(&recv_cache, r);
        return;
    }
    if (ferry__log_debug_on())
        ferry__trace_received(a, src, &r->m, len, r->atts, r->n_atts);
    ferry__ref_inc(&a->ref);
    r->agent = a;
    r->src = src;
    atomic_init(&r->parts, 1);
    atomic_init(&r->failed, false);
    atomic_init(&r->fail_rc, FERRY_OK);
    bool is_response = r->m.type == FERRY__MSG_RESPONSE;
    for (size_t i = 0; i < r->n_atts; i++)
        if (!r->atts[i].is_inline && r->atts[i].len > 0)
            atomic_fetch_add(&r->parts, 1);
    for (size_t i = 0; i < r->n_atts; i++) {
        ferry__att *att = &r->atts[i];
        if (att->is_inline || att->len == 0)
            continue;
        uint64_t tag = ferry__bulk_tag(is_response, r->m.id, i);
        ferry_status brc = ferry__net_recv_bulk(a->net, src, tag, att->data, att->len,
                                                bulk_done, r);
        if (brc != FERRY_OK) {
            int ok = FERRY_OK;
            atomic_compare_exchange_strong(&r->fail_rc, &ok, (int)brc);
            atomic_store(&r->failed, true);
            atomic_fetch_sub(&r->parts, 1);
        }
    }
    bulk_done(r, FERRY_OK);
}
