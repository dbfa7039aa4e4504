/* Wire codec round trips: every value kind and dtype, strided tensors, nesting at the limit,
   wide lists, every message kind with all its fields, attachment placement (inline or bulk,
   zero copy on send, straight into the tensor on receive), requires_grad, RRef hooks per codec,
   and allocation failures. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/value_impl.h"
#include "rpc/wire.h"
#include "tensor/tensor_impl.h"
#include "test_util.h"

/* Encodes a response carrying `v` (borrowed) flat, decodes it, returns the decoded value. */
static ferry_value *round_trip_codec(ferry_value *v, const ferry__wire_codec *codec)
{
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .id = 7, .value = v};
    uint8_t *buf;
    size_t len;
    ferry_assert_ok(ferry__wire_encode_flat(&m, codec, &buf, &len));
    ferry__msg out;
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, codec, &out));
    ferry__free(buf);
    cr_assert_eq(out.type, FERRY__MSG_RESPONSE);
    cr_assert_eq(out.id, 7);
    ferry_value *got = out.value;
    out.value = NULL;
    ferry__msg_clear(&out);
    return got;
}

static ferry_value *round_trip(ferry_value *v)
{
    return round_trip_codec(v, NULL);
}

static void assert_round_trips(ferry_value *v)
{
    ferry_value *got = ferry_assert_ptr(round_trip(v));
    cr_assert(ferry_value_equal(v, got), "decoded %s differs", ferry_kind_name(v->kind));
    ferry_value_release(got);
    ferry_value_release(v);
}

Test(wire_roundtrip, scalars_are_equal_when_every_kind_is_sent, .timeout = 10)
{
    assert_round_trips(ferry_none());
    assert_round_trips(ferry_bool(true));
    assert_round_trips(ferry_bool(false));
    assert_round_trips(ferry_int(0));
    assert_round_trips(ferry_int(INT64_MIN));
    assert_round_trips(ferry_int(INT64_MAX));
    assert_round_trips(ferry_int(-1));
    assert_round_trips(ferry_double(3.25));
    assert_round_trips(ferry_double(-INFINITY));
    assert_round_trips(ferry_string("torch.add"));
    assert_round_trips(ferry_string("h\xc3\xa9llo"));
}

Test(wire_roundtrip, doubles_keep_their_bits_when_nan_or_negative_zero, .timeout = 10)
{
    double vals[] = {NAN, -0.0, 5e-324, 1.7976931348623157e308};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        ferry_value *v = ferry_double(vals[i]);
        ferry_value *got = ferry_assert_ptr(round_trip(v));
        double d = ferry_value_as_double(got);
        cr_assert_eq(memcmp(&d, &vals[i], sizeof d), 0, "double %zu changed", i);
        ferry_value_release(got);
        ferry_value_release(v);
    }
}

Test(wire_roundtrip, empty_containers_survive_when_sent, .timeout = 10)
{
    assert_round_trips(ferry_string(""));
    assert_round_trips(ferry_bytes("", 0));
    assert_round_trips(ferry_list_of(0));
    assert_round_trips(ferry_dict_new());
    assert_round_trips(ferry_list_of(3, ferry_list_of(0), ferry_dict_new(), ferry_string("")));
}

Test(wire_roundtrip, embedded_nul_is_kept_when_bytes_or_counted_string, .timeout = 10)
{
    const char raw[] = {'a', 0, 'b', 0, 0, 'c'};
    ferry_value *items[2] = {ferry_bytes(raw, sizeof raw), ferry_string_n(raw, sizeof raw)};
    for (int i = 0; i < 2; i++) {
        ferry_value *got = ferry_assert_ptr(round_trip(items[i]));
        cr_assert_eq(ferry_value_kind(got), ferry_value_kind(items[i]));
        size_t len = ferry_value_len(got);
        cr_assert_eq(len, sizeof raw);
        cr_assert_eq(memcmp(got->u.str.data, raw, sizeof raw), 0);
        ferry_value_release(got);
        ferry_value_release(items[i]);
    }
}

