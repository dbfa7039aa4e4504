/* libFuzzer target for the wire decoder. Each input is tried twice: as a flat message
   ([u32 header length][envelope][attachments], ferry__wire_decode_flat) and as a bare envelope
   (ferry__wire_decode, attachments left unfilled and never read). Anything that decodes must
   re-encode, and re-encoding is idempotent: encode(decode(encode(decode(x)))) equals
   encode(decode(x)) byte for byte, which catches a decoder that accepts what it should not.

   Built with -DFERRY_FUZZ_WIRE_SEEDS instead, this file is a small program that writes the
   seed corpus (tests/fuzz/seeds/fuzz_wire/, one message of each kind) from messages built with
   the public API; rerun it whenever the wire format changes:
     make && cc -std=c11 -D_GNU_SOURCE -DFERRY_FUZZ_WIRE_SEEDS -I. -Iinclude -Ibuild \
       tests/fuzz/fuzz_wire.c build/libferry.a $(pkg-config --libs libfabric libprotobuf-c \
       openblas) -lm -ldl -pthread -o build/fuzz_wire_seeds && \
       build/fuzz_wire_seeds tests/fuzz/seeds/fuzz_wire */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "rpc/wire.h"

static void fuzz_codec(ferry__wire_codec *codec)
{
    *codec = (ferry__wire_codec){0}; /* no RRef hooks: RRef values are refused */
    ferry__wire_limits_default(&codec->limits);
    codec->limits.max_message_bytes = (size_t)1 << 20; /* keep the fuzzer's allocations small */
    codec->limits.max_nodes = (size_t)1 << 14;
}

/* Re-encodes a decoded message twice and insists both encodings agree. */
static void check_reencode(const ferry__msg *m)
{
    ferry__wire_codec roomy = {0};
    ferry__wire_limits_default(&roomy.limits);
    uint8_t *a = NULL, *b = NULL;
    size_t alen, blen;
    ferry__msg again;
    if (ferry__wire_encode_flat(m, &roomy, &a, &alen) != FERRY_OK)
        __builtin_trap(); /* whatever decodes must be sendable */
    if (ferry__wire_decode_flat(a, alen, &roomy, &again) != FERRY_OK)
        __builtin_trap();
    if (ferry__wire_encode_flat(&again, &roomy, &b, &blen) != FERRY_OK)
        __builtin_trap();
    if (alen != blen || memcmp(a, b, alen) != 0)
        __builtin_trap();
    ferry__msg_clear(&again);
    ferry__free(a);
    ferry__free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ferry__wire_codec lim;
    fuzz_codec(&lim);
    ferry__msg m;
    if (ferry__wire_decode_flat(data, size, &lim, &m) == FERRY_OK)
        check_reencode(&m);
    ferry__msg_clear(&m);
    ferry__att *atts = NULL;
    size_t n_atts = 0;
    if (ferry__wire_decode(data, size, &lim, &m, &atts, &n_atts) == FERRY_OK) {
        for (size_t i = 0; i < n_atts; i++)
            if (atts[i].len)
                memset(atts[i].data, 0, atts[i].len); /* as a transport would fill them */
        check_reencode(&m);
    }
    ferry__wire_atts_free(atts, n_atts);
    ferry__msg_clear(&m);
    return 0;
}

#ifdef FERRY_FUZZ_WIRE_SEEDS
#include "ferry/ferry.h"

