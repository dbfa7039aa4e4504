/* The rendezvous store: every operation over TCP and over a file, timeouts, many clients at
   once, the token check, a server that survives malformed frames from a raw socket, and the
   file store's refusal of files that are not ours. test_store_limits.c has the client's
   deadlines against fake stores and the server's limits. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "test_util.h"
#include "transport/store.h"
#include "transport/store_wire.h"
#include "test_store_util.h"

/* The operations every backend must get right. */
static void exercise_ops(ferry__store *st)
{
    int64_t n = 0;
    void *val = NULL;
    size_t len = 0;
    bool present[3];
    const char *keys[] = {"a", "missing", "counter"};

    ferry_assert_ok(ferry__store_set(st, "a", "hello", 5, 5));
    expect_value(st, "a", "hello");
    ferry_assert_ok(ferry__store_set(st, "a", "", 0, 5)); /* overwrite; empty values exist */
    expect_value(st, "a", "");

    ferry_assert_ok(ferry__store_add(st, "counter", 5, &n, 5));
    cr_assert_eq(n, 5);
    ferry_assert_ok(ferry__store_add(st, "counter", -7, &n, 5));
    cr_assert_eq(n, -2);
    expect_value(st, "counter", "-2");
    ferry_assert_status(ferry__store_add(st, "a", 1, &n, 5), FERRY_EINVAL);

    ferry_assert_ok(ferry__store_check(st, keys, 3, present, 5));
    cr_assert(present[0] && !present[1] && present[2]);
    ferry_assert_ok(ferry__store_wait(st, (const char *[]){"a", "counter"}, 2, 5));

    /* compare_set: absent + nothing expected sets; a wrong guess changes nothing. */
    ferry_assert_ok(ferry__store_compare_set(st, "cas", NULL, 0, "one", 3, &val, &len, 5));
    cr_assert(len == 3 && !memcmp(val, "one", 3));
    ferry__free(val);
    ferry_assert_ok(ferry__store_compare_set(st, "cas", "two", 3, "three", 5, &val, &len, 5));
    cr_assert(len == 3 && !memcmp(val, "one", 3));
    ferry__free(val);
    ferry_assert_ok(ferry__store_compare_set(st, "cas", "one", 3, "four", 4, &val, &len, 5));
    cr_assert(len == 4 && !memcmp(val, "four", 4));
    ferry__free(val);
    /* Absent but something expected: nothing is set and the expectation comes back (torch). */
    ferry_assert_ok(ferry__store_compare_set(st, "cas2", "x", 1, "y", 1, &val, &len, 5));
    cr_assert(len == 1 && !memcmp(val, "x", 1));
    ferry__free(val);
    ferry_assert_ok(ferry__store_check(st, (const char *[]){"cas2"}, 1, present, 5));
    cr_assert(!present[0]);

    /* delete: removes what exists, says how many did; stats count the keys. */
    uint64_t n_keys = 0, requests = 0;
    size_t deleted = 0;
    ferry_assert_ok(ferry__store_stats(st, &n_keys, &requests, 5));
    cr_assert_eq(n_keys, 3, "a, counter, cas: %llu", (unsigned long long)n_keys);
    cr_assert(requests > 10);
    ferry_assert_ok(ferry__store_delete(st, (const char *[]){"a", "missing", "cas"}, 3, &deleted, 5));
    cr_assert_eq(deleted, 2);
    ferry_assert_ok(ferry__store_check(st, keys, 3, present, 5));
    cr_assert(!present[0] && !present[1] && present[2]);
    ferry_assert_ok(ferry__store_stats(st, &n_keys, NULL, 5));
    cr_assert_eq(n_keys, 1);
    ferry_assert_ok(ferry__store_set(st, "cas", "again", 5, 5)); /* a deleted key can return */
    expect_value(st, "cas", "again");
}