Test(wire_roundtrip, dicts_keep_order_and_keys_when_nested, .timeout = 10)
{
    ferry_value *inner = ferry_dict_new(), *one = ferry_int(1);
    ferry_assert_ok(ferry_dict_set(inner, "", one));
    ferry_value_release(one);
    ferry_value *d = ferry_dict_new();
    ferry_value *seven = ferry_int(7), *lst = ferry_list_of(2, ferry_none(), inner);
    ferry_assert_ok(ferry_dict_set(d, "zeta", seven));
    ferry_assert_ok(ferry_dict_set(d, "alpha", lst));
    ferry_value_release(seven);
    ferry_value_release(lst);
    ferry_value *got = ferry_assert_ptr(round_trip(d));
    cr_assert(ferry_value_equal(d, got));
    cr_assert_str_eq(ferry_dict_key_at(got, 0), "zeta");
    cr_assert_str_eq(ferry_dict_key_at(got, 1), "alpha");
    ferry_value *in = ferry_list_get(ferry_dict_value_at(got, 1), 1);
    cr_assert_str_eq(ferry_dict_key_at(in, 0), "");
    ferry_value_release(got);
    ferry_value_release(d);
}

static ferry_tensor *counting_tensor(int ndim, const int64_t *sizes, ferry_dtype dtype)
{
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_empty(ndim, sizes, dtype, FERRY_DEVICE_CPU));
    size_t esize = ferry_dtype_size(dtype);
    char *p = ferry_tensor_data(t);
    for (int64_t i = 0; i < ferry_tensor_numel(t); i++)
        ferry__store_from_double(p + i * (int64_t)esize, dtype, dtype == FERRY_BOOL ? i % 2 : i - 3);
    return t;
}

static ferry_tensor *tensor_round_trip(ferry_tensor *t)
{
    ferry_value *v = ferry_tensor_value(t);
    ferry_value *got = ferry_assert_ptr(round_trip(v));
    cr_assert_eq(ferry_value_kind(got), FERRY_VALUE_TENSOR);
    ferry_tensor *r = ferry_tensor_retain(ferry_value_as_tensor(got));
    ferry_value_release(got);
    ferry_value_release(v);
    return r;
}

Test(wire_roundtrip, tensors_are_equal_when_every_dtype_is_sent, .timeout = 10)
{
    int64_t sizes[2] = {3, 5};
    for (int dt = 0; dt < FERRY_DTYPE_COUNT; dt++) {
        ferry_tensor *t = counting_tensor(2, sizes, (ferry_dtype)dt);
        ferry_tensor *r = tensor_round_trip(t);
        cr_assert_eq(ferry_tensor_dtype(r), (ferry_dtype)dt);
        cr_assert_eq(ferry_tensor_ndim(r), 2);
        cr_assert_eq(ferry_tensor_sizes(r)[0], 3);
        cr_assert_eq(ferry_tensor_sizes(r)[1], 5);
        cr_assert(ferry_tensor_is_contiguous(r));
        cr_assert_eq(memcmp(ferry_tensor_data(r), ferry_tensor_data(t), ferry_tensor_nbytes(t)), 0,
                     "%s bytes differ", ferry_dtype_name((ferry_dtype)dt));
        cr_assert(!ferry_tensor_shares_storage(r, t));
        ferry_tensor_release(r);
        ferry_tensor_release(t);
    }
}

Test(wire_roundtrip, shape_survives_when_tensor_is_zero_size_or_scalar, .timeout = 10)
{
    int64_t sizes[3] = {2, 0, 4};
    ferry_tensor *z = counting_tensor(3, sizes, FERRY_FLOAT32);
    ferry_tensor *rz = tensor_round_trip(z);
    cr_assert_eq(ferry_tensor_numel(rz), 0);
    cr_assert_eq(ferry_tensor_ndim(rz), 3);
    cr_assert_eq(ferry_tensor_sizes(rz)[2], 4);
    ferry_tensor *s = ferry_assert_ptr(ferry_scalar_tensor(2.5, FERRY_FLOAT64));
    ferry_tensor *rs = tensor_round_trip(s);
    cr_assert_eq(ferry_tensor_ndim(rs), 0);
    cr_assert_float_eq(ferry_tensor_item(rs), 2.5, 0);
    ferry_tensor_release(z);
    ferry_tensor_release(rz);
    ferry_tensor_release(s);
    ferry_tensor_release(rs);
}

Test(wire_roundtrip, tensor_arrives_strided_when_sent_transposed, .timeout = 10)
{
    int64_t sizes[2] = {3, 4};
    ferry_tensor *base = counting_tensor(2, sizes, FERRY_INT64);
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_transpose(base, 0, 1));
    cr_assert(!ferry_tensor_is_contiguous(t));
    ferry_tensor *r = tensor_round_trip(t);
    cr_assert(!ferry_tensor_is_contiguous(r));
    cr_assert(ferry_tensor_equal(r, t));
    cr_assert_eq(ferry_tensor_strides(r)[0], 1);
    cr_assert_eq(ferry_tensor_strides(r)[1], 4);
    ferry_tensor_release(r);
    ferry_tensor_release(t);
    ferry_tensor_release(base);
}

