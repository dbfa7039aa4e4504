/* The hand-written envelope packer (rpc/wire_pack.c) against protobuf-c's own. It stays only as
   long as these hold: its table of fields matches protobuf-c's descriptors for every message
   the envelope can reach (so a field added to proto/ferry.proto fails here, not silently on the
   wire), and for thousands of random messages of every kind its bytes are protobuf-c's byte for
   byte, protobuf-c reads them back, and the decoder returns exactly what was encoded. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/value_impl.h"
#include "rpc/wire_internal.h"
#include "tensor/tensor_impl.h"
#include "test_util.h"

/* ---- the packer's table against the descriptors ---- */

static const ferry__wire_pack_schema *schema_of(const char *name)
{
    for (size_t i = 0; i < ferry__wire_n_pack_schemas; i++)
        if (strcmp(ferry__wire_pack_schemas[i].message, name) == 0)
            return &ferry__wire_pack_schemas[i];
    return NULL;
}

Test(wire_pack, table_matches_the_schema_when_every_reachable_message_is_checked, .timeout = 10)
{
    const ProtobufCMessageDescriptor *unvisited[64] = {&ferry__wire__envelope__descriptor};
    size_t n_unvisited = 1, n_seen = 0;
    const ProtobufCMessageDescriptor *seen[64];
    while (n_unvisited > 0) {
        const ProtobufCMessageDescriptor *d = unvisited[--n_unvisited];
        bool done = false;
        for (size_t i = 0; i < n_seen; i++)
            done = done || seen[i] == d;
        if (done)
            continue;
        cr_assert_lt(n_seen, 64);
        seen[n_seen++] = d;
        const ferry__wire_pack_schema *s = schema_of(d->name);
        cr_assert_not_null(s, "the packer does not know message %s", d->name);
        cr_assert_eq(s->n_fields, d->n_fields, "%s: the packer writes %zu fields, the schema has %u",
                     d->name, s->n_fields, d->n_fields);
        for (unsigned f = 0; f < d->n_fields; f++) {
            const ProtobufCFieldDescriptor *fd = &d->fields[f];
            bool known = false;
            for (size_t j = 0; j < s->n_fields; j++)
                known = known || s->fields[j] == fd->id;
            cr_assert(known, "%s.%s (field %u) is not written by rpc/wire_pack.c", d->name,
                      fd->name, fd->id);
            if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                cr_assert_lt(n_unvisited, 64);
                unvisited[n_unvisited++] = fd->descriptor;
            }
        }
    }
    cr_assert_eq(n_seen, ferry__wire_n_pack_schemas, "the packer's table names a message the "
                 "envelope cannot reach");
}

/* ---- random messages ---- */

typedef struct {
    uint64_t s;
} rng;

