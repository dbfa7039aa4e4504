/* Messages over the fabric layer's engine (net_progress.c): the send entry points, which pick
   eager (one untagged send) or large (an announcement plus one tagged part per iov_limit
   iovecs, see net_internal.h) by size; the receiving side, which checks who an untagged message
   is from, hands eager ones up whole and turns an announcement into posted part receives; and
   bulk transfers matched by (peer, tag). Every untagged message starts with the frame header
   (the sender's cookie for us) and every tag is keyed (net_internal.h, net_auth.c): what fails
   the checks is dropped and counted before its bytes are read, and marks nobody dead.
   Everything here builds ops and submits them; the engine posts, completes and calls back. */
#include "transport/net.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/net_internal.h"

static const char *const MOD = "net";

/* A large-message announcement: u64 total, u64 sequence, u64 part count, then u64 per part. */
#define CTRL_HEADER 24

/* ---- receiving ---- */

void ferry__net_deliver(ferry__net *net, int src, const void *buf, size_t len)
{
    atomic_fetch_add(&net->messages_in, 1);
    atomic_fetch_add(&net->bytes_in, len);
    if (net->h.on_message)
        net->h.on_message(net->h.ctx, src, buf, len);
}

/* The sender of an untagged message, or -1 (dropped and counted): the rank it claims must be
   a member, be the source address when the provider reports one, and the frame must carry that
   rank's cookie for us (compared in constant time). Nothing past the header is read first. */
int ferry__net_check_sender(ferry__net *net, ferry__net_ep *e, const struct fi_cq_tagged_entry *ent,
                            fi_addr_t src, const unsigned char *frame)
{
    int claimed = FERRY__NET_DATA_RANK(ent->data);
    bool is_member = (ent->flags & FI_REMOTE_CQ_DATA) && claimed < net->world_size;
    if (is_member && e->has_source)
        is_member = src != FI_ADDR_NOTAVAIL && src < (fi_addr_t)net->world_size &&
                    e->addr_rank[src] == claimed;
    if (!is_member) {
        atomic_fetch_add(&net->dropped, 1);
        ferry__log_debug(MOD, "dropped a %zu-byte message from an unknown source on %s",
                         ent->len, e->prov_name);
        return -1;
    }
    if (ent->len < FERRY__NET_FRAME_BYTES ||
        !ferry__net_cookie_ok(frame, net->peers[claimed].cookie_in)) {
        atomic_fetch_add(&net->dropped_auth, 1);
        ferry__log_debug(MOD, "dropped a %zu-byte message claiming to be from rank %d on %s: "
                         "not authenticated", ent->len, claimed, e->prov_name);
        return -1;
    }
    return claimed;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

bool ferry__net_parse_announcement(const unsigned char *c, size_t len, size_t max_message_bytes,
                                   ferry__net_announcement *out)
{
    uint64_t total = len >= CTRL_HEADER ? get_u64(c) : 0, seq = len >= 16 ? get_u64(c + 8) : 0;
    uint64_t n = len >= CTRL_HEADER ? get_u64(c + 16) : 0, sum = 0;
    bool ok = n >= 1 && n <= FERRY__NET_MAX_PARTS && len == CTRL_HEADER + 8 * n &&
              total > FERRY__NET_EAGER_MAX - FERRY__NET_FRAME_BYTES;
    for (uint64_t i = 0; ok && i < n; i++) {
        uint64_t part = get_u64(c + CTRL_HEADER + 8 * i);
        ok = part <= total - sum;
        out->parts[i] = part;
        sum += part;
    }
    out->too_large = ok && sum == total && total > max_message_bytes;
    if (!ok || sum != total || total > max_message_bytes)
        return false;
    out->total = total;
    out->seq = seq;
    out->n_parts = (size_t)n;
    return true;
}

/* An announcement arrived: allocate the whole message and post a tagged receive per part. */
static void start_large_recv(ferry__net *net, ferry__net_ep *e, int src, const unsigned char *c,
                             size_t len)
{
    ferry__net_announcement an;
    /* A refused announcement costs only itself: its sender's call fails by its own deadline,
       and nobody is marked dead for it. */
    if (!ferry__net_parse_announcement(c, len, net->max_message_bytes, &an)) {
        atomic_fetch_add(&net->dropped_refused, 1);
        ferry__log_warn(MOD, "large-message announcement from rank %d dropped: %s", src,
                        an.too_large ? "larger than max_message_bytes" : "malformed");
        return;
    }
    uint64_t total = an.total, seq = an.seq, n = an.n_parts;
    ferry__net_op *parent = ferry__net_op_new(FERRY__OP_AGGREGATE, e, src);
    void *mem = parent && total <= SIZE_MAX ? ferry__malloc((size_t)total) : NULL;
    if (!mem) {
        ferry__net_op_free(parent);
        atomic_fetch_add(&net->dropped_refused, 1);
        ferry__log_warn(MOD, "no memory for a %llu-byte message from rank %d: dropped",
                        (unsigned long long)total, src);
        return;
    }
    parent->owned = mem;
    parent->len = (size_t)total;
    parent->is_recv = true;
    atomic_store(&parent->remaining, (size_t)n);
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t part = (size_t)an.parts[i];
        ferry__net_op *op = ferry__net_op_new(FERRY__OP_TRECV, e, src);
        if (op) {
            op->parent = parent;
            op->addr = e->rank_addr[src];
            op->tag = ferry__net_keyed_tag(net->peers[src].tag_in, FERRY__NET_TAG_INTERNAL |
                                                                       seq << FERRY__NET_PART_BITS | i);
            op->iov_inline[0] = (struct iovec){(char *)mem + off, part};
            op->n_iov = 1;
            op->len = part;
        }
        off += part;
        if (!op || ferry__net_submit(net, op, true) != FERRY_OK) {
            ferry__net_op_free(op);
            ferry__net_part_done(net, parent, FERRY_ETRANSPORT,
                                 "cannot post a large-message receive");
        }
    }
}

