/* Liveness of peers: how an unreachable worker becomes known, what that does, and how it comes
   back. Two kinds of evidence, kept apart:
   - A peer is dead for good when the transport says a send to it failed, or when its process is
     known gone: same-host peers are watched by pid a few times a second (shm sends to a dead
     process do not fail), through a pidfd where the kernel has them, which also sees a zombie
     (exited, not yet reaped) as gone; else /proc/<pid>/stat (state Z or X, or no entry).
   - A peer is silent when it leaves heartbeats unanswered for heartbeat_misses periods. While a
     call to a peer on another host has waited a period or more, the peer gets a small ping
     every period (heartbeat_period_s); pings are answered where they are read, never queued
     behind the peer's functions, so a live peer answers in milliseconds however busy its pool
     is. A same-host peer is not pinged (on a crowded machine a slow answer is not news; its pid
     says more): it is silent when /proc shows it stopped (SIGSTOP, a debugger) for as long.
     Being silent is a suspicion: the peer's waiting calls fail with FERRY_ETRANSPORT and new
     calls to it fail at once, but the checks go on, and the first ping it answers (or /proc
     showing it running) brings it back: a stopped process that gets SIGCONT.
   A miss is not counted against a peer when this process itself was stalled (stopped, starved)
   while the ping waited: its progress thread's ticks show the gap. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "rpc/agent_impl.h"

#define LIVENESS_PERIOD_NS 250000000LL
#define DEFAULT_PERIOD_S 1.0
#define DEFAULT_MISSES 3
#define MAX_PERIOD_S 3600.0
#define MAX_MISSES 1000
/* The shortest gap between two progress-thread ticks taken for a stall of this process. */
#define MIN_STALL_NS 100000000LL
#define PING_FN "heartbeat"

typedef struct {
    ferry__agent *agent;
    int peer;
    long long sent_ns;
} ping_ctx;

/* ---- options ---- */

static ferry_status read_env_double(const char *var, double lo, double hi, double *out)
{
    const char *s = getenv(var);
    if (!s || !*s)
        return FERRY_OK;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= lo && v <= hi))
        return ferry__fail(FERRY_EINVAL, "%s must be a number from %g to %g, got '%s'", var, lo,
                           hi, s);
    *out = v;
    return FERRY_OK;
}

static ferry_status read_env_int(const char *var, long lo, long hi, int *out)
{
    const char *s = getenv(var);
    if (!s || !*s)
        return FERRY_OK;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return ferry__fail(FERRY_EINVAL, "%s must be an integer from %ld to %ld, got '%s'", var,
                           lo, hi, s);
    *out = (int)v;
    return FERRY_OK;
}

ferry_status ferry__agent_liveness_init(ferry__agent *a, const ferry_rpc_options *o)
{
    double period = o->heartbeat_period_s;
    int misses = o->heartbeat_misses;
    if (!(period >= 0 && period <= MAX_PERIOD_S))
        return ferry__fail(FERRY_EINVAL, "heartbeat_period_s must be from 0 (off) to %g s, got %g",
                           MAX_PERIOD_S, period);
    if (misses < 1 || misses > MAX_MISSES)
        return ferry__fail(FERRY_EINVAL, "heartbeat_misses must be from 1 to %d, got %d",
                           MAX_MISSES, misses);
    ferry_status rc = read_env_double("FERRY_HEARTBEAT_PERIOD_S", 0, MAX_PERIOD_S, &period);
    if (rc == FERRY_OK)
        rc = read_env_int("FERRY_HEARTBEAT_MISSES", 1, MAX_MISSES, &misses);
    if (rc != FERRY_OK)
        return rc;
    a->heartbeat_period_ns = (long long)(period * 1e9);
    a->heartbeat_misses = misses;
    atomic_init(&a->stall_end_ns, 0);
    return FERRY_OK;
}

void ferry__agent_liveness_free(ferry__agent *a)
{
    for (int i = 0; a->workers && i < a->world_size; i++) {
        ferry__worker *w = &a->workers[i];
        if (w->pidfd_tried && w->pidfd >= 0)
            close(w->pidfd);
        w->pidfd = -1;
    }
}

bool ferry__agent_peer_unreachable(ferry__agent *a, int peer)
{
    ferry__worker *w = &a->workers[peer];
    return atomic_load(&w->dead) || atomic_load(&w->silent);
}

/* ---- heartbeat ---- */

/* Rank 0 serves a TCP rendezvous store: losing it also ends what needs the store (the
   graceful shutdown), so its messages say so. */
const char *ferry__agent_peer_role(const ferry__agent *a, int peer)
{
    return peer == 0 && a->rank != 0 && a->rank0_hosts_store ? ", which hosts the rendezvous store"
                                                              : "";
}

