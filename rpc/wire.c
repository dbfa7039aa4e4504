/* The envelope half of the wire codec: ferry__msg <-> one protobuf-c Envelope whose body is
   the message's own kind (Call, Response, Error, the RRef kinds, Ping, the autograd kinds), the
   checks of which fields each kind carries, limits and the attachment list. Untrusted bytes are
   walked by the pre-scan (wire_scan.c) before protobuf-c unpacks them (or, for small calls and
   responses in canonical form, the fast path in wire_fast.c); value trees are built in
   wire_value.c, the envelope bytes are written by wire_pack.c, and wire_flat.c frames a whole
   message in one buffer for tests and tools. */
#include "rpc/wire.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/error.h"
#include "rpc/device_stage.h"
#include "rpc/wire_internal.h"

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

/* The codec of a NULL codec argument: default limits, no RRefs. */
static const ferry__wire_codec default_codec = {
    .limits = {.max_message_bytes = FERRY_MAX_MESSAGE_BYTES, .max_depth = 64,
               .max_nodes = (size_t)1 << 20, .inline_threshold = (size_t)16 << 10},
};

void ferry__wire_limits_default(ferry__wire_limits *limits)
{
    *limits = default_codec.limits;
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
    ferry__wire_sides_free(m->sides, m->n_sides);
    memset(m, 0, sizeof *m);
}

/* Global caches; each guards itself (core/cache.h). Packed envelopes up to HEADER_SMALL bytes
   (every tiny call's) come from a cache of buffers that size. */
#define HEADER_SMALL 256
typedef struct {
    _Alignas(16) uint8_t bytes[HEADER_SMALL];
} header_buf;
static ferry__cache msg_cache = FERRY__CACHE_INIT("message", sizeof(ferry__msg), NULL, NULL, 16);
static ferry__cache header_cache =
    FERRY__CACHE_INIT("envelope", sizeof(header_buf), NULL, NULL, 16);

ferry__msg *ferry__msg_new(void)
{
    return ferry__cache_get(&msg_cache);
}

void ferry__msg_free(ferry__msg *m)
{
    if (!m)
        return;
    ferry__msg_clear(m);
    ferry__cache_put(&msg_cache, m);
}

/* By the length written, which is never more than the size the buffer was got for: a buffer of
   HEADER_SMALL bytes or more is as good as one of the cache's. */
static void header_free(ferry__wire_out *out)
{
    if (out->header && out->header_len <= HEADER_SMALL)
        ferry__cache_put(&header_cache, out->header);
    else
        ferry__free(out->header);
    out->header = NULL;
}

/* ---- decode ---- */

/* Where a body's value trees are; they become args, kwargs and value, in that order. */
typedef struct {
    const char *what; /* NULL: the kind has no such tree */
    Ferry__Wire__Node *const *nodes;
    size_t n;
} tree_src;

static ferry_status read_call(const char *fn, double timeout_s, ferry__msg *m)
{
    if (isnan(timeout_s))
        return ferry__fail(FERRY_EPROTO, "timeout is not a number");
    m->timeout_s = timeout_s;
    if (fn && fn[0] && !(m->fn = ferry__strdup(fn)))
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding a function name");
    return FERRY_OK;
}

static ferry_status read_error(const Ferry__Wire__Error *e, ferry__msg *m)
{
    if (e->code == 0 || e->code >= FERRY__STATUS_COUNT)
        return ferry__fail(FERRY_EPROTO, "error code %u is out of range", e->code);
    m->is_error = true;
    m->err_code = (ferry_status)e->code;
    /* Only FERRY_EREMOTE has a cause; an older peer's 0 (or a code beyond ours) is not known,
       which stays FERRY_OK here so the message encodes again as it came. */
    m->err_remote = FERRY_OK;
    if (m->err_code == FERRY_EREMOTE && e->remote_code < FERRY__STATUS_COUNT)
        m->err_remote = (ferry_status)e->remote_code;
    m->err_message = ferry__strdup(e->message ? e->message : "");
    m->err_worker = ferry__strdup(e->worker ? e->worker : "");
    if (!m->err_message || !m->err_worker)
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding an error response");
    return FERRY_OK;
}

