/* libFuzzer target for the store server's request parser and table (transport/store_table.c),
   fed bytes as an authenticated client would send them. The first input byte picks how the rest
   arrives (that many bytes per read, 0 = all at once), so frames split across reads are covered;
   the table persists across the frames of one input, as on one connection. Replies are read back
   after each run, as a client would, with a small output bound so the pause-and-resume path runs;
   a parked get or wait is made to time out. Every reply must be a well-formed frame, and the run
   must consume or refuse its input, never loop. */
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "transport/store_table.h"

#define OUT_LIMIT 4096

/* Each reply: a 4-byte length, a body of at least the status byte, a known status. */
static void check_replies(const ferry__store_writer *out)
{
    size_t off = 0;
    while (off < out->len) {
        if (out->len - off < 5)
            __builtin_trap();
        uint32_t body = ferry__store_load_be32(out->p + off);
        if (body < 1 || body > out->len - off - 4 || out->p[off + 4] > FERRY__STORE_REPLY_NOT_INT)
            __builtin_trap();
        off += 4 + body;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = data[0] ? data[0] : size;
    const uint8_t *in = data + 1;
    size_t in_total = size - 1, fed = 0, start = 0;
    ferry__store_table *t = ferry__store_table_new();
    ferry__store_stream s = {0};
    ferry__store_writer out = {0};
    uint64_t requests = 0;
    int64_t now_ms = 1000;
    if (!t)
        return 0;
    for (int guard = 0; guard < 100000; guard++) {
        size_t used = 0;
        bool is_ok = ferry__store_table_run(t, &s, in + start, fed - start, &used, &out, OUT_LIMIT,
                                            now_ms, &requests);
        check_replies(&out);
        out.len = 0; /* the client read them */
        start += used;
        if (!is_ok)
            break; /* malformed: the server closes the connection */
        if (s.is_parked) {
            now_ms += s.deadline_ms ? s.deadline_ms - now_ms + 1 : 1; /* let it time out */
            if (!s.deadline_ms)
                break; /* waits forever: nothing more will run on this connection */
            continue;
        }
        if (used)
            continue;
        if (fed == in_total)
            break;
        fed = fed + chunk < in_total ? fed + chunk : in_total;
    }
    ferry__free(out.p);
    ferry__store_table_free(t);
    return 0;
}
