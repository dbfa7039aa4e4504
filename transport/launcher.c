/* Which launcher started this process (launch.h), the rendezvous a NULL init_method means, and
   Slurm's store address when the job sets no MASTER_ADDR (launcher.h). torchrun's variables win
   (ferryrun and Kubernetes operators set them on purpose), then a PMIx server that answers, then
   Slurm's own variables, then Open MPI's and PMI's. */
#include "transport/launcher.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/init_method.h"
#include "transport/pmix.h"

/* Slurm's derived store ports: [SLURM_PORT_BASE, SLURM_PORT_BASE + SLURM_PORT_SPAN), below
   Linux's ephemeral range so no outgoing connection holds one by chance; consecutive jobs and
   steps get different ports. */
#define SLURM_PORT_BASE 12000
#define SLURM_PORT_SPAN 20000

static const char *const names[] = {"none", "torchrun", "ferryrun", "slurm", "openmpi", "pmix",
                                    "pmi"};

const char *ferry_launcher_name(ferry_launcher launcher)
{
    return (unsigned)launcher < sizeof names / sizeof *names ? names[launcher] : "unknown";
}

/* ---- Slurm -------------------------------------------------------------------------------- */

bool ferry__launch_first_host(const char *list, char *out, size_t cap)
{
    size_t n = 0;
    const char *p = list;
    if (!p || !*p || cap == 0)
        return false;
    while (*p && *p != ',') {
        if (*p == ']')
            return false;
        if (*p != '[') {
            if (n + 1 >= cap)
                return false;
            out[n++] = *p++;
            continue;
        }
        /* "[01-04,7]": the first number, zero padding kept; the rest must be a range list. */
        size_t start = n;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (n + 1 >= cap)
                return false;
            out[n++] = *p;
        }
        if (n == start)
            return false;
        while ((*p >= '0' && *p <= '9') || *p == '-' || *p == ',')
            p++;
        if (*p++ != ']')
            return false;
    }
    out[n] = '\0';
    return n > 0;
}

static bool parse_long(const char *s, long *out)
{
    char *end;
    if (!s || !*s)
        return false;
    long v = strtol(s, &end, 10);
    if (*end || v < 0)
        return false;
    *out = v;
    return true;
}

static const char *first_env(const char *a, const char *b, const char *c)
{
    const char *v = getenv(a);
    if (!v && b)
        v = getenv(b);
    if (!v && c)
        v = getenv(c);
    return v;
}

ferry_status ferry__launch_slurm_store(char **host, int *port)
{
    *host = NULL;
    const char *job = first_env("SLURM_JOB_ID", "SLURM_JOBID", NULL);
    if (!job || !getenv("SLURM_PROCID"))
        return FERRY_OK;
    const char *step_text = first_env("SLURM_STEP_ID", "SLURM_STEPID", NULL);
    long job_id, step = 0;
    if (!parse_long(job, &job_id))
        return ferry__fail(FERRY_EINVAL, "SLURM_JOB_ID must be a number, but got '%s'", job);
    if (step_text && !parse_long(step_text, &step))
        step = 0;
    const char *list_var = getenv("SLURM_STEP_NODELIST") ? "SLURM_STEP_NODELIST"
                           : getenv("SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST"
                           : getenv("SLURM_NODELIST")     ? "SLURM_NODELIST"
                                                          : NULL;
    char first[256];
    if (list_var) {
        if (!ferry__launch_first_host(getenv(list_var), first, sizeof first))
            return ferry__fail(FERRY_EINVAL, "%s '%s' is not a Slurm host list; set MASTER_ADDR",
                               list_var, getenv(list_var));
    } else if (getenv("SLURM_LAUNCH_NODE_IPADDR") && *getenv("SLURM_LAUNCH_NODE_IPADDR")) {
        snprintf(first, sizeof first, "%s", getenv("SLURM_LAUNCH_NODE_IPADDR"));
    } else {
        return ferry__fail(FERRY_EINVAL,
                           "running under Slurm (job %s) but neither SLURM_STEP_NODELIST, "
                           "SLURM_JOB_NODELIST nor SLURM_LAUNCH_NODE_IPADDR is set; set "
                           "MASTER_ADDR and MASTER_PORT",
                           job);
    }
    *host = ferry__strdup(first);
    *port = SLURM_PORT_BASE + (int)(((unsigned long)job_id * 16 + (unsigned long)step) %
                                    SLURM_PORT_SPAN);
    return *host ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "out of memory reading Slurm's node list");
}