static ferry__msg_gid gid(int32_t worker, int64_t local)
{
    return (ferry__msg_gid){worker, local};
}

/* The body's own fields into `m`, and where its trees are. */
static ferry_status read_body(const Ferry__Wire__Envelope *env, ferry__msg *m, tree_src trees[3])
{
    switch (env->body_case) {
    case FERRY__WIRE__ENVELOPE__BODY_CALL: {
        const Ferry__Wire__Call *b = env->call;
        m->type = FERRY__MSG_CALL;
        trees[0] = (tree_src){"args", b->args, b->n_args};
        trees[1] = (tree_src){"kwargs", b->kwargs, b->n_kwargs};
        return read_call(b->fn, b->timeout_s, m);
    }
    case FERRY__WIRE__ENVELOPE__BODY_RESPONSE:
        m->type = FERRY__MSG_RESPONSE;
        trees[2] = (tree_src){"value", env->response->value, env->response->n_value};
        return FERRY_OK;
    case FERRY__WIRE__ENVELOPE__BODY_ERROR:
        m->type = FERRY__MSG_RESPONSE;
        return read_error(env->error, m);
    case FERRY__WIRE__ENVELOPE__BODY_REMOTE_CALL: {
        const Ferry__Wire__RemoteCall *b = env->remote_call;
        m->type = FERRY__MSG_REMOTE_CALL;
        m->rref = gid(b->rref_worker, b->rref_local);
        m->fork = gid(b->fork_worker, b->fork_local);
        trees[0] = (tree_src){"args", b->args, b->n_args};
        trees[1] = (tree_src){"kwargs", b->kwargs, b->n_kwargs};
        return read_call(b->fn, b->timeout_s, m);
    }
    case FERRY__WIRE__ENVELOPE__BODY_RREF_FETCH:
        m->type = FERRY__MSG_RREF_FETCH;
        m->rref = gid(env->rref_fetch->rref_worker, env->rref_fetch->rref_local);
        return FERRY_OK;
    case FERRY__WIRE__ENVELOPE__BODY_RREF_USER_DELETE: {
        const Ferry__Wire__RRefUserDelete *b = env->rref_user_delete;
        m->type = FERRY__MSG_RREF_USER_DELETE;
        m->rref = gid(b->rref_worker, b->rref_local);
        m->fork = gid(b->fork_worker, b->fork_local);
        return FERRY_OK;
    }
    case FERRY__WIRE__ENVELOPE__BODY_RREF_FORK_REQUEST: {
        const Ferry__Wire__RRefForkRequest *b = env->rref_fork_request;
        m->type = FERRY__MSG_RREF_FORK_REQUEST;
        m->rref = gid(b->rref_worker, b->rref_local);
        m->fork = gid(b->fork_worker, b->fork_local);
        return FERRY_OK;
    }
    case FERRY__WIRE__ENVELOPE__BODY_RREF_CHILD_ACCEPT:
        m->type = FERRY__MSG_RREF_CHILD_ACCEPT;
        m->fork = gid(env->rref_child_accept->fork_worker, env->rref_child_accept->fork_local);
        return FERRY_OK;
    case FERRY__WIRE__ENVELOPE__BODY_PING:
        m->type = FERRY__MSG_PING;
        return FERRY_OK;
    case FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_BACKWARD: {
        const Ferry__Wire__AutogradBackward *b = env->autograd_backward;
        m->type = FERRY__MSG_AUTOGRAD_BACKWARD;
        m->autograd_context = b->context_id;
        m->autograd_message = b->message_id;
        m->retain_graph = b->retain_graph;
        trees[0] = (tree_src){"grads", b->grads, b->n_grads};
        return FERRY_OK;
    }
    case FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_CLEANUP:
        m->type = FERRY__MSG_AUTOGRAD_CLEANUP;
        m->autograd_context = env->autograd_cleanup->context_id;
        return FERRY_OK;
    default: /* the pre-scan refused it already */
        return ferry__fail(FERRY_EPROTO, "envelope has no body of a known message kind");
    }
}