static uint64_t next(rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static uint64_t below(rng *r, uint64_t n)
{
    return next(r) % n;
}

static int64_t rand_i64(rng *r)
{
    static const int64_t edges[] = {0, 1, -1, INT64_MIN, INT64_MAX, INT32_MIN, INT32_MAX,
                                    127, 128, -128, (int64_t)1 << 35};
    if (below(r, 3) == 0)
        return edges[below(r, sizeof edges / sizeof *edges)];
    return (int64_t)(next(r) >> below(r, 64));
}

static int32_t rand_i32(rng *r)
{
    static const int32_t edges[] = {0, 1, -1, INT32_MIN, INT32_MAX};
    return below(r, 3) == 0 ? edges[below(r, 5)] : (int32_t)(next(r) >> below(r, 64));
}

static double rand_double(rng *r)
{
    static const double edges[] = {0.0, -0.0, 1.5, -1e300, INFINITY, -INFINITY, 5e-324};
    if (below(r, 3) == 0)
        return edges[below(r, sizeof edges / sizeof *edges)];
    uint64_t bits = next(r); /* any pattern: NaNs with payloads included */
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* A string of 0..n random bytes; `nul_ok` lets it hold NULs. NUL-terminated in `buf`. */
static size_t rand_bytes(rng *r, char *buf, size_t n, bool nul_ok)
{
    size_t len = below(r, n + 1);
    for (size_t i = 0; i < len; i++) {
        buf[i] = (char)below(r, 256);
        if (!nul_ok && buf[i] == 0)
            buf[i] = 'z';
    }
    buf[len] = 0;
    return len;
}

/* A stand-in RRef, as in test_wire.c: the wire sees only its descriptor. */
struct ferry_rref {
    int refs;
    ferry__rref_desc desc;
};

static ferry_rref *fake_retain(ferry_rref *r);
static void fake_release(ferry_rref *r);
static bool fake_equal(const ferry_rref *a, const ferry_rref *b);

/* The fakes as value kind ops, which take untyped objects. */
static void *fake_kind_retain(void *r)
{
    return fake_retain(r);
}

static void fake_kind_release(void *r)
{
    fake_release(r);
}

static bool fake_kind_equal(const void *a, const void *b)
{
    return fake_equal(a, b);
}

static ferry_rref *fake_retain(ferry_rref *r)
{
    r->refs++;
    return r;
}

static void fake_release(ferry_rref *r)
{
    if (--r->refs == 0)
        ferry__free(r);
}

static bool fake_equal(const ferry_rref *a, const ferry_rref *b)
{
    return memcmp(&a->desc, &b->desc, sizeof a->desc) == 0;
}

static ferry_status fake_encode(void *ctx, ferry_rref *r, int32_t dst, ferry__rref_desc *out)
{
    *out = r->desc;
    return FERRY_OK;
}

static ferry_rref *fake_decode(void *ctx, const ferry__rref_desc *desc, int32_t src)
{
    ferry_rref *r = ferry__calloc(1, sizeof *r);
    r->refs = 1;
    r->desc = *desc;
    return r;
}

static void fake_hook_release(void *ctx, ferry_rref *r)
{
    fake_release(r);
}

static ferry_tensor *rand_tensor(rng *r, ferry_tensor **last)
{
    if (*last && below(r, 4) == 0)
        return ferry_tensor_retain(*last); /* the same tensor twice: one attachment */
    static const ferry_dtype dtypes[] = {FERRY_FLOAT32, FERRY_FLOAT64, FERRY_INT64, FERRY_INT32,
                                         FERRY_UINT8, FERRY_BOOL, FERRY_FLOAT16};
    ferry_dtype dt = dtypes[below(r, sizeof dtypes / sizeof *dtypes)];
    int ndim = (int)below(r, 4);
    int64_t sizes[3];
    for (int d = 0; d < ndim; d++)
        sizes[d] = (int64_t)below(r, 4); /* zero-size tensors too */
    ferry_tensor *t = ferry_assert_ptr(ferry_zeros(ndim, sizes, dt));
    int64_t numel = ferry__shape_numel(ndim, sizes);
    for (int64_t i = 0; i < numel; i++) /* small integers: equal in every dtype, never NaN */
        ferry__store_from_double((char *)t->storage->data + i * (int64_t)ferry_dtype_size(dt),
                                 dt, (double)below(r, 2));
    if (ndim == 2 && below(r, 2)) { /* strided */
        ferry_tensor *tt = ferry_assert_ptr(ferry_tensor_transpose(t, 0, 1));
        ferry_tensor_release(t);
        t = tt;
    }
    bool floating = dt == FERRY_FLOAT32 || dt == FERRY_FLOAT64; /* those autograd takes */
    if (floating && below(r, 2))
        ferry_assert_ok(ferry_tensor_set_requires_grad(t, true));
    ferry_tensor_release(*last);
    *last = ferry_tensor_retain(t);
    return t;
}

static ferry_value *rand_value(rng *r, int depth, ferry_tensor **last);

static ferry_value *rand_list(rng *r, int depth, ferry_tensor **last)
{
    size_t n = below(r, 4);
    ferry_value *list = ferry_assert_ptr(ferry__list_new(n));
    for (size_t i = 0; i < n; i++)
        ferry__list_set(list, i, rand_value(r, depth + 1, last));
    return list;
}

static ferry_value *rand_dict(rng *r, int depth, ferry_tensor **last)
{
    ferry_value *d = ferry_dict_new();
    size_t n = below(r, 4);
    for (size_t i = 0; i < n; i++) {
        char key[40];
        int at = snprintf(key, sizeof key, "%zu", i); /* unique whatever follows */
        rand_bytes(r, key + at, 8, false);
        ferry_value *v = rand_value(r, depth + 1, last);
        ferry_assert_ok(ferry_dict_set(d, key, v));
        ferry_value_release(v);
    }
    return d;
}

static ferry_value *rand_value(rng *r, int depth, ferry_tensor **last)
{
    char buf[64];
    size_t len;
    ferry_tensor *t;
    ferry_rref *rr;
    ferry_value *v;
    switch (below(r, depth >= 3 ? 8 : 10)) {
    case 0: return ferry_none();
    case 1: return ferry_bool(below(r, 2));
    case 2: return ferry_int(rand_i64(r));
    case 3: return ferry_double(rand_double(r));
    case 4: len = rand_bytes(r, buf, 20, true); return ferry_string_n(buf, len);
    case 5: len = rand_bytes(r, buf, 20, true); return ferry_bytes(buf, len);
    case 6:
        t = rand_tensor(r, last);
        v = ferry_tensor_value(t);
        ferry_tensor_release(t);
        return v;
    case 7:
        rr = ferry__calloc(1, sizeof *rr);
        rr->refs = 1;
        rr->desc = (ferry__rref_desc){rand_i32(r), rand_i32(r), rand_i32(r), rand_i32(r),
                                      rand_i64(r), rand_i64(r)};
        v = ferry_rref_value(rr);
        fake_release(rr);
        return v;
    case 8: return rand_list(r, depth, last);
    default: return rand_dict(r, depth, last);
    }
}

/* Strings the message points to (freed after the round). */
typedef struct {
    char fn[32], msg[32], worker[32];
} strings;

static ferry__msg_gid rand_gid(rng *r)
{
    return (ferry__msg_gid){rand_i32(r), rand_i64(r)};
}

static ferry__msg rand_msg(rng *r, ferry__msg_type type, strings *s, ferry_tensor **last)
{
    ferry__msg m = {.type = type, .id = below(r, 4) ? next(r) >> below(r, 64) : UINT64_MAX,
                    .src = rand_i32(r)};
    m.n_ext = below(r, FERRY__MSG_MAX_EXT + 1);
    for (size_t i = 0; i < m.n_ext; i++)
        m.ext[i] = (ferry__msg_ext){(uint32_t)next(r), rand_i64(r)};
    m.no_reply = type != FERRY__MSG_RESPONSE && below(r, 2);
    bool calls = type == FERRY__MSG_CALL || type == FERRY__MSG_REMOTE_CALL;
    if (calls) {
        rand_bytes(r, s->fn, 30, false);
        m.fn = below(r, 8) ? s->fn : NULL;
        m.kwargs = below(r, 2) ? rand_dict(r, 1, last) : NULL;
        do
            m.timeout_s = rand_double(r);
        while (isnan(m.timeout_s)); /* refused on receive: not a timeout */
    }
    if (calls || type == FERRY__MSG_AUTOGRAD_BACKWARD)
        m.args = below(r, 4) ? rand_list(r, 1, last) : NULL;
    if (type == FERRY__MSG_REMOTE_CALL || type == FERRY__MSG_RREF_FETCH ||
        type == FERRY__MSG_RREF_USER_DELETE || type == FERRY__MSG_RREF_FORK_REQUEST)
        m.rref = rand_gid(r);
    if (type == FERRY__MSG_REMOTE_CALL || type == FERRY__MSG_RREF_CHILD_ACCEPT ||
        type == FERRY__MSG_RREF_USER_DELETE || type == FERRY__MSG_RREF_FORK_REQUEST)
        m.fork = rand_gid(r);
    if (type == FERRY__MSG_AUTOGRAD_BACKWARD || type == FERRY__MSG_AUTOGRAD_CLEANUP)
        m.autograd_context = rand_i64(r);
    if (type == FERRY__MSG_AUTOGRAD_BACKWARD) {
        m.autograd_message = rand_i64(r);
        m.retain_graph = below(r, 2);
    }
    if (type == FERRY__MSG_RESPONSE && below(r, 3) == 0) {
        m.is_error = true;
        m.err_code = (ferry_status)(1 + below(r, FERRY__STATUS_COUNT - 1));
        rand_bytes(r, s->msg, 30, false);
        rand_bytes(r, s->worker, 30, false);
        m.err_message = below(r, 8) ? s->msg : NULL;
        m.err_worker = s->worker;
    } else if (type == FERRY__MSG_RESPONSE) {
        m.value = below(r, 5) ? rand_value(r, 0, last) : NULL;
    }
    return m;
}

/* ---- exact comparison (doubles by their bits, tensors with requires_grad) ---- */

static bool same_value(const ferry_value *a, const ferry_value *b)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case FERRY_VALUE_DOUBLE: return memcmp(&a->u.d, &b->u.d, sizeof a->u.d) == 0;
    case FERRY_VALUE_TENSOR:
        return a->u.tensor->dtype == b->u.tensor->dtype &&
               ferry_tensor_requires_grad(a->u.tensor) == ferry_tensor_requires_grad(b->u.tensor) &&
               ferry_tensor_equal(a->u.tensor, b->u.tensor);
    case FERRY_VALUE_LIST:
        if (a->u.list.len != b->u.list.len)
            return false;
        for (size_t i = 0; i < a->u.list.len; i++)
            if (!same_value(a->u.list.items[i], b->u.list.items[i]))
                return false;
        return true;
    case FERRY_VALUE_DICT:
        if (a->u.dict.len != b->u.dict.len)
            return false;
        for (size_t i = 0; i < a->u.dict.len; i++)
            if (strcmp(a->u.dict.keys[i], b->u.dict.keys[i]) != 0 ||
                !same_value(a->u.dict.values[i], b->u.dict.values[i]))
                return false;
        return true;
    default: return ferry_value_equal(a, b);
    }
}

