/* launch_time: how long joining and leaving a job takes under a launcher, for
   bench/launchers.sh. Every rank joins with what its launcher set (no name, rank or world
   size), then leaves gracefully; rank 0 prints one line,
     launch_time: world=N init_s=... shutdown_s=...
   with its own wall time in ferry_init_rpc and in ferry_shutdown. Exit status 0 when both
   worked. */
#include <stdio.h>
#include <time.h>

#include "ferry/ferry.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(const char *what)
{
    fprintf(stderr, "launch_time: %s failed: %s: %s\n", what,
            ferry_strerror(ferry_last_status()), ferry_last_error());
    return 1;
}

int main(void)
{
    double t0 = now_s();
    if (ferry_init_rpc(NULL, -1, 0, NULL) != FERRY_OK)
        return fail("init_rpc");
    double t1 = now_s();
    ferry_worker_info me;
    size_t world = 0;
    if (ferry_get_worker_info(NULL, &me) != FERRY_OK ||
        ferry_get_worker_infos(NULL, 0, &world) != FERRY_OK)
        return fail("get_worker_info");
    double t2 = now_s();
    if (ferry_shutdown(true, 0) != FERRY_OK)
        return fail("shutdown");
    double t3 = now_s();
    if (me.id == 0)
        printf("launch_time: world=%zu init_s=%.4f shutdown_s=%.4f\n", world, t1 - t0, t3 - t2);
    return 0;
}
