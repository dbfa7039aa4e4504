/* The pre-scan of the wire codec: before protobuf-c unpacks untrusted bytes, this walks them at
   the byte level and refuses what would make the unpacker or the value decoder allocate or
   work for nothing: malformed framing, a version this build does not read, a missing, unknown
   or second body, too many ext entries, attachments or nodes, value trees nested past the
   limit or whose counts cannot be met, and a NUL inside a function name (which protobuf-c
   would silently cut the name at). A million-deep list fails after 65 nodes, having allocated
   nothing. It also holds the tree shape, the one place that knows how pre-order counts nest,
   which the value decoder in wire_value.c uses again on the unpacked nodes. */
#include "rpc/wire_internal.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct {
    const uint8_t *p, *start, *end;
} cursor;

/* ---- tree shape ---- */

void ferry__wire_shape_init(ferry__wire_shape *s, const char *what, size_t max_depth)
{
    memset(s, 0, sizeof *s);
    s->what = what;
    s->max_depth = max_depth;
}

void ferry__wire_shape_free(ferry__wire_shape *s)
{
    ferry__free(s->frames);
    s->frames = NULL;
    s->sp = s->cap = 0;
}

static ferry_status shape_push(ferry__wire_shape *s, int kind, uint32_t count)
{
    if (s->sp == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        ferry__wire_frame *f = ferry__realloc(s->frames, cap * sizeof *f);
        if (!f)
            return ferry__fail(FERRY_ENOMEM, "out of memory decoding %s", s->what);
        s->frames = f;
        s->cap = cap;
    }
    s->frames[s->sp++] = (ferry__wire_frame){count, count, s->n_nodes - 1, kind, NULL};
    return FERRY_OK;
}

ferry_status ferry__wire_shape_next(ferry__wire_shape *s, int kind, uint32_t count,
                                    size_t nodes_left, ferry__wire_slot *slot)
{
    size_t node = s->n_nodes++;
    *slot = (ferry__wire_slot){NULL, -1, 0, false};
    if (s->done)
        return ferry__fail(FERRY_EPROTO, "%s: node %zu follows the end of the value", s->what,
                           node);
    if (s->sp > 0) {
        ferry__wire_frame *top = &s->frames[s->sp - 1];
        slot->parent = top->container;
        slot->parent_kind = top->kind;
        slot->index = top->count - top->remaining;
        top->remaining--;
    }
    if (ferry__wire_is_container(kind)) {
        /* Depth counts containers: a lone list is depth 1. */
        if (s->sp + 1 > s->max_depth)
            return ferry__fail(FERRY_EPROTO, "%s: node %zu nests deeper than the limit of %zu",
                               s->what, node, s->max_depth);
        if (count > nodes_left)
            return ferry__fail(FERRY_EPROTO, "%s: %s at node %zu says %u items but only %zu nodes "
                               "follow", s->what, kind == FERRY__WIRE__KIND__KIND_LIST ? "list" :
                               "dict", node, count, nodes_left);
        if (count > 0) {
            slot->pushed = true;
            return shape_push(s, kind, count);
        }
    }
    while (s->sp > 0 && s->frames[s->sp - 1].remaining == 0)
        s->sp--;
    if (s->sp == 0)
        s->done = true;
    return FERRY_OK;
}

ferry_status ferry__wire_shape_finish(ferry__wire_shape *s)
{
    if (s->sp == 0)
        return FERRY_OK;
    const ferry__wire_frame *top = &s->frames[s->sp - 1];
    return ferry__fail(FERRY_EPROTO, "%s: %s at node %zu says %u items but the nodes end after %u",
                       s->what, top->kind == FERRY__WIRE__KIND__KIND_LIST ? "list" : "dict",
                       top->node, top->count, top->count - top->remaining);
}

/* ---- protobuf framing ---- */

static bool read_varint(cursor *c, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (c->p >= c->end)
            return false;
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false; /* more than ten bytes */
}

/* Skips one field's payload; for length-delimited fields *sub is the payload. */
static bool skip_field(cursor *c, unsigned wire_type, cursor *sub)
{
    uint64_t v;
    size_t left = (size_t)(c->end - c->p);
    switch (wire_type) {
    case 0:
        return read_varint(c, &v);
    case 1:
        if (left < 8)
            return false;
        c->p += 8;
        return true;
    case 2:
        if (!read_varint(c, &v) || v > (uint64_t)(c->end - c->p))
            return false;
        *sub = (cursor){c->p, c->p, c->p + v};
        c->p += v;
        return true;
    case 5:
        if (left < 4)
            return false;
        c->p += 4;
        return true;
    default: /* groups and reserved wire types are not part of this schema */
        return false;
    }
}

