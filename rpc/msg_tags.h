/* Tags of bulk attachment transfers: bit 62 says whether the message is a response (responses
   reuse their request's id, which lives in the requester's id space), then the message id, then
   the attachment index. Bit 63 belongs to the fabric layer, which also keys every tag with the
   pair's secret before it goes on the wire (transport/net_auth.c), so these need only be
   unique among one pair's transfers in flight. The index takes 21 bits: the decoder allows
   up to 2^20 attachments (max_nodes), indices 0 .. 2^20 - 1. */
#ifndef FERRY_RPC_MSG_TAGS_H
#define FERRY_RPC_MSG_TAGS_H

#include <stdbool.h>
#include <stdint.h>

#define FERRY__TAG_ATT_BITS 21
#define FERRY__TAG_ID_BITS 41
#define FERRY__TAG_MAX_ATTS ((uint64_t)1 << FERRY__TAG_ATT_BITS)

static inline uint64_t ferry__bulk_tag(bool is_response, uint64_t id, uint64_t att)
{
    return ((uint64_t)is_response << 62) |
           ((id & ((1ull << FERRY__TAG_ID_BITS) - 1)) << FERRY__TAG_ATT_BITS) |
           (att & ((1ull << FERRY__TAG_ATT_BITS) - 1));
}

#endif