Test(wire_roundtrip, only_the_covering_span_is_sent_when_slice_is_stepped, .timeout = 10)
{
    int64_t sizes[2] = {6, 10};
    ferry_tensor *base = counting_tensor(2, sizes, FERRY_FLOAT32);
    ferry_tensor *rows = ferry_assert_ptr(ferry_tensor_slice(base, 0, 1, 6, 2)); /* rows 1, 3, 5 */
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_slice(rows, 1, 2, 9, 3));    /* cols 2, 5, 8 */
    ferry_value *v = ferry_tensor_value(t);
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .value = v};
    ferry__wire_out out;
    ferry_assert_ok(ferry__wire_encode(&m, NULL, &out));
    cr_assert_eq(out.n_atts, 1);
    /* from element (1, 2) to element (5, 8): 4 * 10 + 6 + 1 elements, no copy */
    cr_assert_eq(out.atts[0].len, 47 * sizeof(float));
    cr_assert_eq(out.atts[0].data, (char *)ferry_tensor_data(base) + 12 * sizeof(float));
    ferry__wire_out_free(&out);
    ferry_tensor *r = tensor_round_trip(t);
    cr_assert(!ferry_tensor_is_contiguous(r));
    cr_assert(ferry_tensor_equal(r, t));
    cr_assert_eq(ferry_tensor_strides(r)[0], 20);
    cr_assert_eq(ferry_tensor_strides(r)[1], 3);
    cr_assert_eq(r->storage->nbytes, 47 * sizeof(float));
    ferry_tensor_release(r);
    ferry_value_release(v);
    ferry_tensor_release(t);
    ferry_tensor_release(rows);
    ferry_tensor_release(base);
}

Test(wire_roundtrip, one_attachment_is_shared_when_a_tensor_appears_twice, .timeout = 10)
{
    int64_t n = 8;
    ferry_tensor *t = counting_tensor(1, &n, FERRY_FLOAT64);
    ferry_value *v = ferry_list_of(2, ferry_tensor_value(t), ferry_tensor_value(t));
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .value = v};
    ferry__wire_out out;
    ferry_assert_ok(ferry__wire_encode(&m, NULL, &out));
    cr_assert_eq(out.n_atts, 1);
    ferry__wire_out_free(&out);
    ferry_value *got = ferry_assert_ptr(round_trip(v));
    ferry_tensor *a = ferry_value_as_tensor(ferry_list_get(got, 0));
    ferry_tensor *b = ferry_value_as_tensor(ferry_list_get(got, 1));
    cr_assert(ferry_tensor_shares_storage(a, b));
    cr_assert(ferry_tensor_equal(a, t));
    ferry_value_release(got);
    ferry_value_release(v);
    ferry_tensor_release(t);
}

static ferry_value *nested_lists(size_t depth)
{
    ferry_value *v = ferry_int(42);
    for (size_t i = 0; i < depth; i++)
        v = ferry_list_of(1, v);
    return v;
}

Test(wire_limits, nesting_works_when_exactly_at_the_depth_limit, .timeout = 10)
{
    assert_round_trips(nested_lists(64));
}

Test(wire_limits, nesting_fails_when_one_past_the_depth_limit, .timeout = 10)
{
    ferry_value *v = nested_lists(65);
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .value = v};
    uint8_t *buf;
    size_t len;
    ferry_assert_status(ferry__wire_encode_flat(&m, NULL, &buf, &len), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "deeper than the limit of 64"), "%s", ferry_last_error());
    /* a sender with a looser limit: the receiver still refuses */
    ferry__wire_codec loose = {0};
    ferry__wire_limits_default(&loose.limits);
    loose.limits.max_depth = 65;
    ferry_assert_ok(ferry__wire_encode_flat(&m, &loose, &buf, &len));
    ferry__msg out;
    ferry_assert_status(ferry__wire_decode_flat(buf, len, NULL, &out), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "deeper than the limit of 64"), "%s", ferry_last_error());
    cr_assert_null(out.value);
    ferry__free(buf);
    ferry_value_release(v);
}

