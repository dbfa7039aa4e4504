/* Unit tests for the envelope decoder's fast path (rpc/wire_fast.c): it takes the envelopes of
   small calls and responses and reads them as protobuf-c does (random messages, and every
   envelope got by mutating their bytes, checked against protobuf-c), declines the rest, and a
   message decoded through it equals the one sent. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "rpc/wire_internal.h"
#include "test_util.h"
#include "tests/fuzz/wire_fast_check.h"

/* A random value of simple kinds with at most *budget nodes. */
static ferry_value *random_value(unsigned *seed, int *budget, int depth)
{
    (*budget)--;
    int pick = rand_r(seed) % (depth < 3 && *budget > 2 ? 6 : 5);
    switch (pick) {
    case 0:
        return ferry_none();
    case 1:
        return ferry_bool(rand_r(seed) & 1);
    case 2: {
        uint64_t bits = (uint64_t)rand_r(seed) << 40 ^ (uint64_t)rand_r(seed);
        int64_t v = (int64_t)(bits & (((uint64_t)1 << 62) - 1));
        return ferry_int(rand_r(seed) & 1 ? -v : v);
    }
    case 3: {
        static const double specials[] = {0.0, -0.0, 1.5, -1e300, 1e-310};
        return ferry_double(specials[rand_r(seed) % 5]);
    }
    case 4:
        return ferry_int(rand_r(seed) % 300 - 150);
    default: {
        int n = rand_r(seed) % 4;
        if (n > *budget)
            n = *budget;
        ferry_value *items[4];
        for (int i = 0; i < n; i++)
            items[i] = random_value(seed, budget, depth + 1);
        ferry_value *l = ferry_list_from(items, (size_t)n);
        for (int i = 0; i < n; i++)
            ferry_value_release(items[i]);
        return l;
    }
    }
}

/* Encodes m and returns the envelope bytes (owned by *out). */
static void encode(const ferry__msg *m, ferry__wire_out *out)
{
    ferry_assert_ok(ferry__wire_encode(m, NULL, out));
}

static void random_msg(unsigned *seed, ferry__msg *m, ferry_value **hold)
{
    int budget = FERRY__WIRE_FAST_NODES;
    *hold = NULL;
    memset(m, 0, sizeof *m);
    m->id = (uint64_t)rand_r(seed) * 977;
    m->src = rand_r(seed) % 64;
    if (rand_r(seed) & 1) {
        m->type = FERRY__MSG_CALL;
        m->fn = rand_r(seed) & 1 ? "noop" : "a_longer_function_name_for_testing";
        m->timeout_s = rand_r(seed) % 3 ? 60.0 : 0.0;
        m->no_reply = rand_r(seed) % 5 == 0;
        if (rand_r(seed) % 4) {
            int n = rand_r(seed) % 4;
            ferry_value *items[4];
            budget--;
            for (int i = 0; i < n; i++)
                items[i] = random_value(seed, &budget, 1);
            *hold = ferry_list_from(items, (size_t)n);
            for (int i = 0; i < n; i++)
                ferry_value_release(items[i]);
            m->args = *hold;
        }
    } else {
        m->type = FERRY__MSG_RESPONSE;
        if (rand_r(seed) % 4)
            m->value = *hold = random_value(seed, &budget, 0);
    }
}

Test(wire_fast, reads_as_protobuf_c_does_when_2000_random_small_messages_decode, .timeout = 30)
{
    unsigned seed = 14;
    int accepted_n = 0;
    for (int round = 0; round < 2000; round++) {
        ferry__msg m;
        ferry_value *hold;
        random_msg(&seed, &m, &hold);
        ferry__wire_out out;
        encode(&m, &out);
        bool accepted;
        const char *why = wire_fast_differs(out.header, out.header_len, &accepted);
        cr_assert_null(why, "round %d: fast path and protobuf-c differ on %s", round, why);
        accepted_n += accepted;
        /* What comes out of the whole decoder is what went in. */
        ferry__msg got;
        ferry__att *atts = NULL;
        size_t n_atts = 0;
        ferry_assert_ok(ferry__wire_decode(out.header, out.header_len, NULL, &got, &atts, &n_atts));
        cr_assert_eq(got.type, m.type);
        cr_assert_eq(got.id, m.id);
        cr_assert_eq(got.src, m.src);
        cr_assert_eq(got.no_reply, m.no_reply);
        if (m.type == FERRY__MSG_CALL) {
            cr_assert_str_eq(got.fn, m.fn);
            cr_assert_eq(got.timeout_s, m.timeout_s);
            cr_assert(m.args ? ferry_value_equal(got.args, m.args) : !got.args, "round %d", round);
        } else if (m.value) {
            cr_assert(ferry_value_equal(got.value, m.value), "round %d: value differs", round);
        }
        ferry__msg_clear(&got);
        ferry__wire_atts_free(atts, n_atts);
        ferry__wire_out_free(&out);
        ferry_value_release(hold);
    }
    cr_assert_geq(accepted_n, 1900, "the fast path took only %d of 2000", accepted_n);
}