static bool read_tag(cursor *c, uint32_t *field, unsigned *wire_type)
{
    uint64_t tag;
    if (!read_varint(c, &tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
        return false;
    *field = (uint32_t)(tag >> 3);
    *wire_type = (unsigned)(tag & 7);
    return true;
}

/* ---- the envelope's top level ---- */

enum { ENV_VERSION = 1, ENV_ID, ENV_SRC, ENV_NO_REPLY, ENV_ATTACHMENTS, ENV_EXT,
       ENV_BODY_FIRST = 7, ENV_BODY_LAST = 17 };

/* Envelope body field number -> message kind (an Error body is a RESPONSE). */
static const ferry__msg_type body_kinds[ENV_BODY_LAST - ENV_BODY_FIRST + 1] = {
    FERRY__MSG_CALL, FERRY__MSG_RESPONSE, FERRY__MSG_RESPONSE, FERRY__MSG_REMOTE_CALL,
    FERRY__MSG_RREF_FETCH, FERRY__MSG_RREF_USER_DELETE, FERRY__MSG_RREF_FORK_REQUEST,
    FERRY__MSG_RREF_CHILD_ACCEPT, FERRY__MSG_PING, FERRY__MSG_AUTOGRAD_BACKWARD,
    FERRY__MSG_AUTOGRAD_CLEANUP,
};

/* The first pass: framing only, every payload skipped. Whatever the version, it reads id, src
   and the body's kind, so the sender can be answered. */
typedef struct {
    uint32_t body_field; /* 0: none */
    cursor body;
    size_t n_bodies, n_ext, n_atts;
    uint32_t mistyped;   /* a known field with the wrong wire type (0: none) */
} top_level;

static unsigned expected_wire_type(uint32_t field)
{
    return field >= ENV_ATTACHMENTS ? 2 : 0;
}

static ferry_status scan_top(const uint8_t *p, size_t len, ferry__wire_scan_info *info,
                             top_level *top)
{
    cursor c = {p, p, p + len};
    while (c.p < c.end) {
        uint32_t field;
        unsigned wt;
        uint64_t v = 0;
        cursor sub = {0};
        const uint8_t *at = c.p;
        if (!read_tag(&c, &field, &wt))
            return ferry__fail(FERRY_EPROTO, "envelope is malformed at byte %zu",
                               (size_t)(at - c.start));
        bool known = field <= ENV_BODY_LAST;
        if (known && wt != expected_wire_type(field) && !top->mistyped)
            top->mistyped = field;
        bool ok = wt == 0 ? read_varint(&c, &v) : skip_field(&c, wt, &sub);
        if (!ok)
            return ferry__fail(FERRY_EPROTO, "envelope is malformed at byte %zu (field %u)",
                               (size_t)(at - c.start), field);
        if (!known || wt != expected_wire_type(field))
            continue;
        switch (field) { /* scalars truncated to their declared width, as protobuf-c reads them */
        case ENV_VERSION: info->version = (uint32_t)v; break;
        case ENV_ID: info->id = v; break;
        case ENV_SRC: info->src = (int32_t)(uint32_t)v; break;
        case ENV_NO_REPLY: break;
        case ENV_ATTACHMENTS: top->n_atts++; break;
        case ENV_EXT: top->n_ext++; break;
        default:
            if (top->n_bodies++ == 0) {
                top->body_field = field;
                top->body = sub;
                info->type = body_kinds[field - ENV_BODY_FIRST];
            }
            break;
        }
    }
    info->framed = true;
    return FERRY_OK;
}

/* Judged after the whole top level was read, so a reply can still name the request. */
static ferry_status check_top(const ferry__wire_scan_info *info, const top_level *top,
                              const ferry__wire_limits *limits)
{
    if (info->version != FERRY__WIRE_VERSION)
        return ferry__fail(FERRY_EPROTO, "wire version %u not supported (this build reads %d)",
                           info->version, FERRY__WIRE_VERSION);
    if (top->mistyped)
        return ferry__fail(FERRY_EPROTO, "envelope field %u has the wrong wire type",
                           top->mistyped);
    if (top->n_bodies == 0)
        return ferry__fail(FERRY_EPROTO, "envelope has no body of a known message kind");
    if (top->n_bodies > 1)
        return ferry__fail(FERRY_EPROTO, "envelope carries %zu bodies (exactly one is allowed)",
                           top->n_bodies);
    if (top->n_ext > FERRY__MSG_MAX_EXT)
        return ferry__fail(FERRY_EPROTO, "message has %zu ext entries (at most %d)", top->n_ext,
                           FERRY__MSG_MAX_EXT);
    if (top->n_atts > limits->max_nodes)
        return ferry__fail(FERRY_EPROTO, "message has more than %zu attachments (the limit)",
                           limits->max_nodes);
    return FERRY_OK;
}

/* ---- the body: its value trees and function name ---- */

/* Which fields of a body are value trees (index into the shapes) and which is the name. */
typedef struct {
    uint32_t tree_field[2]; /* 0: none */
    const char *tree_name[2];
    uint32_t fn_field;      /* 0: none */
} body_layout;

static body_layout layout_of(uint32_t body_field)
{
    switch (body_field) {
    case FERRY__WIRE__ENVELOPE__BODY_CALL:
    case FERRY__WIRE__ENVELOPE__BODY_REMOTE_CALL:
        return (body_layout){{2, 3}, {"args", "kwargs"}, 1};
    case FERRY__WIRE__ENVELOPE__BODY_RESPONSE:
        return (body_layout){{1, 0}, {"value", NULL}, 0};
    case FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_BACKWARD:
        return (body_layout){{3, 0}, {"grads", NULL}, 0};
    default:
        return (body_layout){{0, 0}, {NULL, NULL}, 0};
    }
}

/* Reads a Node's kind and count (the last occurrence wins, as protobuf-c does). */
static bool scan_node(cursor *c, int *kind, uint32_t *count)
{
    *kind = 0;
    *count = 0;
    while (c->p < c->end) {
        uint32_t field;
        unsigned wt;
        uint64_t v;
        cursor sub;
        if (!read_tag(c, &field, &wt))
            return false;
        if (field == 1 || field == 6) {
            if (wt != 0 || !read_varint(c, &v))
                return false;
            if (field == 1)
                *kind = (int)(int32_t)(uint32_t)v;
            else
                *count = (uint32_t)v;
        } else if (!skip_field(c, wt, &sub)) {
            return false;
        }
    }
    return true;
}

static ferry_status scan_body(cursor c, uint32_t body_field, const ferry__wire_limits *limits,
                              ferry__wire_shape shapes[2])
{
    body_layout lay = layout_of(body_field);
    size_t n_nodes = 0;
    while (c.p < c.end) {
        uint32_t field;
        unsigned wt;
        cursor sub = {0};
        if (!read_tag(&c, &field, &wt) || !skip_field(&c, wt, &sub))
            return ferry__fail(FERRY_EPROTO, "message body is malformed at byte %zu",
                               (size_t)(c.p - c.start));
        if (field == lay.fn_field && field && wt == 2 &&
            memchr(sub.p, 0, (size_t)(sub.end - sub.p)))
            return ferry__fail(FERRY_EPROTO, "function name contains a NUL byte");
        int t = field && field == lay.tree_field[0] ? 0 : field && field == lay.tree_field[1] ? 1
                                                                                       : -1;
        if (t < 0)
            continue;
        ferry__wire_shape *s = &shapes[t];
        if (wt != 2)
            return ferry__fail(FERRY_EPROTO, "%s: node %zu is not a message", s->what,
                               s->n_nodes);
        if (++n_nodes > limits->max_nodes)
            return ferry__fail(FERRY_EPROTO, "message has more than %zu values (the limit)",
                               limits->max_nodes);
        int kind;
        uint32_t count;
        ferry__wire_slot slot;
        if (!scan_node(&sub, &kind, &count))
            return ferry__fail(FERRY_EPROTO, "%s: node %zu is malformed", s->what, s->n_nodes);
        ferry_status rc = ferry__wire_shape_next(s, kind, count, SIZE_MAX, &slot);
        if (rc != FERRY_OK)
            return rc;
    }
    for (int i = 0; i < 2; i++) {
        ferry_status rc = ferry__wire_shape_finish(&shapes[i]);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

ferry_status ferry__wire_scan(const uint8_t *p, size_t len, const ferry__wire_limits *limits,
                              ferry__wire_scan_info *info)
{
    *info = (ferry__wire_scan_info){0};
    top_level top = {0};
    ferry_status rc = scan_top(p, len, info, &top);
    if (rc == FERRY_OK)
        rc = check_top(info, &top, limits);
    if (rc != FERRY_OK)
        return rc;
    body_layout lay = layout_of(top.body_field);
    ferry__wire_shape shapes[2];
    for (int i = 0; i < 2; i++)
        ferry__wire_shape_init(&shapes[i], lay.tree_name[i] ? lay.tree_name[i] : "", limits->max_depth);
    rc = scan_body(top.body, top.body_field, limits, shapes);
    for (int i = 0; i < 2; i++)
        ferry__wire_shape_free(&shapes[i]);
    return rc;
}