Test(wire_limits, wide_list_round_trips_when_it_has_100k_items, .timeout = 20)
{
    size_t n = 100000;
    ferry_value *list = ferry_assert_ptr(ferry__list_new(n));
    for (size_t i = 0; i < n; i++)
        ferry__list_set(list, i, ferry_int((int64_t)i * 3));
    ferry_value *got = ferry_assert_ptr(round_trip(list));
    cr_assert_eq(ferry_list_len(got), n);
    cr_assert_eq(ferry_value_as_int(ferry_list_get(got, n - 1)), (int64_t)(n - 1) * 3);
    cr_assert(ferry_value_equal(list, got));
    ferry_value_release(got);
    ferry_value_release(list);
}

Test(wire_limits, encode_fails_when_message_exceeds_the_byte_limit, .timeout = 10)
{
    int64_t n = 1024;
    ferry_tensor *t = counting_tensor(1, &n, FERRY_FLOAT32);
    ferry_value *v = ferry_tensor_value(t);
    ferry__wire_codec lim = {0};
    ferry__wire_limits_default(&lim.limits);
    lim.limits.max_message_bytes = 4000;
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .value = v};
    ferry__wire_out out;
    ferry_assert_status(ferry__wire_encode(&m, &lim, &out), FERRY_EINVAL);
    cr_assert_null(out.atts);
    cr_assert_eq(ferry__ref_count(&t->ref), 2, "a failed encode must not keep the tensor");
    ferry_value_release(v);
    ferry_tensor_release(t);
}

Test(wire_message, every_field_survives_when_a_call_is_sent, .timeout = 10)
{
    int64_t sizes[2] = {2, 2};
    ferry_tensor *t = counting_tensor(2, sizes, FERRY_FLOAT32);
    ferry_value *args = ferry_args(2, ferry_tensor_value(t), ferry_int(3));
    ferry_value *kwargs = ferry_dict_new(), *alpha = ferry_double(2.0);
    ferry_assert_ok(ferry_dict_set(kwargs, "alpha", alpha));
    ferry__msg m = {.type = FERRY__MSG_CALL, .id = 0x123456789abcull, .src = 3,
                    .fn = "torch.add", .args = args, .kwargs = kwargs, .timeout_s = 1.5,
                    .no_reply = true, .n_ext = 2,
                    .ext = {{1, (int64_t)1 << 48 | 5}, {UINT32_MAX, INT64_MIN}}};
    uint8_t *buf;
    size_t len;
    ferry_assert_ok(ferry__wire_encode_flat(&m, NULL, &buf, &len));
    ferry__msg out;
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, NULL, &out));
    cr_assert_eq(out.type, FERRY__MSG_CALL);
    cr_assert_eq(out.id, 0x123456789abcull);
    cr_assert_eq(out.src, 3);
    cr_assert_str_eq(out.fn, "torch.add");
    cr_assert(ferry_value_equal(out.args, args));
    cr_assert(ferry_value_equal(out.kwargs, kwargs));
    cr_assert_null(out.value);
    cr_assert(!out.is_error);
    cr_assert_float_eq(out.timeout_s, 1.5, 0);
    cr_assert(out.no_reply);
    cr_assert_eq(out.n_ext, 2);
    cr_assert_eq(out.ext[0].key, 1);
    cr_assert_eq(out.ext[0].value, (int64_t)1 << 48 | 5);
    cr_assert_eq(out.ext[1].key, UINT32_MAX);
    cr_assert_eq(out.ext[1].value, INT64_MIN);
    ferry__msg_clear(&out);
    cr_assert_null(out.args);
    ferry__free(buf);
    ferry_value_release(alpha);
    ferry_value_release(kwargs);
    ferry_value_release(args);
    ferry_tensor_release(t);
}

Test(wire_message, error_fields_survive_when_a_failure_is_sent, .timeout = 10)
{
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .id = 11, .src = 1, .is_error = true,
                    .err_code = FERRY_EINVAL, .err_message = "bad shape 3",
                    .err_worker = "worker1"};
    uint8_t *buf;
    size_t len;
    ferry_assert_ok(ferry__wire_encode_flat(&m, NULL, &buf, &len));
    ferry__msg out;
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, NULL, &out));
    cr_assert(out.is_error);
    cr_assert_eq(out.err_code, FERRY_EINVAL);
    cr_assert_str_eq(out.err_message, "bad shape 3");
    cr_assert_str_eq(out.err_worker, "worker1");
    cr_assert_null(out.value);
    cr_assert_null(out.fn);
    ferry__msg_clear(&out);
    ferry__free(buf);
}