Test(wire_fast, agrees_with_protobuf_c_when_small_envelopes_are_mutated_200k_times,
     .timeout = 60)
{
    unsigned seed = 2026;
    long accepted_n = 0;
    uint8_t buf[512];
    for (int round = 0; round < 2000; round++) {
        ferry__msg m;
        ferry_value *hold;
        random_msg(&seed, &m, &hold);
        ferry__wire_out out;
        encode(&m, &out);
        cr_assert_leq(out.header_len, sizeof buf);
        for (int k = 0; k < 100; k++) {
            size_t len = out.header_len;
            memcpy(buf, out.header, len);
            int edits = 1 + rand_r(&seed) % 3;
            for (int e = 0; e < edits; e++) {
                size_t at = (size_t)rand_r(&seed) % len;
                switch (rand_r(&seed) % 4) {
                case 0:
                    buf[at] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
                    break;
                case 1:
                    buf[at] = (uint8_t)rand_r(&seed);
                    break;
                case 2:
                    len = at; /* cut short */
                    break;
                default:
                    buf[at] = (uint8_t)(rand_r(&seed) % 2 ? 0x80 : 0x01);
                    break;
                }
                if (len == 0)
                    break;
            }
            bool accepted;
            const char *why = wire_fast_differs(buf, len, &accepted);
            cr_assert_null(why, "round %d.%d: fast path and protobuf-c differ on %s", round, k,
                           why);
            accepted_n += accepted;
        }
        ferry__wire_out_free(&out);
        ferry_value_release(hold);
    }
    cr_assert_gt(accepted_n, 1000, "mutations reached the fast path only %ld times", accepted_n);
}

Test(wire_fast, declines_when_a_message_carries_strings_ext_too_many_nodes_or_odd_framing,
     .timeout = 10)
{
    ferry_value *s = ferry_assert_ptr(ferry_string("text"));
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .id = 5, .src = 1, .value = s};
    ferry__wire_out out;
    encode(&m, &out);
    bool accepted;
    cr_assert_null(wire_fast_differs(out.header, out.header_len, &accepted));
    cr_assert_not(accepted, "a string value went the fast way");
    ferry__wire_out_free(&out);
    ferry_value_release(s);

    ferry_value *items[FERRY__WIRE_FAST_NODES];
    for (int i = 0; i < FERRY__WIRE_FAST_NODES; i++)
        items[i] = ferry_int(i);
    ferry_value *big = ferry_list_from(items, FERRY__WIRE_FAST_NODES); /* 1 + 16 nodes */
    for (int i = 0; i < FERRY__WIRE_FAST_NODES; i++)
        ferry_value_release(items[i]);
    m.value = big;
    encode(&m, &out);
    cr_assert_null(wire_fast_differs(out.header, out.header_len, &accepted));
    cr_assert_not(accepted, "%d nodes went the fast way", FERRY__WIRE_FAST_NODES + 1);
    ferry__wire_out_free(&out);

    m = (ferry__msg){.type = FERRY__MSG_CALL, .id = 6, .fn = "f", .n_ext = 1};
    m.ext[0].key = 3;
    m.ext[0].value = 9;
    encode(&m, &out);
    cr_assert_null(wire_fast_differs(out.header, out.header_len, &accepted));
    cr_assert_not(accepted, "an ext entry went the fast way");
    ferry__wire_out_free(&out);

    /* A length prefix of 8 bytes, which protobuf-c refuses (it reads at most 5). */
    static const uint8_t overlong[] = {0x08, 0x02, 0x10, 0xb9, 0x60, 0x42, 0x80, 0x80,
                                       0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    cr_assert_null(wire_fast_differs(overlong, sizeof overlong, &accepted));
    cr_assert_not(accepted, "an overlong length prefix went the fast way");

    m = (ferry__msg){.type = FERRY__MSG_PING, .id = 7};
    encode(&m, &out);
    cr_assert_null(wire_fast_differs(out.header, out.header_len, &accepted));
    cr_assert_not(accepted, "a ping went the fast way");
    ferry__wire_out_free(&out);
    ferry_value_release(big);
}
