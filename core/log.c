/* Line-oriented logging to stderr, or to a file per rank (FERRY_LOG_FILE). */
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The level is read once (pthread_once) into ferry__log_level_now and then only read. The
   worker name and the rank's log file are guarded by name_lock; they are set at init and
   cleared at shutdown. */
static pthread_once_t level_once = PTHREAD_ONCE_INIT;
_Atomic int ferry__log_level_now = FERRY__LOG_UNREAD;
static pthread_mutex_t name_lock = PTHREAD_MUTEX_INITIALIZER;
static char worker_name[128];
static FILE *log_file; /* this rank's FERRY_LOG_FILE, or NULL: stderr */

static void read_level(void)
{
    const char *s = getenv("FERRY_LOG");
    int l = FERRY_LOG_WARN;
    if (s && *s) {
        if (!strcasecmp(s, "error"))
            l = FERRY_LOG_ERROR;
        else if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning"))
            l = FERRY_LOG_WARN;
        else if (!strcasecmp(s, "info"))
            l = FERRY_LOG_INFO;
        else if (!strcasecmp(s, "debug"))
            l = FERRY_LOG_DEBUG;
        else
            fprintf(stderr, "[ferry] ignoring FERRY_LOG=%s: the levels are error, warn, info "
                    "and debug; logging at warn\n", s);
    }
    atomic_store(&ferry__log_level_now, l);
}

size_t ferry__log_file_name(const char *pattern, int rank, char *out, size_t cap)
{
    size_t n = 0;
    bool has_rank = false;
    char num[16];
    for (const char *p = pattern; *p; p++) {
        const char *piece = NULL;
        size_t len = 1;
        if (p[0] == '%' && p[1] == 'r') {
            snprintf(num, sizeof num, "%d", rank);
            piece = num;
            has_rank = true;
        } else if (p[0] == '%' && p[1] == 'p') {
            snprintf(num, sizeof num, "%d", (int)getpid());
            piece = num;
        } else if (p[0] == '%' && p[1] == '%') {
            piece = "%";
        }
        if (piece) {
            len = strlen(piece);
            p++;
        } else {
            piece = p;
        }
        for (size_t i = 0; i < len; i++, n++)
            if (n + 1 < cap)
                out[n] = piece[i];
    }
    if (!has_rank) { /* ranks never share a file */
        snprintf(num, sizeof num, ".%d", rank);
        for (size_t i = 0; num[i]; i++, n++)
            if (n + 1 < cap)
                out[n] = num[i];
    }
    if (cap)
        out[n < cap ? n : cap - 1] = '\0';
    return n;
}

/* Opens this rank's FERRY_LOG_FILE (name_lock held); says on stderr, once, when it cannot. */
static void open_log_file(int rank)
{
    const char *pattern = getenv("FERRY_LOG_FILE");
    if (!pattern || !*pattern || rank < 0)
        return;
    char path[4096];
    if (ferry__log_file_name(pattern, rank, path, sizeof path) >= sizeof path) {
        fprintf(stderr, "[ferry] FERRY_LOG_FILE=%s is too long; logging to stderr\n", pattern);
        return;
    }
    log_file = fopen(path, "ae");
    if (!log_file) {
        fprintf(stderr, "[ferry] cannot open FERRY_LOG_FILE %s (%s); logging to stderr\n", path,
                strerror(errno));
        return;
    }
    setvbuf(log_file, NULL, _IOLBF, 0);
}

ferry__log_level ferry__log_level_read(void)
{
    if (atomic_load_explicit(&ferry__log_level_now, memory_order_acquire) == FERRY__LOG_UNREAD)
        pthread_once(&level_once, read_level);
    return (ferry__log_level)atomic_load_explicit(&ferry__log_level_now, memory_order_acquire);
}

void ferry__log_set_worker(const char *name, int rank)
{
    pthread_mutex_lock(&name_lock);
    snprintf(worker_name, sizeof worker_name, "%s", name ? name : "");
    if (log_file) {
        fclose(log_file);
        log_file = NULL;
    }
    if (name)
        open_log_file(rank);
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
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    /* The file is written under the lock, so shutdown never closes it under a writer. */
    pthread_mutex_lock(&name_lock);
    memcpy(name, worker_name, sizeof name);
    fprintf(log_file ? log_file : stderr, "[ferry %02d:%02d:%02d.%06ld pid %d tid %ld %s%s%s %s] "
            "%s\n", tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, (int)getpid(),
            (long)syscall(SYS_gettid), name[0] ? name : "-", " ", module, names[lvl], msg);
    pthread_mutex_unlock(&name_lock);
}