Test(wire_message, encode_fails_when_fields_are_invalid, .timeout = 10)
{
    ferry__wire_out out;
    ferry__msg m = {.type = FERRY__MSG_INVALID};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    m.type = FERRY__MSG_CALL;
    m.args = ferry_int(1);
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "args must be a list"), "%s", ferry_last_error());
    ferry_value_release(m.args);
    m.args = NULL;
    m.n_ext = FERRY__MSG_MAX_EXT + 1;
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "5 ext entries"), "%s", ferry_last_error());
    m.n_ext = 0;
    m.type = FERRY__MSG_RESPONSE;
    m.is_error = true;
    m.err_code = FERRY_OK;
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    m.err_code = FERRY_EINVAL;
    m.value = ferry_none();
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "error response cannot carry a value"), "%s",
              ferry_last_error());
    ferry_value_release(m.value);
    m.value = NULL;
    m.is_error = false;
    m.no_reply = true;
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "no reply"), "%s", ferry_last_error());
}

Test(wire_message, encode_fails_when_a_field_does_not_belong_to_the_kind, .timeout = 10)
{
    ferry__wire_out out;
    ferry_value *list = ferry_list_of(0);
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .args = list};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "a response message cannot carry args"), "%s",
              ferry_last_error());
    m = (ferry__msg){.type = FERRY__MSG_CALL, .value = list};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "cannot carry a value"), "%s", ferry_last_error());
    m = (ferry__msg){.type = FERRY__MSG_PING, .rref = {1, 0}};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "a ping message cannot carry an RRef id"), "%s",
              ferry_last_error());
    m = (ferry__msg){.type = FERRY__MSG_RREF_FETCH, .fork = {0, 3}};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "a fork id"), "%s", ferry_last_error());
    m = (ferry__msg){.type = FERRY__MSG_CALL, .autograd_context = 1};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    m = (ferry__msg){.type = FERRY__MSG_AUTOGRAD_CLEANUP, .retain_graph = true};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    m = (ferry__msg){.type = FERRY__MSG_RREF_USER_DELETE, .is_error = true, .err_code = 1};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    /* fn and timeout_s name a pending request locally: allowed, but only calls send them */
    m = (ferry__msg){.type = FERRY__MSG_RREF_FETCH, .fn = "rref.to_here", .timeout_s = 2,
                     .rref = {0, 7}};
    uint8_t *buf;
    size_t len;
    ferry_assert_ok(ferry__wire_encode_flat(&m, NULL, &buf, &len));
    ferry__msg got;
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, NULL, &got));
    cr_assert_null(got.fn);
    cr_assert_eq(got.timeout_s, 0);
    cr_assert_eq(got.rref.local, 7);
    ferry__msg_clear(&got);
    ferry__free(buf);
    ferry_value_release(list);
}

/* Encodes and decodes `m` flat with `codec`, into *out. */
static void msg_round_trip(const ferry__msg *m, const ferry__wire_codec *codec, ferry__msg *out)
{
    uint8_t *buf;
    size_t len;
    ferry_assert_ok(ferry__wire_encode_flat(m, codec, &buf, &len));
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, codec, out));
    ferry__free(buf);
    cr_assert_eq(out->type, m->type);
    cr_assert_eq(out->id, m->id);
    cr_assert_eq(out->src, m->src);
}

Test(wire_message, ids_survive_when_each_rref_kind_is_sent, .timeout = 10)
{
    ferry__msg_gid rref = {INT32_MAX, INT64_MIN}, fork = {-1, INT64_MAX}, zero = {0, 0};
    ferry__msg_type kinds[4] = {FERRY__MSG_RREF_FETCH, FERRY__MSG_RREF_USER_DELETE,
                                FERRY__MSG_RREF_FORK_REQUEST, FERRY__MSG_RREF_CHILD_ACCEPT};
    for (int k = 0; k < 4; k++) {
        bool has_rref = kinds[k] != FERRY__MSG_RREF_CHILD_ACCEPT;
        bool has_fork = kinds[k] != FERRY__MSG_RREF_FETCH;
        ferry__msg m = {.type = kinds[k], .id = UINT64_MAX, .src = 5,
                        .rref = has_rref ? rref : zero, .fork = has_fork ? fork : zero};
        ferry__msg out;
        msg_round_trip(&m, NULL, &out);
        cr_assert_eq(out.rref.worker, m.rref.worker, "kind %d", (int)kinds[k]);
        cr_assert_eq(out.rref.local, m.rref.local);
        cr_assert_eq(out.fork.worker, m.fork.worker);
        cr_assert_eq(out.fork.local, m.fork.local);
        ferry__msg_clear(&out);
    }
}