Test(transport_store, every_op_works_when_served_over_tcp, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, NULL, 5));
    exercise_ops(st);
    cr_assert_eq(ferry__store_server_clients(srv), 1);
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

Test(transport_store, every_op_works_when_backed_by_a_file, .timeout = 10)
{
    char dir[] = "/tmp/ferry-store-XXXXXX", path[64];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/store", dir);
    ferry__store *st = ferry_assert_ptr(ferry__store_open_file(path));
    exercise_ops(st);
    ferry__store_close(st);
    /* A second handle sees what the first wrote, deletes included. */
    st = ferry_assert_ptr(ferry__store_open_file(path));
    expect_value(st, "cas", "again");
    bool present[1];
    ferry_assert_ok(ferry__store_check(st, (const char *[]){"a"}, 1, present, 5));
    cr_assert(!present[0]);
    ferry__store_close(st);
    unlink(path);
    rmdir(dir);
}

Test(transport_store, get_fails_with_etimedout_when_key_never_appears, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, NULL, 5));
    void *val = NULL;
    size_t len;
    ferry_assert_status(ferry__store_get(st, "nobody", 0.2, &val, &len), FERRY_ETIMEDOUT);
    cr_assert(strstr(ferry_last_error(), "nobody"), "%s", ferry_last_error());
    ferry_assert_status(ferry__store_wait(st, (const char *[]){"x", "y"}, 2, 0.1),
                        FERRY_ETIMEDOUT);
    /* The connection stays usable after a timeout. */
    ferry_assert_ok(ferry__store_set(st, "nobody", "late", 4, 5));
    expect_value(st, "nobody", "late");
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

Test(transport_store, file_get_fails_with_etimedout_when_key_never_appears, .timeout = 10)
{
    char path[] = "/tmp/ferry-store-file-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    ferry__store *st = ferry_assert_ptr(ferry__store_open_file(path));
    void *val = NULL;
    size_t len;
    ferry_assert_status(ferry__store_get(st, "nobody", 0.1, &val, &len), FERRY_ETIMEDOUT);
    ferry__store_close(st);
    unlink(path);
}

typedef struct {
    int port;
    const char *key;
    int64_t adds;
    ferry_status rc;
    char got[16];
} worker_arg;

static void *blocking_getter(void *p)
{
    worker_arg *a = p;
    ferry__store *st = ferry__store_connect("127.0.0.1", a->port, NULL, 10);
    void *val = NULL;
    size_t len = 0;
    a->rc = st ? ferry__store_get(st, a->key, 10, &val, &len) : ferry_last_status();
    if (a->rc == FERRY_OK)
        snprintf(a->got, sizeof a->got, "%.*s", (int)len, (char *)val);
    ferry__free(val);
    ferry__store_close(st);
    return NULL;
}

Test(transport_store, get_returns_the_value_when_key_is_set_while_waiting, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    worker_arg args[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){.port = port, .key = "later"};
        pthread_create(&threads[i], NULL, blocking_getter, &args[i]);
    }
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, NULL, 5));
    ferry_assert_ok(ferry__store_set(st, "later", "value", 5, 5));
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        ferry_assert_ok(args[i].rc);
        cr_assert_str_eq(args[i].got, "value");
    }
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

static void *adder(void *p)
{
    worker_arg *a = p;
    ferry__store *st = ferry__store_connect("127.0.0.1", a->port, "tok", 10);
    a->rc = st ? FERRY_OK : ferry_last_status();
    for (int64_t i = 0; st && a->rc == FERRY_OK && i < a->adds; i++)
        a->rc = ferry__store_add(st, "total", 1, NULL, 5);
    ferry__store_close(st);
    return NULL;
}

