/* The value half of the wire codec: a value tree becomes a pre-order list of Nodes (a container
   node carries its item count and its items follow), tensors become descriptors whose bytes are
   attachments pointing straight into the tensors' storage, and RRefs go through the hooks of
   the codec in use (rref/ gives each agent's). Both directions walk with an explicit stack, so neither depth nor width of a value
   ever turns into C recursion. Decoding builds lists and dicts in place (the layout in
   core/value_impl.h is shared with the codec for this): dict keys are checked for duplicates
   once per dict by sorting, so a hostile million-entry dict costs n log n, not n squared. */
#include "rpc/wire.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/value_impl.h"
#include "core/value_shared.h"
#include "ferry/device.h"
#include "rpc/device_stage.h"
#include "rpc/wire_internal.h"

/* ferry_kind and the wire's Kind share their numbering; the wire enum is the contract. */
_Static_assert((int)FERRY_VALUE_NONE == FERRY__WIRE__KIND__KIND_NONE &&
                   (int)FERRY_VALUE_STRING == FERRY__WIRE__KIND__KIND_STRING &&
                   (int)FERRY_VALUE_TENSOR == FERRY__WIRE__KIND__KIND_TENSOR &&
                   (int)FERRY_VALUE_DICT == FERRY__WIRE__KIND__KIND_DICT &&
                   (int)FERRY_VALUE_RREF == FERRY__WIRE__KIND__KIND_RREF,
               "value kinds and wire kinds must agree");
_Static_assert(sizeof(double) == sizeof(uint64_t), "doubles travel as their 64 bits");

/* ===================================== encode ===================================== */

typedef struct {
    const ferry_value *v;
    size_t next;
} walk_frame;

typedef struct {
    Ferry__Wire__Node *nodes;
    const ferry_value **vals; /* the value each node came from */
    size_t n, cap, vals_cap;
    walk_frame *stack;
    size_t sp, stack_cap;
    Ferry__Wire__Node *inline_nodes; /* the tree's own room, where `nodes` starts */
    const ferry_value *inline_vals[FERRY__WIRE_TREE_INLINE];
    walk_frame inline_stack[FERRY__WIRE_TREE_INLINE];
} flattener;

static size_t container_len(const ferry_value *v)
{
    if (v->kind == FERRY_VALUE_LIST)
        return v->u.list.len;
    return v->kind == FERRY_VALUE_DICT ? v->u.dict.len : 0;
}

/* Room for `need` elements of `elem` bytes: the array (perhaps moved), or NULL when memory ran
   out, leaving `p` and *cap as they were. An array still in its caller's inline room
   (`inline_room`, never freed here) moves to the heap. */
static void *grow(void *p, const void *inline_room, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *q;
    if (p && p == inline_room) {
        q = ferry__malloc(n * elem);
        if (q)
            memcpy(q, p, *cap * elem);
    } else {
        q = ferry__realloc(p, n * elem);
    }
    if (q)
        *cap = n;
    return q;
}

/* Appends one node for `v` (its tensor/rref descriptor is filled later). `depth` counts the
   containers above it. */
