/* Sending messages: encode, gather the envelope and inline attachments into one fabric message,
   and send each large attachment as a tagged bulk transfer straight from its tensor's storage.
   The envelope goes first: the receiver can post receives for the bulk parts only once it has
   decoded it, so parts sent ahead of it (thousands of them, a model's parameters) would fill
   the receiver's unexpected-message resources with nothing able to match them, and jam the
   channel for good. The fabric layer keeps one peer's operations in order, behind a window, so
   the parts follow the envelope and are matched as they come. The encoded form (and the tensor
   references it holds) lives until every piece has completed. */
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/error.h"
#include "core/log.h"
#include "rpc/agent_impl.h"
#include "rpc/msg_tags.h"
#include "rpc/trace.h"

typedef struct {
    atomic_int parts; /* fabric operations still in flight */
    ferry__agent *agent;
    ferry__msg_type type;
    uint64_t id;
    int dst;
    bool is_cached; /* from send_cache (room for CACHED_IOV iovecs), else malloc */
    ferry__wire_out out;
    uint8_t len_prefix[4];
    size_t n_iov;
    struct iovec iov[];
} send_ctx;

/* A context with room for the prefix, the envelope and this many inline attachments comes from
   a cache (global; guards itself, core/cache.h); more come from malloc. */
#define CACHED_INLINE 4
static ferry__cache send_cache = FERRY__CACHE_INIT(
    "send", sizeof(send_ctx) + (2 + CACHED_INLINE) * sizeof(struct iovec), NULL, NULL, 16);

static void send_ctx_put(send_ctx *s)
{
    if (atomic_fetch_sub(&s->parts, 1) == 1) {
        ferry__wire_out_free(&s->out);
        ferry__agent_release(s->agent);
        if (s->is_cached)
            ferry__cache_put(&send_cache, s);
        else
            ferry__free(s);
    }
}

/* A failed part needs nothing here: the fabric layer reports a peer it cannot reach to the
   agent itself (its on_peer_error handler), once. */
static void part_done(void *arg, ferry_status rc)
{
    send_ctx_put(arg);
}

static send_ctx *send_ctx_new(ferry__agent *agent, int dst, const ferry__msg *m,
                              ferry__wire_out *out)
{
    size_t n_inline = 0;
    for (size_t i = 0; i < out->n_atts; i++)
        n_inline += out->atts[i].is_inline && out->atts[i].len > 0;
    bool is_cached = n_inline <= CACHED_INLINE;
    send_ctx *s = is_cached ? ferry__cache_get(&send_cache)
                            : ferry__malloc(sizeof *s + (2 + n_inline) * sizeof(struct iovec));
    if (!s)
        return NULL;
    s->is_cached = is_cached;
    atomic_init(&s->parts, 1);
    ferry__ref_inc(&agent->ref);
    s->agent = agent;
    s->type = m->type;
    s->id = m->id;
    s->dst = dst;
    s->out = *out;
    uint32_t hl = (uint32_t)out->header_len;
    for (int i = 0; i < 4; i++)
        s->len_prefix[i] = (uint8_t)(hl >> (8 * i));
    s->iov[0] = (struct iovec){s->len_prefix, 4};
    s->iov[1] = (struct iovec){out->header, out->header_len};
    s->n_iov = 2;
    for (size_t i = 0; i < out->n_atts; i++)
        if (out->atts[i].is_inline && out->atts[i].len > 0)
            s->iov[s->n_iov++] = (struct iovec){out->atts[i].data, out->atts[i].len};
    return s;
}

static ferry_status send_parts(ferry__agent *agent, int dst, const ferry__msg *m, send_ctx *s);

/* The whole message: length prefix, envelope, inline attachments and the tensors sent apart. */
static size_t msg_bytes(const ferry__wire_out *out)
{
    size_t n = 4 + out->header_len + out->inline_bytes;
    for (size_t i = 0; i < out->n_atts; i++)
        n += out->atts[i].is_inline ? 0 : out->atts[i].len;
    return n;
}

