/* ferryrun: starts N local copies of a program as ranks of one ferry job, the way torchrun does
   for PyTorch. Each child gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
   MASTER_PORT and FERRY_AUTH_TOKEN; its stdout and stderr come back through pipes, each line
   prefixed with "[rank] ". Each child runs in its own process group, and SIGINT and SIGTERM are
   passed on to those groups, so whatever a child starts gets them too. The first child to fail
   (non-zero exit or a signal) brings the rest down (SIGTERM, then SIGKILL after a grace period)
   and decides ferryrun's exit status, so a crashed rank never leaves the others hanging in a
   rendezvous. Only libc is needed; signals reach the poll loop through a self-pipe. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

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

typedef struct {
    int nproc, nnodes, node_rank;
    const char *master_addr, *master_port;
    char **argv;
} options;

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

static void usage(FILE *to)
{
    fprintf(to,
            "usage: ferryrun -n N [--master-addr A] [--master-port P] [--nnodes K --node-rank R]\n"
            "                [--] program [args...]\n"
            "\n"
            "Starts N local processes of one ferry job and prefixes their output with \"[rank] \".\n"
            "  -n, --nproc-per-node N  processes on this node\n"
            "  --master-addr A         address of rank 0's store (default: $MASTER_ADDR or 127.0.0.1)\n"
            "  --master-port P         its port (default: $MASTER_PORT or a free port; required\n"
            "                          with --nnodes > 1)\n"
            "  --nnodes K              nodes in the job (default 1)\n"
            "  --node-rank R           this node's index, 0..K-1 (default 0)\n"
            "  -h, --help              this text\n"
            "Children get RANK = R*N + local rank, WORLD_SIZE = K*N, LOCAL_RANK, LOCAL_WORLD_SIZE,\n"
            "MASTER_ADDR, MASTER_PORT and FERRY_AUTH_TOKEN (random unless set; set it to the same\n"
            "value on every node when --nnodes > 1). Exit status: 0 when all succeed, else that\n"
            "of the first rank that failed (128 + signal when it was killed).\n");
}

static bool parse_count(const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < lo || v > 1000000)
        return false;
    *out = (int)v;
    return true;
}

/* 0 ok, 1 help printed, -1 bad usage (message printed). */
static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.nproc = 0, .nnodes = 1, .node_rank = 0};
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        const char *a = argv[i++], *v = i < argc ? argv[i] : NULL;
        bool is_ok = true;
        if (!strcmp(a, "--"))
            break;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return usage(stdout), 1;
        if (!strcmp(a, "-n") || !strcmp(a, "--nproc-per-node"))
            is_ok = parse_count(v, 1, &o->nproc);
        else if (!strcmp(a, "--nnodes"))
            is_ok = parse_count(v, 1, &o->nnodes);
        else if (!strcmp(a, "--node-rank"))
            is_ok = parse_count(v, 0, &o->node_rank);
        else if (!strcmp(a, "--master-addr"))
            is_ok = (o->master_addr = v) != NULL;
        else if (!strcmp(a, "--master-port"))
            is_ok = (o->master_port = v) != NULL;
        else
            return fprintf(stderr, "ferryrun: unknown option %s (see --help)\n", a), -1;
        if (!is_ok)
            return fprintf(stderr, "ferryrun: %s needs a valid value (see --help)\n", a), -1;
        i++; /* the value */
    }
    if (i >= argc)
        return fprintf(stderr, "ferryrun: no program given (see --help)\n"), -1;
    if (o->nproc < 1)
        return fprintf(stderr, "ferryrun: -n N is required (see --help)\n"), -1;
    if (o->node_rank >= o->nnodes)
        return fprintf(stderr, "ferryrun: --node-rank must be below --nnodes\n"), -1;
    o->argv = argv + i;
    return 0;
}

/* A port that was free on addr a moment ago (the kernel picks it). */
static bool pick_free_port(const char *addr, char *out, size_t len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    if (getaddrinfo(addr, "0", &hints, &res) != 0)
        return false;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof ss;
    bool is_ok = fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0 &&
                 getsockname(fd, (struct sockaddr *)&ss, &ss_len) == 0;
    freeaddrinfo(res);
    if (fd >= 0)
        close(fd);
    if (!is_ok)
        return false;
    int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(out, len, "%d", port);
    return true;
}

