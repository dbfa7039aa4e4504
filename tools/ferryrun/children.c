/* ferryrun's children: each local rank runs in its own process group with torchrun's
   environment; its stdout and stderr come back through pipes, each line prefixed with
   "[rank] ". SIGINT and SIGTERM sent to ferryrun are passed on to those groups, so whatever a
   child starts gets them too. The first child to fail (non-zero exit or a signal) brings the
   rest down (SIGTERM, then SIGKILL after a grace period) and decides ferryrun's exit status, so
   a crashed rank never leaves the others hanging in a rendezvous. Signals reach the poll loop
   through a self-pipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "tools/ferryrun/ferryrun.h"

#define LINE_MAX_BYTES 65536
#define GRACE_S 5.0
#define DRAIN_AFTER_EXIT_S 2.0

typedef struct {
    int fd;        /* read end; -1 at EOF */
    int out_fd;    /* 1 or 2 */
    char *line;    /* the partial line so far */
    size_t len;
} stream;

typedef struct {
    int rank;
    pid_t pid; /* 0 once reaped */
    stream streams[2];
} child;

/* Written by the signal handler, read by the loop. */
static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char byte = (unsigned char)sig;
    (void)!write(signal_pipe[1], &byte, 1);
    errno = saved;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_int_env(const char *name, int v)
{
    char text[16];
    snprintf(text, sizeof text, "%d", v);
    setenv(name, text, 1);
}

/* In the child: wire up the pipes and torchrun's environment, then become the program. */
static void exec_child(const ferryrun_plan *p, int local, int out_fd, int err_fd)
{
    /* Its own process group: signals reach whatever the program starts too, and a Ctrl-C on
       the terminal reaches it once (through us), not twice. */
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    if (dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
        _exit(127);
    int rank = p->rank_offset + local;
    set_int_env("RANK", rank);
    set_int_env("WORLD_SIZE", p->world_size);
    set_int_env("LOCAL_RANK", local);
    set_int_env("LOCAL_WORLD_SIZE", p->nproc);
    set_int_env("GROUP_RANK", p->node_rank);
    set_int_env("GROUP_WORLD_SIZE", p->nnodes);
    /* One role, as torchrun's default: its ranks are the job's. */
    set_int_env("ROLE_RANK", rank);
    set_int_env("ROLE_WORLD_SIZE", p->world_size);
    setenv("ROLE_NAME", "default", 1);
    setenv("MASTER_ADDR", p->master_addr, 1);
    setenv("MASTER_PORT", p->master_port, 1);
    setenv("TORCHELASTIC_RUN_ID", p->run_id, 1);
    setenv("TORCHELASTIC_RESTART_COUNT", "0", 1);
    setenv("TORCHELASTIC_MAX_RESTARTS", "0", 1);
    setenv("FERRY_AUTH_TOKEN", p->token, 1);
    setenv("FERRY_LAUNCHER", "ferryrun", 1);
    char **argv = p->apps[0].argv;
    for (int i = 0, first = 0; i < p->n_apps; first += p->apps[i++].nproc)
        if (local >= first && local < first + p->apps[i].nproc)
            argv = p->apps[i].argv;
    execvp(argv[0], argv);
    fprintf(stderr, "ferryrun: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static bool spawn(const ferryrun_plan *p, child *c, int local)
{
    int out[2], err[2];
    c->rank = p->rank_offset + local;
    for (int s = 0; s < 2; s++) {
        c->streams[s] = (stream){.fd = -1, .line = ferry__malloc(LINE_MAX_BYTES)};
        if (!c->streams[s].line)
            return false;
    }
    if (pipe2(out, O_CLOEXEC) != 0)
        return false;
    if (pipe2(err, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        return false;
    }
    c->pid = fork();
    if (c->pid == 0)
        exec_child(p, local, out[1], err[1]);
    if (c->pid > 0)
        setpgid(c->pid, c->pid); /* also here, so signal_all never races the child's own call */
    close(out[1]);
    close(err[1]);
    if (c->pid < 0) {
        close(out[0]);
        close(err[0]);
        c->pid = 0;
        return false;
    }
    for (int s = 0; s < 2; s++) {
        c->streams[s].fd = s ? err[0] : out[0];
        c->streams[s].out_fd = s ? 2 : 1;
        fcntl(c->streams[s].fd, F_SETFL, O_NONBLOCK);
    }
    return true;
}

/* ---- output ----------------------------------------------------------------------------- */

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* our own output is gone (closed pipe): keep running the job */
        p += w;
        n -= (size_t)w;
    }
}

/* Writes "[rank] " + the buffered line + "\n" in one write, so lines of different ranks never
   interleave mid-line. */
static void emit_line(stream *s, int rank)
{
    char prefix[24];
    int plen = snprintf(prefix, sizeof prefix, "[%d] ", rank);
    char *out = ferry__malloc((size_t)plen + s->len + 1);
    if (!out) {
        write_all(s->out_fd, prefix, (size_t)plen);
        write_all(s->out_fd, s->line, s->len);
        write_all(s->out_fd, "\n", 1);
    } else {
        memcpy(out, prefix, (size_t)plen);
        memcpy(out + plen, s->line, s->len);
        out[(size_t)plen + s->len] = '\n';
        write_all(s->out_fd, out, (size_t)plen + s->len + 1);
        ferry__free(out);
    }
    s->len = 0;
}

static void take_bytes(stream *s, int rank, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n') {
            emit_line(s, rank);
            continue;
        }
        s->line[s->len++] = data[i];
        if (s->len == LINE_MAX_BYTES) /* an endless line is passed on in pieces */
            emit_line(s, rank);
    }
}

