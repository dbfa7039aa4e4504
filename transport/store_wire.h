/* Private to the TCP store: what its server (store_server.c, store_table.c) and client
   (store_client.c) must agree on, kept in one place so the two sides cannot drift apart. The file
   store (store_file.c) takes its key and value caps from here too.

   On connect the server sends a hello: the 4-byte magic, one byte saying whether a token is
   required and, if so, a FERRY__STORE_NONCE_LEN-byte random server nonce. A client with the token
   answers with its own random nonce and HMAC-SHA256(token, "ferry-store-client" || server nonce
   || client nonce); the server replies with one verdict byte (1 = accepted) and, when accepted,
   HMAC-SHA256(token, "ferry-store-server" || server nonce || client nonce), which the client
   checks, so both sides prove the token in one round trip and a store that does not know it is
   refused. The labels keep either MAC from being replayed as the other. After that, both
   directions carry frames: a 4-byte big-endian body length, then the body. A request body starts
   with the op byte, a reply body with the reply status byte. Integers are big-endian; byte strings
   are a 4-byte length then the bytes. Every length is capped by the limits below, and the readers
   here never read past the end of a body. */
#ifndef FERRY_TRANSPORT_STORE_WIRE_H
#define FERRY_TRANSPORT_STORE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "transport/sha256.h"

/* The caps store.h documents for keys and values. */
#define FERRY__STORE_KEY_MAX 4096u
#define FERRY__STORE_VALUE_MAX (16u << 20)
/* The largest body: compare_set carries a key and two values, plus small fields. */
#define FERRY__STORE_BODY_MAX (2 * FERRY__STORE_VALUE_MAX + FERRY__STORE_KEY_MAX + 64)
#define FERRY__STORE_KEYS_MAX 65536u
#define FERRY__STORE_HELLO_MAGIC 0x46525932u /* "FRY2": mutual authentication */
#define FERRY__STORE_NONCE_LEN 32
/* What a client with the token sends after the hello: its nonce, then its MAC. */
#define FERRY__STORE_PROOF_LEN (FERRY__STORE_NONCE_LEN + FERRY_SHA256_LEN)
/* The longest wait a client may ask for; longer ones are clamped (30 days), so a deadline
   computed from it never overflows. */
#define FERRY__STORE_WAIT_MAX_MS (30ull * 24 * 3600 * 1000)

enum {
    FERRY__STORE_OP_SET = 1,
    FERRY__STORE_OP_GET,
    FERRY__STORE_OP_ADD,
    FERRY__STORE_OP_WAIT,
    FERRY__STORE_OP_CAS,
    FERRY__STORE_OP_CHECK,
    FERRY__STORE_OP_DELETE, /* a key list; absent keys are fine; replies with how many existed */
    FERRY__STORE_OP_STATS   /* replies with u64 keys, u64 requests served (diagnostics, tests) */
};
enum { FERRY__STORE_REPLY_OK = 0, FERRY__STORE_REPLY_TIMEOUT = 1, FERRY__STORE_REPLY_NOT_INT = 2 };

/* A bounded reader over one frame body; any overrun marks it bad instead of reading on. */
typedef struct {
    const uint8_t *p;
    size_t left;
    bool is_bad;
} ferry__store_reader;

/* A growing output buffer; an allocation failure sticks in is_oom and later writes do nothing. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool is_oom;
} ferry__store_writer;

static inline uint32_t ferry__store_load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void ferry__store_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The MAC one side proves the token with: is_server picks the label. Both sides compute both,
   each to send its own and to check the other's. */
static inline void ferry__store_auth_mac(const char *token, bool is_server,
                                         const uint8_t server_nonce[FERRY__STORE_NONCE_LEN],
                                         const uint8_t client_nonce[FERRY__STORE_NONCE_LEN],
                                         uint8_t mac[FERRY_SHA256_LEN])
{
    static const char client_label[] = "ferry-store-client", server_label[] = "ferry-store-server";
    uint8_t msg[sizeof client_label - 1 + 2 * FERRY__STORE_NONCE_LEN];
    size_t label_len = sizeof client_label - 1;
    memcpy(msg, is_server ? server_label : client_label, label_len);
    memcpy(msg + label_len, server_nonce, FERRY__STORE_NONCE_LEN);
    memcpy(msg + label_len + FERRY__STORE_NONCE_LEN, client_nonce, FERRY__STORE_NONCE_LEN);
    ferry__hmac_sha256(token, strlen(token), msg, sizeof msg, mac);
}

/* ---- reading a body --------------------------------------------------------------------- */

static inline const uint8_t *ferry__store_rd_take(ferry__store_reader *r, size_t n)
{
    if (r->is_bad || r->left < n) {
        r->is_bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static inline uint64_t ferry__store_rd_u64(ferry__store_reader *r)
{
    const uint8_t *p = ferry__store_rd_take(r, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static inline uint32_t ferry__store_rd_u32(ferry__store_reader *r)
{
    const uint8_t *p = ferry__store_rd_take(r, 4);
    return p ? ferry__store_load_be32(p) : 0;
}

static inline uint8_t ferry__store_rd_u8(ferry__store_reader *r)
{
    const uint8_t *p = ferry__store_rd_take(r, 1);
    return p ? p[0] : 0;
}

/* A length-prefixed byte string of at most `max` bytes. */
static inline const uint8_t *ferry__store_rd_blob(ferry__store_reader *r, size_t max, size_t *len)
{
    uint32_t n = ferry__store_rd_u32(r);
    if (n > max)
        r->is_bad = true;
    *len = n;
    return r->is_bad ? NULL : ferry__store_rd_take(r, n);
}

/* ---- writing a frame -------------------------------------------------------------------- */

static inline void ferry__store_wr_raw(ferry__store_writer *w, const void *data, size_t n)
{
    if (w->is_oom)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *p = ferry__realloc(w->p, cap);
        if (!p) {
            w->is_oom = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    if (n)
        memcpy(w->p + w->len, data, n);
    w->len += n;
}

static inline void ferry__store_wr_u64(ferry__store_writer *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    ferry__store_wr_raw(w, b, 8);
}

static inline void ferry__store_wr_u32(ferry__store_writer *w, uint32_t v)
{
    uint8_t b[4];
    ferry__store_put_be32(b, v);
    ferry__store_wr_raw(w, b, 4);
}

static inline void ferry__store_wr_u8(ferry__store_writer *w, uint8_t v)
{
    ferry__store_wr_raw(w, &v, 1);
}

static inline void ferry__store_wr_blob(ferry__store_writer *w, const void *data, size_t n)
{
    ferry__store_wr_u32(w, (uint32_t)n);
    ferry__store_wr_raw(w, data, n);
}

/* Reserves the 4-byte length that ferry__store_wr_end fills in. */
static inline void ferry__store_wr_begin(ferry__store_writer *w)
{
    w->len = 0;
    ferry__store_wr_u32(w, 0);
}

static inline void ferry__store_wr_end(ferry__store_writer *w)
{
    if (w->is_oom)
        return;
    ferry__store_put_be32(w->p, (uint32_t)(w->len - 4));
}

#endif
