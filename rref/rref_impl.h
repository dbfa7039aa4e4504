/* Internal RRef types shared by the files of rref/: the RRef object (owner or user), the per-agent
   RRef context with its tables, ids, and the protocol entry points. docs/rref.md describes the
   protocol these implement (torch's Remote Reference Protocol). */
#ifndef FERRY_RREF_IMPL_H
#define FERRY_RREF_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/refcount.h"
#include "ferry/rref.h"
#include "rpc/module.h"

/* A globally unique id: the worker that made it and that worker's counter (torch's
   GloballyUniqueId). RRef ids and fork ids share one counter per context. */
typedef struct {
    int32_t worker;
    int64_t local;
} ferry__gid;

static inline bool ferry__gid_eq(ferry__gid a, ferry__gid b)
{
    return a.worker == b.worker && a.local == b.local;
}

/* A hash map from gid to pointer (no locking: the context's lock guards it). */
typedef struct ferry__gid_entry ferry__gid_entry;
typedef struct {
    ferry__gid_entry **buckets;
    size_t cap, len;
} ferry__gid_map;

void *ferry__gid_map_get(const ferry__gid_map *m, ferry__gid key);
/* FERRY_OK or FERRY_ENOMEM; the key must not be present. */
ferry_status ferry__gid_map_put(ferry__gid_map *m, ferry__gid key, void *val);
/* Removes the key and returns its value, or NULL. */
void *ferry__gid_map_take(ferry__gid_map *m, ferry__gid key);
/* Removes and returns any one value (NULL when empty), for teardown. */
void *ferry__gid_map_pop(ferry__gid_map *m);
void ferry__gid_map_free(ferry__gid_map *m);

/* A small set of fork ids (an owner's users, and deletions that arrived before their fork). */
typedef struct {
    ferry__gid *ids;
    size_t len, cap;
} ferry__gid_set;

typedef struct ferry__rref_ctx ferry__rref_ctx;

/* A deletion a user owes its owner (G1): the RRef and the user's fork. */
typedef struct {
    ferry__gid id, fork;
} ferry__rref_del;

/* Deletions waiting to go to one owner (the context's lock guards them). */
typedef struct {
    ferry__rref_del *items;
    size_t len, cap;
} ferry__rref_del_queue;

/* The deletions one request carries to its owner: at most one, so that distributed autograd
   keeps its two slots of the request's ext (each deletion takes two). */
#define FERRY__RREF_CARRY_MAX 1
typedef struct {
    int32_t dst;
    int n;
    ferry__rref_del d[FERRY__RREF_CARRY_MAX];
} ferry__rref_carry;

struct ferry_rref {
    ferry__ref ref;
    ferry__rref_ctx *ctx; /* retained */
    bool is_owner;
    int32_t owner;
    ferry__gid id;
    ferry__gid fork; /* a user's own fork id; the owner's is its id */

    /* Owner: completes with the value itself, or with the creation's error. */
    ferry_future *value;
    /* Owner, guarded by ctx->lock. The owner table holds one reference while the RRef is
       in_table: while users (forks) know it, a deletion waits for its fork (tombs), or a message
       arrived before the remote() that creates it (expect_create). */
    bool in_table, expect_create;
    ferry__gid_set forks, tombs;

    /* User: OK once the owner acknowledged it; an error when creation or the fork failed. */
    ferry_future *confirmed;
    /* Made by remote() (owner or user): the request that creates it, completed by the owner's
       reply or the request's failure; ferry_rref_get_future answers from it. NULL otherwise. */
    ferry_future *created;
    /* User, guarded by ctx->lock: the owner was told already (shutdown deleted it), or must
       never be told (the creating request was never sent). */
    bool deleted;
    ferry_rref *prev, *next; /* the context's list of live users */
    /* User made by remote(): the deletions its request carries, settled when the reply
       comes (deletes.c). */
    ferry__rref_carry carry;
};

struct ferry__rref_ctx {
    ferry__ref ref;
    pthread_mutex_t lock;
    pthread_cond_t idle_cv;
    ferry__agent *agent; /* NULL once stopped; guarded by lock (not retained: the agent owns us) */
    int rank, world_size;
    char **names; /* worker names by rank, copied so RRefs can name owners after shutdown */
    atomic_int_fast64_t next_local;

