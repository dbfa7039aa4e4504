/* Tags of bulk attachment transfers: bit 62 says whether the message is a response (responses
   reuse their request's id, which lives in the requester's id space), then the message id, then
   the attachment index. Bit 63 belongs to the fabric layer. */
#ifndef FERRY_RPC_MSG_TAGS_H
#define FERRY_RPC_MSG_TAGS_H

#include <stdbool.h>
#include <stdint.h>

#define FERRY__TAG_ATT_BITS 16
#define FERRY__TAG_ID_BITS 46

static inline uint64_t ferry__bulk_tag(bool is_response, uint64_t id, uint64_t att)
{
    return ((uint64_t)is_response << 62) |
           ((id & ((1ull << FERRY__TAG_ID_BITS) - 1)) << FERRY__TAG_ATT_BITS) |
           (att & ((1ull << FERRY__TAG_ATT_BITS) - 1));
}

#endif