void ferry__net_on_receive(ferry__net *net, ferry__net_ep *e, ferry__net_op *op,
                           const struct fi_cq_tagged_entry *ent, fi_addr_t src)
{
    const unsigned char *frame = op->owned;
    int rank = ferry__net_check_sender(net, e, ent, src, frame);
    const unsigned char *body = frame + FERRY__NET_FRAME_BYTES;
    size_t len = rank >= 0 ? ent->len - FERRY__NET_FRAME_BYTES : 0;
    if (rank >= 0 && FERRY__NET_DATA_KIND(ent->data) == FERRY__NET_KIND_LARGE)
        start_large_recv(net, e, rank, body, len);
    else if (rank >= 0)
        ferry__net_deliver(net, rank, body, len);
    if (ferry__net_submit(net, op, true) != FERRY_OK) {
        ferry__log_error(MOD, "cannot repost a receive buffer: %s", ferry_last_error());
        ferry__net_op_free(op);
    }
}

/* ---- sending and bulk transfers ---- */

static ferry_status check_peer(ferry__net *net, int rank, const char *what)
{
    if (!net || !net->peers)
        return ferry__fail(FERRY_EINVAL, "%s: peers are not set", what);
    if (rank < 0 || rank >= net->world_size)
        return ferry__fail(FERRY_EINVAL, "%s: rank %d is not in [0, %d)", what, rank,
                           net->world_size);
    return FERRY_OK;
}

/* Copies `head` and then iov into one new buffer (for more pieces than the provider takes at
   once). */
