/* Packing an envelope into protobuf bytes without protobuf-c's generic packer. protobuf-c walks
   every field descriptor of every message twice (once for the size, once to write), which cost
   more than the rest of a small call's encode; this file writes the same schema directly, field
   by field, with the same bytes: proto3 scalars are left out when zero, repeated integers are
   packed, fields come in number order. Decoding goes through protobuf-c (and the checks in
   wire.c), so any message written here is read by the code that reads everyone else's; the
   decoder's fast path (wire_fast.c) reads the small ones, and is held to protobuf-c's reading
   by a differential fuzz target. The size pass and the write pass share one description per
   message type, so the two cannot disagree. The table at the bottom lists the fields written
   per message; tests/unit/test_wire_pack.c holds it against protobuf-c's descriptors and
   compares these bytes with protobuf-c's own for thousands of random messages. */
#include <string.h>

#include "core/alloc.h"
#include "rpc/wire_internal.h"

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2 };

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Field numbers below 16 take a one-byte tag; only the reserved autograd bodies take two. */
static uint8_t *put_tag(uint8_t *p, unsigned field, unsigned wt)
{
    return put_varint(p, (uint64_t)field << 3 | wt);
}

static size_t tag_len(unsigned field)
{
    return field < 16 ? 1 : varint_len((uint64_t)field << 3);
}