Test(transport_store, add_counts_every_call_when_many_clients_add_at_once, .timeout = 20)
{
    enum { CLIENTS = 24, ADDS = 50 };
    int port;
    ferry__store_server *srv = start_server("tok", &port);
    worker_arg args[CLIENTS];
    pthread_t threads[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        args[i] = (worker_arg){.port = port, .adds = ADDS};
        pthread_create(&threads[i], NULL, adder, &args[i]);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(threads[i], NULL);
        ferry_assert_ok(args[i].rc);
    }
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, "tok", 5));
    int64_t total = 0;
    ferry_assert_ok(ferry__store_add(st, "total", 0, &total, 5));
    cr_assert_eq(total, CLIENTS * ADDS);
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

static int file_adder(int rank, int world_size, void *arg)
{
    ferry__store *st = ferry__store_open_file(arg);
    for (int i = 0; st && i < 40; i++)
        if (ferry__store_add(st, "total", 1, NULL, 5) != FERRY_OK)
            return 1;
    ferry__store_close(st);
    return st ? 0 : 2;
}

Test(transport_store, file_add_counts_every_call_when_processes_add_at_once, .timeout = 20)
{
    char path[] = "/tmp/ferry-store-file-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    ferry_test_run_ranks(4, file_adder, path, 15);
    ferry__store *st = ferry_assert_ptr(ferry__store_open_file(path));
    expect_value(st, "total", "160");
    ferry__store_close(st);
    unlink(path);
}

static void *late_connector(void *p)
{
    worker_arg *a = p;
    ferry__store *st = ferry__store_connect("127.0.0.1", a->port, NULL, 10);
    a->rc = st ? ferry__store_set(st, "hi", "1", 1, 5) : ferry_last_status();
    ferry__store_close(st);
    return NULL;
}

Test(transport_store, connect_retries_when_server_starts_later, .timeout = 15)
{
    worker_arg a = {.port = ferry_test_free_port()};
    pthread_t t;
    pthread_create(&t, NULL, late_connector, &a);
    int bound;
    ferry__store_server *srv =
        ferry_assert_ptr(ferry__store_server_start("127.0.0.1", a.port, NULL, NULL, &bound));
    cr_assert_eq(bound, a.port);
    pthread_join(t, NULL);
    ferry_assert_ok(a.rc);
    ferry__store_server_stop(srv);
}

Test(transport_store, connect_fails_with_etimedout_when_nobody_listens, .timeout = 10)
{
    ferry__store *st = ferry__store_connect("127.0.0.1", ferry_test_free_port(), NULL, 0.3);
    cr_assert_null(st);
    cr_assert_eq(ferry_last_status(), FERRY_ETIMEDOUT);
    cr_assert(strstr(ferry_last_error(), "127.0.0.1"), "%s", ferry_last_error());
}

Test(transport_store, connect_fails_with_eauth_when_token_differs, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server("right", &port);
    cr_assert_null(ferry__store_connect("127.0.0.1", port, "wrong", 5));
    cr_assert_eq(ferry_last_status(), FERRY_EAUTH);
    char want[128];
    snprintf(want, sizeof want,
             "store at 127.0.0.1:%d refused the auth token (FERRY_AUTH_TOKEN differs?)", port);
    cr_assert_str_eq(ferry_last_error(), want);
    cr_assert_null(ferry__store_connect("127.0.0.1", port, NULL, 5));
    cr_assert_eq(ferry_last_status(), FERRY_EAUTH);
    /* The server still serves clients that know the token. */
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, "right", 5));
    ferry_assert_ok(ferry__store_set(st, "k", "v", 1, 5));
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

Test(transport_store, connect_fails_with_eauth_when_only_client_has_token, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    cr_assert_null(ferry__store_connect("127.0.0.1", port, "secret", 5));
    cr_assert_eq(ferry_last_status(), FERRY_EAUTH);
    ferry__store_server_stop(srv);
}

