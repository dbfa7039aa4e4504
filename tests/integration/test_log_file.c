/* FERRY_LOG_FILE: each rank's log lines go to its own file from init to shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_harness.h"

static int body_log(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        ferry_value *a = ferry_args(1, ferry_int(5));
        ferry_value *v = ferry_rpc_sync("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v && ferry_value_as_int(v) == 5);
        ferry_value_release(v);
        ferry_value_release(a);
    }
    return 0;
}

static bool file_has(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

static void run_with_log_file(const char *transport)
{
    char dir[256], pattern[300], path[320], want[64];
    ferry_test_mkdtemp(dir, sizeof dir, "ferry-log");
    snprintf(pattern, sizeof pattern, "%s/rank-%%r.log", dir);
    setenv("FERRY_LOG", "info", 1);
    setenv("FERRY_LOG_FILE", pattern, 1);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    rpc_case_run(transport, 2, body_log, NULL, 30);
    for (int r = 0; r < 2; r++) {
        snprintf(path, sizeof path, "%s/rank-%d.log", dir, r);
        snprintf(want, sizeof want, "is rank %d of 2", r);
        cr_expect(file_has(path, want), "%s holds the rank's own lines (\"%s\")", path, want);
        snprintf(want, sizeof want, "is rank %d of 2", 1 - r);
        cr_expect(!file_has(path, want), "%s holds no other rank's lines", path);
        remove(path);
    }
    remove(dir);
}

Test(log_file, each_rank_logs_to_its_own_file_when_ferry_log_file_is_set, .timeout = 40)
{
    run_with_log_file("shm");
}
