/* The wire codec: ferry's message struct <-> protobuf-c envelope bytes + attachments.
   Only rpc/wire*.c include the generated protobuf-c header; everyone else sees ferry__msg.

   Encoding references tensor bytes (no copy): each attachment points into a tensor's storage and
   holds a reference to that tensor until the attachment list is freed (after the send completes).
   Decoding trusts nothing: it checks every count, length, dtype and size against limits and the
   declared attachment sizes, allocates each received tensor's storage, and hands back where each
   attachment's bytes must land, so the transport receives them straight into the tensors. */
#ifndef FERRY_RPC_WIRE_H
#define FERRY_RPC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/future.h"
#include "ferry/tensor.h"
#include "ferry/value.h"

#define FERRY__WIRE_VERSION 2

/* Default cap on one message (envelope + attachments). */
#ifndef FERRY_MAX_MESSAGE_BYTES
#define FERRY_MAX_MESSAGE_BYTES ((size_t)1 << 30)
#endif

/* The message kinds; each has its own body on the wire (docs/wire.md). */
typedef enum {
    FERRY__MSG_INVALID = 0,
    FERRY__MSG_CALL, FERRY__MSG_RESPONSE,          /* RESPONSE covers Error too: is_error */
    FERRY__MSG_RREF_FETCH, FERRY__MSG_RREF_USER_DELETE, FERRY__MSG_RREF_FORK_REQUEST,
    FERRY__MSG_RREF_CHILD_ACCEPT, FERRY__MSG_REMOTE_CALL,
    FERRY__MSG_AUTOGRAD_BACKWARD, FERRY__MSG_AUTOGRAD_CLEANUP,
    FERRY__MSG_PING,                               /* heartbeat: no fields */
    FERRY__MSG_TYPE_COUNT
} ferry__msg_type;

/* An id that crosses processes: the worker that made it and a number local to that worker. */
typedef struct { int32_t worker; int64_t local; } ferry__msg_gid;
/* A per-message slot modules above rpc fill (any kind may carry up to FERRY__MSG_MAX_EXT). */
typedef struct { uint32_t key; int64_t value; } ferry__msg_ext;
#define FERRY__MSG_MAX_EXT 4

/* A device tensor whose bytes go on a side channel (rpc/device_channel.h) instead of in its
   message. Sender (in ferry__wire_out): `tensor` (retained) and its bytes [data, data + nbytes),
   to be sent to `peer` under `seq` once the message went out, or cancelled (freeing an unsent
   one cancels it). Receiver (in a decoded ferry__msg): where the bytes land, `data` in `storage`
   (held) on cuda:`device`, filled by ferry__wire_sides_recv; `failure` (owned) when the device
   memory could not be had (the tensor is then in host memory and the message fails). */
typedef struct ferry__wire_side {
    const struct ferry__device_channel *channel;
    struct ferry__agent *agent; /* sender: whose channel state cancel uses */
    int peer;
    uint64_t seq;
    ferry_tensor *tensor;
    struct ferry_storage *storage;
    void *data;
    size_t nbytes;
    int device;
    ferry_status failure_rc;
    char *failure;
} ferry__wire_side;

/* One message, decoded or to be encoded. Values are references (the struct owns them after
   decode; on encode it only borrows). Each kind carries only its own fields (listed below):
   encoding refuses a value, error, id or flag set on a kind that does not carry it
   (FERRY_EINVAL), except `fn` and `timeout_s`, which callers also set on other requests as the
   local name and timeout of the pending call, and which are then not sent. */