static const char *str(const char *s)
{
    return s ? s : "";
}

static void assert_same_msg(const ferry__msg *a, const ferry__msg *b, int round)
{
    cr_assert_eq(b->type, a->type, "round %d", round);
    cr_assert_eq(b->id, a->id, "round %d", round);
    cr_assert_eq(b->src, a->src, "round %d", round);
    cr_assert_eq(b->no_reply, a->no_reply, "round %d", round);
    cr_assert_eq(b->n_ext, a->n_ext, "round %d", round);
    cr_assert(memcmp(b->ext, a->ext, a->n_ext * sizeof *a->ext) == 0, "round %d: ext", round);
    bool calls = a->type == FERRY__MSG_CALL || a->type == FERRY__MSG_REMOTE_CALL;
    cr_assert_str_eq(str(b->fn), calls ? str(a->fn) : "", "round %d", round);
    cr_assert(b->timeout_s == (calls ? a->timeout_s : 0), "round %d: timeout", round);
    cr_assert(same_value(a->args, b->args), "round %d: args", round);
    cr_assert(same_value(a->kwargs, b->kwargs), "round %d: kwargs", round);
    cr_assert(same_value(a->value, b->value), "round %d: value", round);
    cr_assert_eq(b->is_error, a->is_error, "round %d", round);
    if (a->is_error) {
        cr_assert_eq(b->err_code, a->err_code, "round %d", round);
        cr_assert_str_eq(b->err_message, str(a->err_message), "round %d", round);
        cr_assert_str_eq(b->err_worker, str(a->err_worker), "round %d", round);
    }
    cr_assert(b->rref.worker == a->rref.worker && b->rref.local == a->rref.local,
              "round %d: rref", round);
    cr_assert(b->fork.worker == a->fork.worker && b->fork.local == a->fork.local,
              "round %d: fork", round);
    cr_assert_eq(b->autograd_context, a->autograd_context, "round %d", round);
    cr_assert_eq(b->autograd_message, a->autograd_message, "round %d", round);
    cr_assert_eq(b->retain_graph, a->retain_graph, "round %d", round);
}