static ferry_status add_node(ferry__wire_enc *enc, flattener *fl, const char *what,
                             const ferry_value *v, const char *key, size_t depth)
{
    static const Ferry__Wire__Node init = FERRY__WIRE__NODE__INIT;
    if (v->kind == FERRY_VALUE_OBJECT) {
        char d[192];
        ferry__value_describe(v, d, sizeof d);
        return ferry__fail(FERRY_EINVAL, "%s: cannot send %s by value: an object stays on the "
                           "worker that made it and travels only as an RRef", what, d);
    }
    if (v->kind == FERRY_VALUE_FUTURE)
        return ferry__fail(FERRY_EINVAL, "%s: cannot send a future (Can not pickle "
                           "torch.futures.Future): it stays on the worker that made it; send "
                           "its value", what);
    if (v->kind > FERRY_VALUE_RREF) /* a kind the wire has no node for */
        return ferry__fail(FERRY_EINVAL, "%s: cannot send a %s value", what,
                           ferry_kind_name(v->kind));
    if (enc->n_nodes >= enc->limits->max_nodes)
        return ferry__fail(FERRY_EINVAL, "%s: message has more than %zu values (the limit)",
                           what, enc->limits->max_nodes);
    bool is_container = v->kind == FERRY_VALUE_LIST || v->kind == FERRY_VALUE_DICT;
    if (is_container && depth + 1 > enc->limits->max_depth)
        return ferry__fail(FERRY_EINVAL, "%s: value nests deeper than the limit of %zu", what,
                           enc->limits->max_depth);
    if (is_container && container_len(v) > UINT32_MAX)
        return ferry__fail(FERRY_EINVAL, "%s: a %s of %zu items is too long to send", what,
                           ferry_kind_name(v->kind), container_len(v));
    Ferry__Wire__Node *nodes = grow(fl->nodes, fl->inline_nodes, &fl->cap, fl->n + 1,
                                    sizeof *nodes);
    if (nodes)
        fl->nodes = nodes;
    const ferry_value **vals = grow(fl->vals, fl->inline_vals, &fl->vals_cap, fl->n + 1,
                                    sizeof *vals);
    if (vals)
        fl->vals = vals;
    if (!nodes || !vals)
        return ferry__fail(FERRY_ENOMEM, "out of memory encoding %s", what);
    Ferry__Wire__Node *nd = &fl->nodes[fl->n];
    *nd = init;
    nd->kind = (Ferry__Wire__Kind)v->kind;
    switch (v->kind) {
    case FERRY_VALUE_BOOL: nd->b = v->u.b; break;
    case FERRY_VALUE_INT: nd->i = v->u.i; break;
    case FERRY_VALUE_DOUBLE: memcpy(&nd->d, &v->u.d, sizeof nd->d); break;
    case FERRY_VALUE_STRING:
    case FERRY_VALUE_BYTES:
        nd->data.len = v->u.str.len;
        nd->data.data = (uint8_t *)v->u.str.data;
        break;
    case FERRY_VALUE_LIST:
    case FERRY_VALUE_DICT: nd->count = (uint32_t)container_len(v); break;
    default: break;
    }
    if (key) {
        nd->key.len = strlen(key);
        nd->key.data = (uint8_t *)key;
    }
    fl->vals[fl->n++] = v;
    enc->n_nodes++;
    return FERRY_OK;
}

static ferry_status push_frame(flattener *fl, const ferry_value *v, const char *what)
{
    walk_frame *stack = grow(fl->stack, fl->inline_stack, &fl->stack_cap, fl->sp + 1,
                             sizeof *stack);
    if (!stack)
        return ferry__fail(FERRY_ENOMEM, "out of memory encoding %s", what);
    fl->stack = stack;
    fl->stack[fl->sp++] = (walk_frame){v, 0};
    return FERRY_OK;
}

/* Pre-order walk with an explicit stack: a container's node, then its items. */
static ferry_status flatten(ferry__wire_enc *enc, flattener *fl, const char *what,
                            const ferry_value *root)
{
    ferry_status rc = add_node(enc, fl, what, root, NULL, 0);
    if (rc == FERRY_OK && container_len(root) > 0)
        rc = push_frame(fl, root, what);
    while (rc == FERRY_OK && fl->sp > 0) {
        walk_frame *f = &fl->stack[fl->sp - 1];
        if (f->next == container_len(f->v)) {
            fl->sp--;
            continue;
        }
        size_t i = f->next++;
        const ferry_value *parent = f->v, *child;
        const char *key = NULL;
        if (parent->kind == FERRY_VALUE_LIST) {
            child = parent->u.list.items[i];
        } else {
            child = parent->u.dict.values[i];
            key = parent->u.dict.keys[i];
        }
        rc = add_node(enc, fl, what, child, key, fl->sp);
        if (rc == FERRY_OK && container_len(child) > 0)
            rc = push_frame(fl, child, what);
    }
    return rc;
}

/* ---- attachments ---- */

static size_t map_slot(const ferry__wire_tensor_map *map, const ferry_tensor *t)
{
    uint64_t h = (uint64_t)(uintptr_t)t * 0x9e3779b97f4a7c15ull;
    size_t i = (size_t)(h >> 32) & (map->cap - 1);
    while (map->keys[i] && map->keys[i] != t)
        i = (i + 1) & (map->cap - 1);
    return i;
}

static bool map_grow(ferry__wire_tensor_map *map)
{
    ferry__wire_tensor_map bigger = {NULL, NULL, map->cap ? map->cap * 2 : 16, map->len};
    bigger.keys = ferry__calloc(bigger.cap, sizeof *bigger.keys);
    bigger.vals = ferry__malloc(bigger.cap * sizeof *bigger.vals);
    if (!bigger.keys || !bigger.vals) {
        ferry__free(bigger.keys);
        ferry__free(bigger.vals);
        return false;
    }
    for (size_t i = 0; i < map->cap; i++) {
        if (!map->keys[i])
            continue;
        size_t j = map_slot(&bigger, map->keys[i]);
        bigger.keys[j] = map->keys[i];
        bigger.vals[j] = map->vals[i];
    }
    ferry__free(map->keys);
    ferry__free(map->vals);
    *map = bigger;
    return true;
}

