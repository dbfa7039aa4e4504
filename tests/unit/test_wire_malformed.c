/* The wire decoder against hostile input: truncations at every length, counts that lie, depth
   and node-count bombs, tensor descriptors whose sizes overflow or outrun their attachment, bad
   dtypes, versions, kinds and codes, missing or doubled bodies, too many ext entries, NULs in
   names, and random bytes. Every case must end in FERRY_EPROTO with
   a message naming what was wrong, nothing leaked, and the message zeroed except id/type/src.
   On the sending side, values the wire never carries (objects) are refused by name. */
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "ferry/object.h"
#include "proto/ferry.pb-c.h"
#include "rpc/wire.h"
#include "test_util.h"

#define NODE_INIT FERRY__WIRE__NODE__INIT
#define KIND(k) FERRY__WIRE__KIND__KIND_##k

static uint8_t *pack(const Ferry__Wire__Envelope *env, size_t *len)
{
    *len = ferry__wire__envelope__get_packed_size(env);
    uint8_t *buf = ferry__malloc(*len ? *len : 1);
    cr_assert_not_null(buf);
    ferry__wire__envelope__pack(env, buf);
    return buf;
}

/* A response envelope (id 99 from rank 2) whose value is `nodes`, its body in *body. */
static Ferry__Wire__Envelope response(Ferry__Wire__Response *body, Ferry__Wire__Node **nodes,
                                      size_t n)
{
    Ferry__Wire__Envelope env = FERRY__WIRE__ENVELOPE__INIT;
    *body = (Ferry__Wire__Response)FERRY__WIRE__RESPONSE__INIT;
    body->n_value = n;
    body->value = nodes;
    env.version = FERRY__WIRE_VERSION;
    env.id = 99;
    env.src = 2;
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_RESPONSE;
    env.response = body;
    return env;
}

static void assert_cleared(const ferry__msg *m)
{
    cr_assert_null(m->args);
    cr_assert_null(m->kwargs);
    cr_assert_null(m->value);
    cr_assert_null(m->fn);
    cr_assert_null(m->err_message);
    cr_assert(!m->is_error);
}

/* Decodes `env` and expects FERRY_EPROTO with `needle` in the message. */
static void expect_eproto_codec(const Ferry__Wire__Envelope *env, const char *needle,
                                const ferry__wire_codec *codec)
{
    size_t len;
    uint8_t *buf = pack(env, &len);
    ferry__msg m;
    ferry__att *atts;
    size_t n_atts;
    ferry_status rc = ferry__wire_decode(buf, len, codec, &m, &atts, &n_atts);
    cr_assert_eq(rc, FERRY_EPROTO, "expected EPROTO (%s), got %s: %s", needle,
                 ferry_strerror(rc), ferry_last_error());
    cr_assert(strstr(ferry_last_error(), needle), "message \"%s\" lacks \"%s\"",
              ferry_last_error(), needle);
    cr_assert_null(atts);
    cr_assert_eq(n_atts, 0);
    assert_cleared(&m);
    cr_assert_eq(m.id, env->id, "the id must survive for the reply");
    cr_assert_eq(m.src, env->src);
    ferry__free(buf);
}

static void expect_eproto(const Ferry__Wire__Envelope *env, const char *needle)
{
    expect_eproto_codec(env, needle, NULL);
}

/* One tensor node over `n_atts` attachments of `att_len` bytes each. */
static void expect_tensor_eproto(Ferry__Wire__TensorDesc *td, uint64_t att_len, size_t n_atts,
                                 const char *needle)
{
    Ferry__Wire__Node nd = NODE_INIT;
    nd.kind = KIND(TENSOR);
    nd.tensor = td;
    Ferry__Wire__Node *nodes[1] = {&nd};
    Ferry__Wire__Attachment att = FERRY__WIRE__ATTACHMENT__INIT;
    att.len = att_len;
    Ferry__Wire__Attachment *atts[2] = {&att, &att};
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 1);
    env.n_attachments = n_atts;
    env.attachments = atts;
    expect_eproto(&env, needle);
}