/* Sends bytes and expects the server to hang up (recv sees EOF) rather than answer. */
static void expect_hangup(int port, const void *frame, size_t len)
{
    int fd = raw_connect(port, false);
    cr_assert_eq(send(fd, frame, len, MSG_NOSIGNAL), (ssize_t)len);
    shutdown(fd, SHUT_WR);
    uint8_t sink[64];
    ssize_t n;
    while ((n = recv(fd, sink, sizeof sink, 0)) > 0)
        ;
    cr_assert_eq(n, 0, "the server answered a malformed frame instead of closing");
    close(fd);
}

Test(transport_store, server_closes_only_that_client_when_frames_are_malformed, .timeout = 15)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, NULL, 5));
    ferry_assert_ok(ferry__store_set(st, "before", "1", 1, 5));

    const uint8_t huge_body[] = {0xff, 0xff, 0xff, 0xff, 1};
    const uint8_t empty_body[] = {0, 0, 0, 0};
    const uint8_t bad_op[] = {0, 0, 0, 1, 99};
    /* set with a key length of 5000 (over the 4 KiB cap) */
    const uint8_t long_key[] = {0, 0, 0, 9, 1, 0, 0, 0x13, 0x88, 'k', 'k', 'k', 'k'};
    /* set whose key length runs past the end of the frame */
    const uint8_t overrun[] = {0, 0, 0, 6, 1, 0, 0, 0, 50, 'k'};
    /* get with trailing bytes after its fields */
    const uint8_t trailing[] = {0, 0, 0, 16, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 'k', 'x', 'x'};
    /* compare_set with an "expect present" flag that is neither 0 nor 1 */
    const uint8_t bad_flag[] = {0, 0, 0, 16, 5, 0, 0, 0, 1, 'k', 7, 0, 0, 0, 0, 0, 0, 0, 0};
    expect_hangup(port, huge_body, sizeof huge_body);
    expect_hangup(port, empty_body, sizeof empty_body);
    expect_hangup(port, bad_op, sizeof bad_op);
    expect_hangup(port, long_key, sizeof long_key);
    expect_hangup(port, overrun, sizeof overrun);
    expect_hangup(port, trailing, sizeof trailing);
    expect_hangup(port, bad_flag, sizeof bad_flag);

    /* The well-behaved client never noticed. */
    expect_value(st, "before", "1");
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

Test(transport_store, server_rejects_a_wrong_mac_when_sent_from_a_raw_socket, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server("tok", &port);
    int fd = raw_connect(port, true);
    uint8_t proof[64] = {0}, verdict = 1; /* a client nonce and a MAC of zeros */
    cr_assert_eq(send(fd, proof, sizeof proof, MSG_NOSIGNAL), 64);
    cr_assert_eq(recv(fd, &verdict, 1, 0), 1);
    cr_assert_eq(verdict, 0);
    cr_assert_eq(recv(fd, &verdict, 1, 0), 0);
    close(fd);
    cr_assert_eq(ferry__store_server_clients(srv), 0);
    ferry__store_server_stop(srv);
}

Test(transport_store, server_never_runs_a_request_when_it_arrives_before_the_proof, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server("tok", &port);
    int fd = raw_connect(port, true);
    /* A whole set frame (17 bytes) where the 64-byte proof belongs, then silence. */
    const uint8_t set[] = {0, 0, 0, 13, 1, 0, 0, 0, 3, 'e', 'v', 'l', 0, 0, 0, 1, 'x'};
    cr_assert_eq(send(fd, set, sizeof set, MSG_NOSIGNAL), (ssize_t)sizeof set);
    /* Something else makes the server loop run while those bytes sit there. */
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, "tok", 5));
    ferry_assert_ok(ferry__store_set(st, "k", "v", 1, 5));
    bool present[1] = {true};
    ferry_assert_ok(ferry__store_check(st, (const char *[]){"evl"}, 1, present, 5));
    cr_assert(!present[0], "an unauthenticated request was run");
    close(fd);
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