static int write_seed(const char *dir, const char *name, const ferry__msg *m)
{
    uint8_t *buf;
    size_t len;
    char path[4096];
    if (ferry__wire_encode_flat(m, NULL, &buf, &len) != FERRY_OK) {
        fprintf(stderr, "%s: %s\n", name, ferry_last_error());
        return 1;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int rc = !f || fwrite(buf, 1, len, f) != len;
    if (f)
        rc |= fclose(f) != 0;
    ferry__free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SEED_DIR\n", argv[0]);
        return 2;
    }
    int rc = 0;
    int64_t sizes[2] = {2, 3}, zero[2] = {0, 4};
    ferry_tensor *t = ferry_arange(0, 6, 1, FERRY_FLOAT32);
    ferry_tensor *grid = ferry_tensor_view(t, 2, sizes);
    ferry_tensor *tr = ferry_tensor_transpose(grid, 0, 1);
    ferry_tensor *empty = ferry_zeros(2, zero, FERRY_INT64);
    ferry_tensor *scalar = ferry_scalar_tensor(1.5, FERRY_FLOAT64);
    ferry_tensor_set_requires_grad(scalar, true); /* the flag travels */
    ferry_value *args = ferry_args(4, ferry_tensor_value(grid), ferry_tensor_value(tr),
                                   ferry_tensor_value(grid), ferry_int(3));
    ferry_value *kwargs = ferry_dict_new(), *alpha = ferry_double(-0.5);
    ferry_dict_set(kwargs, "alpha", alpha);
    ferry__msg call = {.type = FERRY__MSG_CALL, .id = 1, .src = 0, .fn = "torch.add",
                       .args = args, .kwargs = kwargs, .timeout_s = 60};
    rc |= write_seed(argv[1], "call_tensors", &call);

    ferry__msg err = {.type = FERRY__MSG_RESPONSE, .id = 2, .src = 1, .is_error = true,
                      .err_code = FERRY_EINVAL, .err_message = "bad shape 3",
                      .err_worker = "worker1"};
    rc |= write_seed(argv[1], "error_response", &err);
    err.err_code = FERRY_EREMOTE; /* a function's failure, with the callee's own code */
    err.err_remote = FERRY_EINVAL;
    rc |= write_seed(argv[1], "error_remote_code", &err);

    ferry_value *nested = ferry_list_of(5, ferry_none(), ferry_bool(true),
                                        ferry_bytes("a\0b", 3), ferry_string("s"),
                                        ferry_list_of(1, ferry_list_of(0)));
    ferry__msg resp = {.type = FERRY__MSG_RESPONSE, .id = 3, .value = nested};
    rc |= write_seed(argv[1], "nested_value", &resp);

    ferry_value *odd = ferry_list_of(2, ferry_tensor_value(empty), ferry_tensor_value(scalar));
    ferry__msg odd_msg = {.type = FERRY__MSG_RESPONSE, .id = 4, .value = odd};
    rc |= write_seed(argv[1], "zero_size_and_scalar", &odd_msg);

    ferry__msg ctl = {.type = FERRY__MSG_RREF_USER_DELETE, .id = 5, .src = 2,
                      .rref = {1, 7}, .fork = {2, 9}, .no_reply = true, .n_ext = 2,
                      .ext = {{1, 3}, {2, -4}}};
    rc |= write_seed(argv[1], "rref_delete", &ctl);

    ferry__msg fetch = {.type = FERRY__MSG_RREF_FETCH, .id = 6, .src = 1, .rref = {0, 12}};
    rc |= write_seed(argv[1], "rref_fetch", &fetch);
    ferry__msg fork_req = {.type = FERRY__MSG_RREF_FORK_REQUEST, .id = 7, .src = 1,
                           .rref = {0, 3}, .fork = {1, 4}};
    rc |= write_seed(argv[1], "rref_fork_request", &fork_req);
    ferry__msg accept = {.type = FERRY__MSG_RREF_CHILD_ACCEPT, .id = 8, .src = 0,
                         .fork = {1, 4}};
    rc |= write_seed(argv[1], "rref_child_accept", &accept);

    ferry_value *rargs = ferry_args(1, ferry_int(-7));
    ferry__msg remote = {.type = FERRY__MSG_REMOTE_CALL, .id = 9, .src = 1, .fn = "add",
                         .args = rargs, .timeout_s = 5, .rref = {1, 2}, .fork = {1, 3}};
    rc |= write_seed(argv[1], "remote_call", &remote);

    ferry__msg ping = {.type = FERRY__MSG_PING, .id = 10, .src = 3};
    rc |= write_seed(argv[1], "ping", &ping);

    ferry_value *grads = ferry_args(2, ferry_tensor_value(grid), ferry_none());
    ferry__msg backward = {.type = FERRY__MSG_AUTOGRAD_BACKWARD, .id = 11, .src = 1,
                           .args = grads, .autograd_context = (int64_t)1 << 48 | 2,
                           .autograd_message = 5, .retain_graph = true, .no_reply = true};
    rc |= write_seed(argv[1], "autograd_backward", &backward);
    ferry__msg cleanup = {.type = FERRY__MSG_AUTOGRAD_CLEANUP, .id = 12, .src = 1,
                          .autograd_context = (int64_t)1 << 48 | 2};
    rc |= write_seed(argv[1], "autograd_cleanup", &cleanup);

    ferry_value_release(grads);
    ferry_value_release(rargs);

    ferry_value_release(odd);
    ferry_value_release(nested);
    ferry_value_release(alpha);
    ferry_value_release(kwargs);
    ferry_value_release(args);
    ferry_tensor_release(scalar);
    ferry_tensor_release(empty);
    ferry_tensor_release(tr);
    ferry_tensor_release(grid);
    ferry_tensor_release(t);
    return rc;
}
#endif
