/* The function registry: an open-addressing hash table of name -> entry, grown by doubling. */
#include "rpc/registry.h"

#include <pthread.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct {
    char *name;
    ferry__fn_entry entry;
} slot;

/* The process-wide registry; every access holds `lock`. */
static struct {
    pthread_rwlock_t lock;
    slot *slots;
    size_t cap, len;
} reg = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static slot *find(slot *slots, size_t cap, const char *name)
{
    size_t i = hash_name(name) & (cap - 1);
    while (slots[i].name && strcmp(slots[i].name, name) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static ferry_status grow(void)
{
    size_t cap = reg.cap ? reg.cap * 2 : 64;
    slot *slots = ferry__calloc(cap, sizeof *slots);
    if (!slots)
        return ferry__fail(FERRY_ENOMEM, "out of memory growing the function registry");
    for (size_t i = 0; i < reg.cap; i++)
        if (reg.slots[i].name)
            *find(slots, cap, reg.slots[i].name) = reg.slots[i];
    ferry__free(reg.slots);
    reg.slots = slots;
    reg.cap = cap;
    return FERRY_OK;
}

static ferry_status add(const char *name, const ferry__fn_entry *e)
{
    if (!name || !*name || strlen(name) >= FERRY_MAX_NAME_LEN)
        return ferry__fail(FERRY_EINVAL, "function names must be non-empty and shorter than %d bytes",
                           FERRY_MAX_NAME_LEN);
    if (ferry__fn_is_async(e->kind) ? !e->async_fn : !e->fn)
        return ferry__fail(FERRY_EINVAL, "function '%s': the function pointer is NULL", name);
    ferry_status rc = FERRY_OK;
    pthread_rwlock_wrlock(&reg.lock);
    if ((reg.len + 1) * 2 > reg.cap)
        rc = grow();
    if (rc == FERRY_OK) {
        slot *s = find(reg.slots, reg.cap, name);
        if (!s->name) {
            s->name = ferry__strdup(name);
            if (!s->name)
                rc = ferry__fail(FERRY_ENOMEM, "out of memory registering '%s'", name);
            else
                reg.len++;
        }
        if (rc == FERRY_OK)
            s->entry = *e;
    }
    pthread_rwlock_unlock(&reg.lock);
    return rc;
}

bool ferry__registry_lookup(const char *name, ferry__fn_entry *out)
{
    bool found = false;
    pthread_rwlock_rdlock(&reg.lock);
    if (reg.cap) {
        slot *s = find(reg.slots, reg.cap, name);
        if (s->name) {
            *out = s->entry;
            found = true;
        }
    }
    pthread_rwlock_unlock(&reg.lock);
    return found;
}

ferry_status ferry_register_function(const char *name, ferry_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_SYNC, .fn = fn, .user = user};
    return add(name, &e);
}

ferry_status ferry_register_nonblocking_function(const char *name, ferry_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_NONBLOCKING, .fn = fn, .user = user};
    return add(name, &e);
}

ferry_status ferry_register_async_function(const char *name, ferry_async_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_ASYNC, .async_fn = fn, .user = user};
    return add(name, &e);
}

ferry_status ferry__register_nonblocking_async(const char *name, ferry_async_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_ASYNC_NONBLOCKING, .async_fn = fn, .user = user};
    return add(name, &e);
}
