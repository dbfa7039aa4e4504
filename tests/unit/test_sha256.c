/* SHA-256 against the FIPS 180 examples and HMAC-SHA256 against RFC 4231's test cases. */
#include <stdio.h>
#include <string.h>

#include "test_util.h"
#include "transport/sha256.h"

static void to_hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void expect_sha(const void *msg, size_t len, const char *want)
{
    uint8_t d[FERRY_SHA256_LEN];
    char hex[2 * FERRY_SHA256_LEN + 1];
    ferry__sha256(msg, len, d);
    to_hex(d, sizeof d, hex);
    cr_assert_str_eq(hex, want);
}

static void expect_hmac(const void *key, size_t key_len, const void *msg, size_t len,
                        const char *want)
{
    uint8_t d[FERRY_SHA256_LEN];
    char hex[2 * FERRY_SHA256_LEN + 1];
    ferry__hmac_sha256(key, key_len, msg, len, d);
    to_hex(d, sizeof d, hex);
    /* RFC 4231 case 5 gives only the first 128 bits. */
    cr_assert(!strncmp(hex, want, strlen(want)), "got %s, want %s", hex, want);
}

Test(transport_sha256, matches_fips_examples_when_hashing_short_messages, .timeout = 10)
{
    expect_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_sha(two_blocks, strlen(two_blocks),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *long_msg = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                           "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    expect_sha(long_msg, strlen(long_msg),
               "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

Test(transport_sha256, matches_fips_example_when_fed_a_million_bytes_in_pieces, .timeout = 10)
{
    char chunk[1001];
    memset(chunk, 'a', sizeof chunk);
    ferry__sha256_ctx ctx;
    uint8_t d[FERRY_SHA256_LEN];
    char hex[2 * FERRY_SHA256_LEN + 1];
    ferry__sha256_init(&ctx);
    for (int i = 0; i < 1000; i++)
        ferry__sha256_update(&ctx, chunk, i % 2 ? 999 : 1001); /* uneven pieces, 10^6 in all */
    ferry__sha256_final(&ctx, d);
    to_hex(d, sizeof d, hex);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(transport_sha256, padding_is_right_when_length_is_near_a_block_boundary, .timeout = 10)
{
    /* Incremental and one-shot agree for every length around the 56- and 64-byte edges. */
    uint8_t msg[130];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7 + 1);
    for (size_t len = 50; len < sizeof msg; len++) {
        uint8_t one[FERRY_SHA256_LEN], inc[FERRY_SHA256_LEN];
        ferry__sha256(msg, len, one);
        ferry__sha256_ctx ctx;
        ferry__sha256_init(&ctx);
        for (size_t i = 0; i < len; i++)
            ferry__sha256_update(&ctx, msg + i, 1);
        ferry__sha256_final(&ctx, inc);
        cr_assert(!memcmp(one, inc, sizeof one), "length %zu differs", len);
    }
}

Test(transport_sha256, hmac_matches_rfc4231_when_keys_are_short, .timeout = 10)
{
    uint8_t key[25], data[50];
    memset(key, 0x0b, 20);
    expect_hmac(key, 20, "Hi There", 8,
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    expect_hmac("Jefe", 4, "what do ya want for nothing?", 28,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(key, 0xaa, 20);
    memset(data, 0xdd, 50);
    expect_hmac(key, 20, data, 50,
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    for (int i = 0; i < 25; i++)
        key[i] = (uint8_t)(i + 1);
    memset(data, 0xcd, 50);
    expect_hmac(key, 25, data, 50,
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    memset(key, 0x0c, 20);
    expect_hmac(key, 20, "Test With Truncation", 20, "a3b6167473100ee06e0c796c2955552b");
}

Test(transport_sha256, hmac_matches_rfc4231_when_key_is_longer_than_a_block, .timeout = 10)
{
    uint8_t key[131];
    memset(key, 0xaa, sizeof key);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    expect_hmac(key, sizeof key, m6, strlen(m6),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    const char *m7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the HMAC "
                     "algorithm.";
    expect_hmac(key, sizeof key, m7, strlen(m7),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

Test(transport_sha256, ct_equal_tells_apart_when_one_byte_differs, .timeout = 10)
{
    uint8_t a[32] = {0}, b[32] = {0};
    cr_assert(ferry__ct_equal(a, b, sizeof a));
    b[31] = 1;
    cr_assert(!ferry__ct_equal(a, b, sizeof a));
    cr_assert(ferry__ct_equal(a, b, 31));
}