static void release_msg_values(ferry__msg *m)
{
    ferry_value_release(m->args);
    ferry_value_release(m->kwargs);
    ferry_value_release(m->value);
}

/* One round: our bytes == protobuf-c's for the struct protobuf-c reads back from them, our
   packer writes that struct the same way, and the decoder returns the message sent. */
static void check_round(const ferry__msg *m, const ferry__wire_codec *codec, int round)
{
    ferry__wire_out out;
    ferry_assert_ok(ferry__wire_encode(m, codec, &out));
    Ferry__Wire__Envelope *env = ferry__wire__envelope__unpack(NULL, out.header_len, out.header);
    cr_assert_not_null(env, "round %d: protobuf-c cannot read the packer's bytes", round);
    size_t len = ferry__wire__envelope__get_packed_size(env);
    cr_assert_eq(len, out.header_len, "round %d: protobuf-c packs %zu bytes, ours %zu", round,
                 len, out.header_len);
    uint8_t *theirs = ferry__malloc(len + 1);
    ferry__wire__envelope__pack(env, theirs);
    cr_assert(memcmp(theirs, out.header, len) == 0, "round %d: bytes differ", round);
    ferry__wire_pack_plan plan;
    ferry__wire_pack_plan_init(&plan);
    cr_assert_eq(ferry__wire_envelope_size(env, &plan), len, "round %d", round);
    uint8_t *again = ferry__malloc(len + 1);
    cr_assert_eq(ferry__wire_envelope_write(env, &plan, again), len, "round %d", round);
    cr_assert(memcmp(again, theirs, len) == 0, "round %d: bytes differ on protobuf-c's struct",
              round);
    ferry__wire_pack_plan_free(&plan);
    ferry__wire__envelope__free_unpacked(env, NULL);

    ferry__msg got;
    ferry__att *atts;
    size_t n_atts;
    ferry_assert_ok(ferry__wire_decode(out.header, out.header_len, codec, &got, &atts, &n_atts));
    cr_assert_eq(n_atts, out.n_atts, "round %d", round);
    for (size_t i = 0; i < n_atts; i++) {
        cr_assert_eq(atts[i].len, out.atts[i].len);
        cr_assert_eq(atts[i].is_inline, out.atts[i].is_inline);
        if (atts[i].len)
            memcpy(atts[i].data, out.atts[i].data, atts[i].len);
    }
    ferry__wire_atts_free(atts, n_atts);
    assert_same_msg(m, &got, round);
    ferry__msg_clear(&got);
    ferry__free(again);
    ferry__free(theirs);
    ferry__wire_out_free(&out);
}

Test(wire_pack, bytes_equal_protobuf_c_when_random_messages_of_every_kind_are_packed,
     .timeout = 60)
{
    static const ferry__value_kind_ops vh = {fake_kind_retain, fake_kind_release, fake_kind_equal, NULL, NULL};
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_RREF, &vh));
    ferry__wire_codec codec = {.rref = {fake_encode, fake_decode, NULL, fake_hook_release}};
    ferry__wire_limits_default(&codec.limits);
    rng r = {0x2545f4914f6cdd1dull};
    int per_kind[FERRY__MSG_TYPE_COUNT] = {0};
    for (int round = 0; round < 4000; round++) {
        ferry__msg_type type = (ferry__msg_type)(1 + round % (FERRY__MSG_TYPE_COUNT - 1));
        strings s;
        ferry_tensor *last = NULL;
        ferry__msg m = rand_msg(&r, type, &s, &last);
        ferry_tensor_release(last);
        check_round(&m, &codec, round);
        release_msg_values(&m);
        per_kind[type]++;
    }
    for (int k = 1; k < FERRY__MSG_TYPE_COUNT; k++)
        cr_assert_gt(per_kind[k], 300, "kind %d", k);
}
