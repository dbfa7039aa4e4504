/* The function registry: an open-addressing hash table of name -> entry (linear probing, grown
   by doubling, removal by shifting the entries that follow back). A name is taken once: a
   second registration under a taken name is refused, the same function included, unless the
   caller asks for a replacement (the replace calls) or unregisters the name first. ferry's own
   modules register theirs at every start through ferry__register_module_function, for which
   the same function again is a no-op. The builtins are in the table before any user
   registration, so their names are taken too; a builtin replaced or unregistered is no longer
   one (ferry_builtins stops listing it). */
#include "rpc/registry.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct {
    char *name;
    ferry__fn_entry entry;
    bool is_builtin;
} slot;

/* Set while the builtins register themselves (on one thread, under pthread_once). */
static _Thread_local bool registering_builtins;

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

static bool same_entry(const ferry__fn_entry *a, const ferry__fn_entry *b)
{
    return a->kind == b->kind && a->fn == b->fn && a->async_fn == b->async_fn &&
           a->user == b->user;
}

/* How add() treats a name already taken. */
typedef enum {
    ADD_NEW,     /* refused, whatever is registered there (users' register calls) */
    ADD_ONCE,    /* the same entry again is a no-op, another is refused (modules) */
    ADD_REPLACE, /* replaced (the replace calls) */
} add_mode;

static ferry_status add(const char *name, const ferry__fn_entry *e, add_mode mode)
{
    if (!name || !*name || strlen(name) >= FERRY_MAX_NAME_LEN)
        return ferry__fail(FERRY_EINVAL, "function names must be non-empty and shorter than %d bytes",
                           FERRY_MAX_NAME_LEN);
    if (ferry__fn_is_async(e->kind) ? !e->async_fn : !e->fn)
        return ferry__fail(FERRY_EINVAL, "function '%s': the function pointer is NULL", name);
    if (!registering_builtins)
        ferry__builtins_register();
    ferry_status rc = FERRY_OK;
    pthread_rwlock_wrlock(&reg.lock);
    if ((reg.len + 1) * 2 > reg.cap)
        rc = grow();
    if (rc == FERRY_OK) {
        slot *s = find(reg.slots, reg.cap, name);
        if (s->name && mode == ADD_REPLACE) {
            s->entry = *e;
            s->is_builtin = registering_builtins;
        } else if (s->name && (mode == ADD_NEW || !same_entry(&s->entry, e))) {
            rc = ferry__fail(FERRY_EINVAL, "function '%s' is already registered%s: "
                             "ferry_replace_function(\"%s\", ...) replaces it, "
                             "ferry_unregister_function(\"%s\") frees the name", name,
                             s->is_builtin              ? " (it is a builtin)"
                             : same_entry(&s->entry, e) ? " (by an earlier call with this "
                                                          "same function)"
                                                        : " with another function",
                             name, name);
        } else if (!s->name) {
            s->name = ferry__strdup(name);
            if (!s->name) {
                rc = ferry__fail(FERRY_ENOMEM, "out of memory registering '%s'", name);
            } else {
                reg.len++;
                s->entry = *e;
                s->is_builtin = registering_builtins;
            }
        }
    }
    pthread_rwlock_unlock(&reg.lock);
    return rc;
}

ferry_status ferry_unregister_function(const char *name)
{
    if (!name)
        return ferry__fail(FERRY_EINVAL, "the function name is NULL");
    ferry__builtins_register();
    pthread_rwlock_wrlock(&reg.lock);
    slot *s = reg.cap ? find(reg.slots, reg.cap, name) : NULL;
    bool found = s && s->name;
    if (found) {
        ferry__free(s->name);
        *s = (slot){0};
        reg.len--;
        /* Entries after it in its run may have probed past it: put each where a lookup now
           finds it. */
        size_t i = (size_t)(s - reg.slots);
        for (size_t j = (i + 1) & (reg.cap - 1); reg.slots[j].name; j = (j + 1) & (reg.cap - 1)) {
            slot moved = reg.slots[j];
            reg.slots[j] = (slot){0};
            *find(reg.slots, reg.cap, moved.name) = moved;
        }
    }
    pthread_rwlock_unlock(&reg.lock);
    return found ? FERRY_OK
                 : ferry__fail(FERRY_EINVAL, "no function named '%s' is registered", name);
}

void ferry__registry_builtins_begin(bool is_begin)
{
    registering_builtins = is_begin;
}

size_t ferry__registry_builtin_count(void)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&reg.lock);
    for (size_t i = 0; i < reg.cap; i++)
        n += reg.slots[i].name && reg.slots[i].is_builtin;
    pthread_rwlock_unlock(&reg.lock);
    return n;
}

bool ferry__registry_is_builtin(const char *name)
{
    bool is_builtin = false;
    pthread_rwlock_rdlock(&reg.lock);
    if (reg.cap) {
        slot *s = find(reg.slots, reg.cap, name);
        is_builtin = s->name && s->is_builtin;
    }
    pthread_rwlock_unlock(&reg.lock);
    return is_builtin;
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
    return add(name, &e, registering_builtins ? ADD_ONCE : ADD_NEW);
}

ferry_status ferry__register_module_function(const char *name, ferry_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_SYNC, .fn = fn, .user = user};
    return add(name, &e, ADD_ONCE);
}

ferry_status ferry_register_nonblocking_function(const char *name, ferry_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_NONBLOCKING, .fn = fn, .user = user};
    return add(name, &e, registering_builtins ? ADD_ONCE : ADD_NEW);
}

ferry_status ferry_register_async_function(const char *name, ferry_async_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_ASYNC, .async_fn = fn, .user = user};
    return add(name, &e, ADD_NEW);
}

ferry_status ferry__register_nonblocking_async(const char *name, ferry_async_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_ASYNC_NONBLOCKING, .async_fn = fn, .user = user};
    return add(name, &e, ADD_ONCE);
}

ferry_status ferry_replace_function(const char *name, ferry_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_SYNC, .fn = fn, .user = user};
    return add(name, &e, ADD_REPLACE);
}

ferry_status ferry_replace_nonblocking_function(const char *name, ferry_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_NONBLOCKING, .fn = fn, .user = user};
    return add(name, &e, ADD_REPLACE);
}

ferry_status ferry_replace_async_function(const char *name, ferry_async_fn fn, void *user)
{
    ferry__fn_entry e = {.kind = FERRY__FN_ASYNC, .async_fn = fn, .user = user};
    return add(name, &e, ADD_REPLACE);
}