static double miss_window_s(const ferry__agent *a)
{
    return a->heartbeat_misses * (a->heartbeat_period_ns / 1e9);
}

static void go_silent(ferry__agent *a, int peer, long long sent_ns)
{
    ferry__worker *w = &a->workers[peer];
    if (atomic_load(&w->dead))
        return;
    char msg[512];
    snprintf(msg, sizeof msg,
             "worker '%s' (rank %d%s) is unreachable: it did not answer a heartbeat within %.1f s",
             w->name, peer, ferry__agent_peer_role(a, peer), miss_window_s(a));
    if (!atomic_exchange(&w->silent, true)) {
        atomic_store(&w->silent_since_ns, sent_ns);
        ferry__log_warn("rpc", "%s; calls to it fail until it answers again", msg);
    }
    ferry__agent_fail_calls_to(a, peer, FERRY_ETRANSPORT, msg);
    ferry__agent_hooks_peer_lost(a, peer, false, msg);
}

static void answered(ferry__agent *a, int peer, long long sent_ns)
{
    ferry__worker *w = &a->workers[peer];
    /* The newest answered ping: an older one timing out afterwards is no news. */
    long long seen = atomic_load(&w->answered_sent_ns);
    while (seen < sent_ns && !atomic_compare_exchange_weak(&w->answered_sent_ns, &seen, sent_ns))
        ;
    if (atomic_exchange(&w->silent, false))
        ferry__log_warn("rpc", "worker '%s' (rank %d) answers again after %.1f s of silence",
                        w->name, peer, (ferry__now_ns() - atomic_load(&w->silent_since_ns)) / 1e9);
}

static void ping_done(ferry_future *f, void *arg)
{
    ping_ctx *p = arg;
    ferry__agent *a = p->agent;
    ferry_status rc = ferry_future_status(f);
    if (rc == FERRY_ETIMEDOUT) {
        /* Our own stall while it waited (SIGSTOP, starvation) is not the peer's miss. */
        if (p->sent_ns > atomic_load(&a->stall_end_ns) &&
            p->sent_ns > atomic_load(&a->workers[p->peer].answered_sent_ns))
            go_silent(a, p->peer, p->sent_ns);
    } else if (rc != FERRY_ETRANSPORT && rc != FERRY_ESHUTDOWN) {
        answered(a, p->peer, p->sent_ns); /* any answer, even an error, is a live peer */
    }
    atomic_fetch_sub(&a->pings_in_flight, 1);
    ferry__agent_release(a);
    ferry__free(p);
}

static void ping(ferry__agent *a, int peer, long long now_ns)
{
    ping_ctx *p = ferry__malloc(sizeof *p);
    if (!p)
        return;
    ferry__msg m = {.type = FERRY__MSG_PING, .fn = PING_FN};
    atomic_fetch_add(&a->pings_in_flight, 1);
    ferry_future *f = ferry__agent_request(a, peer, &m, miss_window_s(a));
    if (!f) {
        atomic_fetch_sub(&a->pings_in_flight, 1);
        ferry__free(p);
        return;
    }
    ferry__ref_inc(&a->ref);
    *p = (ping_ctx){a, peer, now_ns};
    if (ferry__future_on_done(f, ping_done, p) != FERRY_OK)
        ping_done(f, p);
    ferry_future_release(f);
}

/* Same-host peers: stopped (T, or t: stopped by a tracer) per /proc, for the miss window in a
   row, makes it silent; running again brings it back. Progress thread only. */
static void check_stopped(ferry__agent *a, int peer, long long now_ns)
{
    ferry__worker *w = &a->workers[peer];
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", w->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return; /* gone: check_pids says so */
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    bool stopped = paren && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
    if (!stopped) {
        w->stopped_since_ns = 0;
        answered(a, peer, now_ns);
    } else if (!w->stopped_since_ns) {
        w->stopped_since_ns = now_ns;
    } else if (now_ns - w->stopped_since_ns >= a->heartbeat_misses * a->heartbeat_period_ns) {
        go_silent(a, peer, w->stopped_since_ns);
    }
}

/* Marks in `want` the peers some call (not a ping) has waited on for a period or more. */
static void old_calls(ferry__agent *a, long long now_ns, uint8_t *want)
{
    pthread_mutex_lock(&a->lock);
    if (a->pending_len > (size_t)atomic_load(&a->pings_in_flight)) {
        for (size_t b = 0; b < a->pending_cap; b++) {
            for (ferry__pending *p = a->pending[b]; p; p = p->next) {
                if (now_ns - p->start_ns >= a->heartbeat_period_ns && !want[p->dst] &&
                    strcmp(p->fn, PING_FN) != 0) {
                    want[p->dst] = 1;
                }
            }
        }
    }
    pthread_mutex_unlock(&a->lock);
}