    ferry__gid_map owners;   /* rref id -> OwnerRRef in the table */
    ferry__gid_map children; /* fork id -> parent RRef kept alive until the child is accepted */
    ferry_rref *users;       /* live UserRRefs */
    /* n_messages counts control messages not yet acknowledged and deletions still queued or
       carried (deletes.c). */
    int64_t n_users, n_pending_users, n_forks, n_messages;
    /* Deletions by owner rank, waiting for a request to that owner to carry them, or for the
       tick that sends them on their own (deletes.c). n_queued is their total (read without
       the lock by the tick); flush_scheduled: a pool task to send them is on its way. */
    ferry__rref_del_queue *dels;
    atomic_size_t n_queued;
    bool flush_scheduled;
};

/* ---- context.c ---- */
ferry__rref_ctx *ferry__rref_ctx_current(void);           /* new ref, or NULL + ESHUTDOWN */
ferry__rref_ctx *ferry__rref_ctx_retain(ferry__rref_ctx *ctx);
void ferry__rref_ctx_release(ferry__rref_ctx *ctx);
ferry__gid ferry__rref_next_id(ferry__rref_ctx *ctx);
/* The agent, retained, or NULL + FERRY_ESHUTDOWN once the context stopped. */
ferry__agent *ferry__rref_ctx_agent(ferry__rref_ctx *ctx);
/* Runs fn(arg) on the agent's pool (inline when the queue is full). FERRY_ESHUTDOWN if stopped:
   then fn does not run. */
ferry_status ferry__rref_submit(ferry__rref_ctx *ctx, void (*fn)(void *), void *arg);
/* Wakes ferry_debug_rref_wait_idle; call after a counter drops, with ctx->lock held. */
void ferry__rref_ctx_signal(ferry__rref_ctx *ctx);
/* "UserRRef(rref_id=GloballyUniqueId(created_on=.., local_id=..), fork_id=...)" (torch). */
void ferry__rref_describe(const ferry_rref *r, char *buf, size_t len);

/* ---- rref.c ---- */
ferry_rref *ferry__rref_owner_new(ferry__rref_ctx *ctx, ferry__gid id);
/* A user; pending users hold an internal reference dropped by ferry__rref_confirm. */
ferry_rref *ferry__rref_user_new(ferry__rref_ctx *ctx, int32_t owner, ferry__gid id,
                                 ferry__gid fork, bool pending);
/* Completes a pending user's confirmation (rc FERRY_OK, or the failure) and drops the
   pending reference. */
void ferry__rref_confirm(ferry_rref *u, ferry_status rc, const char *why);
/* Owner table, ctx->lock held. find_or_create returns a borrowed OwnerRRef (created pending with
   expect_create when unknown), NULL on ENOMEM. */
ferry_rref *ferry__owner_find_or_create(ferry__rref_ctx *ctx, ferry__gid id);
ferry_status ferry__owner_add_fork(ferry_rref *o, ferry__gid fork);
void ferry__owner_del_fork(ferry_rref *o, ferry__gid fork);
/* Puts an owner in the table if it is not (taking a reference). */
ferry_status ferry__owner_table(ferry_rref *o);
/* Leaves the table when nothing keeps it there; returns true if the caller must release the
   table's reference (after unlocking). */
bool ferry__owner_maybe_untable(ferry_rref *o);

/* ---- protocol.c ---- */
/* Sends a deletion on its own now (from the pool), acknowledged and retried; counted in
   n_messages until then. */
void ferry__rref_send_delete(ferry__rref_ctx *ctx, int32_t owner, ferry__gid id, ferry__gid fork);
/* Sends up to 1 + 2 queued deletions to `owner` in one user-delete message, on this thread
   (from_pool false: the progress thread's tick) or from the pool. Their counts in n_messages
   pass to the message (they end with its acknowledgement). */
void ferry__rref_send_deletes(ferry__rref_ctx *ctx, int32_t owner, const ferry__rref_del *dels,
                              int n, bool from_pool);
/* Removes fork `fork` of RRef `id` from the owner table (G1), or leaves a tombstone. OK, or
   find_or_create's error. */