static ferry_status read_envelope(const Ferry__Wire__Envelope *env, ferry__msg *m,
                                  tree_src trees[3])
{
    m->id = env->id;
    m->src = env->src;
    if (env->n_ext > FERRY__MSG_MAX_EXT) /* the pre-scan refused it already */
        return ferry__fail(FERRY_EPROTO, "message has %zu ext entries (at most %d)", env->n_ext,
                           FERRY__MSG_MAX_EXT);
    for (size_t i = 0; i < env->n_ext; i++)
        m->ext[i] = (ferry__msg_ext){env->ext[i]->key, env->ext[i]->value};
    m->n_ext = env->n_ext;
    /* A body carries exactly its kind's fields: one it does not know came from a confused (or
       newer) sender, and dropping it would lose what it meant. New data goes in `ext` or in a
       new kind. Every body case's member is a message pointer in one union. */
    const ProtobufCMessage *body = env->body_case ? &env->call->base : NULL;
    if (body && body->n_unknown_fields)
        return ferry__fail(FERRY_EPROTO, "a %s body carries field %u, which that kind does not "
                           "have", body->descriptor->short_name, body->unknown_fields[0].tag);
    ferry_status rc = read_body(env, m, trees);
    if (rc == FERRY_OK && env->no_reply && m->type == FERRY__MSG_RESPONSE)
        return ferry__fail(FERRY_EPROTO, "a response says it wants no reply");
    m->no_reply = env->no_reply;
    return rc;
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

static ferry_status decode_trees(ferry__wire_dec *dec, const tree_src trees[3], ferry__msg *m)
{
    ferry_value **outs[3] = {&m->args, &m->kwargs, &m->value};
    static const ferry_kind want[2] = {FERRY_VALUE_LIST, FERRY_VALUE_DICT};
    for (int i = 0; i < 3; i++) {
        if (!trees[i].n)
            continue;
        ferry_status rc = ferry__wire_tree_decode(dec, trees[i].what, trees[i].nodes, trees[i].n,
                                                  outs[i]);
        if (rc != FERRY_OK)
            return rc;
        if (i < 2 && ferry_value_kind(*outs[i]) != want[i])
            return ferry__fail(FERRY_EPROTO, "%s is a %s, not a %s", trees[i].what,
                               ferry_kind_name(ferry_value_kind(*outs[i])),
                               ferry_kind_name(want[i]));
    }
    return FERRY_OK;
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
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; i < n; i++) {
        atts[i].data = dec->storages[i]->data;
        atts[i].len = (size_t)dec->att_lens[i];
        atts[i].tensor = dec->firsts[i];
        atts[i].is_inline = env->attachments[i]->is_inline;
        dec->firsts[i] = NULL;
        if (rc == FERRY_OK && dec->storages[i]->device.type != FERRY_CPU)
            rc = ferry__device_stage_in(dec->storages[i]->device, atts[i].data, atts[i].len,
                                        &atts[i]);
    }
    if (rc != FERRY_OK) {
        ferry__wire_atts_free(atts, n);
        return rc;
    }
    if (dec->device_failure) {
        atts[dec->device_att].failure_rc = dec->device_rc;
        atts[dec->device_att].failure = dec->device_failure;
        dec->device_failure = NULL;
    }
    *atts_out = atts;
    return FERRY_OK;
}