static bool random_token(char *hex, size_t len)
{
    unsigned char raw[32];
    if (len < 2 * sizeof raw + 1 || getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return false;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    return true;
}

static void set_int_env(const char *name, int v)
{
    char text[16];
    snprintf(text, sizeof text, "%d", v);
    setenv(name, text, 1);
}

/* In the child: wire up the pipes and the environment, then become the program. */
static void exec_child(const options *o, int local, int out_fd, int err_fd, const char *port,
                       const char *token)
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
    set_int_env("RANK", o->node_rank * o->nproc + local);
    set_int_env("WORLD_SIZE", o->nnodes * o->nproc);
    set_int_env("LOCAL_RANK", local);
    set_int_env("LOCAL_WORLD_SIZE", o->nproc);
    setenv("MASTER_ADDR", o->master_addr, 1);
    setenv("MASTER_PORT", port, 1);
    setenv("FERRY_AUTH_TOKEN", token, 1);
    execvp(o->argv[0], o->argv);
    fprintf(stderr, "ferryrun: cannot run %s: %s\n", o->argv[0], strerror(errno));
    _exit(127);
}

static bool spawn(const options *o, child *c, int local, const char *port, const char *token)
{
    int out[2], err[2];
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
    c->rank = o->node_rank * o->nproc + local;
    c->pid = fork();
    if (c->pid == 0)
        exec_child(o, local, out[1], err[1], port, token);
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

/* Fills master address and port and the token from options, the environment or defaults. */
static int resolve_job(options *o, char *port, size_t port_len, char *token, size_t token_len)
{
    const char *env_token = getenv("FERRY_AUTH_TOKEN");
    if (!o->master_addr)
        o->master_addr = getenv("MASTER_ADDR") ? getenv("MASTER_ADDR") : "127.0.0.1";
    if (!o->master_port)
        o->master_port = getenv("MASTER_PORT");
    if (!o->master_port && o->nnodes > 1)
        return fprintf(stderr, "ferryrun: --nnodes > 1 needs --master-port (or MASTER_PORT)\n"), -1;
    if (!o->master_port && !pick_free_port(o->master_addr, port, port_len))
        return fprintf(stderr, "ferryrun: no free port on %s\n", o->master_addr), -1;
    if (o->master_port)
        snprintf(port, port_len, "%s", o->master_port);
    if (env_token && !*env_token)
        return fprintf(stderr, "ferryrun: FERRY_AUTH_TOKEN is empty; unset it (ferryrun makes "
                               "one) or set it to a shared secret\n"),
               -1;
    if (!env_token && o->nnodes > 1)
        return fprintf(stderr, "ferryrun: --nnodes > 1 needs FERRY_AUTH_TOKEN set to the same "
                               "value on every node\n"),
               -1;
    if (env_token)
        snprintf(token, token_len, "%s", env_token);
    else if (!random_token(token, token_len))
        return fprintf(stderr, "ferryrun: getrandom failed: %s\n", strerror(errno)), -1;
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    char port[16], token[512];
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (resolve_job(&o, port, sizeof port, token, sizeof token) != 0)
        return 2;
    if (!install_signals()) {
        fprintf(stderr, "ferryrun: cannot set up signal handling: %s\n", strerror(errno));
        return 1;
    }
    job j = {.n = o.nproc, .exit_code = -1, .kids = ferry__calloc((size_t)o.nproc, sizeof(child))};
    if (!j.kids) {
        fprintf(stderr, "ferryrun: out of memory\n");
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    for (int local = 0; local < o.nproc; local++) {
        if (!spawn(&o, &j.kids[local], local, port, token)) {
            fprintf(stderr, "ferryrun: cannot start rank %d: %s\n", j.kids[local].rank,
                    strerror(errno));
            j.exit_code = 1;
            signal_all(&j, SIGTERM);
            j.term_sent_at = now_s();
            break;
        }
    }
    rc = supervise(&j);
    for (int i = 0; i < o.nproc; i++)
        for (int s = 0; s < 2; s++)
            ferry__free(j.kids[i].streams[s].line);
    ferry__free(j.kids);
    return rc;
}