/* Reads what is there; at EOF flushes a last partial line and closes the stream. */
static void read_stream(stream *s, int rank)
{
    char data[16384];
    for (;;) {
        ssize_t n = read(s->fd, data, sizeof data);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            if (s->len)
                emit_line(s, rank);
            close(s->fd);
            s->fd = -1;
            return;
        }
        take_bytes(s, rank, data, (size_t)n);
    }
}

/* ---- supervising -------------------------------------------------------------------------- */

typedef struct {
    child *kids;
    int n;
    int exit_code;        /* of the first failure; -1 while none */
    double term_sent_at;  /* 0 until the survivors were told to stop */
    bool is_killed;       /* SIGKILL sent after the grace period */
    bool was_signaled;    /* we passed on SIGINT/SIGTERM: failures that follow are expected */
    double all_exited_at; /* 0 until every child was reaped */
} job;

static void signal_all(job *j, int sig)
{
    for (int i = 0; i < j->n; i++)
        if (j->kids[i].pid > 0)
            kill(-j->kids[i].pid, sig);
}

static void reap(job *j)
{
    int live = 0;
    for (int i = 0; i < j->n; i++) {
        child *c = &j->kids[i];
        int status;
        if (c->pid > 0 && waitpid(c->pid, &status, WNOHANG) == c->pid) {
            c->pid = 0;
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            if (code != 0 && j->exit_code < 0) {
                j->exit_code = code;
                if (!j->was_signaled)
                    fprintf(stderr, "ferryrun: rank %d %s %d; stopping the other ranks\n",
                            c->rank, WIFEXITED(status) ? "exited with status" : "was killed by signal",
                            WIFEXITED(status) ? code : code - 128);
                signal_all(j, SIGTERM);
                j->term_sent_at = now_s();
            }
        }
        live += c->pid > 0;
    }
    if (live == 0 && j->all_exited_at == 0)
        j->all_exited_at = now_s();
}

static void handle_signals(job *j)
{
    unsigned char sigs[64];
    ssize_t n = read(signal_pipe[0], sigs, sizeof sigs);
    for (ssize_t i = 0; i < n; i++)
        if (sigs[i] == SIGINT || sigs[i] == SIGTERM) {
            j->was_signaled = true;
            signal_all(j, sigs[i]);
        }
}

