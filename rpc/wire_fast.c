/* The fast path of the envelope decoder: the envelopes of small calls and their responses (a
   Call or a Response body, no attachments or ext entries, value trees of at most
   FERRY__WIRE_FAST_NODES nodes holding only None, bools, ints, doubles, lists and dicts' counts)
   are read here into structs on the stack instead of through protobuf-c's generic unpacker, which
   was most of such a call's decode. It reads only the canonical form wire_pack.c writes: one-byte
   tags, fields in number order, each once (repeated node fields in one run), the wire type each
   field has. Anything else, whether malformed or merely unusual, is declined and goes to
   protobuf-c, so what this accepts it must read exactly as protobuf-c would: tests/fuzz/
   fuzz_wire_fast.c compares the two on every input it accepts. The pre-scan and every check
   after unpacking run on both paths alike. */
#include <string.h>

#include "rpc/wire_internal.h"

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2 };

typedef struct {
    const uint8_t *p, *end;
} rd;

typedef struct {
    ferry__wire_fast *f;
    size_t used; /* nodes taken from f->nodes */
} fast_ctx;

/* A varint of at most 10 bytes that fits in 64 bits (protobuf-c reads no more either). */
static bool get_varint(rd *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 10 && r->p < r->end; i++) {
        uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return false;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

static bool get_fixed64(rd *r, uint64_t *out)
{
    if (r->end - r->p < 8)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    *out = v;
    return true;
}

/* A one-byte tag (fields 1 to 15). */
static bool get_tag(rd *r, unsigned *field, unsigned *wt)
{
    if (r->p >= r->end || (*r->p & 0x80) || (*r->p >> 3) == 0)
        return false;
    *field = *r->p >> 3;
    *wt = *r->p & 7;
    r->p++;
    return true;
}

/* A length prefix: protobuf-c reads at most 5 bytes of one. */
static bool get_len(rd *r, rd *sub)
{
    uint64_t n;
    const uint8_t *start = r->p;
    if (!get_varint(r, &n) || r->p - start > 5 || n > (uint64_t)(r->end - r->p))
        return false;
    *sub = (rd){r->p, r->p + n};
    r->p += n;
    return true;
}

static bool read_node(rd r, Ferry__Wire__Node *n)
{
    static const Ferry__Wire__Node init = FERRY__WIRE__NODE__INIT;
    *n = init;
    unsigned last = 0, field, wt;
    uint64_t v;
    while (r.p < r.end) {
        if (!get_tag(&r, &field, &wt) || field <= last)
            return false;
        last = field;
        switch (field) {
        case 1: /* kind */
        case 2: /* b */
        case 3: /* i, zigzag */
        case 6: /* count */
            if (wt != WT_VARINT || !get_varint(&r, &v))
                return false;
            if (field == 1)
                n->kind = (Ferry__Wire__Kind)(int32_t)(uint32_t)v;
            else if (field == 2)
                n->b = v != 0;
            else if (field == 3)
                n->i = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            else
                n->count = (uint32_t)v;
            break;
        case 4: /* d, the double's bits */
            if (wt != WT_FIXED64 || !get_fixed64(&r, &n->d))
                return false;
            break;
        default: /* data, key, tensor, rref, unknown: protobuf-c's */
            return false;
        }
    }
    return true;
}

/* One more node of a repeated node field; *ptrs is where the field's run starts. */
static bool add_node(fast_ctx *c, rd sub, Ferry__Wire__Node ***ptrs, size_t *n)
{
    if (c->used == FERRY__WIRE_FAST_NODES)
        return false;
    if (*n == 0)
        *ptrs = &c->f->ptrs[c->used];
    else if (*ptrs + *n != &c->f->ptrs[c->used])
        return false; /* the field's nodes are not in one run */
    Ferry__Wire__Node *node = &c->f->nodes[c->used];
    if (!read_node(sub, node))
        return false;
    c->f->ptrs[c->used++] = node;
    (*n)++;
    return true;
}

static bool read_call(fast_ctx *c, rd r, Ferry__Wire__Call *call)
{
    static const Ferry__Wire__Call init = FERRY__WIRE__CALL__INIT;
    *call = init;
    c->f->fn[0] = '\0';
    call->fn = c->f->fn;
    unsigned last = 0, field, wt;
    while (r.p < r.end) {
        if (!get_tag(&r, &field, &wt) || field < last || (field == last && field != 2 &&
                                                          field != 3))
            return false;
        last = field;
        rd sub;
        uint64_t bits;
        switch (field) {
        case 1:
            if (wt != WT_LEN || !get_len(&r, &sub) ||
                (size_t)(sub.end - sub.p) >= sizeof c->f->fn)
                return false;
            memcpy(c->f->fn, sub.p, (size_t)(sub.end - sub.p));
            c->f->fn[sub.end - sub.p] = '\0';
            break;
        case 2:
        case 3:
            if (wt != WT_LEN || !get_len(&r, &sub))
                return false;
            if (!(field == 2 ? add_node(c, sub, &call->args, &call->n_args)
                             : add_node(c, sub, &call->kwargs, &call->n_kwargs)))
                return false;
            break;
        case 4:
            if (wt != WT_FIXED64 || !get_fixed64(&r, &bits))
                return false;
            memcpy(&call->timeout_s, &bits, sizeof bits);
            break;
        default:
            return false;
        }
    }
    return true;
}

static bool read_response(fast_ctx *c, rd r, Ferry__Wire__Response *resp)
{
    static const Ferry__Wire__Response init = FERRY__WIRE__RESPONSE__INIT;
    *resp = init;
    unsigned field, wt;
    while (r.p < r.end) {
        rd sub;
        if (!get_tag(&r, &field, &wt) || field != 1 || wt != WT_LEN || !get_len(&r, &sub) ||
            !add_node(c, sub, &resp->value, &resp->n_value))
            return false;
    }
    return true;
}

bool ferry__wire_fast_unpack(const uint8_t *p, size_t len, ferry__wire_fast *f)
{
    static const Ferry__Wire__Envelope init = FERRY__WIRE__ENVELOPE__INIT;
    Ferry__Wire__Envelope *env = &f->env;
    *env = init;
    fast_ctx c = {f, 0};
    rd r = {p, p + len};
    unsigned last = 0, field, wt;
    uint64_t v;
    while (r.p < r.end) {
        if (!get_tag(&r, &field, &wt) || field <= last)
            return false;
        last = field;
        rd sub;
        switch (field) {
        case 1:
        case 2:
        case 3:
        case 4:
            if (wt != WT_VARINT || !get_varint(&r, &v))
                return false;
            if (field == 1)
                env->version = (uint32_t)v;
            else if (field == 2)
                env->id = v;
            else if (field == 3)
                env->src = (int32_t)(uint32_t)v;
            else
                env->no_reply = v != 0;
            break;
        case 7:
            if (wt != WT_LEN || !get_len(&r, &sub) || !read_call(&c, sub, &f->call))
                return false;
            env->body_case = FERRY__WIRE__ENVELOPE__BODY_CALL;
            env->call = &f->call;
            break;
        case 8:
            if (wt != WT_LEN || !get_len(&r, &sub) || !read_response(&c, sub, &f->response))
                return false;
            env->body_case = FERRY__WIRE__ENVELOPE__BODY_RESPONSE;
            env->response = &f->response;
            break;
        default: /* attachments, ext, the other bodies, unknown fields: protobuf-c's */
            return false;
        }
    }
    return env->body_case != FERRY__WIRE__ENVELOPE__BODY__NOT_SET;
}
