/* The rendezvous key-value store: rank 0 serves it over TCP; every worker (rank 0 included) is a
   client. Keys are strings, values byte strings. With a token, client and server each prove they
   know it (HMAC-SHA256 over both sides' nonces) before any operation, so neither a stranger nor a
   fake store takes part. Every operation carries a deadline, and client sockets use TCP keepalive
   and TCP_USER_TIMEOUT, so a stopped or unreachable server fails calls instead of hanging them. */
#ifndef FERRY_TRANSPORT_STORE_H
#define FERRY_TRANSPORT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"

typedef struct ferry__store_server ferry__store_server;
typedef struct ferry__store ferry__store;

/* The server's limits. _init fills the defaults, then the environment variables named here. */
typedef struct {
    double handshake_timeout_s; /* FERRY_STORE_HANDSHAKE_TIMEOUT_S, 5: a connection must prove
                                   the token (or, without one, send its first request) by then */
    int max_pending;            /* FERRY_STORE_MAX_PENDING, 64, and at most a quarter of
                                   RLIMIT_NOFILE: connections not yet past the handshake; one
                                   more evicts the oldest */
    size_t output_limit_bytes;  /* FERRY_STORE_OUTPUT_LIMIT_MB, 4 MiB: replies queued for one
                                   connection beyond which the server stops reading from it */
    double accept_pause_s;      /* 0.1: the listener rests this long when accept fails */
} ferry__store_server_options;

void ferry__store_server_options_init(ferry__store_server_options *o);

/* What the server did so far (tests and diagnostics). */
typedef struct {
    uint64_t keys, requests;
    uint64_t connections, pending;
    uint64_t evicted;            /* pending connections closed to make room for a new one */
    uint64_t handshake_timeouts; /* closed for not finishing the handshake in time */
    uint64_t accept_failures;    /* accept() failed (EMFILE, ENFILE, ENOBUFS, ENOMEM) */
    uint64_t read_pauses;        /* a connection's reading paused: its replies went unread */
    uint64_t out_bytes_max;      /* the most reply bytes one connection ever had queued */
} ferry__store_server_stats;

/* Serves on host:port (port 0 picks one; *bound_port says which). token NULL = no auth (the
   caller decided that is allowed). opts NULL = ferry__store_server_options_init's. */
ferry__store_server *ferry__store_server_start(const char *host, int port, const char *token,
                                               const ferry__store_server_options *opts,
                                               int *bound_port);
void ferry__store_server_stop(ferry__store_server *srv);
/* How many clients are connected and past the auth check right now (rank 0 uses it to see that
   everyone else has left before stopping the server). Thread-safe. */
int ferry__store_server_clients(ferry__store_server *srv);
/* A snapshot of the counters. Thread-safe. */
void ferry__store_server_get_stats(ferry__store_server *srv, ferry__store_server_stats *out);

/* Timeouts: timeout_s <= 0 means no deadline (torch's convention). Every operation fails with
   FERRY_ETIMEDOUT once its deadline passed: get and wait when the key did not come in time (the
   server says so; a reply later than FERRY__STORE_REPLY_GRACE_MS after that counts as none),
   every operation when the server did not answer at all. A connection whose server did not answer
   stays broken: later calls fail with FERRY_ETRANSPORT at once, saying why. Keys are at most
   4 KiB and values at most 16 MiB; larger ones fail with FERRY_EINVAL. A client may be shared by
   threads (one request at a time). */
#define FERRY__STORE_REPLY_GRACE_MS 500

/* Connects, retrying until timeout_s (the server may not be up yet). FERRY_ETIMEDOUT,
   FERRY_EAUTH (either side does not know the token), FERRY_ETRANSPORT. */
ferry__store *ferry__store_connect(const char *host, int port, const char *token, double timeout_s);
void ferry__store_close(ferry__store *st);
/* Connects and authenticates like ferry__store_connect, once, and returns the socket (blocking)
   instead of a client: for tests that speak the frame protocol themselves. -1 and the error. */
int ferry__store_dial(const char *host, int port, const char *token, double timeout_s);

ferry_status ferry__store_set(ferry__store *st, const char *key, const void *val, size_t len,
                              double timeout_s);
/* Waits up to timeout_s for the key; *val is malloc'd (ferry__free). FERRY_ETIMEDOUT. */
ferry_status ferry__store_get(ferry__store *st, const char *key, double timeout_s, void **val,
                              size_t *len);
/* Atomically adds delta to the integer stored at key (0 if absent) and returns the new value. */
ferry_status ferry__store_add(ferry__store *st, const char *key, int64_t delta, int64_t *out,
                              double timeout_s);
