/* Packing an envelope into protobuf bytes without protobuf-c's generic packer. protobuf-c walks
   every field descriptor of every message twice (once for the size, once to write), which cost
   more than the rest of a small call's encode; this file writes the same schema directly, field
   by field, with the same bytes: proto3 scalars are left out when zero, repeated integers are
   packed, fields come in number order. Decoding still goes through protobuf-c (and the checks
   in wire.c), so any message written here is read by exactly the code that reads everyone
   else's. The size pass and the write pass share one description per message type, so the two
   cannot disagree. */
#include <string.h>

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

/* Every field number in the schema is below 16, so each tag is one byte. */
static uint8_t *put_tag(uint8_t *p, unsigned field, unsigned wt)
{
    *p++ = (uint8_t)(field << 3 | wt);
    return p;
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

typedef struct {
    uint8_t *p; /* NULL: only count */
    size_t n;
} out;

static void emit_varint_field(out *o, unsigned field, uint64_t v)
{
    if (v == 0)
        return;
    if (o->p) {
        o->p = put_tag(o->p, field, WT_VARINT);
        o->p = put_varint(o->p, v);
    }
    o->n += 1 + varint_len(v);
}

static void emit_fixed64_field(out *o, unsigned field, uint64_t bits)
{
    if (bits == 0)
        return;
    if (o->p) {
        o->p = put_tag(o->p, field, WT_FIXED64);
        for (int i = 0; i < 8; i++)
            *o->p++ = (uint8_t)(bits >> (8 * i));
    }
    o->n += 9;
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
    }
    o->n += 1 + varint_len(len) + len;
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
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += varint_len((uint64_t)v[i]);
    if (o->p) {
        o->p = put_tag(o->p, field, WT_LEN);
        o->p = put_varint(o->p, len);
        for (size_t i = 0; i < n; i++)
            o->p = put_varint(o->p, (uint64_t)v[i]);
    }
    o->n += 1 + varint_len(len) + len;
}

/* A sub-message: its length prefix needs its size first, so it is counted, then written. */
typedef void (*body_fn)(out *o, const void *msg);

static void emit_message_field(out *o, unsigned field, const void *msg, body_fn body)
{
    out size = {NULL, 0};
    body(&size, msg);
    if (o->p) {
        o->p = put_tag(o->p, field, WT_LEN);
        o->p = put_varint(o->p, size.n);
        out inner = {o->p, 0};
        body(&inner, msg);
        o->p = inner.p;
    }
    o->n += 1 + varint_len(size.n) + size.n;
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
}

static void emit_nodes(out *o, unsigned field, Ferry__Wire__Node *const *nodes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        emit_message_field(o, field, nodes[i], node_body);
}

static void envelope_body(out *o, const Ferry__Wire__Envelope *env)
{
    uint64_t timeout_bits;
    memcpy(&timeout_bits, &env->timeout_s, sizeof timeout_bits);
    emit_varint_field(o, 1, env->version);
    emit_varint_field(o, 2, from_i32((int32_t)env->type));
    emit_varint_field(o, 3, env->id);
    emit_varint_field(o, 4, from_i32(env->src));
    emit_string_field(o, 5, env->fn);
    emit_nodes(o, 6, env->args, env->n_args);
    emit_nodes(o, 7, env->kwargs, env->n_kwargs);
    emit_nodes(o, 8, env->value, env->n_value);
    if (env->error)
        emit_message_field(o, 9, env->error, error_body);
    for (size_t i = 0; i < env->n_attachments; i++)
        emit_message_field(o, 10, env->attachments[i], attachment_body);
    if (env->timeout_s != 0) /* protobuf-c leaves out -0.0 too: it compares the double */
        emit_fixed64_field(o, 11, timeout_bits);
    emit_varint_field(o, 12, (uint64_t)env->autograd_context);
    emit_varint_field(o, 13, (uint64_t)env->autograd_message);
    emit_packed_i64(o, 14, env->ints, env->n_ints);
    emit_varint_field(o, 15, env->flag ? 1 : 0);
}

size_t ferry__wire_envelope_size(const Ferry__Wire__Envelope *env)
{
    out o = {NULL, 0};
    envelope_body(&o, env);
    return o.n;
}

size_t ferry__wire_envelope_write(const Ferry__Wire__Envelope *env, uint8_t *buf)
{
    out o = {buf, 0};
    envelope_body(&o, env);
    return (size_t)(o.p - buf);
}
