/* ferryrun's command line: its own flags and torchrun's spellings of them (dashes or
   underscores, "--flag value" or "--flag=value"), checked up front so that a job never starts
   half-configured. A bad flag or value is named and exits 2. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/ferryrun/ferryrun.h"

#define NAME_MAX_BYTES 32

typedef enum {
    OPT_NPROC,
    OPT_NNODES,
    OPT_NODE_RANK,
    OPT_MASTER_ADDR,
    OPT_MASTER_PORT,
    OPT_ENDPOINT,
    OPT_RUN_ID,
    OPT_BACKEND,
    OPT_MAX_RESTARTS,
    OPT_RDZV_TIMEOUT,
    OPT_STANDALONE,
    OPT_CHECK,
    OPT_NO_PYTHON,
    OPT_HELP,
} opt_id;

typedef struct {
    const char *name; /* with dashes; "--x_y" is read as "--x-y" */
    opt_id id;
    bool takes_value;
} opt_spec;

static const opt_spec specs[] = {
    {"-n", OPT_NPROC, true},
    {"--nproc-per-node", OPT_NPROC, true},
    {"--nnodes", OPT_NNODES, true},
    {"--node-rank", OPT_NODE_RANK, true},
    {"--master-addr", OPT_MASTER_ADDR, true},
    {"--master-port", OPT_MASTER_PORT, true},
    {"--rdzv-endpoint", OPT_ENDPOINT, true},
    {"--rdzv-id", OPT_RUN_ID, true},
    {"--rdzv-backend", OPT_BACKEND, true},
    {"--max-restarts", OPT_MAX_RESTARTS, true},
    {"--rdzv-timeout", OPT_RDZV_TIMEOUT, true},
    {"--standalone", OPT_STANDALONE, false},
    {"--check", OPT_CHECK, false},
    {"--no-python", OPT_NO_PYTHON, false},
    {"-h", OPT_HELP, false},
    {"--help", OPT_HELP, false},
};
static const size_t n_specs = sizeof specs / sizeof specs[0];

static void usage(FILE *to)
{
    fprintf(to,
            "usage: ferryrun [options] [--] program [args...] [: -n N program2 [args...]]...\n"
            "       ferryrun --check\n"
            "\n"
            "Starts the processes of one ferry job on this node; their output comes back with\n"
            "\"[rank] \" in front of each line. torchrun's flag spellings work too (dashes or\n"
            "underscores, \"--flag value\" or \"--flag=value\").\n"
            "  -n, --nproc-per-node N    processes on this node (auto or cpu: one per online CPU)\n"
            "  --nnodes K                nodes in the job (default 1; MIN:MAX only with MIN == MAX)\n"
            "  --node-rank R             this node's index, 0..K-1 (default 0)\n"
            "  --rdzv-endpoint H[:P]     where the nodes meet: node 0 serves it (port 29400 unless\n"
            "                            given; [v6addr]:port for IPv6)\n"
            "  --rdzv-id ID              the job's name, part of its token (default none)\n"
            "  --rdzv-backend B          c10d (nodes meet at the endpoint) or static (fixed ranks\n"
            "                            from --node-rank, no node rendezvous)\n"
            "  --rdzv-timeout S          seconds a node waits for the others (default 600)\n"
            "  --master-addr A           address of rank 0's store (default: the endpoint's host,\n"
            "                            else $MASTER_ADDR, else 127.0.0.1)\n"
            "  --master-port P           its port (default: $MASTER_PORT or a free one; required\n"
            "                            with several nodes and no endpoint)\n"
            "  --standalone              one node, a free port and a fresh token\n"
            "  --max-restarts 0          accepted for torchrun's sake; ferryrun never restarts\n"
            "  --no-python               accepted and ignored: the program always runs as given\n"
            "  --check                   print the fabric providers, the interface, the launcher\n"
            "                            and the rendezvous a job started here would use\n"
            "  -h, --help                this text\n"
            "Several programs, as mpirun's colon syntax: \"-n 1 ./master : -n 2 ./worker\" runs\n"
            "the master as rank 0 and the worker as ranks 1 and 2 (a lone ':' always separates).\n"
            "Each process gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,\n"
            "GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE, ROLE_NAME, MASTER_ADDR, MASTER_PORT,\n"
            "TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS,\n"
            "FERRY_AUTH_TOKEN and FERRY_LAUNCHER=ferryrun. Exit status: 0 when all succeed, else\n"
            "that of the first process that failed (128 + signal when it was killed); 1 when the\n"
            "nodes did not meet; 2 for bad arguments.\n");
}