/* The attachment carrying `t`'s bytes: the one it already has in this message, or a new one
   over [data, data + len) that holds a reference to `t`. */
static ferry_status attachment_for(ferry__wire_enc *enc, const ferry_tensor *t, void *data,
                                   size_t len, uint32_t *index)
{
    static const Ferry__Wire__Attachment init = FERRY__WIRE__ATTACHMENT__INIT;
    ferry__wire_tensor_map *map = &enc->map;
    if ((map->len + 1) * 2 > map->cap && !map_grow(map))
        return ferry__fail(FERRY_ENOMEM, "out of memory encoding attachments");
    size_t slot = map_slot(map, t);
    if (map->keys[slot]) {
        *index = map->vals[slot];
        return FERRY_OK;
    }
    ferry__att *atts = grow(enc->atts, NULL, &enc->cap_atts, enc->n_atts + 1, sizeof *atts);
    if (atts)
        enc->atts = atts;
    Ferry__Wire__Attachment *patts = grow(enc->patts, NULL, &enc->cap_patts, enc->n_atts + 1,
                                          sizeof *patts);
    if (patts)
        enc->patts = patts;
    if (!atts || !patts)
        return ferry__fail(FERRY_ENOMEM, "out of memory encoding attachments");
    size_t i = enc->n_atts;
    enc->atts[i] = (ferry__att){.data = data, .len = len};
    if (t->device.type != FERRY_CPU) {
        ferry_status rc = ferry__device_stage_out(t, data, len, &enc->atts[i]);
        if (rc != FERRY_OK)
            return rc;
    }
    enc->n_atts++;
    enc->atts[i].tensor = ferry_tensor_retain((ferry_tensor *)t);
    enc->patts[i] = init;
    enc->patts[i].len = len;
    map->keys[slot] = t;
    map->vals[slot] = (uint32_t)i;
    map->len++;
    *index = (uint32_t)i;
    return FERRY_OK;
}

/* The descriptor of `t` and the span of storage it needs. A contiguous tensor sends exactly its
   bytes; a strided one sends the smallest span covering every element, with its own strides and
   an offset into that span, so it arrives strided with the same values. Never a copy. */
static ferry_status encode_tensor(ferry__wire_enc *enc, const char *what, const ferry_tensor *t,
                                  Ferry__Wire__TensorDesc *td)
{
    static const Ferry__Wire__TensorDesc init = FERRY__WIRE__TENSOR_DESC__INIT;
    ferry_device to = FERRY_DEVICE_CPU;
    if (t->device.type != FERRY_CPU || (enc->device && enc->device->map_cpu)) {
        if (!enc->device || !enc->device->map)
            return ferry__fail(FERRY_EINVAL, "%s: cannot send a tensor on cuda:%d: no CUDA "
                               "device placement is set up for this message", what,
                               t->device.index);
        ferry_status rc = enc->device->map(enc->device->ctx, enc->dst, enc->reverse, t->device,
                                           &to);
        if (rc != FERRY_OK)
            return rc; /* the hook said why */
    }
    size_t esize = ferry_dtype_size(t->dtype);
    int64_t numel = ferry__shape_numel(t->ndim, t->sizes);
    char *base = t->storage->data;
    *td = init;
    td->device_type = (uint32_t)to.type;
    td->device_index = to.type == FERRY_CPU ? 0 : to.index;
    td->dtype = (uint32_t)t->dtype;
    td->requires_grad = ferry__tensor_requires_grad(t); /* as torch keeps it */
    td->n_sizes = (size_t)t->ndim;
    td->sizes = (int64_t *)t->sizes;
    void *data = base;
    size_t len = 0;
    if (numel > 0 && ferry_tensor_is_contiguous(t)) {
        data = base + t->offset * (int64_t)esize;
        len = (size_t)numel * esize;
    } else if (numel > 0) {
        int64_t lo = 0, hi = 0;
        for (int d = 0; d < t->ndim; d++) {
            int64_t reach = (t->sizes[d] - 1) * t->strides[d];
            if (reach < 0)
                lo += reach;
            else
                hi += reach;
        }
        data = base + (t->offset + lo) * (int64_t)esize;
        len = (size_t)(hi - lo + 1) * esize;
        td->n_strides = (size_t)t->ndim;
        td->strides = (int64_t *)t->strides;
        td->offset = -lo;
    }
    bool taken = false;
    if (t->device.type == FERRY_CUDA && to.type == FERRY_CUDA && enc->device->agent) {
        ferry_status rc = ferry__wire_side_out(enc, t, to, data, len, td, &taken);
        if (rc != FERRY_OK || taken)
            return rc;
    }
    return attachment_for(enc, t, data, len, &td->attachment);
}

