/* The rendezvous key-value store: rank 0 serves it over TCP; every worker (rank 0 included) is a
   client. Keys are strings, values byte strings. With FERRY_AUTH_TOKEN set, a client proves it
   knows the token (HMAC-SHA256 over a server nonce) before any operation. */
#ifndef FERRY_TRANSPORT_STORE_H
#define FERRY_TRANSPORT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"

typedef struct ferry__store_server ferry__store_server;
typedef struct ferry__store ferry__store;

/* Serves on host:port (port 0 picks one; *bound_port says which). token NULL = no auth. */
ferry__store_server *ferry__store_server_start(const char *host, int port, const char *token,
                                               int *bound_port);
void ferry__store_server_stop(ferry__store_server *srv);
/* How many clients are connected and past the auth check right now (rank 0 uses it to see that
   everyone else has left before stopping the server). Thread-safe. */
int ferry__store_server_clients(ferry__store_server *srv);

/* Timeouts: timeout_s <= 0 means no deadline (torch's convention). Keys are at most 4 KiB and
   values at most 16 MiB; larger ones fail with FERRY_EINVAL. A client may be shared by threads
   (one request at a time). */

/* Connects, retrying until timeout_s (the server may not be up yet). FERRY_ETIMEDOUT,
   FERRY_EAUTH, FERRY_ETRANSPORT. */
ferry__store *ferry__store_connect(const char *host, int port, const char *token, double timeout_s);
void ferry__store_close(ferry__store *st);

ferry_status ferry__store_set(ferry__store *st, const char *key, const void *val, size_t len);
/* Waits up to timeout_s for the key; *val is malloc'd (ferry__free). FERRY_ETIMEDOUT. */
ferry_status ferry__store_get(ferry__store *st, const char *key, double timeout_s, void **val,
                              size_t *len);
/* Atomically adds delta to the integer stored at key (0 if absent) and returns the new value. */
ferry_status ferry__store_add(ferry__store *st, const char *key, int64_t delta, int64_t *out);
/* Waits until every key exists. */
ferry_status ferry__store_wait(ferry__store *st, const char *const *keys, size_t n, double timeout_s);
/* Sets key only if it holds `expected` (absent when expected_len == 0 && expected == NULL);
   returns the value now stored in *actual (malloc'd). torch's compare_set. */
ferry_status ferry__store_compare_set(ferry__store *st, const char *key, const void *expected,
                                      size_t expected_len, const void *desired, size_t desired_len,
                                      void **actual, size_t *actual_len);

/* Which of keys[0..n) exist right now, without waiting: present[i] (diagnostics: which ranks
   never arrived). */
ferry_status ferry__store_check(ferry__store *st, const char *const *keys, size_t n,
                                bool *present);

/* file:// rendezvous: the same operations over a shared file with fcntl locks. */
ferry__store *ferry__store_open_file(const char *path, const char *token);

/* A store backend other than the TCP client (store_file.c uses it): the ferry__store_* calls above
   check their arguments and forward here; the backend records its own errors. */
typedef struct {
    ferry_status (*set)(void *impl, const char *key, const void *val, size_t len);
    ferry_status (*get)(void *impl, const char *key, double timeout_s, void **val, size_t *len);
    ferry_status (*add)(void *impl, const char *key, int64_t delta, int64_t *out);
    ferry_status (*wait)(void *impl, const char *const *keys, size_t n, double timeout_s);
    ferry_status (*compare_set)(void *impl, const char *key, const void *expected,
                                size_t expected_len, const void *desired, size_t desired_len,
                                void **actual, size_t *actual_len);
    ferry_status (*check)(void *impl, const char *const *keys, size_t n, bool *present);
    void (*close)(void *impl);
} ferry__store_backend;

/* Wraps a backend; the store owns impl and calls backend->close(impl) on ferry__store_close.
   NULL + FERRY_ENOMEM (impl is closed then too). */
ferry__store *ferry__store_wrap(const ferry__store_backend *backend, void *impl);

#endif
