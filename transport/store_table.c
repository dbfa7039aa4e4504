/* The store server's table and request handling (see store_table.h). It trusts nothing a client
   sends: every length is checked against the caps before it is used, and a frame that does not
   parse exactly is refused whole. Blocking gets and waits are not answered until their keys
   exist: the frame stays at the front of the connection's input and is run again whenever a key
   changes or its deadline passes. */
#include "transport/store_table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

/* What handling one request frame came to: answered, parked until its keys exist, or a
   malformed request that closes the connection. */
enum { DONE, PARKED, BAD };

typedef struct entry {
    struct entry *next;
    char *key;
    size_t key_len;
    uint8_t *val;
    size_t val_len;
} entry;

struct ferry__store_table {
    entry **buckets;
    size_t n_buckets, n_keys;
    bool changed;
};

/* ---- the table -------------------------------------------------------------------------- */

ferry__store_table *ferry__store_table_new(void)
{
    ferry__store_table *t = ferry__calloc(1, sizeof *t);
    if (t) {
        t->n_buckets = 1024;
        t->buckets = ferry__calloc(t->n_buckets, sizeof *t->buckets);
    }
    if (!t || !t->buckets) {
        ferry__free(t);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory starting the store");
    }
    return t;
}

static void entry_free(entry *e)
{
    ferry__free(e->key);
    ferry__free(e->val);
    ferry__free(e);
}

void ferry__store_table_free(ferry__store_table *t)
{
    if (!t)
        return;
    for (size_t b = 0; b < t->n_buckets; b++) {
        for (entry *e = t->buckets[b], *next; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    }
    ferry__free(t->buckets);
    ferry__free(t);
}

size_t ferry__store_table_keys(const ferry__store_table *t)
{
    return t->n_keys;
}

bool ferry__store_table_take_changed(ferry__store_table *t)
{
    bool changed = t->changed;
    t->changed = false;
    return changed;
}

static size_t hash_key(const uint8_t *key, size_t len, size_t n_buckets)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    return (size_t)(h % n_buckets);
}

static entry **table_slot(ferry__store_table *t, const uint8_t *key, size_t len)
{
    entry **slot = &t->buckets[hash_key(key, len, t->n_buckets)];
    while (*slot && ((*slot)->key_len != len || memcmp((*slot)->key, key, len)))
        slot = &(*slot)->next;
    return slot;
}

static entry *table_find(ferry__store_table *t, const uint8_t *key, size_t len)
{
    return *table_slot(t, key, len);
}

/* Stores a copy of val under key. false on out-of-memory (the old value stays). */
static bool table_put(ferry__store_table *t, const uint8_t *key, size_t key_len, const void *val,
                      size_t val_len)
{
    uint8_t *copy = ferry__malloc(val_len);
    if (!copy)
        return false;
    if (val_len)
        memcpy(copy, val, val_len);
    entry *e = table_find(t, key, key_len);
    if (!e) {
        e = ferry__calloc(1, sizeof *e);
        char *k = ferry__strndup((const char *)key, key_len);
        if (!e || !k) {
            ferry__free(e);
            ferry__free(k);
            ferry__free(copy);
            return false;
        }
        e->key = k;
        e->key_len = key_len;
        size_t b = hash_key(key, key_len, t->n_buckets);
        e->next = t->buckets[b];
        t->buckets[b] = e;
        t->n_keys++;
    }
    ferry__free(e->val);
    e->val = copy;
    e->val_len = val_len;
    t->changed = true;
    return true;
}

static bool table_delete(ferry__store_table *t, const uint8_t *key, size_t len)
{
    entry **slot = table_slot(t, key, len), *e = *slot;
    if (!e)
        return false;
    *slot = e->next;
    entry_free(e);
    t->n_keys--;
    return true;
}

/* Parses a whole decimal int64 (what add stores); false for anything else. */
static bool parse_i64(const uint8_t *s, size_t len, int64_t *out)
{
    char buf[32];
    char *end;
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* ---- requests --------------------------------------------------------------------------- */

/* Appends one reply frame: length, status byte, payload. */
static int reply(ferry__store_writer *out, uint8_t status, const void *payload, size_t len)
{
    uint8_t head[5] = {0, 0, 0, 0, status};
    ferry__store_put_be32(head, (uint32_t)(len + 1));
    ferry__store_wr_raw(out, head, sizeof head);
    ferry__store_wr_raw(out, payload, len);
    return out->is_oom ? BAD : DONE;
}

static int reply_u64(ferry__store_writer *out, uint64_t v)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    return reply(out, FERRY__STORE_REPLY_OK, be, sizeof be);
}