Test(wire_message, every_field_survives_when_a_remote_call_is_sent, .timeout = 10)
{
    ferry_value *args = ferry_args(1, ferry_int(-3));
    ferry__msg m = {.type = FERRY__MSG_REMOTE_CALL, .id = 3, .src = 1, .fn = "f",
                    .args = args, .timeout_s = -0.5, .rref = {1, 2}, .fork = {3, -4}};
    ferry__msg out;
    msg_round_trip(&m, NULL, &out);
    cr_assert_str_eq(out.fn, "f");
    cr_assert(ferry_value_equal(out.args, args));
    cr_assert_null(out.kwargs);
    cr_assert_eq(out.timeout_s, -0.5);
    cr_assert_eq(out.rref.worker, 1);
    cr_assert_eq(out.rref.local, 2);
    cr_assert_eq(out.fork.worker, 3);
    cr_assert_eq(out.fork.local, -4);
    ferry__msg_clear(&out);
    ferry_value_release(args);
}

Test(wire_message, autograd_fields_survive_when_the_reserved_kinds_are_sent, .timeout = 10)
{
    int64_t n = 3;
    ferry_tensor *g = counting_tensor(1, &n, FERRY_FLOAT32);
    ferry_value *grads = ferry_args(2, ferry_tensor_value(g), ferry_none());
    ferry__msg m = {.type = FERRY__MSG_AUTOGRAD_BACKWARD, .id = 8, .src = 2, .args = grads,
                    .autograd_context = (int64_t)2 << 48 | 1, .autograd_message = -7,
                    .retain_graph = true};
    ferry__msg out;
    msg_round_trip(&m, NULL, &out);
    cr_assert(ferry_value_equal(out.args, grads));
    cr_assert_eq(out.autograd_context, m.autograd_context);
    cr_assert_eq(out.autograd_message, -7);
    cr_assert(out.retain_graph);
    ferry__msg_clear(&out);
    ferry__msg c = {.type = FERRY__MSG_AUTOGRAD_CLEANUP, .id = 9, .autograd_context = 12};
    msg_round_trip(&c, NULL, &out);
    cr_assert_eq(out.autograd_context, 12);
    cr_assert_null(out.args);
    ferry__msg_clear(&out);
    ferry__msg p = {.type = FERRY__MSG_PING, .id = 10, .src = 1};
    msg_round_trip(&p, NULL, &out);
    ferry__msg_clear(&out);
    ferry_value_release(grads);
    ferry_tensor_release(g);
}

Test(wire_attachments, requires_grad_survives_when_a_tensor_is_sent, .timeout = 10)
{
    int64_t n = 4;
    ferry_tensor *w = counting_tensor(1, &n, FERRY_FLOAT32);
    ferry_tensor *plain = counting_tensor(1, &n, FERRY_FLOAT32);
    ferry_assert_ok(ferry_tensor_set_requires_grad(w, true));
    ferry_tensor *y = ferry_assert_ptr(ferry_mul(w, w)); /* not a leaf: requires grad too */
    ferry_value *v = ferry_list_of(3, ferry_tensor_value(w), ferry_tensor_value(plain),
                                   ferry_tensor_value(y));
    ferry_value *got = ferry_assert_ptr(round_trip(v));
    cr_assert(ferry_tensor_requires_grad(ferry_value_as_tensor(ferry_list_get(got, 0))));
    cr_assert(!ferry_tensor_requires_grad(ferry_value_as_tensor(ferry_list_get(got, 1))));
    ferry_tensor *gy = ferry_value_as_tensor(ferry_list_get(got, 2));
    cr_assert(ferry_tensor_requires_grad(gy));
    cr_assert(ferry_tensor_is_leaf(gy), "as torch: the receiver's tensor is a leaf");
    cr_assert(ferry_value_equal(got, v));
    ferry_value_release(got);
    ferry_value_release(v);
    ferry_tensor_release(y);
    ferry_tensor_release(plain);
    ferry_tensor_release(w);
}