static ferry_status decode_envelope(const uint8_t *header, size_t len,
                                    const ferry__wire_codec *codec, ferry__msg *m,
                                    ferry__att **atts, size_t *n_atts)
{
    _Alignas(ARENA_ALIGN) uint8_t stack[ARENA_STACK_BYTES];
    pb_arena arena;
    pb_arena_init(&arena, stack, sizeof stack);
    ProtobufCAllocator alloc = {pb_alloc, pb_free, &arena};
    ferry__wire_fast fast;
    Ferry__Wire__Envelope *env = ferry__wire_fast_unpack(header, len, &fast)
                                     ? &fast.env
                                     : ferry__wire__envelope__unpack(&alloc, len, header);
    if (!env) {
        bool failed = arena.failed;
        pb_arena_free(&arena);
        return failed ? ferry__fail(FERRY_ENOMEM, "out of memory unpacking an envelope")
                      : ferry__fail(FERRY_EPROTO, "envelope does not parse");
    }
    uint64_t *lens = NULL;
    ferry__wire_dec dec = {.limits = &codec->limits, .rref = &codec->rref, .src = env->src};
    tree_src trees[3] = {{NULL, NULL, 0}, {NULL, NULL, 0}, {NULL, NULL, 0}};
    ferry_status rc = read_envelope(env, m, trees);
    if (rc == FERRY_OK)
        rc = read_attachments(env, len, &codec->limits, &lens);
    if (rc == FERRY_OK && env->n_attachments) {
        dec.n_atts = env->n_attachments;
        dec.att_lens = lens;
        dec.storages = ferry__calloc(dec.n_atts, sizeof *dec.storages);
        dec.firsts = ferry__calloc(dec.n_atts, sizeof *dec.firsts);
        if (!dec.storages || !dec.firsts)
            rc = ferry__fail(FERRY_ENOMEM, "out of memory decoding attachments");
    }
    if (rc == FERRY_OK)
        rc = decode_trees(&dec, trees, m);
    if (rc == FERRY_OK)
        rc = take_attachments(&dec, env, atts);
    if (rc == FERRY_OK) {
        *n_atts = dec.n_atts;
        ferry__wire_sides_move_msg(&dec, m);
    }
    ferry__wire_dec_free(&dec);
    ferry__free(lens);
    pb_arena_free(&arena); /* env and everything it points to */
    return rc;
}

ferry_status ferry__wire_decode(const void *header, size_t len, const ferry__wire_codec *codec,
                                ferry__msg *m, ferry__att **atts, size_t *n_atts)
{
    if (!codec)
        codec = &default_codec;
    memset(m, 0, sizeof *m);
    *atts = NULL;
    *n_atts = 0;
    if (!header && len)
        return ferry__fail(FERRY_EINVAL, "NULL envelope of %zu bytes", len);
    if (!header)
        header = ""; /* an empty envelope: refused below for its missing version */
    if (len > codec->limits.max_message_bytes)
        return ferry__fail(FERRY_EPROTO, "envelope of %zu bytes exceeds the limit of %zu", len,
                           codec->limits.max_message_bytes);
    ferry__wire_scan_info info;
    ferry_status rc = ferry__wire_scan(header, len, &codec->limits, &info);
    if (rc == FERRY_OK)
        rc = decode_envelope(header, len, codec, m, atts, n_atts);
    if (rc != FERRY_OK) {
        ferry__msg_clear(m);
        if (info.framed) { /* enough to address a reply */
            m->id = info.id;
            m->src = info.src;
            m->type = info.type;
        }
    }
    return rc;
}

/* ---- encode ---- */

/* The fields each kind carries, beyond id, src, no_reply and ext (and fn and timeout_s, which
   only calls send but any request may hold as the pending call's name and timeout). */
