/* The envelope half of the wire codec: ferry__msg <-> one protobuf-c Envelope, limits, the
   attachment list, and the flat [length][header][attachments] framing used by tests and tools.
   Before protobuf-c ever unpacks untrusted bytes, a byte-level pre-scan walks the top-level
   fields and the kind/count of every Node: it checks the version, the node and attachment counts
   and the nesting of each value tree, so a hostile message (a million-deep list, a count that
   lies) is refused before anything is allocated for it. The value trees themselves are built in
   wire_value.c. */
#include "rpc/wire.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "rpc/wire_internal.h"

/* What the pre-scan learned from the top level, enough to answer a request it cannot read. */
typedef struct {
    bool framed; /* every top-level field was well formed */
    uint32_t version;
    int32_t type;
    uint64_t id;
    int32_t src;
    size_t n_nodes, n_atts;
} scan_info;

typedef struct {
    const uint8_t *p, *start, *end;
} cursor;

/* protobuf-c's unpacker allocates every sub-message, string and array on its own, and its
   free walks them all again: for a small envelope that was most of the decode. It allocates
   from this arena instead: a block on the decoder's stack first, then heap blocks that grow
   (never more than twice what protobuf-c asked for in all); freeing one piece does nothing and
   the whole arena goes at once, after the message has been turned into ferry values. */
#define ARENA_STACK_BYTES 2048
#define ARENA_BLOCK_MIN 8192
#define ARENA_ALIGN 16

typedef struct arena_block {
    struct arena_block *next;
} arena_block;

typedef struct {
    uint8_t *p, *end;    /* free room in the current block */
    arena_block *blocks; /* heap blocks, newest first */
    size_t next_cap;
    bool failed;         /* an allocation failed: unpack returned NULL for want of memory */
} pb_arena;

static void pb_arena_init(pb_arena *a, void *stack, size_t stack_len)
{
    *a = (pb_arena){stack, (uint8_t *)stack + stack_len, NULL, ARENA_BLOCK_MIN, false};
}

/* Heap blocks keep their header in the first ARENA_ALIGN bytes, so the room stays aligned. */
static bool pb_arena_grow(pb_arena *a, size_t size)
{
    size_t cap = a->next_cap > size ? a->next_cap : size;
    if (cap > SIZE_MAX - ARENA_ALIGN)
        return false;
    arena_block *b = ferry__malloc(ARENA_ALIGN + cap);
    if (!b)
        return false;
    b->next = a->blocks;
    a->blocks = b;
    a->p = (uint8_t *)b + ARENA_ALIGN;
    a->end = a->p + cap;
    if (a->next_cap < ((size_t)1 << 20))
        a->next_cap *= 2;
    return true;
}

static void *pb_alloc(void *data, size_t size)
{
    pb_arena *a = data;
    if (size > SIZE_MAX - ARENA_ALIGN) {
        a->failed = true;
        return NULL;
    }
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if ((size_t)(a->end - a->p) < size && !pb_arena_grow(a, size)) {
        a->failed = true;
        return NULL;
    }
    void *p = a->p;
    a->p += size;
    return p;
}

static void pb_free(void *data, void *p)
{
    (void)data;
    (void)p; /* the arena goes as a whole */
}

static void pb_arena_free(pb_arena *a)
{
    for (arena_block *b = a->blocks, *next; b; b = next) {
        next = b->next;
        ferry__free(b);
    }
    a->blocks = NULL;
}

void ferry__wire_limits_default(ferry__wire_limits *limits)
{
    limits->max_message_bytes = FERRY_MAX_MESSAGE_BYTES;
    limits->max_depth = 64;
    limits->max_nodes = (size_t)1 << 20;
    limits->inline_threshold = (size_t)16 << 10;
}