/* int32 and enum values travel sign-extended to 64 bits, as protobuf specifies. */
static uint64_t from_i32(int32_t v)
{
    return (uint64_t)(int64_t)v;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

/* ---- a writer that either counts or writes, so each message is described once ---- */

/* The counting pass records the length of every sub-message and packed array, in the order
   the fields come (the plan); the writing pass takes them from there instead of counting each
   nested message again for its length prefix. */
typedef struct {
    uint8_t *p;      /* NULL: only count */
    size_t n;        /* counting: bytes so far */
    ferry__wire_pack_plan *plan;
    size_t k;        /* next length in the plan */
} out;

/* The slot for the next recorded length; NULL when the plan could not grow (the size pass then
   reports failure). */
static size_t *plan_slot(out *o)
{
    ferry__wire_pack_plan *plan = o->plan;
    size_t k = o->k++;
    if (k >= plan->cap) {
        if (plan->failed)
            return NULL;
        size_t cap = plan->cap * 2;
        size_t *sizes = plan->sizes == plan->inline_sizes ? ferry__malloc(cap * sizeof *sizes)
                                                          : ferry__realloc(plan->sizes,
                                                                           cap * sizeof *sizes);
        if (!sizes) {
            plan->failed = true;
            return NULL;
        }
        if (plan->sizes == plan->inline_sizes)
            memcpy(sizes, plan->inline_sizes, sizeof plan->inline_sizes);
        plan->sizes = sizes;
        plan->cap = cap;
    }
    return &plan->sizes[k];
}

static void emit_varint_field(out *o, unsigned field, uint64_t v)
{
    if (v == 0)
        return;
    if (o->p) {
        o->p = put_tag(o->p, field, WT_VARINT);
        o->p = put_varint(o->p, v);
    } else {
        o->n += tag_len(field) + varint_len(v);
    }
}

static void emit_fixed64_field(out *o, unsigned field, uint64_t bits)
{
    if (bits == 0)
        return;
    if (o->p) {
        o->p = put_tag(o->p, field, WT_FIXED64);
        for (int i = 0; i < 8; i++)
            *o->p++ = (uint8_t)(bits >> (8 * i));
    } else {
        o->n += tag_len(field) + 8;
    }
}

static void emit_bytes_field(out *o, unsigned field, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (o->p) {
        o->p = put_tag(o->p, field, WT_LEN);
        o->p = put_varint(o->p, len);
        memcpy(o->p, data, len);
        o->p += len;
    } else {
        o->n += tag_len(field) + varint_len(len) + len;
    }
}

static void emit_string_field(out *o, unsigned field, const char *s)
{
    if (s && s[0])
        emit_bytes_field(o, field, s, strlen(s));
}

static void emit_packed_i64(out *o, unsigned field, const int64_t *v, size_t n)
{
    if (n == 0)
        return;
    if (o->p) {
        o->p = put_tag(o->p, field, WT_LEN);
        o->p = put_varint(o->p, o->plan->sizes[o->k++]);
        for (size_t i = 0; i < n; i++)
            o->p = put_varint(o->p, (uint64_t)v[i]);
        return;
    }
    size_t len = 0, *slot = plan_slot(o);
    for (size_t i = 0; i < n; i++)
        len += varint_len((uint64_t)v[i]);
    if (slot)
        *slot = len;
    o->n += tag_len(field) + varint_len(len) + len;
}

/* A sub-message: counted once in the size pass, its length then taken from the plan. */
typedef void (*body_fn)(out *o, const void *msg);

static void emit_message_field(out *o, unsigned field, const void *msg, body_fn body)
{
    if (o->p) {
        o->p = put_tag(o->p, field, WT_LEN);
        o->p = put_varint(o->p, o->plan->sizes[o->k++]);
        body(o, msg);
        return;
    }
    size_t *slot = plan_slot(o), before = o->n;
    size_t k = o->k - 1;
    body(o, msg);
    size_t len = o->n - before;
    if (slot)
        o->plan->sizes[k] = len; /* the plan may have moved while the body was counted */
    o->n += tag_len(field) + varint_len(len);
}

/* ---- the schema (proto/ferry.proto), one function per message ---- */

static void tensor_body(out *o, const void *msg)
{
    const Ferry__Wire__TensorDesc *t = msg;
    emit_varint_field(o, 1, t->dtype);
    emit_packed_i64(o, 2, t->sizes, t->n_sizes);
    emit_packed_i64(o, 3, t->strides, t->n_strides);
    emit_varint_field(o, 4, (uint64_t)t->offset);
    emit_varint_field(o, 5, t->device_type);
    emit_varint_field(o, 6, from_i32(t->device_index));
    emit_varint_field(o, 7, t->attachment);
    emit_varint_field(o, 8, t->requires_grad ? 1 : 0);
    emit_varint_field(o, 9, t->channel);
    emit_varint_field(o, 10, t->seq);
    emit_varint_field(o, 11, t->nbytes);
}

static void rref_body(out *o, const void *msg)
{
    const Ferry__Wire__RRefDesc *r = msg;
    emit_varint_field(o, 1, from_i32(r->owner));
    emit_varint_field(o, 2, from_i32(r->rref_worker));
    emit_varint_field(o, 3, (uint64_t)r->rref_local);
    emit_varint_field(o, 4, from_i32(r->fork_worker));
    emit_varint_field(o, 5, (uint64_t)r->fork_local);
    emit_varint_field(o, 6, from_i32(r->parent));
}

static void node_body(out *o, const void *msg)
{
    const Ferry__Wire__Node *nd = msg;
    emit_varint_field(o, 1, from_i32((int32_t)nd->kind));
    emit_varint_field(o, 2, nd->b ? 1 : 0);
    emit_varint_field(o, 3, zigzag(nd->i));
    emit_fixed64_field(o, 4, nd->d);
    emit_bytes_field(o, 5, nd->data.data, nd->data.len);
    emit_varint_field(o, 6, nd->count);
    emit_bytes_field(o, 7, nd->key.data, nd->key.len);
    if (nd->tensor)
        emit_message_field(o, 8, nd->tensor, tensor_body);
    if (nd->rref)
        emit_message_field(o, 9, nd->rref, rref_body);
}

static void attachment_body(out *o, const void *msg)
{
    const Ferry__Wire__Attachment *a = msg;
    emit_varint_field(o, 1, a->len);
    emit_varint_field(o, 2, a->is_inline ? 1 : 0);
}

static void error_body(out *o, const void *msg)
{
    const Ferry__Wire__Error *e = msg;
    emit_varint_field(o, 1, e->code);
    emit_string_field(o, 2, e->message);
    emit_string_field(o, 3, e->worker);
    emit_varint_field(o, 4, e->remote_code);
}

static void emit_nodes(out *o, unsigned field, Ferry__Wire__Node *const *nodes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        emit_message_field(o, field, nodes[i], node_body);
}

static void double_field(out *o, unsigned field, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    if (d != 0) /* protobuf-c leaves out -0.0 too: it compares the double */
        emit_fixed64_field(o, field, bits);
}

static void call_body(out *o, const void *msg)
{
    const Ferry__Wire__Call *c = msg;
    emit_string_field(o, 1, c->fn);
    emit_nodes(o, 2, c->args, c->n_args);
    emit_nodes(o, 3, c->kwargs, c->n_kwargs);
    double_field(o, 4, c->timeout_s);
}

static void response_body(out *o, const void *msg)
{
    const Ferry__Wire__Response *r = msg;
    emit_nodes(o, 1, r->value, r->n_value);
}

static void remote_call_body(out *o, const void *msg)
{
    const Ferry__Wire__RemoteCall *c = msg;
    emit_string_field(o, 1, c->fn);
    emit_nodes(o, 2, c->args, c->n_args);
    emit_nodes(o, 3, c->kwargs, c->n_kwargs);
    double_field(o, 4, c->timeout_s);
    emit_varint_field(o, 5, from_i32(c->rref_worker));
    emit_varint_field(o, 6, (uint64_t)c->rref_local);
    emit_varint_field(o, 7, from_i32(c->fork_worker));
    emit_varint_field(o, 8, (uint64_t)c->fork_local);
}

static void rref_fetch_body(out *o, const void *msg)
{
    const Ferry__Wire__RRefFetch *f = msg;
    emit_varint_field(o, 1, from_i32(f->rref_worker));
    emit_varint_field(o, 2, (uint64_t)f->rref_local);
}

/* RRefUserDelete and RRefForkRequest have the same four fields. */
static void rref_ids4(out *o, int32_t rw, int64_t rl, int32_t fw, int64_t fl)
{
    emit_varint_field(o, 1, from_i32(rw));
    emit_varint_field(o, 2, (uint64_t)rl);
    emit_varint_field(o, 3, from_i32(fw));
    emit_varint_field(o, 4, (uint64_t)fl);
}

static void rref_user_delete_body(out *o, const void *msg)
{
    const Ferry__Wire__RRefUserDelete *d = msg;
    rref_ids4(o, d->rref_worker, d->rref_local, d->fork_worker, d->fork_local);
}

static void rref_fork_request_body(out *o, const void *msg)
{
    const Ferry__Wire__RRefForkRequest *r = msg;
    rref_ids4(o, r->rref_worker, r->rref_local, r->fork_worker, r->fork_local);
}

static void rref_child_accept_body(out *o, const void *msg)
{
    const Ferry__Wire__RRefChildAccept *a = msg;
    emit_varint_field(o, 1, from_i32(a->fork_worker));
    emit_varint_field(o, 2, (uint64_t)a->fork_local);
}

static void ping_body(out *o, const void *msg)
{
    (void)o;
    (void)msg;
}

static void autograd_backward_body(out *o, const void *msg)
{
    const Ferry__Wire__AutogradBackward *b = msg;
    emit_varint_field(o, 1, (uint64_t)b->context_id);
    emit_varint_field(o, 2, (uint64_t)b->message_id);
    emit_nodes(o, 3, b->grads, b->n_grads);
    emit_varint_field(o, 4, b->retain_graph ? 1 : 0);
}

static void autograd_cleanup_body(out *o, const void *msg)
{
    const Ferry__Wire__AutogradCleanup *c = msg;
    emit_varint_field(o, 1, (uint64_t)c->context_id);
}

static void ext_body(out *o, const void *msg)
{
    const Ferry__Wire__Ext *e = msg;
    emit_varint_field(o, 1, e->key);
    emit_varint_field(o, 2, zigzag(e->value));
}

/* The body of each oneof case, indexed by field number (which is the case's value). */
static const body_fn bodies[] = {
    [FERRY__WIRE__ENVELOPE__BODY_CALL] = call_body,
    [FERRY__WIRE__ENVELOPE__BODY_RESPONSE] = response_body,
    [FERRY__WIRE__ENVELOPE__BODY_ERROR] = error_body,
    [FERRY__WIRE__ENVELOPE__BODY_REMOTE_CALL] = remote_call_body,
    [FERRY__WIRE__ENVELOPE__BODY_RREF_FETCH] = rref_fetch_body,
    [FERRY__WIRE__ENVELOPE__BODY_RREF_USER_DELETE] = rref_user_delete_body,
    [FERRY__WIRE__ENVELOPE__BODY_RREF_FORK_REQUEST] = rref_fork_request_body,
    [FERRY__WIRE__ENVELOPE__BODY_RREF_CHILD_ACCEPT] = rref_child_accept_body,
    [FERRY__WIRE__ENVELOPE__BODY_PING] = ping_body,
    [FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_BACKWARD] = autograd_backward_body,
    [FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_CLEANUP] = autograd_cleanup_body,
};

static void envelope_body(out *o, const Ferry__Wire__Envelope *env)
{
    emit_varint_field(o, 1, env->version);
    emit_varint_field(o, 2, env->id);
    emit_varint_field(o, 3, from_i32(env->src));
    emit_varint_field(o, 4, env->no_reply ? 1 : 0);
    for (size_t i = 0; i < env->n_attachments; i++)
        emit_message_field(o, 5, env->attachments[i], attachment_body);
    for (size_t i = 0; i < env->n_ext; i++)
        emit_message_field(o, 6, env->ext[i], ext_body);
    unsigned c = (unsigned)env->body_case;
    /* Every case's member is a pointer in one union; protobuf-c leaves a NULL one out. */
    if (c < sizeof bodies / sizeof *bodies && bodies[c] && env->call)
        emit_message_field(o, c, env->call, bodies[c]);
}

void ferry__wire_pack_plan_init(ferry__wire_pack_plan *plan)
{
    plan->sizes = plan->inline_sizes;
    plan->cap = FERRY__WIRE_PLAN_INLINE;
    plan->failed = false;
}

void ferry__wire_pack_plan_free(ferry__wire_pack_plan *plan)
{
    if (plan->sizes != plan->inline_sizes)
        ferry__free(plan->sizes);
    ferry__wire_pack_plan_init(plan);
}

size_t ferry__wire_envelope_size(const Ferry__Wire__Envelope *env, ferry__wire_pack_plan *plan)
{
    out o = {NULL, 0, plan, 0};
    envelope_body(&o, env);
    return plan->failed ? SIZE_MAX : o.n;
}

size_t ferry__wire_envelope_write(const Ferry__Wire__Envelope *env,
                                  const ferry__wire_pack_plan *plan, uint8_t *buf)
{
    out o = {buf, 0, (ferry__wire_pack_plan *)plan, 0}; /* only read while writing */
    envelope_body(&o, env);
    return (size_t)(o.p - buf);
}

/* ---- what the functions above write, per message (test_wire_pack.c checks it) ---- */

static const uint32_t tensor_fields[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const uint32_t rref_fields[] = {1, 2, 3, 4, 5, 6};
static const uint32_t node_fields[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint32_t attachment_fields[] = {1, 2};
static const uint32_t call_fields[] = {1, 2, 3, 4};
static const uint32_t response_fields[] = {1};
static const uint32_t error_fields[] = {1, 2, 3, 4};
static const uint32_t fetch_fields[] = {1, 2};
static const uint32_t ids4_fields[] = {1, 2, 3, 4};
static const uint32_t child_accept_fields[] = {1, 2};
static const uint32_t remote_call_fields[] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint32_t backward_fields[] = {1, 2, 3, 4};
static const uint32_t cleanup_fields[] = {1};
static const uint32_t ext_fields[] = {1, 2};
static const uint32_t envelope_fields[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                           16, 17};

#define FIELDS(name, list) {name, list, sizeof list / sizeof *list}
const ferry__wire_pack_schema ferry__wire_pack_schemas[] = {
    FIELDS("ferry.wire.TensorDesc", tensor_fields),
    FIELDS("ferry.wire.RRefDesc", rref_fields),
    FIELDS("ferry.wire.Node", node_fields),
    FIELDS("ferry.wire.Attachment", attachment_fields),
    FIELDS("ferry.wire.Call", call_fields),
    FIELDS("ferry.wire.Response", response_fields),
    FIELDS("ferry.wire.Error", error_fields),
    FIELDS("ferry.wire.RRefFetch", fetch_fields),
    FIELDS("ferry.wire.RRefUserDelete", ids4_fields),
    FIELDS("ferry.wire.RRefForkRequest", ids4_fields),
    FIELDS("ferry.wire.RRefChildAccept", child_accept_fields),
    FIELDS("ferry.wire.RemoteCall", remote_call_fields),
    {"ferry.wire.Ping", NULL, 0},
    FIELDS("ferry.wire.AutogradBackward", backward_fields),
    FIELDS("ferry.wire.AutogradCleanup", cleanup_fields),
    FIELDS("ferry.wire.Ext", ext_fields),
    FIELDS("ferry.wire.Envelope", envelope_fields),
};
const size_t ferry__wire_n_pack_schemas = sizeof ferry__wire_pack_schemas /
                                          sizeof *ferry__wire_pack_schemas;