enum {
    C_ARGS = 1 << 0, C_KWARGS = 1 << 1, C_VALUE = 1 << 2, C_ERROR = 1 << 3, C_RREF = 1 << 4,
    C_FORK = 1 << 5, C_CONTEXT = 1 << 6, C_MESSAGE = 1 << 7, C_RETAIN = 1 << 8,
};
static const char *const field_names[] = {
    "args", "kwargs", "a value", "an error", "an RRef id", "a fork id", "an autograd context id",
    "an autograd message id", "retain_graph",
};
static const unsigned carries[FERRY__MSG_TYPE_COUNT] = {
    [FERRY__MSG_CALL] = C_ARGS | C_KWARGS,
    [FERRY__MSG_RESPONSE] = C_VALUE | C_ERROR,
    [FERRY__MSG_RREF_FETCH] = C_RREF,
    [FERRY__MSG_RREF_USER_DELETE] = C_RREF | C_FORK,
    [FERRY__MSG_RREF_FORK_REQUEST] = C_RREF | C_FORK,
    [FERRY__MSG_RREF_CHILD_ACCEPT] = C_FORK,
    [FERRY__MSG_REMOTE_CALL] = C_ARGS | C_KWARGS | C_RREF | C_FORK,
    [FERRY__MSG_AUTOGRAD_BACKWARD] = C_ARGS | C_CONTEXT | C_MESSAGE | C_RETAIN,
    [FERRY__MSG_AUTOGRAD_CLEANUP] = C_CONTEXT,
    [FERRY__MSG_PING] = 0,
};
static const char *const kind_names[FERRY__MSG_TYPE_COUNT] = {
    "invalid", "call", "response", "rref fetch", "rref user delete", "rref fork request",
    "rref child accept", "remote call", "autograd backward", "autograd cleanup", "ping",
};

static unsigned fields_present(const ferry__msg *m)
{
    return (m->args ? C_ARGS : 0) | (m->kwargs ? C_KWARGS : 0) | (m->value ? C_VALUE : 0) |
           (m->is_error ? C_ERROR : 0) | (m->rref.worker || m->rref.local ? C_RREF : 0) |
           (m->fork.worker || m->fork.local ? C_FORK : 0) |
           (m->autograd_context ? C_CONTEXT : 0) | (m->autograd_message ? C_MESSAGE : 0) |
           (m->retain_graph ? C_RETAIN : 0);
}

