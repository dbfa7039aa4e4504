/* Helpers the rendezvous store tests share (test_store.c, test_store_limits.c): a server on a
   free loopback port, reading a key back, and a raw socket that has read the server's hello. */
#ifndef FERRY_TEST_STORE_UTIL_H
#define FERRY_TEST_STORE_UTIL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "test_util.h"
#include "transport/store.h"

static inline ferry__store_server *start_server(const char *token, int *port)
{
    return ferry_assert_ptr(ferry__store_server_start("127.0.0.1", 0, token, NULL, port));
}

static inline void expect_value(ferry__store *st, const char *key, const char *want)
{
    void *val = NULL;
    size_t len = 0;
    ferry_assert_ok(ferry__store_get(st, key, 5, &val, &len));
    cr_assert_eq(len, strlen(want));
    cr_assert(!memcmp(val, want, len), "key %s holds '%.*s'", key, (int)len, (char *)val);
    ferry__free(val);
}

/* A raw connection that has read the server's greeting (and nonce, when auth is on). */
static inline int raw_connect(int port, bool has_auth)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    uint8_t hello[5 + 32];
    size_t want = has_auth ? sizeof hello : 5, got = 0;
    while (got < want) {
        ssize_t n = recv(fd, hello + got, want - got, 0);
        cr_assert(n > 0);
        got += (size_t)n;
    }
    return fd;
}

#endif