static ferry_status encode_rref(ferry__wire_enc *enc, const char *what, ferry_rref *r,
                                Ferry__Wire__RRefDesc *rd)
{
    static const Ferry__Wire__RRefDesc init = FERRY__WIRE__RREF_DESC__INIT;
    if (!enc->rref || !enc->rref->encode)
        return ferry__fail(FERRY_EINVAL, "%s: cannot send an RRef: no RRef support is "
                           "registered with the codec", what);
    ferry__rref_desc d = {0};
    ferry_status rc = enc->rref->encode(enc->rref->ctx, r, enc->dst, &d);
    if (rc != FERRY_OK)
        return rc; /* the hook recorded why */
    *rd = init;
    rd->owner = d.owner;
    rd->rref_worker = d.rref_worker;
    rd->rref_local = d.rref_local;
    rd->fork_worker = d.fork_worker;
    rd->fork_local = d.fork_local;
    rd->parent = d.parent;
    return FERRY_OK;
}

/* Second step: descriptors for the tensor and rref nodes, and the pointer list. */
static ferry_status describe(ferry__wire_enc *enc, const char *what, const flattener *fl,
                             ferry__wire_tree *tree)
{
    size_t n_tensors = 0, n_rrefs = 0;
    for (size_t i = 0; i < fl->n; i++) {
        n_tensors += fl->vals[i]->kind == FERRY_VALUE_TENSOR;
        n_rrefs += fl->vals[i]->kind == FERRY_VALUE_RREF;
    }
    tree->ptrs = fl->n <= FERRY__WIRE_TREE_INLINE ? tree->inline_ptrs
                                                   : ferry__malloc(fl->n * sizeof *tree->ptrs);
    if (n_tensors)
        tree->tensors = ferry__malloc(n_tensors * sizeof *tree->tensors);
    if (n_rrefs)
        tree->rrefs = ferry__malloc(n_rrefs * sizeof *tree->rrefs);
    if (!tree->ptrs || (n_tensors && !tree->tensors) || (n_rrefs && !tree->rrefs))
        return ferry__fail(FERRY_ENOMEM, "out of memory encoding %s", what);
    size_t ti = 0, ri = 0;
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; i < fl->n && rc == FERRY_OK; i++) {
        Ferry__Wire__Node *nd = &tree->nodes[i];
        tree->ptrs[i] = nd;
        if (fl->vals[i]->kind == FERRY_VALUE_TENSOR) {
            nd->tensor = &tree->tensors[ti++];
            rc = encode_tensor(enc, what, fl->vals[i]->u.tensor, nd->tensor);
        } else if (fl->vals[i]->kind == FERRY_VALUE_RREF) {
            nd->rref = &tree->rrefs[ri++];
            rc = encode_rref(enc, what, fl->vals[i]->u.rref, nd->rref);
        }
    }
    return rc;
}

ferry_status ferry__wire_tree_encode(ferry__wire_enc *enc, const char *what,
                                     const ferry_value *root, ferry__wire_tree *tree)
{
    if (!root)
        return FERRY_OK;
    flattener fl;
    fl.nodes = fl.inline_nodes = tree->inline_nodes;
    fl.vals = fl.inline_vals;
    fl.stack = fl.inline_stack;
    fl.cap = fl.vals_cap = fl.stack_cap = FERRY__WIRE_TREE_INLINE;
    fl.n = fl.sp = 0;
    ferry_status rc = flatten(enc, &fl, what, root);
    tree->nodes = fl.nodes; /* the tree owns the nodes from here, even on failure */
    tree->n = fl.n;
    if (rc == FERRY_OK)
        rc = describe(enc, what, &fl, tree);
    if (fl.vals != fl.inline_vals)
        ferry__free(fl.vals);
    if (fl.stack != fl.inline_stack)
        ferry__free(fl.stack);
    return rc;
}

void ferry__wire_tree_init(ferry__wire_tree *tree)
{
    tree->nodes = NULL;
    tree->ptrs = NULL;
    tree->n = 0;
    tree->tensors = NULL;
    tree->rrefs = NULL;
}

void ferry__wire_tree_free(ferry__wire_tree *tree)
{
    if (!tree->nodes) /* never filled: nothing was allocated */
        return;
    if (tree->nodes != tree->inline_nodes)
        ferry__free(tree->nodes);
    if (tree->ptrs != tree->inline_ptrs)
        ferry__free(tree->ptrs);
    ferry__free(tree->tensors);
    ferry__free(tree->rrefs);
    ferry__wire_tree_init(tree);
}

