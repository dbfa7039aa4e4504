/* SHA-256 and HMAC-SHA256 for the store's token check. Plain portable C following FIPS 180-4:
   a 64-byte block buffer, the 64-round compression function and big-endian length padding.
   Speed does not matter here (a handful of hashes per connection); clarity and the published
   test vectors do. Secrets are wiped from the stack after use. */
#include "transport/sha256.h"

#include <string.h>

static const uint32_t round_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void compress(uint32_t state[8], const uint8_t block[FERRY_SHA256_BLOCK])
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = load_be32(block + 4 * i);
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, state, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
        uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
        uint32_t t1 = v[7] + s1 + ch + round_k[i] + w[i];
        uint32_t s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
        uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
        uint32_t t2 = s0 + maj;
        memmove(v + 1, v, 7 * sizeof v[0]);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        state[i] += v[i];
}

void ferry__sha256_init(ferry__sha256_ctx *ctx)
{
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, initial, sizeof initial);
    ctx->total_bytes = 0;
    ctx->block_len = 0;
}

void ferry__sha256_update(ferry__sha256_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;
    ctx->total_bytes += len;
    while (len > 0) {
        size_t take = FERRY_SHA256_BLOCK - ctx->block_len;
        if (take > len)
            take = len;
        memcpy(ctx->block + ctx->block_len, p, take);
        ctx->block_len += take;
        p += take;
        len -= take;
        if (ctx->block_len == FERRY_SHA256_BLOCK) {
            compress(ctx->state, ctx->block);
            ctx->block_len = 0;
        }
    }
}

void ferry__sha256_final(ferry__sha256_ctx *ctx, uint8_t out[FERRY_SHA256_LEN])
{
    uint64_t bits = ctx->total_bytes * 8;
    uint8_t pad = 0x80;
    ferry__sha256_update(ctx, &pad, 1);
    pad = 0;
    while (ctx->block_len != FERRY_SHA256_BLOCK - 8)
        ferry__sha256_update(ctx, &pad, 1);
    uint8_t len_be[8];
    store_be32(len_be, (uint32_t)(bits >> 32));
    store_be32(len_be + 4, (uint32_t)bits);
    ferry__sha256_update(ctx, len_be, sizeof len_be);
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, ctx->state[i]);
    memset(ctx, 0, sizeof *ctx);
}

void ferry__sha256(const void *data, size_t len, uint8_t out[FERRY_SHA256_LEN])
{
    ferry__sha256_ctx ctx;
    ferry__sha256_init(&ctx);
    ferry__sha256_update(&ctx, data, len);
    ferry__sha256_final(&ctx, out);
}

void ferry__hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                        uint8_t out[FERRY_SHA256_LEN])
{
    uint8_t k[FERRY_SHA256_BLOCK] = {0}, pad[FERRY_SHA256_BLOCK], inner[FERRY_SHA256_LEN];
    ferry__sha256_ctx ctx;

    if (key_len > FERRY_SHA256_BLOCK)
        ferry__sha256(key, key_len, k);
    else if (key_len > 0)
        memcpy(k, key, key_len);

    for (int i = 0; i < FERRY_SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    ferry__sha256_init(&ctx);
    ferry__sha256_update(&ctx, pad, sizeof pad);
    ferry__sha256_update(&ctx, msg, msg_len);
    ferry__sha256_final(&ctx, inner);

    for (int i = 0; i < FERRY_SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    ferry__sha256_init(&ctx);
    ferry__sha256_update(&ctx, pad, sizeof pad);
    ferry__sha256_update(&ctx, inner, sizeof inner);
    ferry__sha256_final(&ctx, out);

    /* The padded key is the secret; do not leave it on the stack. */
    explicit_bzero(k, sizeof k);
    explicit_bzero(pad, sizeof pad);
    explicit_bzero(inner, sizeof inner);
}

bool ferry__ct_equal(const void *a, const void *b, size_t len)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < len; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}