ferry_status ferry__agent_send_msg(ferry__agent *agent, int dst, ferry__msg *m,
                                   const ferry__msg *request)
{
    ferry__wire_out out;
    ferry__wire_codec codec = agent->codec;
    m->src = agent->rank;
    m->dst = dst;
    if (agent->hooks.n_on_send) {
        ferry_status hrc = ferry__agent_hooks_send(agent, dst, m, request);
        if (hrc != FERRY_OK)
            return hrc;
    }
    /* Where one message above the provider's copy size takes a slower protocol (shm), a small
       tensor goes best as its own bulk message: header and tensor then both go by copy. Half
       the copy size leaves room for the header of the message it would have joined. net_lock
       is held (shared) from here to the posts, once; what fails is freed after it goes, since
       releasing a tensor may run its owner's deleter. */
    pthread_rwlock_rdlock(&agent->net_lock);
    size_t copy_max = agent->net ? ferry__net_peer_copy_max(agent->net, dst) : 0;
    size_t queue_max = ferry__net_queue_max(agent->net);
    if (copy_max && copy_max / 2 < codec.limits.inline_threshold)
        codec.limits.inline_threshold = copy_max / 2;
    ferry_status rc = ferry__wire_encode(m, &codec, &out);
    if (rc != FERRY_OK) {
        pthread_rwlock_unlock(&agent->net_lock);
        if (rc == FERRY_EINVAL)
            return ferry_set_error(rc, "message to worker '%s': %s", agent->workers[dst].name,
                                   ferry_last_error());
        return rc;
    }
    size_t n_bulk = 0;
    for (size_t i = 0; i < out.n_atts; i++)
        n_bulk += !out.atts[i].is_inline && out.atts[i].len > 0;
    send_ctx *s = NULL;
    if (out.header_len > UINT32_MAX || out.n_atts > FERRY__TAG_MAX_ATTS)
        rc = ferry__fail(FERRY_EINVAL, "message to %s is too large", agent->workers[dst].name);
    else if (n_bulk >= queue_max)
        rc = ferry__fail(FERRY_EINVAL, "message to %s has %zu tensors sent apart; at most %zu "
                         "operations may wait for one peer (FERRY_NET_QUEUE_MAX)",
                         agent->workers[dst].name, n_bulk, queue_max);
    else if (!(s = send_ctx_new(agent, dst, m, &out)))
        rc = ferry__fail(FERRY_ENOMEM, "out of memory sending to %s", agent->workers[dst].name);
    if (rc != FERRY_OK) {
        pthread_rwlock_unlock(&agent->net_lock);
        ferry__wire_out_free(&out);
        return rc;
    }
    if (ferry__log_debug_on()) /* before the parts go: their completion may free `out` */
        ferry__trace_sent(agent, dst, m, request, msg_bytes(&out));
    /* Tensors on side channels go once the message is on the fabric (never ahead of it: the
       receiver learns their numbers from it), outside net_lock, since a channel may send
       messages of its own; a message that did not go cancels their numbers. */
    ferry__wire_side *sides = s->out.sides;
    size_t n_sides = s->out.n_sides;
    s->out.sides = NULL;
    s->out.n_sides = 0;
    rc = send_parts(agent, dst, m, s);
    pthread_rwlock_unlock(&agent->net_lock);
    if (rc == FERRY_OK)
        ferry__wire_sides_send(sides, n_sides);
    else
        ferry__wire_sides_free(sides, n_sides);
    if (rc != FERRY_OK)
        ferry__log_debug("msg", "sending %s %llu to '%s' (rank %d) failed: %s",
                         ferry__trace_kind(m), (unsigned long long)m->id,
                         agent->workers[dst].name, dst, ferry_last_error());
    return rc;
}

/* Starts every fabric operation of one message; called with net_lock held shared. */
static ferry_status send_parts(ferry__agent *agent, int dst, const ferry__msg *m, send_ctx *s)
{
    ferry__wire_out out = s->out;
    ferry_status rc;
    if (!agent->net) {
        send_ctx_put(s);
        return ferry__fail(FERRY_ESHUTDOWN, "RPC is shutting down on worker '%s'", agent->name);
    }
    bool is_response = m->type == FERRY__MSG_RESPONSE;
    /* Count every part before starting any, so an early completion cannot free the context. */
    size_t n_bulk = 0;
    for (size_t i = 0; i < out.n_atts; i++)
        n_bulk += !out.atts[i].is_inline && out.atts[i].len > 0;
    atomic_fetch_add(&s->parts, (int)n_bulk);
    rc = ferry__net_send(agent->net, dst, s->iov, s->n_iov, part_done, s);
    if (rc != FERRY_OK) {
        for (size_t j = 0; j <= n_bulk; j++)
            send_ctx_put(s);
        return rc;
    }
    /* Once the last part is handed over, s (and out.atts) may be freed by its completion:
       stop there, and never read the attachments again after a failure. */
    size_t started = 0;
    for (size_t i = 0; started < n_bulk; i++) {
        ferry__att *a = &out.atts[i];
        if (a->is_inline || a->len == 0)
            continue;
        uint64_t tag = ferry__bulk_tag(is_response, m->id, i);
        rc = ferry__net_send_bulk(agent->net, dst, tag, a->data, a->len, part_done, s);
        if (rc != FERRY_OK) {
            /* The parts not started will never complete: drop their counts. The receiver
               gives up on them after its receive timeout; the caller learns of it now. */
            for (size_t j = started; j < n_bulk; j++)
                send_ctx_put(s);
            return rc;
        }
        started++;
    }
    return FERRY_OK;
}