/* Waits until every key exists. */
ferry_status ferry__store_wait(ferry__store *st, const char *const *keys, size_t n, double timeout_s);
/* Sets key only if it holds `expected` (absent when expected_len == 0 && expected == NULL);
   returns the value now stored in *actual (malloc'd). torch's compare_set. */
ferry_status ferry__store_compare_set(ferry__store *st, const char *key, const void *expected,
                                      size_t expected_len, const void *desired, size_t desired_len,
                                      void **actual, size_t *actual_len, double timeout_s);

/* Which of keys[0..n) exist right now, without waiting: present[i] (diagnostics: which ranks
   never arrived). */
ferry_status ferry__store_check(ferry__store *st, const char *const *keys, size_t n,
                                bool *present, double timeout_s);
/* Removes the keys that exist (torch's delete_key, for a list); *deleted (may be NULL) says how
   many did. */
ferry_status ferry__store_delete(ferry__store *st, const char *const *keys, size_t n,
                                 size_t *deleted, double timeout_s);
/* How many keys the store holds and how many requests it answered (the TCP server counts every
   client's; the file store counts this handle's). */
ferry_status ferry__store_stats(ferry__store *st, uint64_t *keys, uint64_t *requests,
                                double timeout_s);
/* false once the connection broke (a server that stopped answering or hung up); file stores are
   always connected. The rendezvous uses it to tell "the key is not there yet" from "the store is
   gone" after a timed-out wait. */
bool ferry__store_is_connected(const ferry__store *st);
/* true when a process serves the store (the TCP store: rank 0 in a rendezvous), so losing it
   means losing that process; false for file stores and NULL. */
bool ferry__store_has_host(const ferry__store *st);
/* Names the worker that serves a TCP store, for the errors its loss gives ("worker 'w0' (rank
   0)" instead of "rank 0"); file stores ignore it. */
void ferry__store_set_host(ferry__store *st, const char *name, int rank);

/* Sets SO_KEEPALIVE, the keepalive timing and TCP_USER_TIMEOUT on a store socket (both sides):
   FERRY_STORE_KEEPALIVE_S (5: idle seconds before the first probe; probes then every second, 5
   of them) and FERRY_STORE_USER_TIMEOUT_S (10: unacknowledged data or probes drop the connection
   after this), so a vanished peer or a partition breaks the connection even with no deadline. */
void ferry__store_tune_socket(int fd);
/* A positive number from the environment variable, or def when it is unset or malformed (the
   latter with a warning). */
double ferry__store_env_double(const char *name, double def);

/* file:// rendezvous: the same operations over a shared file with fcntl locks. The file must be
   ours: a symlink at path, an existing file of another owner or one that others may write, or a
   directory others may change (writable by group or world without the sticky bit, or owned by
   someone but us and root) is refused with FERRY_EAUTH naming the reason. A new file is created
   exclusively, mode 0600. */
ferry__store *ferry__store_open_file(const char *path);

/* A store backend other than the TCP client (store_file.c uses it): the ferry__store_* calls above
   check their arguments and forward here; the backend records its own errors. */
typedef struct {
    ferry_status (*set)(void *impl, const char *key, const void *val, size_t len, double timeout_s);
    ferry_status (*get)(void *impl, const char *key, double timeout_s, void **val, size_t *len);
    ferry_status (*add)(void *impl, const char *key, int64_t delta, int64_t *out, double timeout_s);
    ferry_status (*wait)(void *impl, const char *const *keys, size_t n, double timeout_s);
    ferry_status (*compare_set)(void *impl, const char *key, const void *expected,
                                size_t expected_len, const void *desired, size_t desired_len,
                                void **actual, size_t *actual_len, double timeout_s);
    ferry_status (*check)(void *impl, const char *const *keys, size_t n, bool *present,
                          double timeout_s);
    ferry_status (*del)(void *impl, const char *const *keys, size_t n, size_t *deleted,
                        double timeout_s);
    ferry_status (*stats)(void *impl, uint64_t *keys, uint64_t *requests, double timeout_s);
    bool (*is_connected)(void *impl);
    bool (*has_host)(void *impl);                             /* NULL: false */
    void (*set_host)(void *impl, const char *name, int rank); /* NULL: ignored */
    void (*close)(void *impl);
} ferry__store_backend;

/* Wraps a backend; the store owns impl and calls backend->close(impl) on ferry__store_close.
   NULL + FERRY_ENOMEM (impl is closed then too). */
ferry__store *ferry__store_wrap(const ferry__store_backend *backend, void *impl);

#endif
