/* libFuzzer target for the fabric's checks of an incoming untagged message
   (transport/net_message.c): who sent it (the rank its completion data claims, the source
   address the provider reports, the cookie in its frame header) and, for a large-message
   announcement, its total, sequence and part sizes. The input is what a stranger or a broken
   peer controls: byte 0 picks the claimed rank and kind, byte 1 the source address, byte 2
   whether the frame starts with the right cookie (a stranger does not know it; the fuzzer is
   let in to reach the announcement parser), the rest is the message. A message must pass only
   when every check holds, and an accepted announcement must add up and stay under the cap. */
#include <stdint.h>
#include <string.h>

#include "transport/net_internal.h"

#define WORLD 4
#define CAP ((size_t)1 << 30)

static ferry__net net;
static ferry__net_ep ep;
static ferry__net_peer peers[WORLD];
static int addr_rank[WORLD] = {0, 1, 2, 3};

static void setup(void)
{
    net.world_size = WORLD;
    net.peers = peers;
    net.max_message_bytes = CAP;
    ep.has_source = true;
    ep.addr_rank = addr_rank;
    ep.prov_name = "fuzz";
    for (int r = 0; r < WORLD; r++)
        for (int i = 0; i < FERRY__NET_FRAME_BYTES; i++)
            peers[r].cookie_in[i] = (unsigned char)(17 * r + i + 1);
}

static void check_announcement(const unsigned char *body, size_t len)
{
    ferry__net_announcement an;
    if (!ferry__net_parse_announcement(body, len, CAP, &an))
        return;
    uint64_t sum = 0;
    if (an.n_parts < 1 || an.n_parts > FERRY__NET_MAX_PARTS || an.total > CAP)
        __builtin_trap();
    for (size_t i = 0; i < an.n_parts; i++) {
        if (an.parts[i] > an.total - sum)
            __builtin_trap();
        sum += an.parts[i];
    }
    if (sum != an.total)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 3)
        return 0;
    int claimed = data[0] & 7, kind = (data[0] >> 3) & 3;
    fi_addr_t src = data[1] < 8 ? (fi_addr_t)data[1] : FI_ADDR_NOTAVAIL;
    bool right_cookie = data[2] & 1, with_data = !(data[2] & 2);
    unsigned char msg[FERRY__NET_EAGER_MAX];
    size_t len = size - 3 < sizeof msg ? size - 3 : sizeof msg;
    memcpy(msg, data + 3, len);
    if (right_cookie && claimed < WORLD && len >= FERRY__NET_FRAME_BYTES)
        memcpy(msg, peers[claimed].cookie_in, FERRY__NET_FRAME_BYTES);
    struct fi_cq_tagged_entry ent = {
        .flags = with_data ? FI_REMOTE_CQ_DATA : 0,
        .len = len,
        .data = (uint64_t)kind << 30 | (uint64_t)claimed,
    };
    int rank = ferry__net_check_sender(&net, &ep, &ent, src, msg);
    bool should = with_data && claimed < WORLD && src != FI_ADDR_NOTAVAIL &&
                  src < (fi_addr_t)WORLD && addr_rank[src] == claimed &&
                  len >= FERRY__NET_FRAME_BYTES &&
                  memcmp(msg, peers[claimed].cookie_in, FERRY__NET_FRAME_BYTES) == 0;
    if ((rank >= 0) != should || (rank >= 0 && rank != claimed))
        __builtin_trap();
    if (rank >= 0 && kind == FERRY__NET_KIND_LARGE)
        check_announcement(msg + FERRY__NET_FRAME_BYTES, len - FERRY__NET_FRAME_BYTES);
    return 0;
}
