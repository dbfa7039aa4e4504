/* Tracing: with FERRY_LOG=debug each rank's FERRY_LOG_FILE holds a line for every message sent
   and received (kind, id, peer, function, bytes, a response's duration), the RRef protocol's
   steps and the shutdown rounds, besides the info level's lifecycle lines; FERRY_LOG=info has
   the lifecycle and nothing per message. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/rref.h"
#include "rpc/trace.h"
#include "rpc_harness.h"

/* rank 0: an rpc_sync, one to a function worker1 does not have, then a remote() whose value it
   fetches; the harness then shuts both ranks down gracefully. */
static int body_trace(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *a = ferry_args(1, ferry_int(5));
    ferry_value *v = ferry_rpc_sync("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == 5);
    ferry_value_release(v);
    RANK_CHECK(!ferry_rpc_sync("worker1", "no_such_fn", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    ferry_rref *r = ferry_remote("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r);
    v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == 5);
    ferry_value_release(v);
    ferry_rref_release(r);
    ferry_value_release(a);
    return 0;
}

/* The rank's log file, whole and NUL-terminated (fails the test when it cannot be read). */
static char *read_log(const char *dir, int rank)
{
    char path[320];
    size_t len;
    snprintf(path, sizeof path, "%s/rank-%d.log", dir, rank);
    char *buf = (char *)ferry_test_read_file(path, &len);
    buf[len] = '\0';
    return buf;
}

/* True when one line of `log` holds every one of the NULL-ended pieces, in that order. */
static bool has_line(const char *log, ...)
{
    for (const char *line = log; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[4096];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        va_list ap;
        va_start(ap, log);
        const char *at = buf, *piece;
        while (at && (piece = va_arg(ap, const char *)))
            at = (at = strstr(at, piece)) ? at + strlen(piece) : NULL;
        va_end(ap);
        if (at)
            return true;
        line = end ? end + 1 : NULL;
    }
    return false;
}

#define EXPECT_LINE(log, rank, ...)                                                       \
    cr_expect(has_line(log, __VA_ARGS__, NULL), "rank %d's log has a line with %s", rank, \
              #__VA_ARGS__)

static void run_traced(const char *level, char *dir, size_t cap, char *logs[2])
{
    char pattern[300];
    ferry_test_mkdtemp(dir, cap, "ferry-trace");
    snprintf(pattern, sizeof pattern, "%s/rank-%%r.log", dir);
    setenv("FERRY_LOG", level, 1);
    setenv("FERRY_LOG_FILE", pattern, 1);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    rpc_case_run("shm", 2, body_trace, NULL, 30);
    for (int r = 0; r < 2; r++)
        logs[r] = read_log(dir, r);
}

static void remove_logs(const char *dir, char *logs[2])
{
    char path[320];
    for (int r = 0; r < 2; r++) {
        free(logs[r]);
        snprintf(path, sizeof path, "%s/rank-%d.log", dir, r);
        remove(path);
    }
    remove(dir);
}

/* What both levels show: one line for each step of each rank's life. */
static void expect_lifecycle(char *logs[2])
{
    for (int r = 0; r < 2; r++) {
        char name[32], start[96], ready[96];
        snprintf(name, sizeof name, "worker%d", r);
        snprintf(start, sizeof start, "init of worker '%s' (rank %d of 2) starts", name, r);
        snprintf(ready, sizeof ready, "worker '%s' is rank %d of 2: connected", name, r);
        EXPECT_LINE(logs[r], r, " rpc info] ", start);
        EXPECT_LINE(logs[r], r, " rpc info] ", "rendezvous done: world size 2; ",
                    "same host over shm (1 peer)");
        EXPECT_LINE(logs[r], r, " rpc info] ", ready);
        EXPECT_LINE(logs[r], r, " rpc info] ", "shutdown starts (graceful, timeout 30 s)");
        EXPECT_LINE(logs[r], r, " rpc info] ", "graceful shutdown: every worker agreed to stop");
        EXPECT_LINE(logs[r], r, " rpc info] ", "stopped after ", " s of shutdown");
    }
}

Test(trace, debug_logs_each_message_the_rref_steps_and_the_shutdown_rounds, .timeout = 40)
{
    char dir[256], *logs[2];
    run_traced("debug", dir, sizeof dir, logs);
    const char *caller = logs[0], *callee = logs[1];

    /* The rpc_sync: the request both ways, the response with the call's duration. */
    EXPECT_LINE(caller, 0, " msg debug] sent request ", " to 'worker1' (rank 1), fn 'echo', ",
                " bytes");
    EXPECT_LINE(callee, 1, " msg debug] received request ", " from 'worker0' (rank 0), fn 'echo', ",
                " bytes");
    EXPECT_LINE(callee, 1, " msg debug] sent response ",
                " to 'worker0' (rank 0) answering the request, fn 'echo', ", " bytes");
    EXPECT_LINE(caller, 0, " msg debug] received response ", " from 'worker1' (rank 1) for fn "
                "'echo', ", " bytes, call took ", " ms");

    /* A call that fails: the error both ways, with the call's duration. */
    EXPECT_LINE(callee, 1, " msg debug] sent error ",
                " to 'worker0' (rank 0) answering the request, fn 'no_such_fn', ", " bytes: ");
    EXPECT_LINE(caller, 0, " msg debug] received error ", " from 'worker1' (rank 1) for fn "
                "'no_such_fn', ", " bytes, call took ", " ms: ", "no_such_fn");

    /* remote(): made here, held there, confirmed by the owner's reply. */
    EXPECT_LINE(caller, 0, " msg debug] sent remote call ", " to 'worker1' (rank 1), fn 'echo'");
    EXPECT_LINE(caller, 0, " rref debug] remote() of 'echo' on 'worker1' (rank 1): UserRRef 0:");
    EXPECT_LINE(callee, 1, " rref debug] remote call ", " from 'worker0' (rank 0): OwnerRRef 0:",
                " holds the value of 'echo'");
    EXPECT_LINE(caller, 0, " rref debug] RRef 0:", " confirmed by its owner 'worker1' (rank 1)");

    /* to_here: the fetch on both sides. */
    EXPECT_LINE(caller, 0, " msg debug] sent rref fetch ", " to 'worker1' (rank 1), fn "
                "'rref.to_here', ");
    EXPECT_LINE(callee, 1, " msg debug] received rref fetch ", " from 'worker0' (rank 0), ",
                " bytes");
    /* (the fetch may come before the remote call's value: it is then answered once it is set) */
    EXPECT_LINE(callee, 1, " rref debug] fetch ", " of RRef 0:", " from 'worker0' (rank 0) "
                "served: ");
    EXPECT_LINE(callee, 1, " msg debug] sent response ",
                " to 'worker0' (rank 0) answering the rref fetch, ", " bytes");
    EXPECT_LINE(caller, 0, " msg debug] received response ", " for fn 'rref.to_here', ",
                " bytes, call took ", " ms");
    EXPECT_LINE(caller, 0, " rref debug] to_here of RRef 0:", " from its owner 'worker1' (rank "
                "1): value fetched");

    /* Letting the RRef go: the user's deletion reaches the owner, which then drops it. */
    EXPECT_LINE(caller, 0, " rref debug] RRef 0:", " released: user delete ",
                " its owner 'worker1' (rank 1)");
    EXPECT_LINE(callee, 1, " rref debug] user delete of RRef 0:", " from 'worker0' (rank 0)");
    EXPECT_LINE(callee, 1, " rref debug] OwnerRRef 0:", " leaves the owner table");

    /* The graceful shutdown's rounds, on both ranks. */
    for (int r = 0; r < 2; r++) {
        EXPECT_LINE(logs[r], r, " rpc debug] shutdown round 0: ", " in all: ");
        EXPECT_LINE(logs[r], r, " rpc debug] shutdown round ", " 0 in all: done");
        EXPECT_LINE(logs[r], r, " rpc debug] shutdown final barrier: every worker passed");
    }
    expect_lifecycle(logs);
    remove_logs(dir, logs);
}

Test(trace, info_logs_the_lifecycle_and_nothing_per_message, .timeout = 40)
{
    char dir[256], *logs[2];
    run_traced("info", dir, sizeof dir, logs);
    expect_lifecycle(logs);
    for (int r = 0; r < 2; r++) {
        cr_expect(!strstr(logs[r], " debug] "), "rank %d's log has no debug line", r);
        cr_expect(!strstr(logs[r], " msg "), "rank %d's log has no per-message line", r);
    }
    remove_logs(dir, logs);
}

Test(trace, names_every_message_kind, .timeout = 5)
{
    static const struct {
        ferry__msg_type type;
        bool is_error;
        const char *name;
    } kinds[] = {
        {FERRY__MSG_CALL, false, "request"},
        {FERRY__MSG_RESPONSE, false, "response"},
        {FERRY__MSG_RESPONSE, true, "error"},
        {FERRY__MSG_REMOTE_CALL, false, "remote call"},
        {FERRY__MSG_RREF_FETCH, false, "rref fetch"},
        {FERRY__MSG_RREF_USER_DELETE, false, "rref user delete"},
        {FERRY__MSG_RREF_FORK_REQUEST, false, "rref fork request"},
        {FERRY__MSG_RREF_CHILD_ACCEPT, false, "rref child accept"},
        {FERRY__MSG_AUTOGRAD_BACKWARD, false, "autograd backward"},
        {FERRY__MSG_AUTOGRAD_CLEANUP, false, "autograd cleanup"},
        {FERRY__MSG_PING, false, "ping"},
        {FERRY__MSG_INVALID, false, "unknown"},
    };
    cr_expect_eq(sizeof kinds / sizeof kinds[0], FERRY__MSG_TYPE_COUNT + 1, "every kind named");
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        ferry__msg m = {.type = kinds[i].type, .is_error = kinds[i].is_error};
        cr_expect_str_eq(ferry__trace_kind(&m), kinds[i].name);
    }
}
