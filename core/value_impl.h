/* The layout of ferry_value, shared by core/ and the wire codec. */
#ifndef FERRY_CORE_VALUE_IMPL_H
#define FERRY_CORE_VALUE_IMPL_H

#include "core/refcount.h"
#include "core/value_lent.h" /* ferry__value_lent */
#include "ferry/value.h"

struct ferry_value {
    ferry__ref ref;
    ferry_kind kind;
    union {
        bool b;
        int64_t i;
        double d;
        struct { /* STRING and BYTES: len bytes plus a NUL terminator */
            char *data;
            size_t len;
        } str;
        /* TENSOR, RREF and OBJECT: an object owned by a module above core, held through the ops that
           module registers. core reads and writes `obj` only; `tensor` and `rref` alias it for
           the modules that know the type (the wire codec, rref/). Object pointers share one
           representation on every platform ferry builds for (POSIX), so reading a union
           member other than the one written is well defined here (C11 6.5.2.3). */
        void *obj;
        ferry_tensor *tensor;
        ferry_rref *rref;
        struct {
            ferry_value **items;
            size_t len;
        } list;
        struct {
            char **keys; /* in insertion order, as the wire keeps it */
            ferry_value **values;
            size_t len, cap;
            /* A hash index over the keys once a dict is larger than a few entries: slot i holds
               1 + the entry's position, 0 when empty; NULL while the dict is small (or when
               memory for it ran out: lookups are then linear, and still right). */
            uint32_t *index;
            size_t index_cap;
        } dict;
    } u;
};

/* Values hold objects of kinds that modules above core own (FERRY_VALUE_TENSOR: tensor/,
   FERRY_VALUE_RREF: rref/, FERRY_VALUE_OBJECT: rref/object/) through one ops table per kind, so
   core knows nothing of the objects themselves. The owning module registers its ops from a constructor: the static library is one
   prelinked object and the shared one links every module, so they are in place before main.
   retain returns its argument with one more reference; release drops one; equal compares two
   distinct objects for ferry_value_equal (NULL: only identical pointers are equal); describe
   writes a short phrase naming the object for messages ("an object of class 'X'"; NULL: the
   kind's name); format writes the object as ferry_value_format shows it, snprintf's way (buf
   NULL when cap is 0; NULL: the phrase in angle brackets). */
typedef struct {
    void *(*retain)(void *obj);
    void (*release)(void *obj);
    bool (*equal)(const void *a, const void *b);
    void (*describe)(const void *obj, char *buf, size_t cap);
    size_t (*format)(const void *obj, char *buf, size_t cap);
} ferry__value_kind_ops;

/* Installs the ops for `kind` (borrowed: they must live until exit, normally a static const);
   NULL removes them (tests only). Meant to be called once per kind, before any value of the kind
   exists; the table is one atomic pointer per kind (stored with release, loaded with acquire),
   so a late registration is seen whole, but swapping ops while values of the kind are alive
   is a bug. Returns FERRY_OK, or FERRY_EINVAL for a kind that holds no object or ops without
   retain or release. Values of a kind without ops cannot be built: their constructors fail
   with FERRY_EINVAL. */
ferry_status ferry__value_register_kind(ferry_kind kind, const ferry__value_kind_ops *ops);

/* A value holding `obj` of an object kind (retained through the kind's ops), for the module
   that owns the kind; NULL with FERRY_EINVAL (not an object kind, NULL obj, no ops) or
   FERRY_ENOMEM. */
ferry_value *ferry__value_of_object(ferry_kind kind, void *obj);
/* The ops registered for an object kind (NULL: none, or not an object kind). */
const ferry__value_kind_ops *ferry__value_kind_ops_of(ferry_kind kind);
/* The phrase for `v` in messages: its kind ops' describe, else "a <kind>". */
void ferry__value_describe(const ferry_value *v, char *buf, size_t cap);

/* A new value of `kind` with a zeroed payload and one reference, for the constructors in
   core/value*.c; NULL with FERRY_ENOMEM. */
ferry_value *ferry__value_alloc(ferry_kind kind);
/* True for the kinds whose values hold a module's object in `u.obj`. */
bool ferry__value_holds_object(ferry_kind kind);

/* A list with room for n items, all NULL, for builders that fill it in place before sharing it
   (the decoder). ferry__list_set steals `item`. */
ferry_value *ferry__list_new(size_t n);
void ferry__list_set(ferry_value *list, size_t i, ferry_value *item);
/* Builds the hash index of a dict whose entries were filled in place (the decoder), so lookups
   in a large received dict are not linear. Small dicts need none; out of memory leaves none. */
void ferry__dict_reindex(ferry_value *dict);
/* The position of `key` (key_len bytes) in `dict`, or SIZE_MAX when absent. */
size_t ferry__dict_find(const ferry_value *dict, const char *key, size_t key_len);
/* Like ferry_dict_set but steals `v` and takes a key of known length (may hold no NUL). */
ferry_status ferry__dict_set_n(ferry_value *dict, const char *key, size_t key_len, ferry_value *v);

#endif