typedef struct {
    ferry__msg_type type;
    uint64_t id;
    int32_t src;
    int32_t dst;            /* encode only: the receiver's rank, handed to the rref encode hook */
    bool no_reply;          /* request: no response wanted (never on a RESPONSE) */
    /* Encode only, AUTOGRAD_BACKWARD: the gradients answer a forward that came here as a
       response, so this worker's own map toward dst places them (by default the kind answers
       dst's forward request and dst's map applies inverted). Not sent. */
    bool device_as_request;
    ferry__msg_ext ext[FERRY__MSG_MAX_EXT];
    size_t n_ext;
    /* CALL, REMOTE_CALL */
    char *fn;               /* NUL-terminated; owned after decode */
    ferry_value *args;      /* list or NULL; AUTOGRAD_BACKWARD: the gradients */
    ferry_value *kwargs;    /* dict or NULL */
    double timeout_s;
    /* RESPONSE */
    ferry_value *value;     /* response value or NULL */
    bool is_error;          /* RESPONSE encoded as the Error kind: err_* are set, no value */
    ferry_status err_code;
    ferry_status err_remote; /* err_code FERRY_EREMOTE: the callee's own code (FERRY_OK: not
                                known, as from a peer that does not send it) */
    char *err_message;
    char *err_worker;
    /* REMOTE_CALL, RREF_*: rref = the RRef's id, fork = the fork id (RREF_CHILD_ACCEPT: fork
       only; RREF_FETCH: rref only) */
    ferry__msg_gid rref, fork;
    /* AUTOGRAD_* (CLEANUP: the context only) */
    int64_t autograd_context, autograd_message;
    bool retain_graph;
    /* Decode only: the device tensors in the values whose bytes follow on side channels
       (owned). ferry__wire_sides_recv must fill them before the values are used. */
    ferry__wire_side *sides;
    size_t n_sides;
} ferry__msg;

/* Frees what a decoded message owns and zeroes it. */
void ferry__msg_clear(ferry__msg *m);
/* A message on the heap (contents unset), from a cache: a request is handed on as one per
   call. NULL out of memory (no error recorded). ferry__msg_free clears it and gives it back
   (NULL: nothing). Any thread. (Plain ferry__free on one is also safe, but misses the cache.) */
ferry__msg *ferry__msg_new(void);
void ferry__msg_free(ferry__msg *m);

/* A piece of tensor bytes. On send: `data` points into `tensor`'s storage (retained). On receive:
   `data` points into the freshly allocated storage of `tensor` (retained) and must be filled with
   exactly `len` bytes before the decoded values are used. */
typedef struct {
    void *data;
    size_t len;
    ferry_tensor *tensor;
    bool is_inline;
    /* Device tensors staged through host memory (rpc/device_stage.c): `staging` is the pinned
       host buffer `data` points at (owned, back to the pool when the list is freed). On
       receive `device_data` is where the bytes go on cuda:`device_index` once they arrived
       (ferry__wire_atts_land); NULL when `data` is the tensor's own memory. */
    void *staging;
    void *device_data;
    int device_index;
    /* Receive: the device memory could not be had (out of memory on the device): the bytes
       land in host memory and ferry__wire_atts_land fails with this code and message. */
    ferry_status failure_rc;
    char *failure; /* owned */
} ferry__att;

typedef struct {
    size_t max_message_bytes; /* envelope + attachments, default 1 GiB (FERRY_MAX_MESSAGE_BYTES) */
    size_t max_depth;         /* nesting of lists/dicts, default 64 */
    size_t max_nodes;         /* values in one message, default 1 << 20 */
    size_t inline_threshold;  /* attachments up to this many bytes go inline, default 16 KiB */
} ferry__wire_limits;

void ferry__wire_limits_default(ferry__wire_limits *limits);

typedef struct {
    uint8_t *header;      /* the packed envelope (owned) */
    size_t header_len;
    ferry__att *atts;     /* owned; each holds a tensor reference */
    size_t n_atts;
    size_t inline_bytes;  /* sum of inline attachment lengths */
    ferry__wire_side *sides; /* owned: the tensors that go on side channels */
    size_t n_sides;
} ferry__wire_out;

/* RRef values: rref/ plugs in how an RRef becomes a descriptor on send and a ferry_rref on
   receive (forking happens there). */
typedef struct {
    int32_t owner, rref_worker, fork_worker, parent;
    int64_t rref_local, fork_local;
} ferry__rref_desc;
/* encode fills `out` for sending `rref` to rank `dst` (the message's dst). decode returns a new
   reference (NULL after ferry_set_error to reject the message); the codec wraps it in a value
   (which retains it) and then drops the hook's reference with release. `ctx` is passed to each
   (rref/ gives its per-agent RRef context). */
typedef struct {
    ferry_status (*encode)(void *ctx, ferry_rref *rref, int32_t dst, ferry__rref_desc *out);
    ferry_rref *(*decode)(void *ctx, const ferry__rref_desc *desc, int32_t src);
    void *ctx;
    void (*release)(void *ctx, ferry_rref *rref);
} ferry__wire_rref_hooks;

