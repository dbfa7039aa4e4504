/* The registry of side channels (rpc/device_channel.h): channels register from constructors,
   a pick takes the first usable one in registration order, and FERRY_DEVICE_PATH can turn them
   off or ask for one by name. A forced channel that cannot carry a tensor is an error, never a
   quiet fall back to another path: whoever forced it wants to know. */
#include "rpc/device_channel.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ferry/device.h"

#define MAX_CHANNELS 7 /* wire ids 1..7 */

/* Written by constructors only, before main; read-only afterwards. */
static const ferry__device_channel *channels[MAX_CHANNELS];
static int n_channels;

typedef enum { PATH_AUTO, PATH_OFF, PATH_NAMED, PATH_BAD } path_mode;

/* FERRY_DEVICE_PATH, read once (guarded by path_once). */
static pthread_once_t path_once = PTHREAD_ONCE_INIT;
static path_mode mode;
static const char *forced_channel; /* PATH_NAMED: the channel's name */
static char path_value[32];        /* PATH_NAMED, PATH_BAD: the value as given (cut) */

void ferry__device_channel_register(const ferry__device_channel *channel)
{
    if (n_channels < MAX_CHANNELS)
        channels[n_channels++] = channel;
}

static void read_path(void)
{
    const char *v = getenv("FERRY_DEVICE_PATH");
    if (!v || !*v || strcmp(v, "auto") == 0) {
        mode = PATH_AUTO;
        return;
    }
    strncpy(path_value, v, sizeof path_value - 1);
    if (strcmp(v, "staged") == 0 || strcmp(v, "direct") == 0) {
        mode = PATH_OFF;
    } else if (strcmp(v, "nccl") == 0) {
        mode = PATH_NAMED;
        forced_channel = "nccl";
    } else if (strcmp(v, "p2p") == 0) {
        mode = PATH_NAMED;
        forced_channel = "emulated-p2p";
    } else {
        mode = PATH_BAD;
    }
}

static const ferry__device_channel *by_name(const char *name)
{
    for (int i = 0; i < n_channels; i++)
        if (strcmp(channels[i]->name, name) == 0)
            return channels[i];
    return NULL;
}

static ferry_status forced_unusable(ferry__agent *agent, int peer, ferry_device local,
                                    ferry_device remote, const ferry__device_channel *c)
{
    char from[32], to[32];
    ferry_device_format(local, from, sizeof from);
    ferry_device_format(remote, to, sizeof to);
    const char *who = ferry__agent_worker_name(agent, peer);
    return ferry__fail(FERRY_ENOTSUP,
                       "FERRY_DEVICE_PATH=%s: the %s channel cannot carry a tensor from %s on "
                       "worker '%s' to %s on worker '%s' (it needs %s)",
                       path_value, forced_channel, from, ferry__agent_name(agent), to,
                       who ? who : "?", c ? c->needs : "a build with it");
}

ferry_status ferry__device_channel_choose(ferry__agent *agent, int peer, ferry_device local,
                                          ferry_device remote,
                                          const ferry__device_channel **out)
{
    pthread_once(&path_once, read_path);
    *out = NULL;
    if (mode == PATH_BAD)
        return ferry__fail(FERRY_EINVAL, "FERRY_DEVICE_PATH='%s' names no transfer path (auto, "
                           "staged, direct, p2p or nccl)", path_value);
    if (mode == PATH_OFF || local.type != FERRY_CUDA || remote.type != FERRY_CUDA)
        return FERRY_OK;
    if (mode == PATH_NAMED) {
        const ferry__device_channel *c = by_name(forced_channel);
        if (!c || !c->usable(agent, peer, local, remote))
            return forced_unusable(agent, peer, local, remote, c);
        *out = c;
        return FERRY_OK;
    }
    for (int i = 0; i < n_channels; i++) {
        if (channels[i]->usable(agent, peer, local, remote)) {
            *out = channels[i];
            return FERRY_OK;
        }
    }
    return FERRY_OK;
}

const ferry__device_channel *ferry__device_channel_pick(ferry__agent *agent, int peer,
                                                        ferry_device local, ferry_device remote)
{
    const ferry__device_channel *c = NULL;
    ferry_status rc = ferry__device_channel_choose(agent, peer, local, remote, &c);
    if (rc == FERRY_OK)
        ferry__status_clear();
    return c;
}

const ferry__device_channel *ferry__device_channel_by_id(uint32_t id)
{
    for (int i = 0; i < n_channels; i++)
        if (channels[i]->id == id)
            return channels[i];
    return NULL;
}
