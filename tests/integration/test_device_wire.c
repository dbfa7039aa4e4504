/* The codec's side of device tensors, in one process with emulated devices: a tensor on a
   device arrives on the device the map names with its values, on the staged and the direct
   path; the bytes sent are those written on the device's stream before the send (the copy to
   the host is ordered after them); a descriptor naming a device this worker lacks is
   FERRY_EPROTO; the staging pool hands buffers back for reuse. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "rpc/device_stage.h"
#include "rpc/wire.h"
#include "tensor/device.h"
#include "tensor/tensor_impl.h"
#include "test_util.h"

#include "ferry/device.h"

static int shift; /* the map sends cuda:i to cuda:(i + shift) */

static ferry_status shift_map(void *ctx, int32_t dst, bool reverse, ferry_device from,
                              ferry_device *to)
{
    *to = from.type == FERRY_CPU ? from : FERRY_DEVICE_CUDA(from.index + shift);
    return FERRY_OK;
}

static const ferry__wire_codec *codec(void)
{
    static ferry__wire_codec c;
    ferry__wire_limits_default(&c.limits);
    c.device = (ferry__wire_device_hooks){shift_map, NULL, false, NULL};
    return &c;
}

static void emulate(const char *path)
{
    setenv("FERRY_EMULATE_DEVICES", "3", 1);
    setenv("FERRY_EMULATE_DEVICE_DELAY_US", "20000", 1); /* asynchronous streams, where built */
    setenv("FERRY_DEVICE_PATH", path, 1);
}

/* n floats 0, 1, ... on `device`. */
static ferry_tensor *counting(int64_t n, ferry_device device)
{
    ferry_tensor *c = ferry_assert_ptr(ferry_arange(0, (double)n, 1, FERRY_FLOAT32));
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_to(c, device));
    ferry_tensor_release(c);
    return t;
}

static ferry_tensor *round_trip(ferry_tensor *t)
{
    ferry_value *v = ferry_list_of(1, ferry_tensor_value(t));
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = "f", .args = v};
    uint8_t *buf;
    size_t len;
    ferry_assert_status(ferry__wire_encode_flat(&m, codec(), &buf, &len), FERRY_OK);
    ferry_value_release(v);
    ferry__msg got;
    ferry_assert_status(ferry__wire_decode_flat(buf, len, codec(), &got), FERRY_OK);
    ferry__free(buf);
    ferry_tensor *r = ferry_tensor_retain(ferry_value_as_tensor(ferry_list_get(got.args, 0)));
    ferry__msg_clear(&got);
    return r;
}

static void check_counts(ferry_tensor *r, int index, int64_t n)
{
    cr_assert_eq(ferry_tensor_device(r).type, FERRY_CUDA);
    cr_assert_eq(ferry_tensor_device(r).index, index);
    ferry_tensor *c = ferry_assert_ptr(ferry_tensor_to(r, FERRY_DEVICE_CPU));
    cr_assert_eq(ferry_tensor_numel(c), n);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(ferry_tensor_item_at(c, i), (double)i, "element %lld", (long long)i);
    ferry_tensor_release(c);
}

static void lands_on_the_mapped_device(const char *path)
{
    emulate(path);
    shift = 1;
    ferry_tensor *t = counting(50000, FERRY_DEVICE_CUDA(1)); /* a bulk attachment */
    ferry_tensor *r = round_trip(t);
    check_counts(r, 2, 50000);
    ferry_tensor_release(r);
    ferry_tensor_release(t);
}

Test(device_wire, staged_lands_on_the_mapped_device, .timeout = 20)
{
    lands_on_the_mapped_device("staged");
}

Test(device_wire, direct_lands_on_the_mapped_device, .timeout = 20)
{
    lands_on_the_mapped_device("direct");
}

/* Writes queued on the device's stream just before the send are what the message carries. */
static void sends_what_the_stream_wrote(const char *path)
{
    emulate(path);
    shift = 0;
    int64_t n = 1 << 16;
    ferry_tensor *t = ferry_assert_ptr(ferry_zeros(1, &n, FERRY_FLOAT32));
    ferry_tensor *d = ferry_assert_ptr(ferry_tensor_to(t, FERRY_DEVICE_CUDA(0)));
    ferry_tensor *src = counting(n, FERRY_DEVICE_CPU);
    ferry_assert_status(ferry__device_ops_get()->copy(ferry__device_stream(0),
                                                      ferry_tensor_data(d),
                                                      ferry_tensor_data(src),
                                                      (size_t)n * 4, FERRY__COPY_H2D),
                        FERRY_OK);
    ferry_tensor *r = round_trip(d); /* no synchronize in between */
    check_counts(r, 0, n);
    ferry_tensor_release(r);
    ferry_tensor_release(src);
    ferry_tensor_release(d);
    ferry_tensor_release(t);
}