void ferry__wire_enc_free(ferry__wire_enc *enc)
{
    ferry__wire_sides_free(enc->sides, enc->n_sides); /* not handed on: cancelled */
    enc->sides = NULL;
    enc->n_sides = enc->cap_sides = 0;
    if (!enc->atts && !enc->patts && !enc->map.keys) /* no tensors: nothing was allocated */
        return;
    ferry__wire_atts_free(enc->atts, enc->n_atts);
    ferry__free(enc->patts);
    ferry__free(enc->map.keys);
    ferry__free(enc->map.vals);
    enc->atts = NULL;
    enc->patts = NULL;
    enc->n_atts = enc->cap_atts = enc->cap_patts = 0;
    memset(&enc->map, 0, sizeof enc->map);
}

/* ===================================== decode ===================================== */

/* Each kind carries exactly its own fields: anything else is a sign of a confused sender. */
static ferry_status check_node(const char *what, size_t i, const Ferry__Wire__Node *nd)
{
    int kind = (int)nd->kind;
    if (kind < FERRY__WIRE__KIND__KIND_NONE || kind > FERRY__WIRE__KIND__KIND_RREF)
        return ferry__fail(FERRY_EPROTO, "%s: node %zu has unknown kind %d", what, i, kind);
    const char *name = ferry_kind_name((ferry_kind)kind);
    if (!ferry__wire_is_container(kind) && nd->count)
        return ferry__fail(FERRY_EPROTO, "%s: node %zu is a %s but declares %u items", what, i,
                           name, nd->count);
    if ((kind == FERRY__WIRE__KIND__KIND_TENSOR) != (nd->tensor != NULL))
        return ferry__fail(FERRY_EPROTO, "%s: node %zu is a %s %s a tensor descriptor", what, i,
                           name, nd->tensor ? "but carries" : "without");
    if ((kind == FERRY__WIRE__KIND__KIND_RREF) != (nd->rref != NULL))
        return ferry__fail(FERRY_EPROTO, "%s: node %zu is a %s %s an RRef descriptor", what, i,
                           name, nd->rref ? "but carries" : "without");
    if (nd->data.len && kind != FERRY__WIRE__KIND__KIND_STRING &&
        kind != FERRY__WIRE__KIND__KIND_BYTES)
        return ferry__fail(FERRY_EPROTO, "%s: node %zu is a %s but carries %zu bytes of data",
                           what, i, name, nd->data.len);
    return FERRY_OK;
}

/* Shape checks that need no attachment: dtype, device, dims, sizes, strides, element count. */
static ferry_status check_geometry(size_t k, const Ferry__Wire__TensorDesc *td, int64_t *numel)
{
    if (td->dtype >= FERRY_DTYPE_COUNT)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: dtype %u is not known", k, td->dtype);
    if (td->device_type == FERRY_CUDA &&
        (td->device_index < 0 || td->device_index >= ferry_cuda_device_count()))
        return ferry__fail(FERRY_EPROTO, "tensor %zu: a CUDA tensor for cuda:%d, but this worker "
                           "has %d CUDA devices", k, td->device_index, ferry_cuda_device_count());
    if (td->device_type != FERRY_CPU && td->device_type != FERRY_CUDA)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: device type %u is not known", k,
                           td->device_type);
    if (td->n_sizes > FERRY_MAX_DIMS)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: %zu dimensions (at most %d)", k,
                           td->n_sizes, FERRY_MAX_DIMS);
    if (td->n_strides && td->n_strides != td->n_sizes)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: %zu strides for %zu dimensions", k,
                           td->n_strides, td->n_sizes);
    for (size_t d = 0; d < td->n_sizes; d++) {
        if (td->sizes[d] < 0)
            return ferry__fail(FERRY_EPROTO, "tensor %zu: size %lld in dimension %zu is negative",
                               k, (long long)td->sizes[d], d);
        if (td->n_strides && td->strides[d] < 0)
            return ferry__fail(FERRY_EPROTO, "tensor %zu: stride %lld in dimension %zu is "
                               "negative", k, (long long)td->strides[d], d);
    }
    if (td->offset < 0)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: offset %lld is negative", k,
                           (long long)td->offset);
    int64_t bytes;
    *numel = ferry__shape_numel((int)td->n_sizes, td->sizes);
    if (*numel < 0 || __builtin_mul_overflow(*numel, (int64_t)ferry_dtype_size(td->dtype), &bytes)) {
        char shape[256];
        return ferry__fail(FERRY_EPROTO, "tensor %zu: %s %s has more elements than fit in memory",
                           k, ferry_dtype_name(td->dtype),
                           ferry__shape_str((int)td->n_sizes, td->sizes, shape, sizeof shape));
    }
    return FERRY_OK;
}