Test(wire_attachments, data_points_into_the_tensor_when_64_mib_is_sent, .timeout = 20)
{
    int64_t n = (int64_t)16 << 20; /* 64 MiB of float32 */
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_empty(1, &n, FERRY_FLOAT32, FERRY_DEVICE_CPU));
    ferry_value *v = ferry_tensor_value(t);
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .value = v};
    ferry__wire_out out;
    ferry_assert_ok(ferry__wire_encode(&m, NULL, &out));
    cr_assert_eq(out.n_atts, 1);
    cr_assert_eq(out.atts[0].data, ferry_tensor_data(t));
    cr_assert_eq(out.atts[0].len, (size_t)64 << 20);
    cr_assert_eq(out.atts[0].tensor, t);
    cr_assert(!out.atts[0].is_inline);
    cr_assert_eq(out.inline_bytes, 0);
    cr_assert_lt(out.header_len, 128);
    ferry_value_release(v);
    cr_assert_eq(ferry__ref_count(&t->ref), 2, "the attachment keeps the tensor alive");
    ferry__wire_out_free(&out);
    cr_assert_eq(ferry__ref_count(&t->ref), 1);
    ferry_tensor_release(t);
}

Test(wire_attachments, inline_stops_when_the_running_total_passes_64_kib, .timeout = 10)
{
    int64_t n = 4096, big = 4097; /* 16 KiB each: exactly the default threshold */
    ferry_value *list = ferry_assert_ptr(ferry__list_new(7));
    ferry__list_set(list, 0, ferry_none());
    ferry_tensor *ts[6];
    for (int i = 0; i < 6; i++) {
        ts[i] = counting_tensor(1, i == 0 ? &big : &n, FERRY_FLOAT32);
        ferry__list_set(list, (size_t)i + 1, ferry_tensor_value(ts[i]));
    }
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .value = list};
    ferry__wire_out out;
    ferry_assert_ok(ferry__wire_encode(&m, NULL, &out));
    cr_assert_eq(out.n_atts, 6);
    cr_assert(!out.atts[0].is_inline, "one byte over the threshold goes bulk");
    for (int i = 1; i <= 4; i++)
        cr_assert(out.atts[i].is_inline, "attachment %d should be inline", i);
    cr_assert(!out.atts[5].is_inline, "the fifth 16 KiB would pass 64 KiB inline");
    cr_assert_eq(out.inline_bytes, (size_t)64 << 10);
    ferry__wire_out_free(&out);
    ferry_value_release(list);
    for (int i = 0; i < 6; i++)
        ferry_tensor_release(ts[i]);
}

Test(wire_attachments, received_bytes_land_in_the_tensor_when_decoded, .timeout = 10)
{
    int64_t sizes[2] = {4, 3};
    ferry_tensor *t = counting_tensor(2, sizes, FERRY_INT32);
    ferry_value *v = ferry_list_of(1, ferry_tensor_value(t));
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = "f", .args = v};
    ferry__wire_out out;
    ferry_assert_ok(ferry__wire_encode(&m, NULL, &out));
    ferry__msg got;
    ferry__att *atts;
    size_t n_atts;
    ferry_assert_ok(ferry__wire_decode(out.header, out.header_len, NULL, &got, &atts, &n_atts));
    cr_assert_eq(n_atts, 1);
    ferry_tensor *r = ferry_value_as_tensor(ferry_list_get(got.args, 0));
    cr_assert_eq(atts[0].data, ferry_tensor_data(r));
    cr_assert_eq(atts[0].len, ferry_tensor_nbytes(t));
    cr_assert(atts[0].is_inline);
    memcpy(atts[0].data, out.atts[0].data, atts[0].len); /* what the transport does */
    ferry__wire_atts_free(atts, n_atts);
    cr_assert(ferry_tensor_equal(r, t));
    ferry__msg_clear(&got);
    ferry__wire_out_free(&out);
    ferry_value_release(v);
    ferry_tensor_release(t);
}

Test(wire_attachments, encode_fails_when_the_tensor_is_on_cuda, .timeout = 10)
{
    int64_t n = 4;
    ferry_tensor *t = counting_tensor(1, &n, FERRY_FLOAT32);
    t->device.type = FERRY_CUDA; /* a stand-in: this build cannot make real CUDA tensors */
    ferry_value *v = ferry_list_of(1, ferry_tensor_value(t));
    ferry__msg m = {.type = FERRY__MSG_CALL, .args = v};
    ferry__wire_out out;
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "CUDA"), "%s", ferry_last_error());
    t->device.type = FERRY_CPU;
    ferry_value_release(v);
    ferry_tensor_release(t);
}

/* A stand-in RRef: the real ones live in rref/, which plugs in through the same hooks. */
struct ferry_rref {
    int refs;
    ferry__rref_desc desc;
};

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

static int32_t seen_dst, seen_src;

static ferry_status fake_encode(void *ctx, ferry_rref *r, int32_t dst, ferry__rref_desc *out)
{
    seen_dst = dst;
    *out = r->desc;
    return FERRY_OK;
}