static uint8_t *valid_call(size_t *len)
{
    int64_t sizes[2] = {3, 4};
    ferry_tensor *t = ferry_zeros(2, sizes, FERRY_FLOAT32);
    ferry_tensor *tt = ferry_tensor_transpose(t, 0, 1);
    ferry_value *kw = ferry_dict_new(), *b = ferry_bytes("\0x", 2);
    ferry_dict_set(kw, "k", b);
    ferry_value *args = ferry_args(3, ferry_tensor_value(t), ferry_tensor_value(tt),
                                   ferry_list_of(2, ferry_string("s"), ferry_int(-5)));
    ferry__msg m = {.type = FERRY__MSG_CALL, .id = 5, .src = 1, .fn = "torch.add",
                    .args = args, .kwargs = kw, .n_ext = 1, .ext = {{4, -4}}};
    uint8_t *buf;
    ferry_assert_ok(ferry__wire_encode_flat(&m, NULL, &buf, len));
    ferry_value_release(args);
    ferry_value_release(kw);
    ferry_value_release(b);
    ferry_tensor_release(tt);
    ferry_tensor_release(t);
    return buf;
}

Test(wire_malformed, every_truncation_fails_when_the_flat_message_is_cut, .timeout = 20)
{
    size_t len;
    uint8_t *buf = valid_call(&len);
    for (size_t cut = 0; cut < len; cut++) {
        ferry__msg m;
        ferry_status rc = ferry__wire_decode_flat(buf, cut, NULL, &m);
        cr_assert_eq(rc, FERRY_EPROTO, "cut at %zu of %zu: %s", cut, len, ferry_strerror(rc));
        assert_cleared(&m);
    }
    ferry__msg m;
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, NULL, &m));
    ferry__msg_clear(&m);
    ferry__free(buf);
}

Test(wire_malformed, cut_envelopes_never_crash_when_decoded_alone, .timeout = 20)
{
    size_t len;
    uint8_t *buf = valid_call(&len);
    size_t hlen = (size_t)buf[0] | (size_t)buf[1] << 8;
    for (size_t cut = 0; cut < hlen; cut++) {
        ferry__msg m;
        ferry__att *atts;
        size_t n;
        ferry_status rc = ferry__wire_decode(buf + 4, cut, NULL, &m, &atts, &n);
        /* a cut on a field boundary is a shorter valid envelope; anything else is refused */
        cr_assert(rc == FERRY_OK || rc == FERRY_EPROTO, "cut at %zu: %s", cut, ferry_strerror(rc));
        ferry__wire_atts_free(atts, n);
        ferry__msg_clear(&m);
    }
    ferry__free(buf);
}

Test(wire_malformed, decode_fails_when_a_list_count_lies, .timeout = 10)
{
    Ferry__Wire__Node nd[4] = {NODE_INIT, NODE_INIT, NODE_INIT, NODE_INIT};
    Ferry__Wire__Node *nodes[4] = {&nd[0], &nd[1], &nd[2], &nd[3]};
    nd[0].kind = KIND(LIST);
    nd[0].count = 5;
    for (int i = 1; i < 4; i++)
        nd[i].kind = KIND(INT);
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 4);
    expect_eproto(&env, "list at node 0 says 5 items but the nodes end after 3");
    nd[0].count = 2; /* too few: the third item trails the value */
    expect_eproto(&env, "value: node 3 follows the end of the value");
    nd[0].count = 3;
    nd[0].kind = KIND(DICT); /* children without keys are "" keys, so the three collide */
    expect_eproto(&env, "twice");
}