/* Checks that every element lies inside the tensor's attachment. */
static ferry_status check_extent(const ferry__wire_dec *dec, size_t k,
                                 const Ferry__Wire__TensorDesc *td, int64_t numel)
{
    if (td->attachment >= dec->n_atts)
        return ferry__fail(FERRY_EPROTO, "tensor %zu: attachment %u does not exist (the message "
                           "has %zu)", k, td->attachment, dec->n_atts);
    if (numel == 0)
        return FERRY_OK;
    int64_t last = td->offset, reach, need;
    bool overflow = false;
    if (!td->n_strides) {
        overflow = __builtin_add_overflow(last, numel - 1, &last);
    } else {
        for (size_t d = 0; d < td->n_sizes && !overflow; d++)
            overflow = __builtin_mul_overflow(td->sizes[d] - 1, td->strides[d], &reach) ||
                       __builtin_add_overflow(last, reach, &last);
    }
    overflow = overflow || __builtin_add_overflow(last, 1, &last) ||
               __builtin_mul_overflow(last, (int64_t)ferry_dtype_size(td->dtype), &need);
    uint64_t have = dec->att_lens[td->attachment];
    if (overflow || (uint64_t)need > have) {
        char shape[256];
        const char *s = ferry__shape_str((int)td->n_sizes, td->sizes, shape, sizeof shape);
        if (overflow)
            return ferry__fail(FERRY_EPROTO, "tensor %zu: %s %s with offset %lld overflows its "
                               "strides", k, ferry_dtype_name(td->dtype), s,
                               (long long)td->offset);
        return ferry__fail(FERRY_EPROTO, "tensor %zu: %s %s needs %lld bytes but attachment %u "
                           "has %llu", k, ferry_dtype_name(td->dtype), s, (long long)need,
                           td->attachment, (unsigned long long)have);
    }
    return FERRY_OK;
}

static bool same_device(ferry_device x, ferry_device y)
{
    return x.type == y.type && (x.type == FERRY_CPU || x.index == y.index);
}

/* A tensor over its attachment's storage (created by the first tensor that names it). */
static ferry_status decode_tensor(ferry__wire_dec *dec, const Ferry__Wire__TensorDesc *td,
                                  ferry_tensor **out)
{
    size_t k = dec->n_tensors++;
    int64_t numel = 0;
    ferry_status rc = check_geometry(k, td, &numel);
    uint32_t a = td->attachment;
    ferry_device device = td->device_type == FERRY_CUDA ? FERRY_DEVICE_CUDA(td->device_index)
                                                        : FERRY_DEVICE_CPU;
    ferry_storage *side = NULL; /* the bytes follow on a side channel */
    if (rc == FERRY_OK && td->channel)
        rc = ferry__wire_side_in(dec, k, td, device, numel, &side);
    else if (rc == FERRY_OK)
        rc = check_extent(dec, k, td, numel);
    if (rc != FERRY_OK)
        return rc;
    if (side) { /* its own storage, made for it above */
    } else if (!dec->storages[a]) {
        dec->storages[a] = ferry__storage_new((size_t)dec->att_lens[a], device);
        if (!dec->storages[a] && device.type == FERRY_CUDA && !dec->device_failure &&
            ferry_last_status() == FERRY_ENOMEM) {
            /* Read the message whole into host memory; it fails once it arrived. */
            dec->device_failure = ferry__strdup(ferry_last_error());
            dec->device_rc = FERRY_ENOMEM;
            dec->device_att = a;
            device = FERRY_DEVICE_CPU;
            dec->storages[a] = dec->device_failure ? ferry__storage_new((size_t)dec->att_lens[a],
                                                                        device)
                                                   : NULL;
        }
        if (!dec->storages[a] && device.type == FERRY_CPU)
            return ferry__fail(FERRY_ENOMEM, "tensor %zu: no memory for %llu bytes", k,
                               (unsigned long long)dec->att_lens[a]);
        if (!dec->storages[a])
            return ferry_last_status(); /* the device layer named the device and the cause */
    } else if (dec->device_failure && dec->device_att == a) {
        device = FERRY_DEVICE_CPU;
    } else if (!same_device(dec->storages[a]->device, device)) {
        return ferry__fail(FERRY_EPROTO, "tensor %zu: attachment %u is on two devices", k, a);
    }
    ferry_tensor *t = ferry__tensor_make(side ? side : dec->storages[a], td->offset,
                                         (int)td->n_sizes, td->sizes,
                                         td->n_strides ? td->strides : NULL,
                                         (ferry_dtype)td->dtype);
    ferry__storage_release(side); /* the tensor and the pending recv hold it */
    if (!t) /* the checks above should have caught anything but memory */
        return ferry_last_status() == FERRY_ENOMEM
                   ? FERRY_ENOMEM
                   : ferry__fail(FERRY_EPROTO, "tensor %zu: %s", k, ferry_last_error());
    if (td->requires_grad && (rc = ferry__tensor_set_requires_grad(t, true)) != FERRY_OK) {
        ferry_tensor_release(t);
        return rc == FERRY_ENOMEM ? rc : ferry__fail(FERRY_EPROTO, "tensor %zu: a %s tensor "
                                                     "cannot require gradients", k,
                                                     ferry_dtype_name(td->dtype));
    }
    if (!side && !dec->firsts[a])
        dec->firsts[a] = ferry_tensor_retain(t);
    *out = t;
    return FERRY_OK;
}

