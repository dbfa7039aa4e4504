/* Device tensors on side channels, as the codec sees them (docs/cuda.md, "Transfer paths"):
   the encoder asks the agent's channel pick for each CUDA tensor and, when a channel carries
   it, writes the channel, a sequence number and the byte count into its descriptor instead of
   an attachment; the sender sends the bytes once the message is on the fabric, or cancels the
   numbers of a message that never went. The decoder gives each such tensor fresh storage on
   its device and leaves a pending recv on the message, made by whoever runs it next (a pool
   thread), never by the thread that reads the fabric: a channel's recv may wait for bytes that
   come through it. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/pool.h"
#include "rpc/device_channel.h"
#include "rpc/wire_internal.h"

static ferry__wire_side *side_push(ferry__wire_side **list, size_t *n, size_t *cap)
{
    if (*n == *cap) {
        size_t bigger = *cap ? *cap * 2 : 4;
        ferry__wire_side *grown = ferry__realloc(*list, bigger * sizeof *grown);
        if (!grown)
            return NULL;
        *list = grown;
        *cap = bigger;
    }
    ferry__wire_side *s = &(*list)[(*n)++];
    memset(s, 0, sizeof *s);
    return s;
}

/* ---- sender ---- */

ferry_status ferry__wire_side_out(ferry__wire_enc *enc, const ferry_tensor *t, ferry_device to,
                                  void *data, size_t len, Ferry__Wire__TensorDesc *td,
                                  bool *taken)
{
    *taken = false;
    ferry__agent *agent = enc->device->agent;
    const ferry__device_channel *c = NULL;
    ferry_status rc = ferry__device_channel_choose(agent, enc->dst, t->device, to, &c);
    if (rc != FERRY_OK || !c || len == 0) /* nothing to move: the empty attachment */
        return rc;
    ferry__wire_side *s = side_push(&enc->sides, &enc->n_sides, &enc->cap_sides);
    if (!s)
        return ferry__fail(FERRY_ENOMEM, "out of memory encoding a side-channel tensor");
    *s = (ferry__wire_side){.channel = c, .agent = agent, .peer = enc->dst,
                            .seq = c->next_seq(agent, enc->dst),
                            .tensor = ferry_tensor_retain((ferry_tensor *)t), .data = data,
                            .nbytes = len, .device = t->device.index};
    td->channel = c->id;
    td->seq = s->seq;
    td->nbytes = len;
    *taken = true;
    return FERRY_OK;
}

void ferry__wire_sides_move_out(ferry__wire_enc *enc, ferry__wire_out *out)
{
    out->sides = enc->sides;
    out->n_sides = enc->n_sides;
    enc->sides = NULL;
    enc->n_sides = enc->cap_sides = 0;
}

void ferry__wire_sides_send(ferry__wire_side *sides, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ferry__wire_side *s = &sides[i];
        /* The channel retains the tensor for as long as it reads it. */
        ferry_status rc = s->channel->send(s->agent, s->peer, s->seq, s->tensor, s->data,
                                           s->nbytes);
        if (rc != FERRY_OK)
            ferry__log_warn("rpc", "sending %zu bytes of cuda:%d to worker '%s' on the %s "
                            "channel failed: %s", s->nbytes, s->device,
                            ferry__agent_worker_name(s->agent, s->peer), s->channel->name,
                            ferry_last_error());
        ferry_tensor_release(s->tensor);
        s->tensor = NULL;
        s->channel = NULL; /* sent: nothing to cancel */
    }
    ferry__free(sides);
}

void ferry__wire_sides_free(ferry__wire_side *sides, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ferry__wire_side *s = &sides[i];
        if (s->agent && s->channel) /* a sender's number whose message never went */
            s->channel->cancel(s->agent, s->peer, s->seq);
        ferry_tensor_release(s->tensor);
        ferry__storage_release(s->storage);
        ferry__free(s->failure);
    }
    ferry__free(sides);
}

/* ---- receiver ---- */

/* The bytes the encoder sends for this geometry: the span from the lowest element to the
   highest, with the offset pointing at the first element inside it. */
