/* Two-host check of failure detection: rank 1 (on the other "host") dies in the middle of a
   call; rank 0 must see FERRY_ETRANSPORT within a few seconds (the heartbeat finds it, since
   pids cannot be checked across hosts), and its graceful shutdown must end instead of hanging.
   Exit status 0 on success. Run by tests/netns/run.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/ferry.h"

#define NETNS_PROG "peer_death"
#include "tests/netns/netns_util.h"

static ferry_status die(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                        void *user)
{
    _exit(0);
}

int main(void)
{
    int rank = atoi(getenv("RANK") ? getenv("RANK") : "0");
    CHECK(ferry_register_function("die", die, NULL) == FERRY_OK);
    CHECK(ferry_init_rpc(rank ? "doomed" : "survivor", -1, 0, NULL) == FERRY_OK);
    if (rank == 1) {
        pause(); /* serves until "die" ends the process */
        return 1;
    }
    ferry_value *none = ferry_list_of(0);
    double t0 = now_s();
    ferry_future *f = ferry_rpc_async("doomed", "die", none, NULL, 60);
    CHECK(f != NULL);
    CHECK(ferry_future_wait(f, 0) == FERRY_ETRANSPORT);
    double took = now_s() - t0;
    CHECK(took < 10);
    ferry_future_release(f);
    ferry_value_release(none);
    CHECK(ferry_shutdown(true, 0) == FERRY_ETRANSPORT);
    printf("peer_death: the call failed after %.1f s; shutdown ended\n", took);
    return 0;
}
