/* Private to the TCP store server: the key-value table and the request frames a client sends,
   with no sockets involved, so the server's poll loop (store_server.c) and the fuzz target
   (tests/fuzz/fuzz_store.c) drive the very same parser. Lengths are checked against the caps in
   store_wire.h before any allocation; a malformed frame makes the whole connection bad. */
#ifndef FERRY_TRANSPORT_STORE_TABLE_H
#define FERRY_TRANSPORT_STORE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/store_wire.h"

typedef struct ferry__store_table ferry__store_table;

/* NULL on out-of-memory (recorded). */
ferry__store_table *ferry__store_table_new(void);
void ferry__store_table_free(ferry__store_table *t);

/* How many keys the table holds, and whether a key was written since the last call (then parked
   requests are worth retrying). */
size_t ferry__store_table_keys(const ferry__store_table *t);
bool ferry__store_table_take_changed(ferry__store_table *t);

/* One connection's request stream. `parked` says the first frame of the input waits for keys
   until deadline_ms (0 = none). */
typedef struct {
    bool is_parked;
    int64_t deadline_ms;
    uint64_t requests; /* frames answered on this stream */
} ferry__store_stream;

/* Runs the complete frames at the front of in[0..len): appends each reply frame to out and sets
   *consumed to the bytes of the frames answered. Stops at an incomplete frame, at a frame that
   must wait (marked parked; it is answered with a timeout once now_ms reaches its deadline), or
   once out holds at least out_limit bytes (the caller stops reading until the client took them).
   `requests_total` counts every answered frame (the server's statistic). false when the input is
   malformed or out of memory: close the connection. */
bool ferry__store_table_run(ferry__store_table *t, ferry__store_stream *s, const uint8_t *in,
                            size_t len, size_t *consumed, ferry__store_writer *out,
                            size_t out_limit, int64_t now_ms, uint64_t *requests_total);

/* The length of the frame at the front of in, or 0 when fewer than 4 bytes are there. false when
   the announced body is empty or larger than FERRY__STORE_BODY_MAX. */
static inline bool ferry__store_frame_len(const uint8_t *in, size_t len, size_t *frame)
{
    *frame = 0;
    if (len < 4)
        return true;
    uint32_t body = ferry__store_load_be32(in);
    if (body == 0 || body > FERRY__STORE_BODY_MAX)
        return false;
    *frame = 4 + (size_t)body;
    return true;
}

#endif
