/* Pieces shared by the files of the wire codec: wire.c (message <-> envelope, limits),
   wire_scan.c (the byte-level pre-scan and the tree shape it shares with the value
   decoder), wire_value.c (value trees <-> pre-order Node lists, tensors and attachments) and
   wire_pack.c (envelope bytes). Only rpc/wire*.c and the codec's tests include the generated
   protobuf-c header. */
#ifndef FERRY_RPC_WIRE_INTERNAL_H
#define FERRY_RPC_WIRE_INTERNAL_H

#include "ferry/rpc.h"
#include "proto/ferry.pb-c.h"
#include "rpc/wire.h"
#include "tensor/tensor_impl.h"

/* Inline attachments ride in the same fabric message as the envelope; their total is capped so
   that one eager send stays small whatever the per-attachment threshold says. */
#define FERRY__WIRE_INLINE_TOTAL_MAX ((size_t)64 << 10)

/* ---- the decoder's fast path (wire_fast.c) ---- */

/* Nodes of all value trees of one envelope the fast path reads at most. */
#define FERRY__WIRE_FAST_NODES 16

/* Room for one envelope read by the fast path; everything env points to lives here. */
typedef struct {
    Ferry__Wire__Envelope env;
    Ferry__Wire__Call call;
    Ferry__Wire__Response response;
    Ferry__Wire__Node nodes[FERRY__WIRE_FAST_NODES];
    Ferry__Wire__Node *ptrs[FERRY__WIRE_FAST_NODES];
    char fn[FERRY_MAX_NAME_LEN];
} ferry__wire_fast;

/* Reads the envelope in p[0, len) into f->env when it is a small call or response in the form
   wire_pack.c writes: true, and f->env is what protobuf-c would have unpacked. false: declined
   (anything else, valid or not); protobuf-c reads it. */
bool ferry__wire_fast_unpack(const uint8_t *p, size_t len, ferry__wire_fast *f);

/* ---- tree shape: the one place that knows how pre-order counts nest ---- */

/* A node of this kind declares a count and its items follow it. */
static inline bool ferry__wire_is_container(int kind)
{
    return kind == FERRY__WIRE__KIND__KIND_LIST || kind == FERRY__WIRE__KIND__KIND_DICT;
}

typedef struct {
    uint32_t remaining; /* children still to come */
    uint32_t count;     /* children declared */
    size_t node;        /* index of the container's own node, for messages */
    int kind;           /* FERRY__WIRE__KIND__KIND_LIST or _DICT */
    ferry_value *container; /* decoder only: the value children are attached to (borrowed) */
} ferry__wire_frame;

typedef struct {
    const char *what;   /* "args", "kwargs", "value": prefixes every message */
    size_t max_depth;
    ferry__wire_frame *frames;
    size_t sp, cap;
    size_t n_nodes;     /* nodes seen so far */
    bool done;          /* one complete value has been seen */
} ferry__wire_shape;

/* Where a node lands: `parent` is the container of the frame it belongs to, `parent_kind` that
   frame's kind (-1 for the root), `index` its position there. `pushed` says the node opened a
   frame of its own (now the top one, s->frames[s->sp - 1]). */
typedef struct {
    ferry_value *parent;
    int parent_kind;
    uint32_t index;
    bool pushed;
} ferry__wire_slot;

void ferry__wire_shape_init(ferry__wire_shape *s, const char *what, size_t max_depth);
void ferry__wire_shape_free(ferry__wire_shape *s);
/* Accounts for the next node (kind and count as read). `nodes_left` bounds a container's count
   by the nodes that can still follow (SIZE_MAX when unknown). FERRY_EPROTO for a node after the
   end of the value, nesting past max_depth, a count that cannot be met; FERRY_ENOMEM. */
ferry_status ferry__wire_shape_next(ferry__wire_shape *s, int kind, uint32_t count,
                                    size_t nodes_left, ferry__wire_slot *slot);
/* FERRY_EPROTO when the value is incomplete (a container still expects children). */
ferry_status ferry__wire_shape_finish(ferry__wire_shape *s);