Test(wire_malformed, decode_fails_fast_when_nodes_nest_a_million_deep, .timeout = 10)
{
    /* Written byte by byte: a Response body (envelope field 8) holding a million list nodes of
       count 1, then an int. Each node is field 1 (value), length 4, kind = 7, count = 1. */
    size_t depth = 1000000, body_len = depth * 6 + 4, len = 2 + 1 + 4 + body_len;
    uint8_t *buf = ferry__malloc(len), *p = buf;
    *p++ = 0x08; /* version */
    *p++ = FERRY__WIRE_VERSION;
    *p++ = 0x42; /* field 8, length-delimited: the response */
    *p++ = (uint8_t)(body_len | 0x80); /* its length as a four-byte varint */
    *p++ = (uint8_t)(body_len >> 7 | 0x80);
    *p++ = (uint8_t)(body_len >> 14 | 0x80);
    *p++ = (uint8_t)(body_len >> 21);
    cr_assert_lt(body_len, (size_t)1 << 28);
    for (size_t i = 0; i < depth; i++) {
        const uint8_t node[6] = {0x0a, 0x04, 0x08, 0x07, 0x30, 0x01};
        memcpy(p, node, sizeof node);
        p += sizeof node;
    }
    const uint8_t leaf[4] = {0x0a, 0x02, 0x08, 0x02};
    memcpy(p, leaf, sizeof leaf);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_status(ferry__wire_decode(buf, len, NULL, &m, &atts, &n), FERRY_EPROTO);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    cr_assert(strstr(ferry_last_error(), "node 64 nests deeper than the limit of 64"), "%s",
              ferry_last_error());
    cr_assert_lt(s, 0.5, "took %.3f s", s);
    assert_cleared(&m);
    ferry__free(buf);
}

Test(wire_malformed, decode_fails_when_nodes_pass_the_node_limit, .timeout = 10)
{
    ferry__wire_codec lim = {0};
    ferry__wire_limits_default(&lim.limits);
    lim.limits.max_nodes = 1000;
    Ferry__Wire__Node *nodes[1001];
    static Ferry__Wire__Node nd[1001];
    for (int i = 0; i < 1001; i++) {
        nd[i] = (Ferry__Wire__Node)NODE_INIT;
        nd[i].kind = KIND(NONE);
        nodes[i] = &nd[i];
    }
    nd[0].kind = KIND(LIST);
    nd[0].count = 1000;
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 1001);
    expect_eproto_codec(&env, "more than 1000 values", &lim);
}

Test(wire_malformed, decode_fails_when_tensor_sizes_overflow, .timeout = 10)
{
    Ferry__Wire__TensorDesc td = FERRY__WIRE__TENSOR_DESC__INIT;
    int64_t huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    td.n_sizes = 2;
    td.sizes = huge;
    expect_tensor_eproto(&td, 16, 1, "tensor 0: float32 [1099511627776, 1099511627776] has more "
                         "elements than fit in memory");
    int64_t one[1] = {(int64_t)1 << 61}; /* numel fits, bytes do not */
    td.n_sizes = 1;
    td.sizes = one;
    td.dtype = FERRY_FLOAT64;
    expect_tensor_eproto(&td, 16, 1, "more elements than fit in memory");
}

Test(wire_malformed, decode_fails_when_the_attachment_is_too_small, .timeout = 10)
{
    Ferry__Wire__TensorDesc td = FERRY__WIRE__TENSOR_DESC__INIT;
    int64_t sizes[2] = {1000, 1000};
    td.n_sizes = 2;
    td.sizes = sizes;
    expect_tensor_eproto(&td, 16, 1,
                         "tensor 0: float32 [1000, 1000] needs 4000000 bytes but attachment 0 has 16");
    int64_t strides[2] = {1000, 2}; /* strided: the last element is at 999 * 1000 + 999 * 2 */
    td.n_strides = 2;
    td.strides = strides;
    expect_tensor_eproto(&td, 4000000, 1, "needs 4003996 bytes but attachment 0 has 4000000");
    td.n_strides = 0;
    td.offset = 1; /* contiguous but shifted one element past the end */
    expect_tensor_eproto(&td, 4000000, 1, "needs 4000004 bytes");
}