Test(transport_store, ops_fail_with_einval_when_keys_or_values_exceed_limits, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, NULL, 5));
    char *key = ferry__malloc(4098);
    memset(key, 'k', 4097);
    key[4097] = '\0';
    ferry_assert_status(ferry__store_set(st, key, "v", 1, 5), FERRY_EINVAL);
    key[4096] = '\0'; /* exactly at the cap is fine */
    ferry_assert_ok(ferry__store_set(st, key, "v", 1, 5));
    size_t big = 16u << 20;
    uint8_t *val = ferry__calloc(1, big + 1);
    ferry_assert_status(ferry__store_set(st, "big", val, big + 1, 5), FERRY_EINVAL);
    val[big - 1] = 42;
    ferry_assert_ok(ferry__store_set(st, "big", val, big, 5));
    void *back = NULL;
    size_t len = 0;
    ferry_assert_ok(ferry__store_get(st, "big", 5, &back, &len));
    cr_assert(len == big && ((uint8_t *)back)[big - 1] == 42);
    ferry__free(back);
    ferry__free(val);
    ferry__free(key);
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

Test(transport_store, parked_client_fails_with_etransport_when_server_stops, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, NULL, 5));
    ferry__store_server_stop(srv);
    void *val = NULL;
    size_t len;
    ferry_assert_status(ferry__store_get(st, "k", 5, &val, &len), FERRY_ETRANSPORT);
    ferry_assert_status(ferry__store_set(st, "k", "v", 1, 5), FERRY_ETRANSPORT);
    ferry__store_close(st);
}

/* ---- the file store refuses files that are not ours ---------------------------------------- */

static void expect_file_refused(const char *path, const char *why)
{
    cr_assert_null(ferry__store_open_file(path));
    cr_assert_eq(ferry_last_status(), FERRY_EAUTH, "%s", ferry_last_error());
    cr_assert(strstr(ferry_last_error(), why), "'%s' not in: %s", why, ferry_last_error());
}

Test(transport_store, file_store_refuses_a_symlink_when_planted_at_the_path, .timeout = 10)
{
    char dir[] = "/tmp/ferry-store-XXXXXX", path[96], target[96];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/store", dir);
    snprintf(target, sizeof target, "%s/target", dir);
    close(open(target, O_CREAT | O_WRONLY, 0600));
    cr_assert(symlink(target, path) == 0);
    expect_file_refused(path, "symbolic link");
    unlink(path);
    /* A dangling one too: creating through it would write wherever it points. */
    cr_assert(symlink("/tmp/ferry-nonexistent-target", path) == 0);
    expect_file_refused(path, "symbolic link");
    struct stat sb;
    cr_assert(lstat("/tmp/ferry-nonexistent-target", &sb) != 0);
    unlink(path);
    unlink(target);
    rmdir(dir);
}

Test(transport_store, file_store_refuses_files_and_directories_others_may_write, .timeout = 10)
{
    char dir[] = "/tmp/ferry-store-XXXXXX", path[96];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/store", dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
    chmod(path, 0620);
    expect_file_refused(path, "writable by group or others");
    chmod(path, 0600);
    ferry__store_close(ferry_assert_ptr(ferry__store_open_file(path)));
    chmod(dir, 0777); /* others could swap the file */
    expect_file_refused(path, "writable by others");
    chmod(dir, 01777); /* sticky, as /tmp: fine */
    ferry__store_close(ferry_assert_ptr(ferry__store_open_file(path)));
    chmod(dir, 0700);
    unlink(path);
    rmdir(dir);
}

Test(transport_store, file_store_refuses_a_file_when_another_user_owns_it, .timeout = 10)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to give the file to another user");
    char dir[] = "/tmp/ferry-store-XXXXXX", path[96];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/store", dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
    cr_assert(chown(path, 65534, 65534) == 0); /* nobody */
    expect_file_refused(path, "belongs to uid 65534");
    unlink(path);
    rmdir(dir);
}
