/* The flat form of a wire message, for tests, tools, the demo and the fuzzer: the envelope and
   all its attachments in one contiguous buffer, [u32 little-endian envelope length][envelope]
   [attachment 0][attachment 1]... (docs/wire.md, "Framing"). On the fabric the same pieces
   travel as one send plus bulk transfers instead (rpc/send.c, rpc/receive.c). */
#include "rpc/wire.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

ferry_status ferry__wire_encode_flat(const ferry__msg *m, const ferry__wire_codec *codec,
                                     uint8_t **buf, size_t *len)
{
    ferry__wire_out out;
    *buf = NULL;
    *len = 0;
    ferry_status rc = ferry__wire_encode(m, codec, &out);
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

ferry_status ferry__wire_decode_flat(const void *buf, size_t len, const ferry__wire_codec *codec,
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
    ferry_status rc = ferry__wire_decode(p + 4, hlen, codec, m, &atts, &n_atts);
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
        if ((rc = ferry__wire_atts_land(atts, n_atts)) != FERRY_OK)
            ferry__msg_clear(m);
    }
    ferry__wire_atts_free(atts, n_atts);
    return rc;
}