ferry_status ferry__rref_delete_fork(ferry__rref_ctx *ctx, ferry__gid id, ferry__gid fork);
void ferry__rref_send_fork_request(ferry_rref *child, int32_t parent);
void ferry__rref_send_child_accept(ferry__rref_ctx *ctx, int32_t parent, ferry__gid fork);
void ferry__rref_install_handlers(ferry__agent *agent, ferry__rref_ctx *ctx);
/* A request's RRef id (m->rref) and fork id (m->fork) into whichever of *rref / *fork is not
   NULL. FERRY_OK, or FERRY_EPROTO (error set) when an id names no worker. */
ferry_status ferry__rref_read_ids(ferry__rref_ctx *ctx, const ferry__msg *m, ferry__gid *rref,
                                 ferry__gid *fork);

/* ---- deletes.c ---- */
/* A user is gone: queues its deletion for the next request to its owner to carry (or the tick
   to send), ctx->lock held, counting it in n_messages. False when it could not be queued (no
   memory): send it on its own then. *flush is set when the caller must call
   ferry__rref_schedule_flush once it let go of the lock (the queue grew long). */
bool ferry__rref_queue_delete_locked(ferry__rref_ctx *ctx, int32_t owner, ferry__gid id,
                                     ferry__gid fork, bool *flush);
/* Sends the queued deletions from the pool soon. */
void ferry__rref_schedule_flush(ferry__rref_ctx *ctx);
/* Moves up to FERRY__RREF_CARRY_MAX deletions queued for `dst` into the request's ext and
   records them in *c (c->n = 0 when none). */
void ferry__rref_carry_take(ferry__rref_ctx *ctx, int32_t dst, ferry__msg *m,
                            ferry__rref_carry *c);
/* The carrying request was not sent: the deletions go back to the queue. */
void ferry__rref_carry_put_back(ferry__rref_ctx *ctx, ferry__rref_carry *c);
/* The carrying request ended with `rc`: the owner read them, unless the owner was unreachable
   (FERRY_ETRANSPORT), when they are sent again on their own with retries. */
void ferry__rref_carry_settle(ferry__rref_ctx *ctx, ferry__rref_carry *c, ferry_status rc);
/* Sends every queued deletion on its own: from the pool (from_pool) or here. */
void ferry__rref_flush_deletes(ferry__rref_ctx *ctx, bool from_pool);
/* Appends n deletions to m's ext (two entries each; the caller leaves room). */
void ferry__rref_dels_to_ext(ferry__msg *m, const ferry__rref_del *d, int n);
/* Module hooks: deletions carried by an incoming request; the tick's flush. */
ferry_status ferry__rref_on_receive(ferry__agent *a, void *state, int src, ferry__msg *m);
void ferry__rref_tick(ferry__agent *a, void *state, long long now_ns);
/* Drops whatever is queued (the agent stopped), ctx->lock held. */
void ferry__rref_drop_deletes_locked(ferry__rref_ctx *ctx);

/* ---- fork.c ---- */
/* Points the agent's codec at the RRef hooks, with `ctx` (the agent's RRef context) as theirs. */
void ferry__rref_install_wire_hooks(ferry__agent *agent, ferry__rref_ctx *ctx);
ferry_future *ferry__rref_before_call(ferry__agent *agent, void *state, int src, ferry__msg *m);
/* Waits until every RRef in v is confirmed; the first failure's status (error set) or OK. */
ferry_status ferry__rref_wait_confirmed(const ferry_value *v);
/* True when every RRef in v is confirmed already (nothing to wait for), without blocking. */
bool ferry__rref_all_confirmed(const ferry_value *v);

/* ---- remote.c / proxy.c ---- */
ferry_status ferry__rref_handle_remote(ferry__agent *a, int src, ferry__msg *m,
                                       ferry_value **result, void *ctx);
ferry_status ferry__rref_handle_fetch(ferry__agent *a, int src, ferry__msg *m,
                                      ferry_value **result, void *ctx);
/* Their inline forms (progress thread): FERRY_EAGAIN when answering would block. */
ferry_status ferry__rref_handle_remote_inline(ferry__agent *a, int src, ferry__msg *m,
                                              ferry_value **result, void *ctx);
ferry_status ferry__rref_handle_fetch_inline(ferry__agent *a, int src, ferry__msg *m,
                                             ferry_value **result, void *ctx);
ferry_status ferry__rref_register_proxy(void);

#endif