static bool side_span(const Ferry__Wire__TensorDesc *td, int64_t numel, uint64_t *bytes)
{
    if (numel == 0) {
        *bytes = 0;
        return true;
    }
    int64_t lo = 0, hi = numel - 1, reach, span;
    if (td->n_strides) {
        hi = 0;
        for (size_t d = 0; d < td->n_sizes; d++) {
            if (__builtin_mul_overflow(td->sizes[d] - 1, td->strides[d], &reach))
                return false;
            if (reach < 0 ? __builtin_add_overflow(lo, reach, &lo)
                          : __builtin_add_overflow(hi, reach, &hi))
                return false;
        }
    }
    if (td->offset + lo < 0 || __builtin_add_overflow(td->offset, hi, &span) ||
        __builtin_add_overflow(span, 1, &span) ||
        __builtin_mul_overflow(span, (int64_t)ferry_dtype_size(td->dtype), &span))
        return false;
    *bytes = (uint64_t)span;
    return true;
}

ferry_status ferry__wire_side_in(ferry__wire_dec *dec, size_t k,
                                 const Ferry__Wire__TensorDesc *td, ferry_device device,
                                 int64_t numel, ferry_storage **storage)
{
    *storage = NULL;
    const ferry__device_channel *c = ferry__device_channel_by_id(td->channel);
    if (!c)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: side channel %u is not known here", k,
                           td->channel);
    if (device.type != FERRY_CUDA)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: a CPU tensor on the %s channel", k,
                           c->name);
    uint64_t need = 0;
    if (!side_span(td, numel, &need) || need != td->nbytes || need == 0 ||
        need > dec->limits->max_message_bytes)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: %llu bytes on the %s channel do not match "
                           "its geometry (%llu bytes)", k, (unsigned long long)td->nbytes,
                           c->name, (unsigned long long)need);
    ferry__wire_side *s = side_push(&dec->sides, &dec->n_sides, &dec->cap_sides);
    if (!s)
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding a side-channel tensor");
    *s = (ferry__wire_side){.channel = c, .peer = dec->src, .seq = td->seq,
                            .nbytes = (size_t)need, .device = device.index};
    ferry_storage *st = ferry__storage_new((size_t)need, device);
    if (!st && ferry_last_status() == FERRY_ENOMEM) {
        /* As a staged tensor: the message is read whole and fails when its bytes are due. */
        s->failure_rc = FERRY_ENOMEM;
        s->failure = ferry__strdup(ferry_last_error());
        st = s->failure ? ferry__storage_new((size_t)need, FERRY_DEVICE_CPU) : NULL;
        if (!st)
            return ferry__fail(FERRY_ENOMEM, "tensor %zu: no memory for %llu bytes", k,
                               (unsigned long long)need);
    } else if (!st) {
        return ferry_last_status(); /* the device layer named the device and the cause */
    }
    s->storage = st;
    s->data = st->data;
    ferry__storage_retain(st);
    *storage = st;
    return FERRY_OK;
}

void ferry__wire_sides_move_msg(ferry__wire_dec *dec, ferry__msg *m)
{
    m->sides = dec->sides;
    m->n_sides = dec->n_sides;
    dec->sides = NULL;
    dec->n_sides = dec->cap_sides = 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

ferry_status ferry__wire_sides_recv(ferry__agent *agent, ferry__msg *m, double timeout_s)
{
    ferry_status first = FERRY_OK;
    char why[512] = "";
    double until = timeout_s > 0 ? now_s() + timeout_s : 0;
    for (size_t i = 0; i < m->n_sides; i++) {
        ferry__wire_side *s = &m->sides[i];
        ferry_status rc = s->failure_rc;
        if (rc != FERRY_OK) {
            ferry_set_error(rc, "%s", s->failure);
        } else {
            /* Late ones still get a moment: 0 would mean no limit. */
            double left = until > 0 ? until - now_s() : 0;
            if (until > 0 && left < 1e-3)
                left = 1e-3;
            ferry__pool_blocking_begin();
            rc = s->channel->recv(agent, m->src, s->seq, s->data, s->nbytes, s->device, left);
            ferry__pool_blocking_end();
        }
        if (rc != FERRY_OK && first == FERRY_OK) {
            first = rc;
            snprintf(why, sizeof why, "%s", ferry_last_error());
        }
    }
    ferry__wire_sides_free(m->sides, m->n_sides);
    m->sides = NULL;
    m->n_sides = 0;
    return first == FERRY_OK ? FERRY_OK : ferry_set_error(first, "%s", why);
}