/* Device tensors: where a tensor on `from` here lands on rank `dst`. reverse: the message
   answers dst (a response, the gradients of dst's forward), so dst's map applies inverted.
   FERRY_OK with *to, or an error recorded (the message is not sent). map_cpu: CPU tensors ask
   too (some map names the CPU); else they stay on the CPU without a call. map NULL: device
   tensors are refused (FERRY_EINVAL). */
typedef struct {
    ferry_status (*map)(void *ctx, int32_t dst, bool reverse, ferry_device from,
                        ferry_device *to);
    void *ctx;
    bool map_cpu;
    /* The sending agent: a device tensor goes on the side channel the agent picks toward dst
       (ferry__device_channel_choose) when there is one. NULL: every tensor in the message. */
    struct ferry__agent *agent;
} ferry__wire_device_hooks;

/* What one codec user (an agent, a test) encodes and decodes with. rref.encode == NULL means
   RRef values are refused: FERRY_EINVAL on encode, FERRY_EPROTO on decode. A NULL codec means
   the default limits and no RRefs. */
typedef struct {
    ferry__wire_limits limits;
    ferry__wire_rref_hooks rref;
    ferry__wire_device_hooks device;
} ferry__wire_codec;

/* Encodes `m` (borrowed). FERRY_OK, FERRY_EINVAL (a value the wire cannot carry: a CUDA tensor
   the device hooks have no place for, an RRef with no codec hooks, nesting past the limit; a field the
   kind does not carry; more than FERRY__MSG_MAX_EXT ext entries), FERRY_ENOMEM. */
ferry_status ferry__wire_encode(const ferry__msg *m, const ferry__wire_codec *codec,
                                ferry__wire_out *out);
/* Releases the tensors and frees the buffers; zeroes *out. */
void ferry__wire_out_free(ferry__wire_out *out);

/* Decodes an envelope. On FERRY_OK, *m owns its values and *atts (n entries) says where each
   attachment lands (free with ferry__wire_atts_free once filled). FERRY_EPROTO with a message
   saying what was wrong for anything malformed (an unknown or absent body, a body field its
   kind does not have, a NUL in the function name, more than FERRY__MSG_MAX_EXT ext entries,
   no_reply on a response, ...),
   FERRY_ENOMEM. On failure nothing is leaked and *m is zeroed except m->id / m->type / m->src
   when they could be read (so a reply can be sent). */
ferry_status ferry__wire_decode(const void *header, size_t len, const ferry__wire_codec *codec,
                                ferry__msg *m, ferry__att **atts, size_t *n_atts);
void ferry__wire_atts_free(ferry__att *atts, size_t n);
/* After every attachment arrived: copies the staged ones into device memory and waits for the
   copies, so the device tensors hold their values. FERRY_OK, or the device's error (naming
   the device), including a device allocation that failed at decode. */
ferry_status ferry__wire_atts_land(ferry__att *atts, size_t n);

/* Sender, once the message went to the fabric: sends each side tensor on its channel (a send
   that fails is logged: the receiver's recv fails with its timeout) and frees the list; or,
   when the message could not be sent, cancels each. Both free `sides` (n entries). */
void ferry__wire_sides_send(ferry__wire_side *sides, size_t n);
void ferry__wire_sides_free(ferry__wire_side *sides, size_t n);
/* Receiver, off the progress thread and inline handlers: fills the side tensors of decoded
   message `m` (from m->src) through their channels, waiting at most timeout_s in all (0: no
   limit), and frees the list. FERRY_OK, or the first failure (a device allocation that failed
   at decode, a channel's error naming the peer and the device), after the rest were received. */
ferry_status ferry__wire_sides_recv(struct ferry__agent *agent, ferry__msg *m, double timeout_s);

/* Convenience for tests, the demo and the fuzzer: a whole message (envelope + all attachments)
   in one contiguous buffer: [u32 little-endian header length][header][attachments in order]. */
ferry_status ferry__wire_encode_flat(const ferry__msg *m, const ferry__wire_codec *codec,
                                     uint8_t **buf, size_t *len);
ferry_status ferry__wire_decode_flat(const void *buf, size_t len, const ferry__wire_codec *codec,
                                     ferry__msg *m);

#endif