void ferry__msg_clear(ferry__msg *m)
{
    if (!m)
        return;
    ferry_value_release(m->args);
    ferry_value_release(m->kwargs);
    ferry_value_release(m->value);
    ferry__free(m->fn);
    ferry__free(m->err_message);
    ferry__free(m->err_worker);
    memset(m, 0, sizeof *m);
}

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

/* ---- pre-scan of the raw envelope bytes ---- */

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

/* A scalar top-level field, truncated to 32 bits the way protobuf-c reads it. */
static bool scan_scalar(cursor *c, unsigned wire_type, uint64_t *v)
{
    return wire_type == 0 && read_varint(c, v);
}

static ferry_status scan_top_field(cursor *c, uint32_t field, unsigned wt, scan_info *info)
{
    uint64_t v = 0;
    cursor sub = {0};
    bool ok;
    switch (field) {
    case 1: ok = scan_scalar(c, wt, &v); info->version = (uint32_t)v; break;
    case 2: ok = scan_scalar(c, wt, &v); info->type = (int32_t)(uint32_t)v; break;
    case 3: ok = scan_scalar(c, wt, &v); info->id = v; break;
    case 4: ok = scan_scalar(c, wt, &v); info->src = (int32_t)(uint32_t)v; break;
    default: /* fn, the value trees, error and attachments are all length-delimited */
        ok = !(field >= 5 && field <= 10 && wt != 2) && skip_field(c, wt, &sub);
        break;
    }
    if (!ok)
        return ferry__fail(FERRY_EPROTO, "envelope is malformed at byte %zu (field %u)",
                           (size_t)(c->p - c->start), field);
    if (field == 5 && memchr(sub.p, 0, (size_t)(sub.end - sub.p)))
        return ferry__fail(FERRY_EPROTO, "function name contains a NUL byte");
    info->n_nodes += field >= 6 && field <= 8;
    info->n_atts += field == 10;
    return FERRY_OK;
}

static ferry_status scan_envelope(const uint8_t *p, size_t len, scan_info *info)
{
    cursor c = {p, p, p + len};
    while (c.p < c.end) {
        uint32_t field;
        unsigned wt;
        if (!read_tag(&c, &field, &wt))
            return ferry__fail(FERRY_EPROTO, "envelope is malformed at byte %zu",
                               (size_t)(c.p - c.start));
        ferry_status rc = scan_top_field(&c, field, wt, info);
        if (rc != FERRY_OK)
            return rc;
    }
    info->framed = true;
    return FERRY_OK;
}