Test(device_wire, staged_sends_what_the_stream_wrote, .timeout = 20)
{
    sends_what_the_stream_wrote("staged");
}

Test(device_wire, direct_sends_what_the_stream_wrote, .timeout = 20)
{
    sends_what_the_stream_wrote("direct");
}

Test(device_wire, a_device_past_the_count_is_eproto, .timeout = 20)
{
    emulate("auto");
    shift = 5;
    ferry_tensor *t = counting(8, FERRY_DEVICE_CUDA(0));
    ferry_value *v = ferry_list_of(1, ferry_tensor_value(t));
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = "f", .args = v};
    uint8_t *buf;
    size_t len;
    ferry_assert_status(ferry__wire_encode_flat(&m, codec(), &buf, &len), FERRY_OK);
    ferry__msg got;
    ferry_assert_status(ferry__wire_decode_flat(buf, len, codec(), &got), FERRY_EPROTO);
    cr_assert_str_eq(ferry_last_error(), "tensor 0: a CUDA tensor for cuda:5, but this worker "
                     "has 3 CUDA devices");
    ferry__free(buf);
    ferry_value_release(v);
    ferry_tensor_release(t);
}

Test(device_wire, no_device_hooks_refuse_device_tensors, .timeout = 20)
{
    emulate("auto");
    ferry_tensor *t = counting(8, FERRY_DEVICE_CUDA(2));
    ferry_value *v = ferry_list_of(1, ferry_tensor_value(t));
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = "f", .args = v};
    uint8_t *buf;
    size_t len;
    ferry_assert_status(ferry__wire_encode_flat(&m, NULL, &buf, &len), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "args: cannot send a tensor on cuda:2: no CUDA device "
                     "placement is set up for this message");
    ferry_value_release(v);
    ferry_tensor_release(t);
}

Test(device_wire, the_staging_pool_reuses_buffers, .timeout = 20)
{
    emulate("staged");
    void *a = ferry_assert_ptr(ferry__stage_buffer_get(100000));
    ferry__stage_buffer_put(a);
    void *b = ferry_assert_ptr(ferry__stage_buffer_get(70000)); /* the same 128 KiB class */
    cr_assert_eq(a, b);
    void *c = ferry_assert_ptr(ferry__stage_buffer_get(70000));
    cr_assert_neq(b, c);
    ferry__stage_buffer_put(b);
    ferry__stage_buffer_put(c);
}

/* A map with a CPU entry: CPU tensors ask too, and land on the device it names. */
static ferry_status cpu_to_cuda2(void *ctx, int32_t dst, bool reverse, ferry_device from,
                                 ferry_device *to)
{
    *to = from.type == FERRY_CPU ? FERRY_DEVICE_CUDA(2) : from;
    return FERRY_OK;
}

Test(device_wire, a_cpu_entry_sends_cpu_tensors_to_its_device, .timeout = 20)
{
    emulate("staged");
    ferry__wire_codec c;
    ferry__wire_limits_default(&c.limits);
    memset(&c.rref, 0, sizeof c.rref);
    c.device = (ferry__wire_device_hooks){cpu_to_cuda2, NULL, true, NULL};
    ferry_tensor *t = ferry_assert_ptr(ferry_arange(0, 30000, 1, FERRY_FLOAT32));
    ferry_value *v = ferry_list_of(1, ferry_tensor_value(t));
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = "f", .args = v};
    uint8_t *buf;
    size_t len;
    ferry_assert_status(ferry__wire_encode_flat(&m, &c, &buf, &len), FERRY_OK);
    ferry__msg got;
    ferry_assert_status(ferry__wire_decode_flat(buf, len, &c, &got), FERRY_OK);
    check_counts(ferry_value_as_tensor(ferry_list_get(got.args, 0)), 2, 30000);
    ferry__msg_clear(&got);
    ferry__free(buf);
    ferry_value_release(v);
    ferry_tensor_release(t);
}