/* Tasks on node `node` from SLURM_TASKS_PER_NODE ("2(x3),1"); -1 when it does not say. */
static int slurm_tasks_on(const char *spec, long node)
{
    for (const char *p = spec; p && *p && node >= 0;) {
        char *end;
        long count = strtol(p, &end, 10), times = 1;
        if (end == p)
            return -1;
        p = end;
        if (!strncmp(p, "(x", 2)) {
            times = strtol(p + 2, &end, 10);
            if (end == p + 2 || *end != ')')
                return -1;
            p = end + 1;
        }
        if (node < times)
            return (int)count;
        node -= times;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return -1;
}

/* ---- the job behind a derived token, torchrun's agent store -------------------------------- */

bool ferry__launch_job_scope(char *scope, size_t cap, const char **from)
{
    const char *job = first_env("SLURM_JOB_ID", "SLURM_JOBID", NULL);
    const char *step = first_env("SLURM_STEP_ID", "SLURM_STEPID", NULL);
    const char *run = getenv("TORCHELASTIC_RUN_ID"), *addr = getenv("MASTER_ADDR");
    const char *port = getenv("MASTER_PORT");
    const char *source = NULL;
    if (getenv("RANK") && run && addr && port) {
        snprintf(scope, cap, "torchelastic/%s/%s:%s", run, addr, port);
        source = "TORCHELASTIC_RUN_ID";
    } else if (job && getenv("SLURM_PROCID")) {
        snprintf(scope, cap, "slurm/%s.%s", job, step ? step : "0");
        source = "the Slurm job and step";
    }
    if (from)
        *from = source;
    return source != NULL;
}

bool ferry__launch_agent_holds_master_port(void)
{
    const char *v = getenv("TORCHELASTIC_USE_AGENT_STORE");
    return v && (!strcmp(v, "True") || !strcmp(v, "true") || !strcmp(v, "1"));
}

/* ---- the default rendezvous -------------------------------------------------------------- */

static pthread_once_t pmix_once = PTHREAD_ONCE_INIT;
static bool pmix_answers;
static char pmix_why[512];

static void probe_pmix(void)
{
    ferry__error_state saved;
    ferry__error_save(&saved);
    ferry__pmix_identity id;
    pmix_answers = ferry__pmix_identity_get(&id) == FERRY_OK;
    if (!pmix_answers) {
        snprintf(pmix_why, sizeof pmix_why, "%s", ferry_last_error());
        ferry__log_warn("launch", "a PMIx launcher started this process, but %s; using env://",
                        pmix_why);
    }
    ferry__error_restore(&saved);
}

/* torchrun-style variables set on purpose win over the launcher around them. */
static bool torchrun_style(void)
{
    return getenv("RANK") && getenv("MASTER_ADDR");
}

const char *ferry__launch_default_method(void)
{
    if (torchrun_style() || !ferry__pmix_env_present() || !ferry__pmix_built())
        return "env://";
    pthread_once(&pmix_once, probe_pmix);
    return pmix_answers ? "pmix://" : "env://";
}

/* ---- detection --------------------------------------------------------------------------- */

static int env_int(const char *var)
{
    long v;
    return parse_long(getenv(var), &v) && v <= 0x7fffffff ? (int)v : -1;
}

static ferry_launcher which_launcher(void)
{
    if (getenv("RANK") || (getenv("MASTER_ADDR") && getenv("WORLD_SIZE"))) {
        const char *l = getenv("FERRY_LAUNCHER");
        return l && !strcmp(l, "ferryrun") ? FERRY_LAUNCHER_FERRYRUN : FERRY_LAUNCHER_TORCHRUN;
    }
    if (getenv("SLURM_PROCID"))
        return FERRY_LAUNCHER_SLURM;
    if (getenv("OMPI_COMM_WORLD_RANK"))
        return FERRY_LAUNCHER_OPENMPI;
    if (ferry__pmix_env_present())
        return FERRY_LAUNCHER_PMIX;
    if (getenv("PMI_RANK"))
        return FERRY_LAUNCHER_PMI;
    return FERRY_LAUNCHER_NONE;
}

static void node_facts(ferry_launch_info *info)
{
    switch (info->launcher) {
    case FERRY_LAUNCHER_TORCHRUN:
    case FERRY_LAUNCHER_FERRYRUN:
        info->local_rank = env_int("LOCAL_RANK");
        info->local_world_size = env_int("LOCAL_WORLD_SIZE");
        info->node_rank = env_int("GROUP_RANK");
        info->nnodes = env_int("GROUP_WORLD_SIZE");
        break;
    case FERRY_LAUNCHER_SLURM:
        info->local_rank = env_int("SLURM_LOCALID");
        info->node_rank = env_int("SLURM_NODEID");
        info->nnodes = getenv("SLURM_STEP_NUM_NODES") ? env_int("SLURM_STEP_NUM_NODES")
                                                      : env_int("SLURM_NNODES");
        info->local_world_size =
            slurm_tasks_on(first_env("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", NULL),
                           info->node_rank);
        break;
    case FERRY_LAUNCHER_OPENMPI:
        info->local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
        info->local_world_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
        break;
    default:
        break;
    }
}

int ferry__launch_local_world_size(void)
{
    ferry_launch_info info = {.launcher = which_launcher(), .local_world_size = -1, .nnodes = -1};
    node_facts(&info);
    return info.local_world_size;
}

/* The source line for an env:// rendezvous. */
static void env_source(ferry_launch_info *info)
{
    const char *rank_var = getenv("RANK")                   ? "RANK"
                           : getenv("SLURM_PROCID")         ? "SLURM_PROCID"
                           : getenv("OMPI_COMM_WORLD_RANK") ? "OMPI_COMM_WORLD_RANK"
                           : getenv("PMI_RANK")             ? "PMI_RANK"
                                                            : NULL;
    const char *store = getenv("MASTER_ADDR") && getenv("MASTER_PORT") &&
                                ferry__launch_agent_holds_master_port()
                            ? "store on MASTER_ADDR, port MASTER_PORT + 1 (torchrun's agent "
                              "store holds MASTER_PORT)"
                        : getenv("MASTER_ADDR") && getenv("MASTER_PORT")
                            ? "store from MASTER_ADDR and MASTER_PORT"
                        : getenv("SLURM_PROCID")
                            ? "store on the first node of the step's node list, port from "
                              "SLURM_JOB_ID and SLURM_STEP_ID (MASTER_ADDR/MASTER_PORT override)"
                            : "store from MASTER_ADDR and MASTER_PORT";
    snprintf(info->source, sizeof info->source, "rank from %s; %s",
             rank_var ? rank_var : "nothing (no rank variable is set)",
             store);
}

/* What the token rule will do for an env:// store, in the source line or as a problem. */
static void token_facts(ferry_launch_info *info)
{
    const char *token = getenv("FERRY_AUTH_TOKEN"), *insecure = getenv("FERRY_INSECURE");
    size_t n = strlen(info->source);
    char scope[1024];
    const char *derived_from = NULL;
    if (!token)
        ferry__launch_job_scope(scope, sizeof scope, &derived_from);
    if (token && !*token)
        snprintf(info->problem, sizeof info->problem, "FERRY_AUTH_TOKEN is empty");
    else if (token)
        snprintf(info->source + n, sizeof info->source - n, "; token FERRY_AUTH_TOKEN");
    else if (insecure && !strcmp(insecure, "1"))
        snprintf(info->source + n, sizeof info->source - n, "; no token (FERRY_INSECURE=1)");
    else if (derived_from)
        snprintf(info->source + n, sizeof info->source - n, "; token from ~/.ferry/secret and %s",
                 derived_from);
    else
        snprintf(info->problem, sizeof info->problem,
                 "FERRY_AUTH_TOKEN is not set (set it to one secret on every worker, or "
                 "FERRY_INSECURE=1)");
}

ferry_status ferry_launch_detect(ferry_launch_info *info)
{
    if (!info)
        return ferry__fail(FERRY_EINVAL, "ferry_launch_detect needs somewhere to write");
    *info = (ferry_launch_info){.rank = -1, .world_size = -1, .local_rank = -1,
                                .local_world_size = -1, .node_rank = -1, .nnodes = -1};
    info->launcher = which_launcher();
    info->launcher_name = ferry_launcher_name(info->launcher);
    node_facts(info);
    const char *method = ferry__launch_default_method();
    snprintf(info->init_method, sizeof info->init_method, "%s", method);
    ferry__error_state saved;
    ferry__error_save(&saved);
    if (!strcmp(method, "pmix://")) {
        ferry__pmix_identity id;
        if (ferry__pmix_identity_get(&id) == FERRY_OK) {
            info->rank = id.rank;
            info->world_size = id.world_size;
            info->local_rank = id.local_rank;
            info->local_world_size = id.local_size;
            if (id.node_id >= 0)
                info->node_rank = id.node_id;
            if (id.nnodes > 0)
                info->nnodes = id.nnodes;
            snprintf(info->source, sizeof info->source,
                     "PMIx server (namespace %.200s): rank, size and addresses", id.nspace);
        } else {
            snprintf(info->problem, sizeof info->problem, "%s", ferry_last_error());
        }
    } else {
        char *host = NULL;
        int port = 0;
        if (info->launcher != FERRY_LAUNCHER_NONE)
            env_source(info);
        if (ferry__rendezvous_resolve_env("env://", &info->rank, &info->world_size, &host, &port,
                                          NULL) == FERRY_OK) {
            snprintf(info->store, sizeof info->store, strchr(host, ':') ? "[%s]:%d" : "%s:%d",
                     host, port);
            token_facts(info);
        } else {
            snprintf(info->problem, sizeof info->problem, "%s", ferry_last_error());
        }
        ferry__free(host);
    }
    ferry__error_restore(&saved);
    if (!*info->problem || info->launcher == FERRY_LAUNCHER_NONE)
        return FERRY_OK;
    return ferry__fail(FERRY_EINVAL, "%s (launcher %s)", info->problem, info->launcher_name);
}