/* Parks a get/wait until its keys exist or its deadline passes. The client's timeout is clamped,
   so a huge one cannot overflow the deadline. */
static int park(ferry__store_stream *s, uint64_t timeout_ms, int64_t now_ms)
{
    if (!s->is_parked) {
        s->is_parked = true;
        if (timeout_ms > FERRY__STORE_WAIT_MAX_MS)
            timeout_ms = FERRY__STORE_WAIT_MAX_MS;
        s->deadline_ms = timeout_ms ? now_ms + (int64_t)timeout_ms : 0;
    }
    return PARKED;
}

static int op_get(ferry__store_table *t, ferry__store_stream *s, ferry__store_reader *r,
                  ferry__store_writer *out, int64_t now_ms)
{
    size_t klen;
    uint64_t timeout_ms = ferry__store_rd_u64(r);
    const uint8_t *key = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &klen);
    if (r->is_bad || r->left)
        return BAD;
    entry *e = table_find(t, key, klen);
    if (!e)
        return park(s, timeout_ms, now_ms);
    return reply(out, FERRY__STORE_REPLY_OK, e->val, e->val_len);
}

/* Reads a key list, checking every entry; NULL when it is malformed (nothing may be done then).
   The keys point into the frame. */
static const uint8_t **read_keys(ferry__store_reader *r, uint32_t *n_out, size_t **lens_out)
{
    uint32_t n = ferry__store_rd_u32(r);
    if (r->is_bad || n > FERRY__STORE_KEYS_MAX || n > r->left / 4)
        return NULL;
    const uint8_t **keys = ferry__malloc((n ? n : 1) * sizeof *keys);
    size_t *lens = ferry__malloc((n ? n : 1) * sizeof *lens);
    for (uint32_t i = 0; keys && lens && i < n; i++)
        keys[i] = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &lens[i]);
    if (!keys || !lens || r->is_bad || r->left) {
        ferry__free(keys);
        ferry__free(lens);
        return NULL;
    }
    *n_out = n;
    *lens_out = lens;
    return keys;
}

/* wait (all keys must exist), check (which exist) and delete (remove them; replies with how many
   existed) share the key list. */
static int op_keys(ferry__store_table *t, ferry__store_stream *s, ferry__store_reader *r,
                   ferry__store_writer *out, int op, int64_t now_ms)
{
    uint64_t timeout_ms = op == FERRY__STORE_OP_WAIT ? ferry__store_rd_u64(r) : 0;
    uint32_t n = 0;
    size_t *lens = NULL;
    const uint8_t **keys = read_keys(r, &n, &lens);
    uint8_t *present = keys ? ferry__malloc(n ? n : 1) : NULL;
    int rc = present ? DONE : BAD;
    uint64_t deleted = 0;
    bool all = true;
    for (uint32_t i = 0; present && i < n; i++) {
        if (op == FERRY__STORE_OP_DELETE) {
            deleted += table_delete(t, keys[i], lens[i]);
            continue;
        }
        present[i] = table_find(t, keys[i], lens[i]) != NULL;
        all = all && present[i];
    }
    if (rc != BAD && op == FERRY__STORE_OP_DELETE)
        rc = reply_u64(out, deleted);
    else if (rc != BAD && op == FERRY__STORE_OP_WAIT && !all)
        rc = park(s, timeout_ms, now_ms);
    else if (rc != BAD)
        rc = reply(out, FERRY__STORE_REPLY_OK, present, op == FERRY__STORE_OP_WAIT ? 0 : n);
    ferry__free(present);
    ferry__free(keys);
    ferry__free(lens);
    return rc;
}

static int op_add(ferry__store_table *t, ferry__store_reader *r, ferry__store_writer *out)
{
    size_t klen;
    int64_t delta = (int64_t)ferry__store_rd_u64(r), cur = 0, sum;
    const uint8_t *key = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &klen);
    if (r->is_bad || r->left)
        return BAD;
    entry *e = table_find(t, key, klen);
    if ((e && !parse_i64(e->val, e->val_len, &cur)) || __builtin_add_overflow(cur, delta, &sum))
        return reply(out, FERRY__STORE_REPLY_NOT_INT, NULL, 0);
    char text[32];
    int n = snprintf(text, sizeof text, "%" PRId64, sum);
    if (!table_put(t, key, klen, text, (size_t)n))
        return BAD;
    return reply_u64(out, (uint64_t)sum);
}