/* How long poll may sleep: until the grace period or the output drain runs out, else forever
   (SIGCHLD and forwarded signals wake it through the self-pipe). */
static int poll_timeout_ms(const job *j)
{
    double until = 0;
    if (j->term_sent_at && !j->is_killed)
        until = j->term_sent_at + GRACE_S;
    if (j->all_exited_at && (!until || j->all_exited_at + DRAIN_AFTER_EXIT_S < until))
        until = j->all_exited_at + DRAIN_AFTER_EXIT_S;
    if (!until)
        return -1;
    double left = until - now_s();
    return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

/* Runs until every child exited and its output was passed on. Returns the exit status. */
static int supervise(job *j)
{
    struct pollfd *pfd = ferry__calloc((size_t)(2 * j->n + 1), sizeof *pfd);
    stream **owners = ferry__calloc((size_t)(2 * j->n + 1), sizeof *owners);
    int *ranks = ferry__calloc((size_t)(2 * j->n + 1), sizeof *ranks);
    if (!pfd || !owners || !ranks) {
        fprintf(stderr, "ferryrun: out of memory\n");
        signal_all(j, SIGKILL);
        return 1;
    }
    for (;;) {
        int n = 1;
        pfd[0] = (struct pollfd){.fd = signal_pipe[0], .events = POLLIN};
        for (int i = 0; i < j->n; i++)
            for (int s = 0; s < 2; s++)
                if (j->kids[i].streams[s].fd >= 0) {
                    owners[n] = &j->kids[i].streams[s];
                    ranks[n] = j->kids[i].rank;
                    pfd[n] = (struct pollfd){.fd = owners[n]->fd, .events = POLLIN};
                    n++;
                }
        if (j->all_exited_at && (n == 1 || now_s() >= j->all_exited_at + DRAIN_AFTER_EXIT_S))
            break; /* a grandchild may hold a pipe open forever: stop waiting for it */
        if (poll(pfd, (nfds_t)n, poll_timeout_ms(j)) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents & POLLIN)
            handle_signals(j);
        for (int k = 1; k < n; k++)
            if (pfd[k].revents)
                read_stream(owners[k], ranks[k]);
        reap(j);
        if (j->term_sent_at && !j->is_killed && now_s() >= j->term_sent_at + GRACE_S) {
            signal_all(j, SIGKILL);
            j->is_killed = true;
        }
    }
    for (int i = 0; i < j->n; i++)
        for (int s = 0; s < 2; s++)
            if (j->kids[i].streams[s].len)
                emit_line(&j->kids[i].streams[s], j->kids[i].rank);
    ferry__free(pfd);
    ferry__free(owners);
    ferry__free(ranks);
    return j->exit_code < 0 ? 0 : j->exit_code;
}

static bool install_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_NOCLDSTOP};
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return false;
    sigemptyset(&sa.sa_mask);
    signal(SIGPIPE, SIG_IGN);
    return sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0 &&
           sigaction(SIGCHLD, &sa, NULL) == 0;
}

int ferryrun_run_children(const ferryrun_plan *p)
{
    if (!install_signals()) {
        fprintf(stderr, "ferryrun: cannot set up signal handling: %s\n", strerror(errno));
        return 1;
    }
    job j = {.n = p->nproc, .exit_code = -1, .kids = ferry__calloc((size_t)p->nproc, sizeof(child))};
    if (!j.kids) {
        fprintf(stderr, "ferryrun: out of memory\n");
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    for (int local = 0; local < p->nproc; local++) {
        if (!spawn(p, &j.kids[local], local)) {
            fprintf(stderr, "ferryrun: cannot start rank %d: %s\n", j.kids[local].rank,
                    strerror(errno));
            j.exit_code = 1;
            signal_all(&j, SIGTERM);
            j.term_sent_at = now_s();
            break;
        }
    }
    int rc = supervise(&j);
    for (int i = 0; i < p->nproc; i++)
        for (int s = 0; s < 2; s++)
            ferry__free(j.kids[i].streams[s].line);
    ferry__free(j.kids);
    return rc;
}