static void *flatten(const void *head, size_t head_len, const struct iovec *iov, size_t n_iov,
                     size_t total)
{
    char *buf = ferry__malloc(head_len + total ? head_len + total : 1), *p = buf;
    if (buf && head_len) {
        memcpy(p, head, head_len);
        p += head_len;
    }
    for (size_t i = 0; buf && i < n_iov; i++) {
        if (iov[i].iov_len)
            memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    return buf;
}

/* The frame header (our cookie for dst) goes first; a small first piece (rpc's length
   prefix) is copied next to it, so the header costs no iovec of its own. */
static ferry_status send_eager(ferry__net *net, int dst, const struct iovec *iov, size_t n_iov,
                               size_t total, ferry__net_done done, void *arg)
{
    ferry__net_peer *p = &net->peers[dst];
    ferry__net_op *op = ferry__net_op_new(FERRY__OP_SEND, p->ep, dst);
    if (!op)
        return ferry__fail(FERRY_ENOMEM, "no memory for a send");
    op->addr = p->addr;
    op->data = FERRY__NET_DATA(FERRY__NET_KIND_EAGER, net->self_rank);
    op->len = total;
    op->done = done;
    op->arg = arg;
    memcpy(op->frame, p->cookie_out, FERRY__NET_FRAME_BYTES);
    size_t head = FERRY__NET_FRAME_BYTES, skip = 0;
    if (n_iov > 0 && iov[0].iov_len <= FERRY__NET_FRAME_MERGE) {
        if (iov[0].iov_len)
            memcpy(op->frame + head, iov[0].iov_base, iov[0].iov_len);
        head += iov[0].iov_len;
        skip = 1;
    }
    if (1 + n_iov - skip <= p->ep->iov_limit) {
        op->iov_inline[0] = (struct iovec){op->frame, head};
        if (n_iov > skip)
            memcpy(op->iov_inline + 1, iov + skip, (n_iov - skip) * sizeof *iov);
        op->n_iov = 1 + n_iov - skip;
    } else {
        size_t rest = total - (head - FERRY__NET_FRAME_BYTES);
        op->owned = flatten(op->frame, head, iov + skip, n_iov - skip, rest);
        if (!op->owned) {
            ferry__net_op_free(op);
            return ferry__fail(FERRY_ENOMEM, "no memory for a send");
        }
        op->iov_inline[0] = (struct iovec){op->owned, head + rest};
        op->n_iov = 1;
    }
    ferry_status rc = ferry__net_submit(net, op, false);
    if (rc != FERRY_OK)
        ferry__net_op_free(op);
    return rc;
}

/* A large message as parts of at most iov_limit iovecs (one flattened part past MAX_PARTS). */
static bool build_parts(ferry__net *net, int dst, const struct iovec *iov, size_t n_iov,
                        size_t total, uint64_t seq, ferry__net_op **ctrl_out,
                        ferry__net_op **parts, size_t *n)
{
    ferry__net_peer *p = &net->peers[dst];
    size_t lim = p->ep->iov_limit;
    bool is_flat = (n_iov + lim - 1) / lim > FERRY__NET_MAX_PARTS;
    *n = is_flat ? 1 : (n_iov + lim - 1) / lim;
    ferry__net_op *ctrl = *ctrl_out = ferry__net_op_new(FERRY__OP_SEND, p->ep, dst);
    unsigned char *c = ctrl ? ferry__malloc(FERRY__NET_FRAME_BYTES + CTRL_HEADER + 8 * *n) : NULL;
    if (!c)
        return false;
    ctrl->owned = c;
    ctrl->iov_inline[0] = (struct iovec){c, FERRY__NET_FRAME_BYTES + CTRL_HEADER + 8 * *n};
    memcpy(c, p->cookie_out, FERRY__NET_FRAME_BYTES);
    c += FERRY__NET_FRAME_BYTES;
    ctrl->n_iov = 1;
    ctrl->addr = p->addr;
    ctrl->data = FERRY__NET_DATA(FERRY__NET_KIND_LARGE, net->self_rank);
    put_u64(c, total);
    put_u64(c + 8, seq);
    put_u64(c + 16, *n);
    for (size_t i = 0; i < *n; i++) {
        ferry__net_op *op = parts[i] = ferry__net_op_new(FERRY__OP_TSEND, p->ep, dst);
        if (!op)
            return false;
        op->addr = p->addr;
        op->tag = ferry__net_keyed_tag(p->tag_out,
                                       FERRY__NET_TAG_INTERNAL | seq << FERRY__NET_PART_BITS | i);
        op->n_iov = is_flat ? 1 : (n_iov - i * lim < lim ? n_iov - i * lim : lim);
        if (is_flat && !(op->owned = flatten(NULL, 0, iov, n_iov, total)))
            return false;
        if (is_flat)
            op->iov_inline[0] = (struct iovec){op->owned, total};
        else
            memcpy(op->iov_inline, iov + i * lim, op->n_iov * sizeof *iov);
        for (size_t k = 0; k < op->n_iov; k++)
            op->len += op->iov_inline[k].iov_len;
        put_u64(c + CTRL_HEADER + 8 * i, op->len);
    }
    return true;
}

static ferry_status send_large(ferry__net *net, int dst, const struct iovec *iov, size_t n_iov,
                               size_t total, ferry__net_done done, void *arg)
{
    ferry__net_op *parts[FERRY__NET_MAX_PARTS] = {0}, *ctrl = NULL;
    size_t n = 0;
    uint64_t seq = atomic_fetch_add(&net->seq, 1) & (UINT64_MAX >> (1 + FERRY__NET_PART_BITS));
    ferry__net_op *parent = ferry__net_op_new(FERRY__OP_AGGREGATE, net->peers[dst].ep, dst);
    bool ok = build_parts(net, dst, iov, n_iov, total, seq, &ctrl, parts, &n);
    if (!ok || !parent) {
        ferry__net_op_free(parent);
        ferry__net_op_free(ctrl);
        for (size_t i = 0; i < n; i++)
            ferry__net_op_free(parts[i]);
        return ferry__fail(FERRY_ENOMEM, "no memory for a %zu-byte send", total);
    }
    parent->done = done;
    parent->arg = arg;
    parent->len = total;
    atomic_store(&parent->remaining, n + 1);
    ctrl->parent = parent;
    for (size_t i = 0; i < n; i++)
        parts[i]->parent = parent;
    ferry_status rc = ferry__net_submit(net, ctrl, false);
    if (rc != FERRY_OK) {
        ctrl->parent = NULL;
        ferry__net_op_free(ctrl);
        for (size_t i = 0; i < n; i++)
            ferry__net_op_free(parts[i]);
        ferry__net_op_free(parent);
        return rc;
    }
    /* From here the message is under way: a later failure reaches done, on the progress thread. */
    for (size_t i = 0; i < n; i++) {
        rc = ferry__net_submit(net, parts[i], false);
        if (rc != FERRY_OK)
            ferry__net_fail_later(net, parts[i], rc == FERRY_ESHUTDOWN ? rc : FERRY_ETRANSPORT);
    }
    return FERRY_OK;
}

ferry_status ferry__net_send(ferry__net *net, int dst, const struct iovec *iov, size_t n_iov,
                             ferry__net_done done, void *arg)
{
    ferry_status rc = check_peer(net, dst, "ferry__net_send");
    if (rc != FERRY_OK)
        return rc;
    if (!iov && n_iov > 0)
        return ferry__fail(FERRY_EINVAL, "ferry__net_send: NULL iov");
    size_t total = 0;
    for (size_t i = 0; i < n_iov; i++)
        total += iov[i].iov_len;
    if (total > net->max_message_bytes)
        return ferry__fail(FERRY_EINVAL, "a %zu-byte message to rank %d is over the limit of "
                           "%llu bytes (max_message_bytes)", total, dst,
                           (unsigned long long)net->max_message_bytes);
    if (total <= FERRY__NET_EAGER_MAX - FERRY__NET_FRAME_BYTES)
        return send_eager(net, dst, iov, n_iov, total, done, arg);
    return send_large(net, dst, iov, n_iov, total, done, arg);
}

static ferry_status bulk(ferry__net *net, ferry__op_kind kind, int peer, uint64_t tag, void *buf,
                         size_t len, ferry__net_done done, void *arg)
{
    const char *what = kind == FERRY__OP_TSEND ? "ferry__net_send_bulk" : "ferry__net_recv_bulk";
    ferry_status rc = check_peer(net, peer, what);
    if (rc != FERRY_OK)
        return rc;
    if (tag & FERRY__NET_TAG_INTERNAL)
        return ferry__fail(FERRY_EINVAL, "%s: tag 0x%llx uses the reserved top bit", what,
                           (unsigned long long)tag);
    if (!buf && len > 0)
        return ferry__fail(FERRY_EINVAL, "%s: NULL buffer", what);
    ferry__net_peer *p = &net->peers[peer];
    ferry__net_op *op = ferry__net_op_new(kind, p->ep, peer);
    if (!op)
        return ferry__fail(FERRY_ENOMEM, "no memory for %s", what);
    op->addr = p->addr;
    op->tag = ferry__net_keyed_tag(kind == FERRY__OP_TSEND ? p->tag_out : p->tag_in, tag);
    op->iov_inline[0] = (struct iovec){buf, len};
    op->n_iov = 1;
    op->len = len;
    op->done = done;
    op->arg = arg;
    rc = ferry__net_submit(net, op, false);
    if (rc != FERRY_OK)
        ferry__net_op_free(op);
    return rc;
}

ferry_status ferry__net_send_bulk(ferry__net *net, int dst, uint64_t tag, const void *data,
                                  size_t len, ferry__net_done done, void *arg)
{
    return bulk(net, FERRY__OP_TSEND, dst, tag, (void *)data, len, done, arg);
}

ferry_status ferry__net_recv_bulk(ferry__net *net, int src, uint64_t tag, void *buf, size_t len,
                                  ferry__net_done done, void *arg)
{
    return bulk(net, FERRY__OP_TRECV, src, tag, buf, len, done, arg);
}