/* torch's compare_set: set when the current value is `expected` (or absent and nothing is
   expected); reply with the value now stored, or `expected` when the key is absent. */
static int op_cas(ferry__store_table *t, ferry__store_reader *r, ferry__store_writer *out)
{
    size_t klen, elen, dlen;
    const uint8_t *key = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &klen);
    uint8_t expect_present = ferry__store_rd_u8(r);
    const uint8_t *expected = ferry__store_rd_blob(r, FERRY__STORE_VALUE_MAX, &elen);
    const uint8_t *desired = ferry__store_rd_blob(r, FERRY__STORE_VALUE_MAX, &dlen);
    if (r->is_bad || r->left || expect_present > 1)
        return BAD;
    entry *e = table_find(t, key, klen);
    bool matches = e ? expect_present && e->val_len == elen && !memcmp(e->val, expected, elen)
                     : !expect_present;
    if (matches && !table_put(t, key, klen, desired, dlen))
        return BAD;
    if (!e && !matches)
        return reply(out, FERRY__STORE_REPLY_OK, expected, elen);
    e = table_find(t, key, klen);
    return reply(out, FERRY__STORE_REPLY_OK, e->val, e->val_len);
}

static int op_stats(ferry__store_table *t, ferry__store_reader *r, ferry__store_writer *out,
                    uint64_t requests_total)
{
    uint8_t be[16];
    uint64_t v[2] = {t->n_keys, requests_total};
    if (r->left)
        return BAD;
    for (int i = 0; i < 16; i++)
        be[i] = (uint8_t)(v[i / 8] >> (56 - 8 * (i % 8)));
    return reply(out, FERRY__STORE_REPLY_OK, be, sizeof be);
}

static int handle_frame(ferry__store_table *t, ferry__store_stream *s, const uint8_t *body,
                        size_t len, ferry__store_writer *out, int64_t now_ms,
                        uint64_t requests_total)
{
    ferry__store_reader r = {.p = body, .left = len};
    size_t klen, vlen;
    uint8_t op = ferry__store_rd_u8(&r);
    switch (op) {
    case FERRY__STORE_OP_SET: {
        const uint8_t *key = ferry__store_rd_blob(&r, FERRY__STORE_KEY_MAX, &klen);
        const uint8_t *val = ferry__store_rd_blob(&r, FERRY__STORE_VALUE_MAX, &vlen);
        if (r.is_bad || r.left || !table_put(t, key, klen, val, vlen))
            return BAD;
        return reply(out, FERRY__STORE_REPLY_OK, NULL, 0);
    }
    case FERRY__STORE_OP_GET:
        return op_get(t, s, &r, out, now_ms);
    case FERRY__STORE_OP_ADD:
        return op_add(t, &r, out);
    case FERRY__STORE_OP_WAIT:
    case FERRY__STORE_OP_CHECK:
    case FERRY__STORE_OP_DELETE:
        return op_keys(t, s, &r, out, op, now_ms);
    case FERRY__STORE_OP_CAS:
        return op_cas(t, &r, out);
    case FERRY__STORE_OP_STATS:
        return op_stats(t, &r, out, requests_total);
    default:
        return BAD;
    }
}

bool ferry__store_table_run(ferry__store_table *t, ferry__store_stream *s, const uint8_t *in,
                            size_t len, size_t *consumed, ferry__store_writer *out,
                            size_t out_limit, int64_t now_ms, uint64_t *requests_total)
{
    size_t off = 0, frame = 0;
    *consumed = 0;
    while (out->len < out_limit) {
        if (!ferry__store_frame_len(in + off, len - off, &frame))
            return false;
        if (frame == 0 || len - off < frame)
            return true;
        int rc = handle_frame(t, s, in + off + 4, frame - 4, out, now_ms, *requests_total);
        if (rc == PARKED && s->deadline_ms && now_ms >= s->deadline_ms)
            rc = reply(out, FERRY__STORE_REPLY_TIMEOUT, NULL, 0);
        if (rc == BAD)
            return false;
        if (rc == PARKED)
            return true;
        s->is_parked = false;
        s->requests++;
        (*requests_total)++;
        off += frame;
        *consumed = off;
    }
    return true;
}