static ferry_status check_msg(const ferry__msg *m)
{
    if ((int)m->type <= FERRY__MSG_INVALID || (int)m->type >= FERRY__MSG_TYPE_COUNT)
        return ferry__fail(FERRY_EINVAL, "message type %d is not known", (int)m->type);
    unsigned extra = fields_present(m) & ~carries[m->type];
    if (extra)
        return ferry__fail(FERRY_EINVAL, "a %s message cannot carry %s", kind_names[m->type],
                           field_names[__builtin_ctz(extra)]);
    if (m->is_error && m->value)
        return ferry__fail(FERRY_EINVAL, "an error response cannot carry a value");
    if (m->no_reply && m->type == FERRY__MSG_RESPONSE)
        return ferry__fail(FERRY_EINVAL, "a response cannot ask for no reply");
    if (m->n_ext > FERRY__MSG_MAX_EXT)
        return ferry__fail(FERRY_EINVAL, "%zu ext entries (at most %d)", m->n_ext,
                           FERRY__MSG_MAX_EXT);
    if (m->args && ferry_value_kind(m->args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "%s must be a list, not a %s",
                           m->type == FERRY__MSG_AUTOGRAD_BACKWARD ? "grads" : "args",
                           ferry_kind_name(ferry_value_kind(m->args)));
    if (m->kwargs && ferry_value_kind(m->kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "kwargs must be a dict, not a %s",
                           ferry_kind_name(ferry_value_kind(m->kwargs)));
    if (m->is_error && (m->err_code <= FERRY_OK || m->err_code >= FERRY__STATUS_COUNT))
        return ferry__fail(FERRY_EINVAL, "error code %d is out of range", (int)m->err_code);
    if (m->is_error && (m->err_remote < FERRY_OK || m->err_remote >= FERRY__STATUS_COUNT ||
                        (m->err_remote != FERRY_OK && m->err_code != FERRY_EREMOTE)))
        return ferry__fail(FERRY_EINVAL, "remote error code %d is out of range or not behind "
                           "FERRY_EREMOTE", (int)m->err_remote);
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

/* Room for the one body a message has, and its ext entries. */
typedef struct {
    union {
        Ferry__Wire__Call call;
        Ferry__Wire__Response response;
        Ferry__Wire__Error error;
        Ferry__Wire__RemoteCall remote_call;
        Ferry__Wire__RRefFetch fetch;
        Ferry__Wire__RRefUserDelete user_delete;
        Ferry__Wire__RRefForkRequest fork_request;
        Ferry__Wire__RRefChildAccept child_accept;
        Ferry__Wire__Ping ping;
        Ferry__Wire__AutogradBackward backward;
        Ferry__Wire__AutogradCleanup cleanup;
    } u;
    Ferry__Wire__Ext ext[FERRY__MSG_MAX_EXT];
    Ferry__Wire__Ext *ext_ptrs[FERRY__MSG_MAX_EXT];
} body_room;

/* Empty bodies (protobuf-c's initializers), copied into the room before they are filled. */
static const Ferry__Wire__Call call_init = FERRY__WIRE__CALL__INIT;
static const Ferry__Wire__RemoteCall remote_call_init = FERRY__WIRE__REMOTE_CALL__INIT;
static const Ferry__Wire__Response response_init = FERRY__WIRE__RESPONSE__INIT;
static const Ferry__Wire__Error error_init = FERRY__WIRE__ERROR__INIT;
static const Ferry__Wire__RRefFetch fetch_init = FERRY__WIRE__RREF_FETCH__INIT;
static const Ferry__Wire__RRefUserDelete user_delete_init = FERRY__WIRE__RREF_USER_DELETE__INIT;
static const Ferry__Wire__RRefForkRequest fork_request_init = FERRY__WIRE__RREF_FORK_REQUEST__INIT;
static const Ferry__Wire__RRefChildAccept child_accept_init = FERRY__WIRE__RREF_CHILD_ACCEPT__INIT;
static const Ferry__Wire__Ping ping_init = FERRY__WIRE__PING__INIT;
static const Ferry__Wire__AutogradBackward backward_init = FERRY__WIRE__AUTOGRAD_BACKWARD__INIT;
static const Ferry__Wire__AutogradCleanup cleanup_init = FERRY__WIRE__AUTOGRAD_CLEANUP__INIT;

static void fill_calls(const ferry__msg *m, const ferry__wire_tree *trees,
                       Ferry__Wire__Envelope *env, body_room *b)
{
    char *fn = m->fn ? m->fn : (char *)"";
    if (m->type == FERRY__MSG_CALL) {
        b->u.call = call_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_CALL;
        env->call = &b->u.call;
        b->u.call.fn = fn;
        b->u.call.n_args = trees[0].n;
        b->u.call.args = trees[0].ptrs;
        b->u.call.n_kwargs = trees[1].n;
        b->u.call.kwargs = trees[1].ptrs;
        b->u.call.timeout_s = m->timeout_s;
        return;
    }
    Ferry__Wire__RemoteCall *r = &b->u.remote_call;
    b->u.remote_call = remote_call_init;
    env->body_case = FERRY__WIRE__ENVELOPE__BODY_REMOTE_CALL;
    env->remote_call = &b->u.remote_call;
    r->fn = fn;
    r->n_args = trees[0].n;
    r->args = trees[0].ptrs;
    r->n_kwargs = trees[1].n;
    r->kwargs = trees[1].ptrs;
    r->timeout_s = m->timeout_s;
    r->rref_worker = m->rref.worker;
    r->rref_local = m->rref.local;
    r->fork_worker = m->fork.worker;
    r->fork_local = m->fork.local;
}

static void fill_rref(const ferry__msg *m, Ferry__Wire__Envelope *env, body_room *b)
{
    switch (m->type) {
    case FERRY__MSG_RREF_FETCH:
        b->u.fetch = fetch_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_RREF_FETCH;
        env->rref_fetch = &b->u.fetch;
        b->u.fetch.rref_worker = m->rref.worker;
        b->u.fetch.rref_local = m->rref.local;
        break;
    case FERRY__MSG_RREF_USER_DELETE:
        b->u.user_delete = user_delete_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_RREF_USER_DELETE;
        env->rref_user_delete = &b->u.user_delete;
        b->u.user_delete.rref_worker = m->rref.worker;
        b->u.user_delete.rref_local = m->rref.local;
        b->u.user_delete.fork_worker = m->fork.worker;
        b->u.user_delete.fork_local = m->fork.local;
        break;
    case FERRY__MSG_RREF_FORK_REQUEST:
        b->u.fork_request = fork_request_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_RREF_FORK_REQUEST;
        env->rref_fork_request = &b->u.fork_request;
        b->u.fork_request.rref_worker = m->rref.worker;
        b->u.fork_request.rref_local = m->rref.local;
        b->u.fork_request.fork_worker = m->fork.worker;
        b->u.fork_request.fork_local = m->fork.local;
        break;
    default: /* FERRY__MSG_RREF_CHILD_ACCEPT */
        b->u.child_accept = child_accept_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_RREF_CHILD_ACCEPT;
        env->rref_child_accept = &b->u.child_accept;
        b->u.child_accept.fork_worker = m->fork.worker;
        b->u.child_accept.fork_local = m->fork.local;
        break;
    }
}

static void fill_response(const ferry__msg *m, const ferry__wire_tree *trees,
                          Ferry__Wire__Envelope *env, body_room *b)
{
    if (m->is_error) {
        b->u.error = error_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_ERROR;
        env->error = &b->u.error;
        b->u.error.code = (uint32_t)m->err_code;
        b->u.error.remote_code = (uint32_t)m->err_remote;
        b->u.error.message = m->err_message ? m->err_message : (char *)"";
        b->u.error.worker = m->err_worker ? m->err_worker : (char *)"";
        return;
    }
    b->u.response = response_init;
    env->body_case = FERRY__WIRE__ENVELOPE__BODY_RESPONSE;
    env->response = &b->u.response;
    b->u.response.n_value = trees[2].n;
    b->u.response.value = trees[2].ptrs;
}

static void fill_envelope(const ferry__msg *m, const ferry__wire_tree *trees,
                          Ferry__Wire__Envelope *env, body_room *b)
{
    static const Ferry__Wire__Ext ext_init = FERRY__WIRE__EXT__INIT;
    env->version = FERRY__WIRE_VERSION;
    env->id = m->id;
    env->src = m->src;
    env->no_reply = m->no_reply;
    for (size_t i = 0; i < m->n_ext; i++) {
        b->ext[i] = ext_init;
        b->ext[i].key = m->ext[i].key;
        b->ext[i].value = m->ext[i].value;
        b->ext_ptrs[i] = &b->ext[i];
    }
    env->n_ext = m->n_ext;
    env->ext = m->n_ext ? b->ext_ptrs : NULL;
    switch (m->type) {
    case FERRY__MSG_CALL:
    case FERRY__MSG_REMOTE_CALL:
        fill_calls(m, trees, env, b);
        break;
    case FERRY__MSG_RESPONSE:
        fill_response(m, trees, env, b);
        break;
    case FERRY__MSG_PING:
        b->u.ping = ping_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_PING;
        env->ping = &b->u.ping;
        break;
    case FERRY__MSG_AUTOGRAD_BACKWARD:
        b->u.backward = backward_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_BACKWARD;
        env->autograd_backward = &b->u.backward;
        b->u.backward.context_id = m->autograd_context;
        b->u.backward.message_id = m->autograd_message;
        b->u.backward.n_grads = trees[0].n;
        b->u.backward.grads = trees[0].ptrs;
        b->u.backward.retain_graph = m->retain_graph;
        break;
    case FERRY__MSG_AUTOGRAD_CLEANUP:
        b->u.cleanup = cleanup_init;
        env->body_case = FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_CLEANUP;
        env->autograd_cleanup = &b->u.cleanup;
        b->u.cleanup.context_id = m->autograd_context;
        break;
    default: /* the RRef kinds; check_msg admitted nothing else */
        fill_rref(m, env, b);
        break;
    }
}

static ferry_status pack_envelope(const Ferry__Wire__Envelope *env, const ferry__wire_enc *enc,
                                  const ferry__wire_limits *limits, ferry__wire_out *out)
{
    ferry__wire_pack_plan plan;
    ferry__wire_pack_plan_init(&plan);
    size_t size = ferry__wire_envelope_size(env, &plan);
    if (size == SIZE_MAX) {
        ferry__wire_pack_plan_free(&plan);
        return ferry__fail(FERRY_ENOMEM, "out of memory sizing an envelope");
    }
    size_t total = size;
    for (size_t i = 0; i < enc->n_atts; i++)
        if (__builtin_add_overflow(total, enc->atts[i].len, &total))
            total = SIZE_MAX;
    ferry_status rc = FERRY_OK;
    if (total > limits->max_message_bytes)
        rc = ferry__fail(FERRY_EINVAL, "message of %zu bytes exceeds the limit of %zu", total,
                         limits->max_message_bytes);
    else if (!(out->header = size <= HEADER_SMALL ? ferry__cache_get(&header_cache)
                                                  : ferry__malloc(size)))
        rc = ferry__fail(FERRY_ENOMEM, "out of memory packing a %zu-byte envelope", size);
    else
        out->header_len = ferry__wire_envelope_write(env, &plan, out->header);
    ferry__wire_pack_plan_free(&plan);
    return rc;
}

ferry_status ferry__wire_encode(const ferry__msg *m, const ferry__wire_codec *codec,
                                ferry__wire_out *out)
{
    if (!codec)
        codec = &default_codec;
    const ferry__wire_limits *limits = &codec->limits;
    memset(out, 0, sizeof *out);
    ferry_status rc = check_msg(m);
    if (rc != FERRY_OK)
        return rc;
    ferry__wire_enc enc = {.limits = limits, .rref = &codec->rref, .device = &codec->device,
                           .dst = m->dst,
                           .reverse = m->type == FERRY__MSG_RESPONSE ||
                                      (m->type == FERRY__MSG_AUTOGRAD_BACKWARD &&
                                       !m->device_as_request)};
    ferry__wire_tree trees[3];
    for (int i = 0; i < 3; i++)
        ferry__wire_tree_init(&trees[i]);
    Ferry__Wire__Envelope env = FERRY__WIRE__ENVELOPE__INIT;
    body_room body;
    const char *names[3] = {m->type == FERRY__MSG_AUTOGRAD_BACKWARD ? "grads" : "args",
                            "kwargs", "value"};
    const ferry_value *roots[3] = {m->args, m->kwargs, m->value};
    for (int i = 0; i < 3 && rc == FERRY_OK; i++)
        if (roots[i])
            rc = ferry__wire_tree_encode(&enc, names[i], roots[i], &trees[i]);
    if (rc == FERRY_OK) {
        fill_envelope(m, trees, &env, &body);
        rc = place_attachments(&enc, limits, &env, &out->inline_bytes);
    }
    if (rc == FERRY_OK)
        rc = pack_envelope(&env, &enc, limits, out);
    if (rc == FERRY_OK) {
        out->atts = enc.atts; /* the references move to the caller */
        out->n_atts = enc.n_atts;
        enc.atts = NULL;
        enc.n_atts = 0;
        ferry__wire_sides_move_out(&enc, out);
    } else {
        header_free(out);
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
    header_free(out);
    ferry__wire_atts_free(out->atts, out->n_atts);
    ferry__wire_sides_free(out->sides, out->n_sides);
    memset(out, 0, sizeof *out);
}
