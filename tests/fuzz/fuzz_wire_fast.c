/* libFuzzer target for the envelope decoder's fast path (rpc/wire_fast.c), differential:
   whatever it accepts, protobuf-c must accept and read to the same fields
   (tests/fuzz/wire_fast_check.h). Each input is tried as a bare envelope and, like
   fuzz_wire's seeds, as a flat message whose first 4 bytes give the envelope's length. Then it
   goes through the whole decoder too, so a fast-path envelope meets every later check. */
#include <stdlib.h>

#include "core/alloc.h"
#include "rpc/wire.h"
#include "tests/fuzz/wire_fast_check.h"

static void one(const uint8_t *p, size_t len)
{
    bool accepted;
    if (wire_fast_differs(p, len, &accepted))
        __builtin_trap();
    ferry__wire_codec codec = {0};
    ferry__wire_limits_default(&codec.limits);
    codec.limits.max_message_bytes = (size_t)1 << 20;
    ferry__msg m;
    ferry__att *atts = NULL;
    size_t n_atts = 0;
    ferry__wire_decode(p, len, &codec, &m, &atts, &n_atts);
    ferry__msg_clear(&m);
    ferry__wire_atts_free(atts, n_atts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size);
    if (size >= 4) {
        size_t hlen = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
                      (size_t)data[3] << 24;
        if (hlen <= size - 4)
            one(data + 4, hlen);
    }
    return 0;
}