/* ---- pre-scan of untrusted envelope bytes (wire_scan.c) ---- */

/* What the pre-scan read from the top level, enough to answer a request it refused. */
typedef struct {
    bool framed;      /* every top-level field was well formed: id, type and src are usable */
    uint32_t version;
    ferry__msg_type type; /* the body's kind; FERRY__MSG_INVALID when none is known */
    uint64_t id;
    int32_t src;
} ferry__wire_scan_info;

/* Walks the envelope's fields and, inside its body, the kind and count of every Node, before
   protobuf-c allocates anything for them: framing, version, exactly one known body, the ext and
   attachment counts, the node count, each tree's nesting and counts, no NUL in a function
   name. FERRY_EPROTO saying what was wrong; FERRY_ENOMEM. *info is filled as far as read. */
ferry_status ferry__wire_scan(const uint8_t *p, size_t len, const ferry__wire_limits *limits,
                              ferry__wire_scan_info *info);

/* ---- envelope bytes (wire_pack.c) ---- */

/* The lengths the size pass found (every sub-message's and packed array's), for the write pass.
   Set up with ferry__wire_pack_plan_init and never copied: `sizes` may point into it. */
#define FERRY__WIRE_PLAN_INLINE 16
typedef struct {
    size_t *sizes;
    size_t cap;
    bool failed;
    size_t inline_sizes[FERRY__WIRE_PLAN_INLINE];
} ferry__wire_pack_plan;
void ferry__wire_pack_plan_init(ferry__wire_pack_plan *plan);
void ferry__wire_pack_plan_free(ferry__wire_pack_plan *plan);

/* The packed size of `env` (SIZE_MAX when the plan ran out of memory), recording in `plan` what
   the write needs; then its bytes, exactly that many, written to `buf` from the same `env`: the
   same bytes protobuf-c would write, without its per-field descriptor walk. */
size_t ferry__wire_envelope_size(const Ferry__Wire__Envelope *env, ferry__wire_pack_plan *plan);
size_t ferry__wire_envelope_write(const Ferry__Wire__Envelope *env,
                                  const ferry__wire_pack_plan *plan, uint8_t *buf);

/* The fields the packer writes, per message of the schema (by its full name), so a test can
   hold them against protobuf-c's descriptors: a field added to proto/ferry.proto and not to the
   packer fails that test instead of being dropped on the wire. */
typedef struct {
    const char *message;      /* e.g. "ferry.wire.Envelope" */
    const uint32_t *fields;   /* field numbers, ascending */
    size_t n_fields;
} ferry__wire_pack_schema;
extern const ferry__wire_pack_schema ferry__wire_pack_schemas[];
extern const size_t ferry__wire_n_pack_schemas;

/* ---- encoder side (wire_value.c) ---- */

/* A tensor -> attachment index map, so one tensor appearing twice is sent once. */
typedef struct {
    const ferry_tensor **keys;
    uint32_t *vals;
    size_t cap, len;
} ferry__wire_tensor_map;

typedef struct {
    const ferry__wire_limits *limits;
    const ferry__wire_rref_hooks *rref; /* encode == NULL: RRefs are refused */
    const ferry__wire_device_hooks *device;
    int32_t dst;
    bool reverse;                       /* the message answers dst: its map applies inverted */
    ferry__att *atts;                   /* each retains its tensor */
    Ferry__Wire__Attachment *patts;     /* the envelope's view of the same list */
    size_t n_atts, cap_atts, cap_patts;
    ferry__wire_tensor_map map;
    size_t n_nodes;                     /* over all trees of the message */
    ferry__wire_side *sides;            /* tensors on side channels (device_wire.c) */
    size_t n_sides, cap_sides;
} ferry__wire_enc;

/* Trees of up to this many nodes (the arguments of most calls) are flattened into the tree
   itself, without touching the heap. */
#define FERRY__WIRE_TREE_INLINE 4

/* One flattened value: nodes in pre-order plus the descriptors they point to. Set up with
   ferry__wire_tree_init and never copied: `nodes` and `ptrs` may point into the tree itself. */