/* Judged after the whole top level was read, so a reply can still name the request. */
static ferry_status check_counts(const scan_info *info, const ferry__wire_limits *limits)
{
    if (info->n_nodes > limits->max_nodes)
        return ferry__fail(FERRY_EPROTO, "message has more than %zu values (the limit)",
                           limits->max_nodes);
    if (info->n_atts > limits->max_nodes)
        return ferry__fail(FERRY_EPROTO, "message has more than %zu attachments (the limit)",
                           limits->max_nodes);
    return FERRY_OK;
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

/* Second pass, on a well-framed envelope: the shape of each value tree. */
static ferry_status scan_trees(const uint8_t *p, size_t len, const ferry__wire_limits *limits)
{
    static const char *const names[3] = {"args", "kwargs", "value"};
    ferry__wire_shape shapes[3];
    for (int i = 0; i < 3; i++)
        ferry__wire_shape_init(&shapes[i], names[i], limits->max_depth);
    cursor c = {p, p, p + len};
    ferry_status rc = FERRY_OK;
    while (rc == FERRY_OK && c.p < c.end) {
        uint32_t field;
        unsigned wt;
        cursor sub = {0};
        if (!read_tag(&c, &field, &wt) || !skip_field(&c, wt, &sub)) {
            rc = ferry__fail(FERRY_EPROTO, "envelope is malformed"); /* framed before: unreachable */
            break;
        }
        if (field < 6 || field > 8)
            continue;
        ferry__wire_shape *s = &shapes[field - 6];
        int kind;
        uint32_t count;
        ferry__wire_slot slot;
        if (!scan_node(&sub, &kind, &count))
            rc = ferry__fail(FERRY_EPROTO, "%s: node %zu is malformed", s->what, s->n_nodes);
        else
            rc = ferry__wire_shape_next(s, kind, count, SIZE_MAX, &slot);
    }
    for (int i = 0; i < 3; i++) {
        if (rc == FERRY_OK)
            rc = ferry__wire_shape_finish(&shapes[i]);
        ferry__wire_shape_free(&shapes[i]);
    }
    return rc;
}

/* ---- decode ---- */

static ferry_status read_error(const Ferry__Wire__Error *e, ferry__msg *m)
{
    if (e->code == 0 || e->code >= FERRY__STATUS_COUNT)
        return ferry__fail(FERRY_EPROTO, "error code %u is out of range", e->code);
    m->is_error = true;
    m->err_code = (ferry_status)e->code;
    m->err_message = ferry__strdup(e->message ? e->message : "");
    m->err_worker = ferry__strdup(e->worker ? e->worker : "");
    if (!m->err_message || !m->err_worker)
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding an error response");
    return FERRY_OK;
}

static ferry_status read_fields(const Ferry__Wire__Envelope *env, ferry__msg *m)
{
    if ((int)env->type <= FERRY__MSG_INVALID || (int)env->type >= FERRY__MSG_TYPE_COUNT)
        return ferry__fail(FERRY_EPROTO, "message type %d is not known", (int)env->type);
    if (env->n_ints > FERRY__MSG_MAX_INTS)
        return ferry__fail(FERRY_EPROTO, "%zu integer operands (at most %d)", env->n_ints,
                           FERRY__MSG_MAX_INTS);
    if (isnan(env->timeout_s))
        return ferry__fail(FERRY_EPROTO, "timeout is not a number");
    m->type = (ferry__msg_type)env->type;
    m->id = env->id;
    m->src = env->src;
    m->timeout_s = env->timeout_s;
    m->autograd_context = env->autograd_context;
    m->autograd_message = env->autograd_message;
    m->no_reply = env->flag;
    m->n_ints = env->n_ints;
    if (env->n_ints)
        memcpy(m->ints, env->ints, env->n_ints * sizeof *m->ints);
    if (env->fn && env->fn[0] && !(m->fn = ferry__strdup(env->fn)))
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding a function name");
    return env->error ? read_error(env->error, m) : FERRY_OK;
}

static ferry_status read_attachments(const Ferry__Wire__Envelope *env, size_t header_len,
                                     const ferry__wire_limits *limits, uint64_t **lens_out)
{
    size_t n = env->n_attachments;
    *lens_out = NULL;
    if (n == 0)
        return FERRY_OK;
    uint64_t *lens = ferry__malloc(n * sizeof *lens);
    if (!lens)
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding attachments");
    uint64_t total = header_len;
    for (size_t i = 0; i < n; i++) {
        lens[i] = env->attachments[i]->len;
        if (__builtin_add_overflow(total, lens[i], &total) || total > limits->max_message_bytes) {
            ferry__free(lens);
            return ferry__fail(FERRY_EPROTO, "attachments make the message larger than the "
                               "limit of %zu bytes (at attachment %zu)", limits->max_message_bytes,
                               i);
        }
    }
    *lens_out = lens;
    return FERRY_OK;
}

static ferry_status decode_trees(ferry__wire_dec *dec, const Ferry__Wire__Envelope *env,
                                 ferry__msg *m)
{
    ferry_status rc = ferry__wire_tree_decode(dec, "args", env->args, env->n_args, &m->args);
    if (rc == FERRY_OK && m->args && ferry_value_kind(m->args) != FERRY_VALUE_LIST)
        rc = ferry__fail(FERRY_EPROTO, "args is a %s, not a list",
                         ferry_kind_name(ferry_value_kind(m->args)));
    if (rc == FERRY_OK)
        rc = ferry__wire_tree_decode(dec, "kwargs", env->kwargs, env->n_kwargs, &m->kwargs);
    if (rc == FERRY_OK && m->kwargs && ferry_value_kind(m->kwargs) != FERRY_VALUE_DICT)
        rc = ferry__fail(FERRY_EPROTO, "kwargs is a %s, not a dict",
                         ferry_kind_name(ferry_value_kind(m->kwargs)));
    if (rc == FERRY_OK)
        rc = ferry__wire_tree_decode(dec, "value", env->value, env->n_value, &m->value);
    return rc;
}

/* Hands each attachment's storage and first tensor over to the caller's list. */
static ferry_status take_attachments(ferry__wire_dec *dec, const Ferry__Wire__Envelope *env,
                                     ferry__att **atts_out)
{
    size_t n = dec->n_atts;
    if (n == 0)
        return FERRY_OK;
    for (size_t i = 0; i < n; i++)
        if (!dec->storages[i])
            return ferry__fail(FERRY_EPROTO, "attachment %zu is not used by any tensor", i);
    ferry__att *atts = ferry__calloc(n, sizeof *atts);
    if (!atts)
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding attachments");
    for (size_t i = 0; i < n; i++) {
        atts[i].data = dec->storages[i]->data;
        atts[i].len = (size_t)dec->att_lens[i];
        atts[i].tensor = dec->firsts[i];
        atts[i].is_inline = env->attachments[i]->is_inline;
        dec->firsts[i] = NULL;
    }
    *atts_out = atts;
    return FERRY_OK;
}

static ferry_status decode_envelope(const uint8_t *header, size_t len,
                                    const ferry__wire_limits *limits, ferry__msg *m,
                                    ferry__att **atts, size_t *n_atts)
{
    _Alignas(ARENA_ALIGN) uint8_t stack[ARENA_STACK_BYTES];
    pb_arena arena;
    pb_arena_init(&arena, stack, sizeof stack);
    ProtobufCAllocator alloc = {pb_alloc, pb_free, &arena};
    Ferry__Wire__Envelope *env = ferry__wire__envelope__unpack(&alloc, len, header);
    if (!env) {
        bool failed = arena.failed;
        pb_arena_free(&arena);
        return failed ? ferry__fail(FERRY_ENOMEM, "out of memory unpacking an envelope")
                      : ferry__fail(FERRY_EPROTO, "envelope does not parse");
    }
    uint64_t *lens = NULL;
    ferry__wire_dec dec = {limits, env->src, 0, NULL, NULL, NULL, 0};
    ferry_status rc = read_fields(env, m);
    if (rc == FERRY_OK)
        rc = read_attachments(env, len, limits, &lens);
    if (rc == FERRY_OK && env->n_attachments) {
        dec.n_atts = env->n_attachments;
        dec.att_lens = lens;
        dec.storages = ferry__calloc(dec.n_atts, sizeof *dec.storages);
        dec.firsts = ferry__calloc(dec.n_atts, sizeof *dec.firsts);
        if (!dec.storages || !dec.firsts)
            rc = ferry__fail(FERRY_ENOMEM, "out of memory decoding attachments");
    }
    if (rc == FERRY_OK)
        rc = decode_trees(&dec, env, m);
    if (rc == FERRY_OK)
        rc = take_attachments(&dec, env, atts);
    if (rc == FERRY_OK)
        *n_atts = dec.n_atts;
    ferry__wire_dec_free(&dec);
    ferry__free(lens);
    pb_arena_free(&arena); /* env and everything it points to */
    return rc;
}

ferry_status ferry__wire_decode(const void *header, size_t len, const ferry__wire_limits *limits,
                                ferry__msg *m, ferry__att **atts, size_t *n_atts)
{
    ferry__wire_limits defaults;
    if (!limits) {
        ferry__wire_limits_default(&defaults);
        limits = &defaults;
    }
    memset(m, 0, sizeof *m);
    *atts = NULL;
    *n_atts = 0;
    if (!header && len)
        return ferry__fail(FERRY_EINVAL, "NULL envelope of %zu bytes", len);
    if (!header)
        header = ""; /* an empty envelope: refused below for its missing version */
    if (len > limits->max_message_bytes)
        return ferry__fail(FERRY_EPROTO, "envelope of %zu bytes exceeds the limit of %zu", len,
                           limits->max_message_bytes);
    scan_info info = {0};
    ferry_status rc = scan_envelope(header, len, &info);
    if (rc == FERRY_OK && info.version != FERRY__WIRE_VERSION)
        rc = ferry__fail(FERRY_EPROTO, "wire version %u not supported (this build reads %d)",
                         info.version, FERRY__WIRE_VERSION);
    if (rc == FERRY_OK)
        rc = check_counts(&info, limits);
    if (rc == FERRY_OK)
        rc = scan_trees(header, len, limits);
    if (rc == FERRY_OK)
        rc = decode_envelope(header, len, limits, m, atts, n_atts);
    if (rc != FERRY_OK) {
        ferry__msg_clear(m);
        if (info.framed) { /* enough to address a reply */
            m->id = info.id;
            m->src = info.src;
            if (info.type > FERRY__MSG_INVALID && info.type < FERRY__MSG_TYPE_COUNT)
                m->type = (ferry__msg_type)info.type;
        }
    }
    return rc;
}

void ferry__wire_atts_free(ferry__att *atts, size_t n)
{
    if (!atts)
        return;
    for (size_t i = 0; i < n; i++)
        ferry_tensor_release(atts[i].tensor);
    ferry__free(atts);
}

/* ---- encode ---- */

static ferry_status check_msg(const ferry__msg *m)
{
    if ((int)m->type <= FERRY__MSG_INVALID || (int)m->type >= FERRY__MSG_TYPE_COUNT)
        return ferry__fail(FERRY_EINVAL, "message type %d is not known", (int)m->type);
    if (m->n_ints > FERRY__MSG_MAX_INTS)
        return ferry__fail(FERRY_EINVAL, "%zu integer operands (at most %d)", m->n_ints,
                           FERRY__MSG_MAX_INTS);
    if (m->args && ferry_value_kind(m->args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "args must be a list, not a %s",
                           ferry_kind_name(ferry_value_kind(m->args)));
    if (m->kwargs && ferry_value_kind(m->kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "kwargs must be a dict, not a %s",
                           ferry_kind_name(ferry_value_kind(m->kwargs)));
    if (m->is_error && (m->err_code <= FERRY_OK || m->err_code >= FERRY__STATUS_COUNT))
        return ferry__fail(FERRY_EINVAL, "error code %d is out of range", (int)m->err_code);
    return FERRY_OK;
}

/* Decides which attachments travel inline and points the envelope at the list. */
static ferry_status place_attachments(ferry__wire_enc *enc, const ferry__wire_limits *limits,
                                      Ferry__Wire__Envelope *env, size_t *inline_bytes)
{
    size_t total = 0;
    for (size_t i = 0; i < enc->n_atts; i++) {
        size_t len = enc->atts[i].len;
        bool is_inline = len <= limits->inline_threshold &&
                         len <= FERRY__WIRE_INLINE_TOTAL_MAX - total;
        if (is_inline)
            total += len;
        enc->atts[i].is_inline = is_inline;
        enc->patts[i].is_inline = is_inline;
    }
    *inline_bytes = total;
    if (enc->n_atts == 0)
        return FERRY_OK;
    env->attachments = ferry__malloc(enc->n_atts * sizeof *env->attachments);
    if (!env->attachments)
        return ferry__fail(FERRY_ENOMEM, "out of memory encoding attachments");
    for (size_t i = 0; i < enc->n_atts; i++)
        env->attachments[i] = &enc->patts[i];
    env->n_attachments = enc->n_atts;
    return FERRY_OK;
}

static void fill_envelope(const ferry__msg *m, Ferry__Wire__Envelope *env,
                          Ferry__Wire__Error *err, const ferry__wire_tree *trees)
{
    env->version = FERRY__WIRE_VERSION;
    env->type = (Ferry__Wire__MsgType)m->type;
    env->id = m->id;
    env->src = m->src;
    env->fn = m->fn ? m->fn : (char *)"";
    env->n_args = trees[0].n;
    env->args = trees[0].ptrs;
    env->n_kwargs = trees[1].n;
    env->kwargs = trees[1].ptrs;
    env->n_value = trees[2].n;
    env->value = trees[2].ptrs;
    if (m->is_error) {
        err->code = (uint32_t)m->err_code;
        err->message = m->err_message ? m->err_message : (char *)"";
        err->worker = m->err_worker ? m->err_worker : (char *)"";
        env->error = err;
    }
    env->timeout_s = m->timeout_s;
    env->autograd_context = m->autograd_context;
    env->autograd_message = m->autograd_message;
    env->n_ints = m->n_ints;
    env->ints = (int64_t *)m->ints;
    env->flag = m->no_reply;
}

static ferry_status pack_envelope(const Ferry__Wire__Envelope *env, const ferry__wire_enc *enc,
                                  const ferry__wire_limits *limits, ferry__wire_out *out)
{
    size_t size = ferry__wire_envelope_size(env);
    size_t total = size;
    for (size_t i = 0; i < enc->n_atts; i++)
        if (__builtin_add_overflow(total, enc->atts[i].len, &total))
            total = SIZE_MAX;
    if (total > limits->max_message_bytes)
        return ferry__fail(FERRY_EINVAL, "message of %zu bytes exceeds the limit of %zu", total,
                           limits->max_message_bytes);
    out->header = ferry__malloc(size);
    if (!out->header)
        return ferry__fail(FERRY_ENOMEM, "out of memory packing a %zu-byte envelope", size);
    out->header_len = ferry__wire_envelope_write(env, out->header);
    return FERRY_OK;
}

ferry_status ferry__wire_encode(const ferry__msg *m, const ferry__wire_limits *limits,
                                ferry__wire_out *out)
{
    ferry__wire_limits defaults;
    if (!limits) {
        ferry__wire_limits_default(&defaults);
        limits = &defaults;
    }
    memset(out, 0, sizeof *out);
    ferry_status rc = check_msg(m);
    if (rc != FERRY_OK)
        return rc;
    ferry__wire_enc enc = {.limits = limits, .dst = m->dst};
    ferry__wire_tree trees[3];
    for (int i = 0; i < 3; i++)
        ferry__wire_tree_init(&trees[i]);
    Ferry__Wire__Envelope env = FERRY__WIRE__ENVELOPE__INIT;
    Ferry__Wire__Error err = FERRY__WIRE__ERROR__INIT;
    rc = ferry__wire_tree_encode(&enc, "args", m->args, &trees[0]);
    if (rc == FERRY_OK)
        rc = ferry__wire_tree_encode(&enc, "kwargs", m->kwargs, &trees[1]);
    if (rc == FERRY_OK)
        rc = ferry__wire_tree_encode(&enc, "value", m->value, &trees[2]);
    if (rc == FERRY_OK) {
        fill_envelope(m, &env, &err, trees);
        rc = place_attachments(&enc, limits, &env, &out->inline_bytes);
    }
    if (rc == FERRY_OK)
        rc = pack_envelope(&env, &enc, limits, out);
    if (rc == FERRY_OK) {
        out->atts = enc.atts; /* the references move to the caller */
        out->n_atts = enc.n_atts;
        enc.atts = NULL;
        enc.n_atts = 0;
    } else {
        ferry__free(out->header);
        memset(out, 0, sizeof *out);
    }
    ferry__free(env.attachments);
    for (int i = 0; i < 3; i++)
        ferry__wire_tree_free(&trees[i]);
    ferry__wire_enc_free(&enc);
    return rc;
}

void ferry__wire_out_free(ferry__wire_out *out)
{
    if (!out)
        return;
    ferry__free(out->header);
    ferry__wire_atts_free(out->atts, out->n_atts);
    memset(out, 0, sizeof *out);
}

/* ---- flat framing ---- */

ferry_status ferry__wire_encode_flat(const ferry__msg *m, const ferry__wire_limits *limits,
                                     uint8_t **buf, size_t *len)
{
    ferry__wire_out out;
    *buf = NULL;
    *len = 0;
    ferry_status rc = ferry__wire_encode(m, limits, &out);
    if (rc != FERRY_OK)
        return rc;
    if (out.header_len > UINT32_MAX) {
        ferry__wire_out_free(&out);
        return ferry__fail(FERRY_EINVAL, "envelope of %zu bytes is too long to frame",
                           out.header_len);
    }
    size_t total = 4 + out.header_len; /* pack_envelope bounded the sum by the limit */
    for (size_t i = 0; i < out.n_atts; i++)
        total += out.atts[i].len;
    uint8_t *p = ferry__malloc(total);
    if (!p) {
        ferry__wire_out_free(&out);
        return ferry__fail(FERRY_ENOMEM, "out of memory framing a %zu-byte message", total);
    }
    uint32_t h = (uint32_t)out.header_len;
    uint8_t prefix[4] = {(uint8_t)h, (uint8_t)(h >> 8), (uint8_t)(h >> 16), (uint8_t)(h >> 24)};
    memcpy(p, prefix, 4);
    memcpy(p + 4, out.header, out.header_len);
    size_t at = 4 + out.header_len;
    for (size_t i = 0; i < out.n_atts; i++) {
        if (out.atts[i].len)
            memcpy(p + at, out.atts[i].data, out.atts[i].len);
        at += out.atts[i].len;
    }
    ferry__wire_out_free(&out);
    *buf = p;
    *len = total;
    return FERRY_OK;
}

ferry_status ferry__wire_decode_flat(const void *buf, size_t len, const ferry__wire_limits *limits,
                                     ferry__msg *m)
{
    const uint8_t *p = buf;
    memset(m, 0, sizeof *m);
    if (!p && len)
        return ferry__fail(FERRY_EINVAL, "NULL buffer of %zu bytes", len);
    if (len < 4)
        return ferry__fail(FERRY_EPROTO, "message of %zu bytes is shorter than its length prefix",
                           len);
    size_t hlen = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
    if (hlen > len - 4)
        return ferry__fail(FERRY_EPROTO, "envelope says %zu bytes but only %zu follow", hlen,
                           len - 4);
    ferry__att *atts;
    size_t n_atts;
    ferry_status rc = ferry__wire_decode(p + 4, hlen, limits, m, &atts, &n_atts);
    if (rc != FERRY_OK)
        return rc;
    size_t need = 0, have = len - 4 - hlen;
    for (size_t i = 0; i < n_atts; i++)
        need += atts[i].len; /* bounded by max_message_bytes in decode */
    if (need != have) {
        rc = ferry__fail(FERRY_EPROTO, "attachments need %zu bytes but %zu follow the envelope",
                         need, have);
        ferry__msg id = {.id = m->id, .type = m->type, .src = m->src};
        ferry__msg_clear(m);
        *m = id;
    } else {
        const uint8_t *at = p + 4 + hlen;
        for (size_t i = 0; i < n_atts; i++) {
            if (atts[i].len)
                memcpy(atts[i].data, at, atts[i].len);
            at += atts[i].len;
        }
    }
    ferry__wire_atts_free(atts, n_atts);
    return rc;
}