static ferry_status decode_rref(ferry__wire_dec *dec, const char *what, size_t i,
                                const Ferry__Wire__RRefDesc *rd, ferry_value **out)
{
    const ferry__wire_rref_hooks *hooks = dec->rref;
    if (!hooks || !hooks->encode || !hooks->decode)
        return ferry__fail(FERRY_EPROTO, "%s: node %zu is an RRef but this process has no RRef "
                           "support registered", what, i);
    ferry__rref_desc d = {rd->owner, rd->rref_worker, rd->fork_worker, rd->parent,
                          rd->rref_local, rd->fork_local};
    ferry_rref *r = hooks->decode(hooks->ctx, &d, dec->src);
    if (!r) {
        ferry_status rc = ferry_last_status();
        return rc != FERRY_OK ? rc : ferry__fail(FERRY_EPROTO, "%s: node %zu: RRef refused",
                                                 what, i);
    }
    *out = ferry_rref_value(r);
    if (hooks->release)
        hooks->release(hooks->ctx, r);
    return *out ? FERRY_OK : ferry_last_status();
}

/* An empty dict with room for exactly `count` entries, filled in place by attach(). */
static ferry_value *dict_with_room(uint32_t count)
{
    ferry_value *v = ferry_dict_new();
    if (!v || count == 0)
        return v;
    v->u.dict.keys = ferry__malloc(count * sizeof *v->u.dict.keys);
    v->u.dict.values = ferry__malloc(count * sizeof *v->u.dict.values);
    if (!v->u.dict.keys || !v->u.dict.values) {
        ferry_value_release(v); /* frees whichever array was allocated; len is 0 */
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a dict of %u entries", count);
    }
    v->u.dict.cap = count;
    return v;
}

static double bits_to_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static ferry_status make_value(ferry__wire_dec *dec, const char *what, size_t i,
                               const Ferry__Wire__Node *nd, ferry_value **out)
{
    const char *bytes = nd->data.data ? (const char *)nd->data.data : "";
    ferry_tensor *t = NULL;
    ferry_status rc = FERRY_OK;
    switch (nd->kind) {
    case FERRY__WIRE__KIND__KIND_NONE: *out = ferry_none(); break;
    case FERRY__WIRE__KIND__KIND_BOOL: *out = ferry_bool(nd->b); break;
    case FERRY__WIRE__KIND__KIND_INT: *out = ferry_int(nd->i); break;
    case FERRY__WIRE__KIND__KIND_DOUBLE: *out = ferry_double(bits_to_double(nd->d)); break;
    case FERRY__WIRE__KIND__KIND_STRING: *out = ferry_string_n(bytes, nd->data.len); break;
    case FERRY__WIRE__KIND__KIND_BYTES: *out = ferry_bytes(bytes, nd->data.len); break;
    case FERRY__WIRE__KIND__KIND_LIST: /* nothing can be put in an empty list: share one */
        *out = nd->count ? ferry__list_new(nd->count) : ferry__value_shared_empty_list();
        break;
    case FERRY__WIRE__KIND__KIND_DICT: *out = dict_with_room(nd->count); break;
    case FERRY__WIRE__KIND__KIND_TENSOR:
        rc = decode_tensor(dec, nd->tensor, &t);
        if (rc != FERRY_OK)
            return rc;
        *out = ferry_tensor_value(t);
        ferry_tensor_release(t);
        break;
    default: /* check_node admitted only RREF here */
        return decode_rref(dec, what, i, nd->rref, out);
    }
    return *out ? FERRY_OK : ferry_last_status();
}

