/* A chained hash map from RRef/fork ids to pointers: the owner table and the pending-children
   table of an RRef context. Callers hold the context's lock; the map itself does no locking. */
#include <stddef.h>

#include "core/alloc.h"
#include "core/error.h"
#include "rref/rref_impl.h"

struct ferry__gid_entry {
    ferry__gid_entry *next;
    ferry__gid key;
    void *val;
};

static size_t gid_hash(ferry__gid g, size_t cap)
{
    uint64_t h = ((uint64_t)(uint32_t)g.worker << 48) ^ (uint64_t)g.local;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)(h & (cap - 1));
}

void *ferry__gid_map_get(const ferry__gid_map *m, ferry__gid key)
{
    if (!m->cap)
        return NULL;
    for (ferry__gid_entry *e = m->buckets[gid_hash(key, m->cap)]; e; e = e->next)
        if (ferry__gid_eq(e->key, key))
            return e->val;
    return NULL;
}

static ferry_status grow(ferry__gid_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    ferry__gid_entry **b = ferry__calloc(cap, sizeof *b);
    if (!b)
        return ferry__fail(FERRY_ENOMEM, "out of memory growing an RRef table");
    for (size_t i = 0; i < m->cap; i++) {
        ferry__gid_entry *e = m->buckets[i];
        while (e) {
            ferry__gid_entry *next = e->next;
            size_t h = gid_hash(e->key, cap);
            e->next = b[h];
            b[h] = e;
            e = next;
        }
    }
    ferry__free(m->buckets);
    m->buckets = b;
    m->cap = cap;
    return FERRY_OK;
}

ferry_status ferry__gid_map_put(ferry__gid_map *m, ferry__gid key, void *val)
{
    if (m->len >= m->cap && grow(m) != FERRY_OK)
        return FERRY_ENOMEM;
    ferry__gid_entry *e = ferry__malloc(sizeof *e);
    if (!e)
        return ferry__fail(FERRY_ENOMEM, "out of memory adding to an RRef table");
    size_t h = gid_hash(key, m->cap);
    *e = (ferry__gid_entry){.next = m->buckets[h], .key = key, .val = val};
    m->buckets[h] = e;
    m->len++;
    return FERRY_OK;
}

void *ferry__gid_map_take(ferry__gid_map *m, ferry__gid key)
{
    if (!m->cap)
        return NULL;
    for (ferry__gid_entry **p = &m->buckets[gid_hash(key, m->cap)]; *p; p = &(*p)->next) {
        if (ferry__gid_eq((*p)->key, key)) {
            ferry__gid_entry *e = *p;
            void *val = e->val;
            *p = e->next;
            ferry__free(e);
            m->len--;
            return val;
        }
    }
    return NULL;
}

void *ferry__gid_map_pop(ferry__gid_map *m)
{
    for (size_t i = 0; m->len && i < m->cap; i++) {
        ferry__gid_entry *e = m->buckets[i];
        if (e) {
            void *val = e->val;
            m->buckets[i] = e->next;
            ferry__free(e);
            m->len--;
            return val;
        }
    }
    return NULL;
}

void ferry__gid_map_free(ferry__gid_map *m)
{
    while (ferry__gid_map_pop(m))
        ;
    ferry__free(m->buckets);
    *m = (ferry__gid_map){0};
}