static int bad(const char *flag, const char *value, const char *why)
{
    if (value)
        fprintf(stderr, "ferryrun: %s %s: %s\n", flag, value, why);
    else
        fprintf(stderr, "ferryrun: %s: %s\n", flag, why);
    return -1;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int set_nproc(ferryrun_options *o, const char *flag, const char *v)
{
    long n;
    if (!strcmp(v, "auto") || !strcmp(v, "cpu")) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        o->nproc = n > 0 ? (int)n : 1;
        return 0;
    }
    if (!strcmp(v, "gpu"))
        return bad(flag, v, "ferry runs on CPUs and starts no process per GPU; give a number, "
                            "auto or cpu");
    if (!parse_long(v, 1, 100000, &n))
        return bad(flag, v, "needs a number of processes (1 or more), auto or cpu");
    o->nproc = (int)n;
    return 0;
}

/* K, or MIN:MAX with MIN == MAX: ferry's world is fixed once the job started. */
static int set_nnodes(ferryrun_options *o, const char *flag, const char *v)
{
    long lo, hi;
    const char *colon = strchr(v, ':');
    char min_text[24];
    if (!colon) {
        if (!parse_long(v, 1, 100000, &lo))
            return bad(flag, v, "needs a number of nodes (1 or more), or MIN:MAX");
        o->nnodes = (int)lo;
        return 0;
    }
    size_t len = (size_t)(colon - v);
    if (len == 0 || len >= sizeof min_text)
        return bad(flag, v, "needs a number of nodes (1 or more), or MIN:MAX");
    memcpy(min_text, v, len);
    min_text[len] = '\0';
    if (!parse_long(min_text, 1, 100000, &lo) || !parse_long(colon + 1, 1, 100000, &hi) || lo > hi)
        return bad(flag, v, "needs a number of nodes (1 or more), or MIN:MAX");
    if (lo != hi)
        return bad(flag, v, "elastic node counts are not supported: a ferry job's world is fixed "
                            "when it starts, so give one number (or MIN:MAX with MIN == MAX)");
    o->nnodes = (int)lo;
    return 0;
}

/* "host", "host:port" or "[v6addr]:port" (also "[v6addr]"). */
static int set_endpoint(ferryrun_options *o, const char *flag, const char *v)
{
    const char *host = v, *host_end, *port = NULL;
    if (v[0] == '[') {
        host = v + 1;
        host_end = strchr(v, ']');
        if (!host_end || (host_end[1] && host_end[1] != ':'))
            return bad(flag, v, "needs host:port, or [address]:port for IPv6");
        port = host_end[1] == ':' ? host_end + 2 : NULL;
    } else {
        const char *colon = strchr(v, ':');
        if (colon && strchr(colon + 1, ':'))
            return bad(flag, v, "an IPv6 address goes in brackets: [address]:port");
        host_end = colon ? colon : v + strlen(v);
        port = colon ? colon + 1 : NULL;
    }
    size_t len = (size_t)(host_end - host);
    if (len == 0 || len >= sizeof o->endpoint_host)
        return bad(flag, v, "needs host:port, or [address]:port for IPv6");
    memcpy(o->endpoint_host, host, len);
    o->endpoint_host[len] = '\0';
    long p = FERRYRUN_DEFAULT_RDZV_PORT;
    if (port && !parse_long(port, 1, 65535, &p))
        return bad(flag, v, "needs a port from 1 to 65535 after the colon");
    o->endpoint_port = (int)p;
    o->has_endpoint = true;
    return 0;
}

