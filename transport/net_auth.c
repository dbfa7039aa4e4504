/* Fabric authentication: this process's secret (fresh per open, published in the address blob,
   which travels only through the authenticated rendezvous store), the per-pair values derived
   from the secrets once when peers are installed, and the keyed hash that makes tags
   unguessable. Derivation is HMAC-SHA256 (transport/sha256.c); tags use SipHash-2-4, a keyed
   64-bit PRF cheap enough for every tagged transfer (about 100 instructions).

   For a pair (i -> j), derived from i's secret S_i and j's rank:
     cookie(i -> j) = HMAC(S_i, "ferry/net/cookie" || u32 j)[0..16)  every frame from i to j
     tag key(i -> j) = HMAC(S_i, "ferry/net/tag" || u32 j)[0..16)    every tag from i to j
   j learns S_i from i's blob, so it can check both; anyone without S_i cannot. A member knows
   every secret and could forge another member's messages: members are trusted alike. */
#include "transport/net.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "core/error.h"
#include "transport/net_internal.h"
#include "transport/sha256.h"

ferry_status ferry__net_auth_init(ferry__net *net)
{
    size_t got = 0;
    while (got < sizeof net->secret) {
        ssize_t n = getrandom(net->secret + got, sizeof net->secret - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ferry__fail(FERRY_ETRANSPORT, "no randomness for the fabric secret: %s",
                               n < 0 ? strerror(errno) : "getrandom returned nothing");
        got += (size_t)n;
    }
    return FERRY_OK;
}

static void derive(const unsigned char *secret, const char *label, int rank, void *out,
                   size_t len)
{
    unsigned char msg[64], mac[FERRY_SHA256_LEN];
    size_t n = strlen(label);
    memcpy(msg, label, n);
    for (int i = 0; i < 4; i++)
        msg[n + (size_t)i] = (unsigned char)((unsigned)rank >> (8 * i));
    ferry__hmac_sha256(secret, FERRY__NET_SECRET_BYTES, msg, n + 4, mac);
    memcpy(out, mac, len);
    explicit_bzero(mac, sizeof mac);
}

static void derive_key(const unsigned char *secret, const char *label, int rank, uint64_t key[2])
{
    unsigned char k[16];
    derive(secret, label, rank, k, sizeof k);
    key[0] = key[1] = 0;
    for (int i = 7; i >= 0; i--) {
        key[0] = key[0] << 8 | k[i];
        key[1] = key[1] << 8 | k[8 + i];
    }
    explicit_bzero(k, sizeof k);
}

void ferry__net_auth_pair(ferry__net *net, int self, int rank,
                          const unsigned char peer_secret[FERRY__NET_SECRET_BYTES])
{
    ferry__net_peer *p = &net->peers[rank];
    derive(net->secret, "ferry/net/cookie", rank, p->cookie_out, sizeof p->cookie_out);
    derive(peer_secret, "ferry/net/cookie", self, p->cookie_in, sizeof p->cookie_in);
    derive_key(net->secret, "ferry/net/tag", rank, p->tag_out);
    derive_key(peer_secret, "ferry/net/tag", self, p->tag_in);
}

void ferry__net_auth_wipe(ferry__net *net)
{
    explicit_bzero(net->secret, sizeof net->secret);
    for (int r = 0; net->peers && r < net->world_size; r++) {
        ferry__net_peer *p = &net->peers[r];
        explicit_bzero(p->cookie_out, sizeof p->cookie_out);
        explicit_bzero(p->cookie_in, sizeof p->cookie_in);
        explicit_bzero(p->tag_out, sizeof p->tag_out);
        explicit_bzero(p->tag_in, sizeof p->tag_in);
    }
}

/* ---- SipHash-2-4 (Aumasson and Bernstein, 2012) of one 8-byte message ---- */

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline void sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl(v[1], 13) ^ v[0];
    v[0] = rotl(v[0], 32);
    v[2] += v[3];
    v[3] = rotl(v[3], 16) ^ v[2];
    v[0] += v[3];
    v[3] = rotl(v[3], 21) ^ v[0];
    v[2] += v[1];
    v[1] = rotl(v[1], 17) ^ v[2];
    v[2] = rotl(v[2], 32);
}

uint64_t ferry__net_siphash_u64(const uint64_t key[2], uint64_t word)
{
    uint64_t v[4] = {key[0] ^ UINT64_C(0x736f6d6570736575), key[1] ^ UINT64_C(0x646f72616e646f6d),
                     key[0] ^ UINT64_C(0x6c7967656e657261), key[1] ^ UINT64_C(0x7465646279746573)};
    const uint64_t last = UINT64_C(8) << 56; /* the message length, in the final block */
    v[3] ^= word;
    sipround(v);
    sipround(v);
    v[0] ^= word;
    v[3] ^= last;
    sipround(v);
    sipround(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t ferry__net_keyed_tag(const uint64_t key[2], uint64_t tag)
{
    return (tag & FERRY__NET_TAG_INTERNAL) |
           (ferry__net_siphash_u64(key, tag) & ~FERRY__NET_TAG_INTERNAL);
}
