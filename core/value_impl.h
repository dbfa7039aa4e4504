/* The layout of ferry_value, shared by core/ and the wire codec. */
#ifndef FERRY_CORE_VALUE_IMPL_H
#define FERRY_CORE_VALUE_IMPL_H

#include "core/refcount.h"
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
        ferry_tensor *tensor;
        ferry_rref *rref;
        struct {
            ferry_value **items;
            size_t len;
        } list;
        struct {
            char **keys;
            ferry_value **values;
            size_t len, cap;
        } dict;
    } u;
};

/* RRefs live in rref/, above core: it plugs its retain/release in here so values can hold them.
   Set once at startup (before any rref value exists); read-only after. */
typedef struct {
    ferry_rref *(*retain)(ferry_rref *);
    void (*release)(ferry_rref *);
    bool (*equal)(const ferry_rref *, const ferry_rref *);
} ferry__rref_hooks;
void ferry__value_set_rref_hooks(const ferry__rref_hooks *hooks);

/* A list with room for n items, all NULL, for builders that fill it in place before sharing it
   (the decoder). ferry__list_set steals `item`. */
ferry_value *ferry__list_new(size_t n);
void ferry__list_set(ferry_value *list, size_t i, ferry_value *item);
/* Like ferry_dict_set but steals `v` and takes a key of known length (may hold no NUL). */
ferry_status ferry__dict_set_n(ferry_value *dict, const char *key, size_t key_len, ferry_value *v);

#endif