static int set_value(ferryrun_options *o, opt_id id, const char *flag, const char *v)
{
    long n;
    double s;
    char *end;
    switch (id) {
    case OPT_NPROC:
        return set_nproc(o, flag, v);
    case OPT_NNODES:
        return set_nnodes(o, flag, v);
    case OPT_NODE_RANK:
        if (!parse_long(v, 0, 100000, &n))
            return bad(flag, v, "needs a node index (0 or more)");
        o->node_rank = (int)n;
        return 0;
    case OPT_MASTER_ADDR:
        if (!*v || strlen(v) >= FERRYRUN_HOST_MAX)
            return bad(flag, v, "needs a host name or address");
        o->master_addr = v;
        return 0;
    case OPT_MASTER_PORT:
        if (!parse_long(v, 1, 65535, &n))
            return bad(flag, v, "needs a port from 1 to 65535");
        o->master_port = v;
        return 0;
    case OPT_ENDPOINT:
        return set_endpoint(o, flag, v);
    case OPT_RUN_ID:
        if (!*v || strlen(v) > 128)
            return bad(flag, v, "needs a job id of 1 to 128 characters");
        o->run_id = v;
        return 0;
    case OPT_BACKEND:
        if (strcmp(v, "c10d") && strcmp(v, "static"))
            return bad(flag, v, "ferryrun supports the c10d backend (nodes meet at "
                                "--rdzv-endpoint) and static (fixed ranks from --node-rank); "
                                "others such as etcd are not");
        o->is_static_backend = !strcmp(v, "static");
        return 0;
    case OPT_MAX_RESTARTS:
        if (!parse_long(v, 0, 1000000, &n))
            return bad(flag, v, "needs a count (0)");
        if (n > 0)
            return bad(flag, v, "ferryrun does not restart workers: a ferry job's ranks know each "
                                "other's addresses, RRefs and calls in flight, so a restarted rank "
                                "cannot rejoin the running ones. Use 0 and restart the whole job");
        return 0;
    case OPT_RDZV_TIMEOUT:
        errno = 0;
        s = strtod(v, &end);
        if (errno || *end || end == v || !(s > 0) || !isfinite(s))
            return bad(flag, v, "needs a number of seconds above 0");
        o->rdzv_timeout_s = s;
        return 0;
    default:
        return 0;
    }
}

static void set_flag(ferryrun_options *o, opt_id id)
{
    if (id == OPT_STANDALONE)
        o->is_standalone = true;
    else if (id == OPT_CHECK)
        o->is_check = true;
}

/* The spec for arg ("-n", "--node_rank", "--nnodes=2"); *value points past '=' when there is
   one. NULL when unknown. */
static const opt_spec *find_spec(const char *arg, char *name, const char **value)
{
    size_t len = strcspn(arg, "=");
    *value = arg[len] == '=' ? arg + len + 1 : NULL;
    if (len >= NAME_MAX_BYTES)
        len = NAME_MAX_BYTES - 1;
    memcpy(name, arg, len);
    name[len] = '\0';
    for (size_t i = 2; name[0] == '-' && name[1] == '-' && i < len; i++)
        if (name[i] == '_')
            name[i] = '-';
    for (size_t i = 0; i < n_specs; i++)
        if (!strcmp(specs[i].name, name))
            return &specs[i];
    return NULL;
}

/* Whether the options fit together. */
static int check_combination(const ferryrun_options *o, bool has_program)
{
    if (o->is_check)
        return has_program ? bad("--check", NULL, "takes no program: it checks this node's "
                                                  "environment and exits")
                           : 0;
    if (!has_program)
        return fprintf(stderr, "ferryrun: no program given (see --help)\n"), -1;
    if (o->nproc < 1)
        return bad("-n", NULL, "the number of processes is required (-n N or --nproc-per-node N)");
    if (o->node_rank >= o->nnodes)
        return fprintf(stderr, "ferryrun: --node-rank %d must be below --nnodes %d\n",
                       o->node_rank, o->nnodes),
               -1;
    if (o->is_standalone && o->nnodes > 1)
        return bad("--standalone", NULL, "runs one node; it cannot go with --nnodes above 1");
    if (o->nnodes > 1 && !o->is_static_backend && !o->has_endpoint && !o->master_port &&
        !getenv("MASTER_PORT"))
        return bad("--nnodes", NULL, "several nodes need --rdzv-endpoint host:port (where node 0 "
                                     "serves the node rendezvous), or --master-addr and "
                                     "--master-port for fixed ranks");
    return 0;
}