Test(wire_malformed, decode_fails_when_a_descriptor_field_is_out_of_range, .timeout = 10)
{
    Ferry__Wire__TensorDesc td = FERRY__WIRE__TENSOR_DESC__INIT;
    int64_t sizes[17] = {2, 2};
    td.n_sizes = 2;
    td.sizes = sizes;
    td.dtype = 99;
    expect_tensor_eproto(&td, 16, 1, "tensor 0: dtype 99 is not known");
    td.dtype = FERRY_FLOAT32;
    td.device_type = 1;
    expect_tensor_eproto(&td, 16, 1, "CUDA");
    td.device_type = 7;
    expect_tensor_eproto(&td, 16, 1, "device type 7");
    td.device_type = 0;
    td.attachment = 1;
    expect_tensor_eproto(&td, 16, 1, "attachment 1 does not exist");
    td.attachment = 0;
    td.n_sizes = 17;
    expect_tensor_eproto(&td, 16, 1, "17 dimensions");
    td.n_sizes = 2;
    sizes[1] = -2;
    expect_tensor_eproto(&td, 16, 1, "size -2 in dimension 1 is negative");
    sizes[1] = 2;
    int64_t strides[2] = {2, -1};
    td.n_strides = 1;
    td.strides = strides;
    expect_tensor_eproto(&td, 16, 1, "1 strides for 2 dimensions");
    td.n_strides = 2;
    expect_tensor_eproto(&td, 16, 1, "stride -1 in dimension 1 is negative");
    td.n_strides = 0;
    td.offset = -1;
    expect_tensor_eproto(&td, 16, 1, "offset -1 is negative");
    td.offset = 0;
    expect_tensor_eproto(&td, 16, 2, "attachment 1 is not used by any tensor");
}

Test(wire_malformed, decode_fails_when_the_version_is_unknown, .timeout = 10)
{
    Ferry__Wire__Node nd = NODE_INIT;
    Ferry__Wire__Node *nodes[1] = {&nd};
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 1);
    env.version = 1;
    expect_eproto(&env, "wire version 1 not supported (this build reads 2)");
    size_t len;
    uint8_t *buf = pack(&env, &len);
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_status(ferry__wire_decode(buf, len, NULL, &m, &atts, &n), FERRY_EPROTO);
    cr_assert_eq(m.type, FERRY__MSG_RESPONSE, "the type must survive for the reply");
    ferry__free(buf);
    env.version = 0;
    expect_eproto(&env, "wire version 0 not supported");
}

Test(wire_malformed, decode_fails_when_kinds_types_or_codes_are_unknown, .timeout = 10)
{
    Ferry__Wire__Node nd = NODE_INIT;
    Ferry__Wire__Node *nodes[1] = {&nd};
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 1);
    nd.kind = (Ferry__Wire__Kind)10;
    expect_eproto(&env, "value: node 0 has unknown kind 10");
    nd.kind = (Ferry__Wire__Kind)-1;
    expect_eproto(&env, "unknown kind -1");
    nd.kind = KIND(INT);
    nd.count = 3;
    expect_eproto(&env, "node 0 is a int but declares 3 items");
    nd.count = 0;
    nd.kind = KIND(TENSOR);
    expect_eproto(&env, "without a tensor descriptor");
    nd.kind = KIND(RREF);
    expect_eproto(&env, "without an RRef descriptor");
    nd.kind = KIND(NONE);
    nd.data = (ProtobufCBinaryData){2, (uint8_t *)"ab"};
    expect_eproto(&env, "carries 2 bytes");
    nd.data = (ProtobufCBinaryData){0, NULL};
    Ferry__Wire__Error err = FERRY__WIRE__ERROR__INIT;
    err.code = 1000;
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_ERROR;
    env.error = &err;
    expect_eproto(&env, "error code 1000 is out of range");
    err.code = 0;
    expect_eproto(&env, "error code 0 is out of range");
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_RESPONSE;
    env.response = &body;
    Ferry__Wire__Ext ext = FERRY__WIRE__EXT__INIT;
    Ferry__Wire__Ext *exts[5] = {&ext, &ext, &ext, &ext, &ext};
    env.n_ext = 5;
    env.ext = exts;
    expect_eproto(&env, "5 ext entries (at most 4)");
    env.n_ext = 4;
    size_t len;
    uint8_t *buf = pack(&env, &len);
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_ok(ferry__wire_decode(buf, len, NULL, &m, &atts, &n));
    cr_assert_eq(m.n_ext, 4, "four is the limit, not past it");
    ferry__msg_clear(&m);
    ferry__free(buf);
    env.n_ext = 0;
    env.no_reply = true;
    expect_eproto(&env, "a response says it wants no reply");
}

