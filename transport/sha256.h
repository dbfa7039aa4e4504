/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), written here so the store's authentication
   needs no crypto library. Only used to prove knowledge of FERRY_AUTH_TOKEN over a fresh nonce;
   not a general-purpose crypto API. */
#ifndef FERRY_TRANSPORT_SHA256_H
#define FERRY_TRANSPORT_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FERRY_SHA256_LEN 32
#define FERRY_SHA256_BLOCK 64

typedef struct {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[FERRY_SHA256_BLOCK];
    size_t block_len;
} ferry__sha256_ctx;

void ferry__sha256_init(ferry__sha256_ctx *ctx);
void ferry__sha256_update(ferry__sha256_ctx *ctx, const void *data, size_t len);
/* Writes the digest and wipes the context. */
void ferry__sha256_final(ferry__sha256_ctx *ctx, uint8_t out[FERRY_SHA256_LEN]);
/* One-shot digest. */
void ferry__sha256(const void *data, size_t len, uint8_t out[FERRY_SHA256_LEN]);

/* HMAC-SHA256(key, msg); keys longer than a block are hashed first (RFC 2104). */
void ferry__hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                        uint8_t out[FERRY_SHA256_LEN]);

/* Compares two byte strings in time that depends only on len (for MACs). */
bool ferry__ct_equal(const void *a, const void *b, size_t len);

#endif