void ferry__agent_ping_peers(ferry__agent *a, long long now_ns, bool all)
{
    long long period = a->heartbeat_period_ns;
    if (!period || atomic_load(&a->state) != FERRY__AGENT_RUNNING)
        return;
    uint8_t small[64], *want = NULL;
    if (!all) {
        /* The tick comes every 10 ms; the pending table is walked four times a period. */
        if (now_ns - a->last_ping_scan_ns < period / 4)
            return;
        a->last_ping_scan_ns = now_ns;
        want = a->world_size <= 64 ? memset(small, 0, sizeof small)
                                   : ferry__calloc((size_t)a->world_size, 1);
        if (!want)
            return;
        old_calls(a, now_ns, want);
    }
    for (int i = 0; i < a->world_size; i++) {
        ferry__worker *w = &a->workers[i];
        if (i == a->rank || atomic_load(&w->dead))
            continue;
        if (!all && !want[i] && !atomic_load(&w->silent))
            continue;
        if (w->same_host && all)
            continue; /* the shutdown rounds: check_pids watches same-host peers */
        long long last = atomic_load(&w->last_ping_ns);
        if (now_ns - last < period ||
            !atomic_compare_exchange_strong(&w->last_ping_ns, &last, now_ns))
            continue;
        if (w->same_host)
            check_stopped(a, i, now_ns);
        else
            ping(a, i, now_ns);
    }
    if (want != small)
        ferry__free(want);
}

ferry_status ferry__agent_ping_handler(ferry__agent *a, int src, ferry__msg *m,
                                       ferry_value **result, void *ctx)
{
    *result = NULL;
    return FERRY_OK;
}

/* ---- same-host peers: by pid ---- */

/* /proc's view, where there are no pidfds: no entry, or a zombie (Z) or dead (X) entry. */
static bool proc_says_gone(int pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return kill(pid, 0) != 0 && errno == ESRCH;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the command name may hold spaces and parens */
    return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

static bool process_gone(ferry__worker *w)
{
    if (!w->pidfd_tried) {
        w->pidfd_tried = true;
        w->pidfd = -1;
#ifdef SYS_pidfd_open
        w->pidfd = (int)syscall(SYS_pidfd_open, w->pid, 0);
        if (w->pidfd < 0 && errno == ESRCH)
            return true;
#endif
    }
    if (w->pidfd >= 0) {
        /* A pidfd turns readable once its process has exited, reaped or not. */
        struct pollfd p = {.fd = w->pidfd, .events = POLLIN};
        return poll(&p, 1, 0) > 0;
    }
    return proc_says_gone(w->pid);
}

static void check_pids(ferry__agent *a, long long now_ns)
{
    if (now_ns - a->last_liveness_ns < LIVENESS_PERIOD_NS)
        return;
    a->last_liveness_ns = now_ns;
    for (int i = 0; i < a->world_size; i++) {
        ferry__worker *w = &a->workers[i];
        if (w->same_host && !atomic_load(&w->dead) && process_gone(w))
            ferry__agent_on_peer_error(a, i, FERRY_ETRANSPORT, "its process exited");
    }
}

void ferry__agent_on_tick(void *ctx, long long now_ns)
{
    ferry__agent *a = ctx;
    long long stall = a->heartbeat_period_ns > MIN_STALL_NS ? a->heartbeat_period_ns
                                                            : MIN_STALL_NS;
    if (a->last_tick_ns && now_ns - a->last_tick_ns > stall)
        atomic_store(&a->stall_end_ns, now_ns);
    a->last_tick_ns = now_ns;
    check_pids(a, now_ns);
    ferry__agent_ping_peers(a, now_ns, false);
    ferry__agent_expire_calls(a, now_ns);
    ferry__agent_expire_later(a, now_ns);
    if (a->hooks.n_tick)
        ferry__agent_hooks_tick(a, now_ns);
}

void ferry__agent_on_peer_error(void *ctx, int peer, ferry_status rc, const char *why)
{
    ferry__agent *a = ctx;
    if (peer < 0 || peer >= a->world_size)
        return;
    char msg[512];
    snprintf(msg, sizeof msg, "worker '%s' (rank %d%s) is unreachable: %s",
             a->workers[peer].name, peer, ferry__agent_peer_role(a, peer), why);
    if (!atomic_exchange(&a->workers[peer].dead, true))
        ferry__log_warn("rpc", "%s", msg);
    ferry__agent_fail_calls_to(a, peer, rc == FERRY_ESHUTDOWN ? FERRY_ESHUTDOWN : FERRY_ETRANSPORT,
                               msg);
    ferry__agent_hooks_peer_lost(a, peer, true, msg);
}
