/* The token rule and the store's two-way authentication, end to end through ferry_init_rpc: no
   FERRY_AUTH_TOKEN fails with FERRY_EAUTH saying what to set (FERRY_INSECURE=1 runs without
   one); an empty one is FERRY_EINVAL; a joiner with the wrong token fails with FERRY_EAUTH naming
   the store; and a fake store that does not know the token is refused, so it collects no rank
   claims and hands out no addresses. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "store_fault_util.h"
#include "transport/store_wire.h"

static ferry_status init_alone(const char *method, int rank, int world, double timeout)
{
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.init_method = method;
    o.rpc_timeout = timeout;
    setenv("FERRY_TRANSPORT", "tcp", 1);
    return ferry_init_rpc(rank ? "w1" : "w0", rank, world, &o);
}

Test(fault_store, init_fails_with_eauth_when_no_token_is_set_unless_insecure, .timeout = 30)
{
    char method[64];
    snprintf(method, sizeof method, "tcp://127.0.0.1:%d", ferry_test_free_port());
    unsetenv("FERRY_AUTH_TOKEN");
    unsetenv("FERRY_INSECURE");
    ferry_assert_status(init_alone(method, 0, 1, 10), FERRY_EAUTH);
    cr_assert(strstr(ferry_last_error(), "FERRY_AUTH_TOKEN is not set") &&
                  strstr(ferry_last_error(), "FERRY_INSECURE=1"),
              "%s", ferry_last_error());
    setenv("FERRY_INSECURE", "yes", 1); /* only 1 means it */
    ferry_assert_status(init_alone(method, 0, 1, 10), FERRY_EAUTH);
    setenv("FERRY_INSECURE", "1", 1);
    ferry_assert_ok(init_alone(method, 0, 1, 10));
    ferry_assert_ok(ferry_shutdown(true, 10));
}

Test(fault_store, init_fails_with_einval_when_the_token_is_empty, .timeout = 30)
{
    char method[64];
    snprintf(method, sizeof method, "tcp://127.0.0.1:%d", ferry_test_free_port());
    setenv("FERRY_AUTH_TOKEN", "", 1);
    setenv("FERRY_INSECURE", "1", 1); /* does not make an empty token mean none */
    ferry_assert_status(init_alone(method, 0, 1, 10), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "FERRY_AUTH_TOKEN is empty"), "%s", ferry_last_error());
}

typedef struct {
    char method[64];
} wrong_case;

static int wrong_token_rank(int rank, void *arg)
{
    wrong_case *wc = arg;
    setenv("FERRY_AUTH_TOKEN", rank ? "the-wrong-one" : "the-right-one", 1);
    ferry_status rc = init_alone(wc->method, rank, 2, 2);
    if (rank == 0)
        RANK_CHECK(rc == FERRY_ETIMEDOUT); /* rank 1 never got in */
    else
        RANK_CHECK(rc == FERRY_EAUTH && strstr(ferry_last_error(), "store at 127.0.0.1:") &&
                   strstr(ferry_last_error(), "refused the auth token"));
    return 0;
}

Test(fault_store, joiner_fails_with_eauth_naming_the_store_when_its_token_is_wrong, .timeout = 30)
{
    wrong_case wc;
    snprintf(wc.method, sizeof wc.method, "tcp://127.0.0.1:%d", ferry_test_free_port());
    pid_t p0 = fault_fork(wrong_token_rank, 0, &wc), p1 = fault_fork(wrong_token_rank, 1, &wc);
    int rc1 = fault_reap(p1, 20), rc0 = fault_reap(p0, 20);
    cr_assert_eq(rc0, 0, "rank 0 exited with %d", rc0);
    cr_assert_eq(rc1, 0, "rank 1 exited with %d", rc1);
}

/* A store that greets like ferry's but cannot know the token: it answers any proof with an
   "accepted" and a made-up MAC, and records whether a request ever followed. */
typedef struct {
    int listen_fd, port;
    bool got_request;
    pthread_t thread;
} fake_store;

static void *fake_main(void *p)
{
    fake_store *f = p;
    for (;;) {
        int fd = accept(f->listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        uint8_t hello[5 + FERRY__STORE_NONCE_LEN], proof[FERRY__STORE_PROOF_LEN];
        uint8_t reply[1 + FERRY_SHA256_LEN] = {1}, sink[64];
        ferry__store_put_be32(hello, FERRY__STORE_HELLO_MAGIC);
        hello[4] = 1;
        getrandom(hello + 5, FERRY__STORE_NONCE_LEN, 0);
        getrandom(reply + 1, FERRY_SHA256_LEN, 0);
        if (send(fd, hello, sizeof hello, MSG_NOSIGNAL) > 0 &&
            recv(fd, proof, sizeof proof, MSG_WAITALL) == (ssize_t)sizeof proof) {
            send(fd, reply, sizeof reply, MSG_NOSIGNAL);
            if (recv(fd, sink, sizeof sink, 0) > 0)
                f->got_request = true;
        }
        close(fd);
    }
}

Test(fault_store, joiner_refuses_a_fake_store_when_it_cannot_prove_the_token, .timeout = 30)
{
    fake_store f = {0};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    f.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(bind(f.listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(listen(f.listen_fd, 8) == 0);
    cr_assert(getsockname(f.listen_fd, (struct sockaddr *)&a, &alen) == 0);
    f.port = ntohs(a.sin_port);
    pthread_create(&f.thread, NULL, fake_main, &f);
    char method[64];
    snprintf(method, sizeof method, "tcp://127.0.0.1:%d", f.port);
    setenv("FERRY_AUTH_TOKEN", "job-secret", 1);
    ferry_assert_status(init_alone(method, 1, 2, 5), FERRY_EAUTH);
    cr_assert(strstr(ferry_last_error(), "could not prove it knows the auth token"), "%s",
              ferry_last_error());
    shutdown(f.listen_fd, SHUT_RDWR);
    pthread_join(f.thread, NULL);
    close(f.listen_fd);
    cr_assert(!f.got_request, "the worker sent its rank claim to a fake store");
}