typedef struct {
    Ferry__Wire__Node *nodes;
    Ferry__Wire__Node **ptrs;
    size_t n;
    Ferry__Wire__TensorDesc *tensors; /* NULL when the tree has none */
    Ferry__Wire__RRefDesc *rrefs;     /* NULL when the tree has none */
    Ferry__Wire__Node inline_nodes[FERRY__WIRE_TREE_INLINE];
    Ferry__Wire__Node *inline_ptrs[FERRY__WIRE_TREE_INLINE];
} ferry__wire_tree;

void ferry__wire_tree_init(ferry__wire_tree *tree);

/* Fills an initialized tree with `root` (borrowed; NULL gives an empty tree) as nodes, adding attachments to `enc`.
   FERRY_EINVAL for what the wire cannot carry, FERRY_ENOMEM. The tree's byte fields point into
   the values, so the values must outlive the packing. */
ferry_status ferry__wire_tree_encode(ferry__wire_enc *enc, const char *what,
                                     const ferry_value *root, ferry__wire_tree *tree);
void ferry__wire_tree_free(ferry__wire_tree *tree);
void ferry__wire_enc_free(ferry__wire_enc *enc);

/* ---- decoder side (wire_value.c) ---- */

typedef struct {
    const ferry__wire_limits *limits;
    const ferry__wire_rref_hooks *rref; /* decode == NULL: RRefs are refused */
    int32_t src;
    size_t n_atts;
    const uint64_t *att_lens;
    ferry_storage **storages;   /* per attachment, created by its first tensor */
    ferry_tensor **firsts;      /* per attachment, that first tensor (a reference) */
    size_t n_tensors;           /* tensors seen so far, for messages */
    /* The first attachment whose device memory could not be had: its bytes land in host
       memory instead, so the message is still read whole, and it fails once it arrived. */
    char *device_failure;       /* owned; NULL: none */
    ferry_status device_rc;
    size_t device_att;
    ferry__wire_side *sides;    /* tensors whose bytes follow on side channels */
    size_t n_sides, cap_sides;
} ferry__wire_dec;

/* Rebuilds one value from its nodes (borrowed). *out is NULL when n is 0. FERRY_EPROTO with a
   message naming `what` and the node, FERRY_ENOMEM. */
ferry_status ferry__wire_tree_decode(ferry__wire_dec *dec, const char *what,
                                     Ferry__Wire__Node *const *nodes, size_t n, ferry_value **out);
/* Drops the per-attachment storages and tensors; safe on a partly filled decoder. */
void ferry__wire_dec_free(ferry__wire_dec *dec);

/* ---- side channels (device_wire.c) ---- */

/* Encoder: `t` (CUDA, bytes [data, data + len)) goes to `to` on enc->dst; when the agent's
   channel pick gives a channel, takes a sequence number, fills td's channel fields and keeps
   the tensor in enc->sides (*taken true). FERRY_OK with *taken false: it goes in the message;
   else the pick's error (a forced path that cannot carry it). */
ferry_status ferry__wire_side_out(ferry__wire_enc *enc, const ferry_tensor *t, ferry_device to,
                                  void *data, size_t len, Ferry__Wire__TensorDesc *td,
                                  bool *taken);
/* Decoder: fresh storage on `device` for tensor k's side-channel bytes (checked against its
   geometry: FERRY_EPROTO for an unknown channel or a byte count that does not match), and a
   pending recv in dec->sides. *storage is a reference for the caller. */
ferry_status ferry__wire_side_in(ferry__wire_dec *dec, size_t k,
                                 const Ferry__Wire__TensorDesc *td, ferry_device device,
                                 int64_t numel, ferry_storage **storage);
/* Moves the encoder's side list to `out`, the decoder's to `m`. */
void ferry__wire_sides_move_out(ferry__wire_enc *enc, ferry__wire_out *out);
void ferry__wire_sides_move_msg(ferry__wire_dec *dec, ferry__msg *m);

#endif