Test(wire_malformed, decode_fails_when_the_body_is_missing_unknown_or_doubled, .timeout = 10)
{
    Ferry__Wire__Node nd = NODE_INIT;
    Ferry__Wire__Node *nodes[1] = {&nd};
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 1);
    env.body_case = FERRY__WIRE__ENVELOPE__BODY__NOT_SET;
    expect_eproto(&env, "envelope has no body of a known message kind");
    /* a kind from a newer peer: field 18, unknown here, is skipped and leaves no body */
    Ferry__Wire__Envelope bare = response(&body, nodes, 1);
    bare.body_case = FERRY__WIRE__ENVELOPE__BODY__NOT_SET;
    size_t len;
    uint8_t *buf = pack(&bare, &len);
    uint8_t *longer = ferry__malloc(len + 3);
    memcpy(longer, buf, len);
    memcpy(longer + len, (const uint8_t[3]){0x92, 0x01, 0x00}, 3); /* field 18, empty */
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_status(ferry__wire_decode(longer, len + 3, NULL, &m, &atts, &n), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "no body"), "%s", ferry_last_error());
    cr_assert_eq(m.id, 99);
    ferry__free(longer);
    ferry__free(buf);
    /* two bodies: a ping appended to a response */
    Ferry__Wire__Envelope two = response(&body, nodes, 1);
    buf = pack(&two, &len);
    longer = ferry__malloc(len + 2);
    memcpy(longer, buf, len);
    memcpy(longer + len, (const uint8_t[2]){0x7a, 0x00}, 2); /* field 15 (ping), empty */
    ferry_assert_status(ferry__wire_decode(longer, len + 2, NULL, &m, &atts, &n), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "2 bodies"), "%s", ferry_last_error());
    cr_assert_eq(m.type, FERRY__MSG_RESPONSE, "the first body names the kind for the reply");
    ferry__free(longer);
    ferry__free(buf);
}

Test(wire_malformed, decode_fails_when_a_body_carries_a_field_of_another_kind, .timeout = 10)
{
    Ferry__Wire__Envelope env = FERRY__WIRE__ENVELOPE__INIT;
    Ferry__Wire__Call call = FERRY__WIRE__CALL__INIT;
    env.version = FERRY__WIRE_VERSION;
    env.id = 99;
    env.src = 2;
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_CALL;
    env.call = &call;
    call.fn = "f";
    size_t len;
    uint8_t *buf = pack(&env, &len);
    /* the call body is the last field: grow it by field 5 (a RemoteCall's rref_worker) = 1 */
    uint8_t *longer = ferry__malloc(len + 2);
    memcpy(longer, buf, len);
    cr_assert_eq(longer[len - 5], 0x3a, "the call body's tag: 3a 03 0a 01 66 (fn = \"f\")");
    longer[len - 4] += 2;
    longer[len] = 0x28;
    longer[len + 1] = 0x01;
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_status(ferry__wire_decode(longer, len + 2, NULL, &m, &atts, &n), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "a Call body carries field 5"), "%s",
              ferry_last_error());
    cr_assert_eq(m.id, 99);
    cr_assert_eq(m.type, FERRY__MSG_CALL);
    ferry__free(longer);
    ferry__free(buf);
}

Test(wire_malformed, decode_fails_when_a_function_name_holds_a_nul, .timeout = 10)
{
    Ferry__Wire__Envelope env = FERRY__WIRE__ENVELOPE__INIT;
    Ferry__Wire__Call call = FERRY__WIRE__CALL__INIT;
    env.version = FERRY__WIRE_VERSION;
    env.id = 99;
    env.src = 2;
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_CALL;
    env.call = &call;
    call.fn = "abc";
    size_t len;
    uint8_t *buf = pack(&env, &len);
    uint8_t *b = memchr(buf, 'b', len); /* "abc" -> "a\0c" */
    cr_assert_not_null(b);
    *b = 0;
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_status(ferry__wire_decode(buf, len, NULL, &m, &atts, &n), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "function name contains a NUL byte"), "%s",
              ferry_last_error());
    cr_assert_eq(m.type, FERRY__MSG_CALL);
    cr_assert_eq(m.id, 99);
    ferry__free(buf);
}