static ferry_rref *fake_decode(void *ctx, const ferry__rref_desc *desc, int32_t src)
{
    seen_src = src;
    ferry_rref *r = ferry__calloc(1, sizeof *r);
    r->refs = 1;
    r->desc = *desc;
    return r;
}

static void fake_hook_release(void *ctx, ferry_rref *r)
{
    fake_release(r);
}

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

Test(wire_rref, descriptor_round_trips_when_hooks_are_set, .timeout = 10)
{
    static const ferry__value_kind_ops vh = {fake_kind_retain, fake_kind_release, fake_kind_equal, NULL, NULL};
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_RREF, &vh));
    ferry_rref *r = ferry__calloc(1, sizeof *r);
    r->refs = 1;
    r->desc = (ferry__rref_desc){2, 1, 3, 1, (int64_t)1 << 40, -5};
    ferry_value *v = ferry_assert_ptr(ferry_rref_value(r));
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .src = 4, .dst = 6, .value = v};
    uint8_t *buf;
    size_t len;
    ferry_assert_status(ferry__wire_encode_flat(&m, NULL, &buf, &len), FERRY_EINVAL);
    ferry__wire_codec codec = {.rref = {fake_encode, fake_decode, NULL, fake_hook_release}};
    ferry__wire_limits_default(&codec.limits);
    ferry_assert_ok(ferry__wire_encode_flat(&m, &codec, &buf, &len));
    cr_assert_eq(seen_dst, 6);
    ferry__msg out;
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, &codec, &out));
    cr_assert_eq(seen_src, 4);
    ferry_rref *got = ferry_value_as_rref(out.value);
    cr_assert_eq(memcmp(&got->desc, &r->desc, sizeof r->desc), 0);
    cr_assert_eq(got->refs, 1, "the value holds the only reference");
    ferry__msg_clear(&out);
    ferry_assert_status(ferry__wire_decode_flat(buf, len, NULL, &out), FERRY_EPROTO);
    cr_assert(strstr(ferry_last_error(), "RRef"), "%s", ferry_last_error());
    ferry__free(buf);
    ferry_value_release(v);
    fake_release(r);
}

static ferry_value *mixed_value(ferry_tensor **ts)
{
    int64_t sizes[2] = {3, 4};
    ts[0] = counting_tensor(2, sizes, FERRY_FLOAT64);
    ts[1] = ferry_tensor_transpose(ts[0], 0, 1);
    ferry_value *d = ferry_dict_new();
    ferry_value *s = ferry_string("x");
    ferry_dict_set(d, "k", s);
    ferry_value_release(s);
    return ferry_list_of(4, ferry_tensor_value(ts[0]), ferry_tensor_value(ts[1]), d,
                         ferry_list_of(2, ferry_bytes("ab", 2), ferry_double(1.0)));
}

Test(wire_alloc, nothing_leaks_when_any_allocation_fails, .timeout = 30)
{
    ferry_tensor *ts[2];
    ferry_value *v = mixed_value(ts);
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = "f", .args = v};
    uint8_t *good;
    size_t good_len;
    ferry_assert_ok(ferry__wire_encode_flat(&m, NULL, &good, &good_len));
    int ok_runs = 0;
    for (long nth = 1; nth < 200; nth++) {
        uint8_t *buf = NULL;
        size_t len;
        ferry__alloc_fail_after(nth, 0);
        ferry_status rc = ferry__wire_encode_flat(&m, NULL, &buf, &len);
        ferry__alloc_fail_after(0, 0);
        cr_assert(rc == FERRY_OK || rc == FERRY_ENOMEM, "encode: %s", ferry_last_error());
        ferry__free(buf);
        ferry__msg out;
        ferry__alloc_fail_after(nth, 0);
        rc = ferry__wire_decode_flat(good, good_len, NULL, &out);
        ferry__alloc_fail_after(0, 0);
        cr_assert(rc == FERRY_OK || rc == FERRY_ENOMEM, "decode at %ld: %s: %s", nth,
                  ferry_strerror(rc), ferry_last_error());
        if (rc == FERRY_OK)
            cr_assert(ferry_value_equal(out.args, v));
        ok_runs += rc == FERRY_OK;
        ferry__msg_clear(&out);
    }
    cr_assert_gt(ok_runs, 0, "the sweep should reach past the last allocation");
    ferry__free(good);
    ferry_value_release(v);
    ferry_tensor_release(ts[0]);
    ferry_tensor_release(ts[1]);
}