/* The programs from argv[i] on, split at each lone ":" (which ends the argv before it); the
   first takes -n from the options before it, each later one has its own "-n N" in front. */
static int parse_apps(int argc, char **argv, int i, ferryrun_options *o)
{
    int total = 0;
    for (o->n_apps = 0; i < argc; o->n_apps++) {
        if (o->n_apps == FERRYRUN_APPS_MAX)
            return bad(":", NULL, "at most 16 programs");
        ferryrun_app *app = &o->apps[o->n_apps];
        app->nproc = o->n_apps == 0 ? o->nproc : 0;
        while (o->n_apps > 0 && i < argc && argv[i][0] == '-') {
            const char *arg = argv[i++], *value;
            char name[NAME_MAX_BYTES];
            if (!strcmp(arg, "--"))
                break;
            const opt_spec *spec = find_spec(arg, name, &value);
            if (!spec || spec->id != OPT_NPROC)
                return bad(arg, NULL, "after ':' only -n N may come before the next program");
            if (!value && i >= argc)
                return bad(name, NULL, "needs a value (see --help)");
            if (!value)
                value = argv[i++];
            ferryrun_options one = {0};
            if (set_nproc(&one, name, value) != 0)
                return -1;
            app->nproc = one.nproc;
        }
        if (app->nproc < 1)
            return bad(":", NULL, "each program after ':' needs its own -n N");
        if (i >= argc || !strcmp(argv[i], ":"))
            return bad(":", NULL, "needs a program on each side");
        app->argv = argv + i;
        while (i < argc && strcmp(argv[i], ":"))
            i++;
        if (i < argc && ++i == argc)
            return bad(":", NULL, "needs a program on each side");
        if (i < argc)
            argv[i - 1] = NULL; /* ends this program's argv; the next segment follows */
        if (total > 100000 - app->nproc)
            return bad("-n", NULL, "more than 100000 processes in all");
        total += app->nproc;
    }
    o->nproc = total;
    return 0;
}

int ferryrun_parse_args(int argc, char **argv, ferryrun_options *o)
{
    *o = (ferryrun_options){.nnodes = 1, .run_id = "none",
                            .rdzv_timeout_s = FERRYRUN_DEFAULT_RDZV_TIMEOUT_S};
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        const char *arg = argv[i++], *value;
        char name[NAME_MAX_BYTES];
        if (!strcmp(arg, "--"))
            break;
        const opt_spec *spec = find_spec(arg, name, &value);
        if (!spec)
            return fprintf(stderr, "ferryrun: unknown option %s (see --help)\n", arg), -1;
        if (spec->id == OPT_HELP)
            return usage(stdout), 1;
        if (!spec->takes_value) {
            if (value)
                return bad(name, value, "takes no value");
            set_flag(o, spec->id);
            continue;
        }
        if (!value && i >= argc)
            return bad(name, NULL, "needs a value (see --help)");
        if (!value)
            value = argv[i++];
        if (set_value(o, spec->id, name, value) != 0)
            return -1;
    }
    if (check_combination(o, i < argc) != 0)
        return -1;
    o->argv = i < argc ? argv + i : NULL;
    if (o->argv)
        return parse_apps(argc, argv, i, o);
    return 0;
}

void ferryrun_host_port(const char *host, int port, char *out, size_t cap)
{
    bool is_v6 = strchr(host, ':') != NULL;
    snprintf(out, cap, "%s%s%s:%d", is_v6 ? "[" : "", host, is_v6 ? "]" : "", port);
}
