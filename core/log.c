/* Line-oriented logging to stderr. */
#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The level is read once (pthread_once) and then only read. The worker name is guarded by
   name_lock; it is set at init and cleared at shutdown. */
static pthread_once_t level_once = PTHREAD_ONCE_INIT;
static atomic_int level = FERRY_LOG_WARN;
static pthread_mutex_t name_lock = PTHREAD_MUTEX_INITIALIZER;
static char worker_name[128];

static void read_level(void)
{
    const char *s = getenv("FERRY_LOG");
    int l = FERRY_LOG_WARN;
    if (s) {
        if (!strcasecmp(s, "error"))
            l = FERRY_LOG_ERROR;
        else if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning"))
            l = FERRY_LOG_WARN;
        else if (!strcasecmp(s, "info"))
            l = FERRY_LOG_INFO;
        else if (!strcasecmp(s, "debug"))
            l = FERRY_LOG_DEBUG;
    }
    atomic_store(&level, l);
}

ferry__log_level ferry__log_level_get(void)
{
    pthread_once(&level_once, read_level);
    return (ferry__log_level)atomic_load_explicit(&level, memory_order_relaxed);
}

void ferry__log_set_worker(const char *name)
{
    pthread_mutex_lock(&name_lock);
    snprintf(worker_name, sizeof worker_name, "%s", name ? name : "");
    pthread_mutex_unlock(&name_lock);
}

void ferry__log_write(ferry__log_level lvl, const char *module, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char msg[1024], name[128];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&name_lock);
    memcpy(name, worker_name, sizeof name);
    pthread_mutex_unlock(&name_lock);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "[ferry %02d:%02d:%02d.%06ld pid %d tid %ld %s%s%s %s] %s\n", tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, (int)getpid(), (long)syscall(SYS_gettid),
            name[0] ? name : "-", " ", module, names[lvl], msg);
}