Test(wire_malformed, decode_fails_when_keys_do_not_match_their_parent, .timeout = 10)
{
    Ferry__Wire__Node nd[3] = {NODE_INIT, NODE_INIT, NODE_INIT};
    Ferry__Wire__Node *nodes[3] = {&nd[0], &nd[1], &nd[2]};
    nd[0].kind = KIND(LIST);
    nd[0].count = 2;
    nd[1].kind = KIND(INT);
    nd[2].kind = KIND(INT);
    nd[2].key = (ProtobufCBinaryData){1, (uint8_t *)"k"};
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 3);
    expect_eproto(&env, "node 2 has a key but is not a dict entry");
    nd[0].kind = KIND(DICT);
    nd[1].key = (ProtobufCBinaryData){1, (uint8_t *)"k"};
    expect_eproto(&env, "has the key \"k\" twice");
    nd[1].key = (ProtobufCBinaryData){3, (uint8_t *)"a\0b"};
    expect_eproto(&env, "dict key holds a NUL byte");
}

Test(wire_malformed, decode_fails_when_args_or_kwargs_have_the_wrong_kind, .timeout = 10)
{
    Ferry__Wire__Node nd = NODE_INIT;
    Ferry__Wire__Node *nodes[1] = {&nd};
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, NULL, 0);
    Ferry__Wire__Call call = FERRY__WIRE__CALL__INIT;
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_CALL;
    env.call = &call;
    call.n_args = 1;
    call.args = nodes;
    expect_eproto(&env, "args is a none, not a list");
    call.n_args = 0;
    call.n_kwargs = 1;
    call.kwargs = nodes;
    nd.kind = KIND(LIST);
    expect_eproto(&env, "kwargs is a list, not a dict");
    Ferry__Wire__AutogradBackward bw = FERRY__WIRE__AUTOGRAD_BACKWARD__INIT;
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_AUTOGRAD_BACKWARD;
    env.autograd_backward = &bw;
    bw.n_grads = 1;
    bw.grads = nodes;
    nd.kind = KIND(INT);
    expect_eproto(&env, "grads is a int, not a list");
}

Test(wire_malformed, decode_fails_when_attachments_pass_the_byte_limit, .timeout = 10)
{
    Ferry__Wire__TensorDesc td = FERRY__WIRE__TENSOR_DESC__INIT;
    int64_t n = 1;
    td.n_sizes = 1;
    td.sizes = &n;
    expect_tensor_eproto(&td, (uint64_t)2 << 30, 1, "larger than the limit of 1073741824 bytes");
    expect_tensor_eproto(&td, UINT64_MAX, 2, "larger than the limit");
}

Test(wire_malformed, flat_decode_fails_when_framing_is_wrong, .timeout = 10)
{
    size_t len;
    uint8_t *buf = valid_call(&len);
    ferry__msg m;
    uint8_t *longer = ferry__malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    ferry_assert_status(ferry__wire_decode_flat(longer, len + 1, NULL, &m), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "follow the envelope"), "%s", ferry_last_error());
    cr_assert_eq(m.id, 5);
    assert_cleared(&m);
    buf[3] = 0x7f; /* a header length far past the buffer */
    ferry_assert_status(ferry__wire_decode_flat(buf, len, NULL, &m), FERRY_EPROTO);
    ferry__free(longer);
    ferry__free(buf);
}