static int compare_keys(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Once a dict has all its keys: refuse duplicates (a sender that means one entry sends one). */
static ferry_status check_unique_keys(const char *what, size_t i, const ferry_value *dict)
{
    size_t n = dict->u.dict.len;
    char **sorted = ferry__malloc(n * sizeof *sorted);
    if (!sorted)
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding %s", what);
    memcpy(sorted, dict->u.dict.keys, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, compare_keys);
    ferry_status rc = FERRY_OK;
    for (size_t j = 1; j < n && rc == FERRY_OK; j++)
        if (strcmp(sorted[j - 1], sorted[j]) == 0)
            rc = ferry__fail(FERRY_EPROTO, "%s: dict ending at node %zu has the key \"%.64s\" "
                             "twice", what, i, sorted[j]);
    ferry__free(sorted);
    return rc;
}

/* Puts `v` (stolen) where the shape says it goes; dict keys were checked by check_key. */
static ferry_status attach(const char *what, size_t i, const ferry__wire_slot *slot,
                           const Ferry__Wire__Node *nd, ferry_value *v, ferry_value **root)
{
    if (slot->parent_kind < 0) {
        *root = v;
        return FERRY_OK;
    }
    ferry_value *parent = slot->parent;
    if (slot->parent_kind == FERRY__WIRE__KIND__KIND_LIST) {
        ferry__list_set(parent, slot->index, v);
        return FERRY_OK;
    }
    char *key = ferry__strndup(nd->key.data ? (const char *)nd->key.data : "", nd->key.len);
    if (!key) {
        ferry_value_release(v);
        return ferry__fail(FERRY_ENOMEM, "out of memory decoding %s", what);
    }
    size_t at = parent->u.dict.len++;
    parent->u.dict.keys[at] = key;
    parent->u.dict.values[at] = v;
    if (parent->u.dict.len == parent->u.dict.cap && parent->u.dict.len > 1) {
        ferry_status rc = check_unique_keys(what, i, parent);
        if (rc == FERRY_OK)
            ferry__dict_reindex(parent); /* large received dicts get their lookup index */
        return rc;
    }
    return FERRY_OK;
}

static ferry_status check_key(const char *what, size_t i, const Ferry__Wire__Node *nd,
                              int parent_kind)
{
    if (parent_kind == FERRY__WIRE__KIND__KIND_DICT) {
        if (nd->key.len && memchr(nd->key.data, '\0', nd->key.len))
            return ferry__fail(FERRY_EPROTO, "%s: node %zu: dict key holds a NUL byte", what, i);
    } else if (nd->key.len) {
        return ferry__fail(FERRY_EPROTO, "%s: node %zu has a key but is not a dict entry", what,
                           i);
    }
    return FERRY_OK;
}

ferry_status ferry__wire_tree_decode(ferry__wire_dec *dec, const char *what,
                                     Ferry__Wire__Node *const *nodes, size_t n, ferry_value **out)
{
    *out = NULL;
    if (n == 0)
        return FERRY_OK;
    ferry__wire_shape shape;
    ferry__wire_shape_init(&shape, what, dec->limits->max_depth);
    ferry_value *root = NULL;
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; i < n && rc == FERRY_OK; i++) {
        const Ferry__Wire__Node *nd = nodes[i];
        ferry__wire_slot slot;
        ferry_value *v = NULL;
        rc = check_node(what, i, nd);
        if (rc == FERRY_OK)
            rc = ferry__wire_shape_next(&shape, (int)nd->kind, nd->count, n - i - 1, &slot);
        if (rc == FERRY_OK)
            rc = check_key(what, i, nd, slot.parent_kind);
        if (rc == FERRY_OK)
            rc = make_value(dec, what, i, nd, &v);
        if (rc == FERRY_OK)
            rc = attach(what, i, &slot, nd, v, &root);
        if (rc == FERRY_OK && slot.pushed)
            shape.frames[shape.sp - 1].container = v;
    }
    if (rc == FERRY_OK)
        rc = ferry__wire_shape_finish(&shape);
    ferry__wire_shape_free(&shape);
    if (rc != FERRY_OK) {
        ferry_value_release(root);
        return rc;
    }
    *out = root;
    return FERRY_OK;
}

void ferry__wire_dec_free(ferry__wire_dec *dec)
{
    ferry__wire_sides_free(dec->sides, dec->n_sides);
    dec->sides = NULL;
    dec->n_sides = dec->cap_sides = 0;
    if (!dec->firsts && !dec->storages) /* no attachments: nothing was allocated */
        return;
    for (size_t i = 0; i < dec->n_atts; i++) {
        if (dec->firsts)
            ferry_tensor_release(dec->firsts[i]);
        if (dec->storages)
            ferry__storage_release(dec->storages[i]);
    }
    ferry__free(dec->firsts);
    ferry__free(dec->storages);
    ferry__free(dec->device_failure);
    dec->device_failure = NULL;
    dec->firsts = NULL;
    dec->storages = NULL;
}
