/* The rendezvous key-value store: rank 0 serves it over TCP; every worker (rank 0 included) is a
   client. Keys are strings, values byte strings. With FERRY_AUTH_TOKEN set, a client proves it
   knows the token (HMAC-SHA256 over a server nonce) before any operation. */
#ifndef FERRY_TRANSPORT_STORE_H
#define FERRY_TRANSPORT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"

typedef struct ferry__store_server ferry__store_server;
typedef struct ferry__store ferry__store;

/* Serves on host:port (port 0 picks one; *bound_port says which). token NULL = no auth. */
ferry__store_server *ferry__store_server_start(const char *host, int port, const char *token,
                                               int *bound_port);
void ferry__store_server_stop(ferry__store_server *srv);

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

/* file:// rendezvous: the same operations over a shared file with fcntl locks. */
ferry__store *ferry__store_open_file(const char *path, const char *token);

#endif