Test(wire_malformed, random_bytes_never_crash_when_decoded, .timeout = 30)
{
    size_t len;
    uint8_t *good = valid_call(&len);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint8_t *buf = ferry__malloc(len);
    int refused = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, good, len);
        int flips = 1 + iter % 4;
        for (int f = 0; f < flips; f++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[4 + x % (len - 4)] ^= (uint8_t)(x >> 32);
        }
        ferry__msg m;
        ferry_status rc = ferry__wire_decode_flat(buf, len, NULL, &m);
        cr_assert(rc == FERRY_OK || rc == FERRY_EPROTO, "iteration %d: %s", iter,
                  ferry_strerror(rc));
        refused += rc != FERRY_OK;
        ferry__msg_clear(&m);
    }
    cr_assert_gt(refused, 0);
    ferry__free(buf);
    ferry__free(good);
}

Test(wire_malformed, decode_fails_when_the_envelope_is_empty, .timeout = 10)
{
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_status(ferry__wire_decode(NULL, 0, NULL, &m, &atts, &n), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "wire version 0"), "%s", ferry_last_error());
    ferry_assert_status(ferry__wire_decode(NULL, 3, NULL, &m, &atts, &n), FERRY_EINVAL);
    const uint8_t bad_tag[2] = {0x00, 0x01}; /* field number 0 */
    ferry_assert_status(ferry__wire_decode(bad_tag, 2, NULL, &m, &atts, &n), FERRY_EPROTO);
    const uint8_t group[2] = {0x0b, 0x0c}; /* a group: not part of this schema */
    ferry_assert_status(ferry__wire_decode(group, 2, NULL, &m, &atts, &n), FERRY_EPROTO);
}

Test(wire_malformed, unknown_fields_are_skipped_when_a_newer_peer_adds_them, .timeout = 10)
{
    Ferry__Wire__Node nd = NODE_INIT;
    nd.kind = KIND(INT);
    nd.i = 5;
    Ferry__Wire__Node *nodes[1] = {&nd};
    Ferry__Wire__Response body;
    Ferry__Wire__Envelope env = response(&body, nodes, 1);
    size_t len;
    uint8_t *buf = pack(&env, &len);
    const uint8_t extra[3] = {0xa0, 0x01, 0x2a}; /* field 20 (varint) = 42 */
    uint8_t *longer = ferry__malloc(len + 3);
    memcpy(longer, buf, len);
    memcpy(longer + len, extra, 3);
    ferry__msg m;
    ferry__att *atts;
    size_t n;
    ferry_assert_ok(ferry__wire_decode(longer, len + 3, NULL, &m, &atts, &n));
    cr_assert_eq(ferry_value_as_int(m.value), 5);
    ferry__msg_clear(&m);
    ferry__free(longer);
    ferry__free(buf);
}

/* ---- values the wire refuses to carry ---- */

static ferry_status noop_ctor(const ferry_value *args, const ferry_value *kwargs, void **obj,
                              void *user)
{
    *obj = user;
    return FERRY_OK;
}

Test(wire_refuse, object_values_fail_naming_their_class_wherever_they_sit, .timeout = 10)
{
    static int token;
    ferry_class_def def = {.construct = noop_ctor, .user = &token};
    ferry_assert_ok(ferry_register_class("WireProbe", &def));
    ferry_value *obj = ferry_assert_ptr(ferry_object_new("WireProbe", NULL, NULL));
    ferry_value *nested = ferry_list_of(2, ferry_int(1), ferry_list_of(1, ferry_value_retain(obj)));
    ferry_value *kw = ferry_dict_new();
    ferry_assert_ok(ferry_dict_set(kw, "model", obj));
    ferry__msg calls[] = {
        {.type = FERRY__MSG_CALL, .id = 1, .fn = "f", .args = nested},
        {.type = FERRY__MSG_CALL, .id = 2, .fn = "f", .kwargs = kw},
        {.type = FERRY__MSG_RESPONSE, .id = 3, .value = obj},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        ferry__wire_out out;
        ferry_assert_status(ferry__wire_encode(&calls[i], NULL, &out), FERRY_EINVAL);
        cr_assert(strstr(ferry_last_error(), "cannot send an object of class 'WireProbe' by "
                                             "value"), "%s", ferry_last_error());
    }
    ferry_value_release(nested);
    ferry_value_release(kw);
    ferry_value_release(obj);
}
