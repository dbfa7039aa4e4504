/* init_method and environment parsing for rendezvous (see init_method.h): splits the URL into
   scheme, address and query, reads the launcher variables in torch's order of preference with
   torch's error messages, checks worker names and applies the auth token rule. No state and no
   I/O beyond getenv; the store join itself is rendezvous.c's. */
#include "transport/init_method.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "transport/launcher.h"
#include "transport/pmix.h"

ferry_status ferry__rendezvous_check_name(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    bool is_ok = len > 0 && len < FERRY__WORKER_NAME_MAX;
    for (size_t i = 0; is_ok && i < len; i++) {
        char ch = name[i];
        is_ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                ch == '_' || ch == ':' || ch == '-';
    }
    if (!is_ok)
        return ferry__fail(FERRY_EINVAL,
                           "Worker name must match ^[A-Za-z0-9-_:]*$, and must be non-empty and "
                           "shorter than 128 chars, but got %s",
                           name ? name : "(null)");
    return FERRY_OK;
}

static const char *const rank_vars[] = {"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK",
                                        "PMI_RANK"};
static const char *const size_vars[] = {"WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                                        "PMI_SIZE"};

static bool parse_int(const char *s, size_t len, long lo, long hi, int *out)
{
    char text[24], *end;
    if (len == 0 || len >= sizeof text)
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

/* The first of vars that is set (its index in *which); torch's message names the first (the
   torchrun name), and the launcher's own name when the rank came from that launcher's set. */
static ferry_status int_from_env(const char *const *vars, size_t n, size_t partner, int *out,
                                 size_t *which)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(vars[i]);
        if (!v)
            continue;
        if (!parse_int(v, strlen(v), 0, INT_MAX, out))
            return ferry__fail(FERRY_EINVAL,
                               "environment variable %s must be a non-negative integer, but got '%s'",
                               vars[i], v);
        if (which)
            *which = i;
        return FERRY_OK;
    }
    if (partner > 0 && partner < n)
        return ferry__fail(FERRY_EINVAL,
                           "environment variable %s expected, but not set (nor %s, which goes "
                           "with the %s that is set)",
                           vars[0], vars[partner], rank_vars[partner]);
    return ferry__fail(FERRY_EINVAL, "environment variable %s expected, but not set", vars[0]);
}

/* "rank=R&world_size=W" (torch's init_method query); unknown parameters are ignored. */
static ferry_status parse_query(const char *q, int *rank, int *world_size)
{
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        int *target = !strncmp(q, "rank=", 5) ? rank
                      : !strncmp(q, "world_size=", 11) ? world_size
                                                        : NULL;
        size_t skip = target == rank ? 5 : 11;
        if (target && len >= skip && *target == (target == rank ? -1 : 0) &&
            !parse_int(q + skip, len - skip, 0, INT_MAX, target))
            return ferry__fail(FERRY_EINVAL, "init_method parameter '%.*s' is not a valid integer",
                               (int)len, q);
        q = amp ? amp + 1 : NULL;
    }
    return FERRY_OK;
}

/* "host:port" or "[v6addr]:port". */
static ferry_status parse_host_port(const char *s, size_t len, char **host, int *port)
{
    const char *colon = NULL, *host_start = s, *host_end;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        colon = close && close + 1 < s + len && close[1] == ':' ? close + 1 : NULL;
        host_start = s + 1;
        host_end = close;
    } else {
        for (size_t i = 0; i < len; i++)
            if (s[i] == ':')
                colon = s + i;
        host_end = colon;
    }
    if (!colon || host_end <= host_start ||
        !parse_int(colon + 1, len - (size_t)(colon + 1 - s), 1, 65535, port))
        return ferry__fail(FERRY_EINVAL, "init_method tcp://%.*s must name host:port", (int)len, s);
    *host = ferry__strndup(host_start, (size_t)(host_end - host_start));
    return *host ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "out of memory parsing init_method");
}

/* torch's message for a missing variable, with a pointer to PMIx when its launcher is here. */
static ferry_status missing_master(const char *var)
{
    const char *hint = !ferry__pmix_env_present() ? ""
                       : ferry__pmix_built()
                           ? " (a PMIx launcher started this process: leave init_method NULL or "
                             "use pmix:// to rendezvous through it)"
                           : " (a PMIx launcher started this process, but ferry was built without "
                             "PMIx: install libpmix-dev and rebuild, or set MASTER_ADDR and "
                             "MASTER_PORT)";
    return ferry__fail(FERRY_EINVAL, "environment variable %s expected, but not set%s", var, hint);
}

/* MASTER_ADDR and MASTER_PORT; under Slurm, each one that is unset comes from the job. */
static ferry_status master_from_env(char **host, int *port)
{
    const char *addr = getenv("MASTER_ADDR"), *port_text = getenv("MASTER_PORT");
    if (!addr || !port_text) {
        char *slurm_host = NULL;
        int slurm_port = 0;
        ferry_status rc = ferry__launch_slurm_store(&slurm_host, &slurm_port);
        if (rc != FERRY_OK)
            return rc;
        if (slurm_host) {
            if (addr) {
                ferry__free(slurm_host);
                slurm_host = ferry__strdup(addr);
            }
            if (port_text && !parse_int(port_text, strlen(port_text), 1, 65535, &slurm_port)) {
                ferry__free(slurm_host);
                return ferry__fail(FERRY_EINVAL,
                                   "environment variable MASTER_PORT must be a port number "
                                   "(1-65535), but got '%s'",
                                   port_text);
            }
            *host = slurm_host;
            *port = slurm_port;
            return *host ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "out of memory reading MASTER_ADDR");
        }
    }
    if (!addr)
        return missing_master("MASTER_ADDR");
    if (!port_text)
        return missing_master("MASTER_PORT");
    if (!*addr)
        return ferry__fail(FERRY_EINVAL, "environment variable MASTER_ADDR is empty");
    if (!parse_int(port_text, strlen(port_text), 1, 65535, port))
        return ferry__fail(FERRY_EINVAL,
                           "environment variable MASTER_PORT must be a port number (1-65535), "
                           "but got '%s'",
                           port_text);
    /* torchrun's static rendezvous (its default) serves its own agent's store on MASTER_PORT
       and says so: ferry's store then takes the next port, on every rank alike. */
    if (ferry__launch_agent_holds_master_port()) {
        if (*port == 65535)
            return ferry__fail(FERRY_EINVAL,
                               "MASTER_PORT 65535 is held by torchrun's agent store and leaves no "
                               "next port for ferry's");
        (*port)++;
    }
    *host = ferry__strdup(addr);
    return *host ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "out of memory reading MASTER_ADDR");
}

/* Splits init_method into scheme, address part and query, filling host/port or path. */
static ferry_status parse_method(const char *im, bool *is_env, char **host, int *port,
                                 char **path, const char **query)
{
    const char *q = strchr(im, '?');
    size_t len = q ? (size_t)(q - im) : strlen(im);
    *query = q ? q + 1 : NULL;
    if (ferry__rendezvous_is_pmix(im))
        return FERRY_OK;
    *is_env = !strncmp(im, "env://", 6);
    if (*is_env) {
        if (len != 6)
            return ferry__fail(FERRY_EINVAL,
                               "init_method env:// takes no address (got '%s'); the store comes "
                               "from MASTER_ADDR and MASTER_PORT",
                               im);
        return FERRY_OK;
    }
    if (!strncmp(im, "tcp://", 6))
        return parse_host_port(im + 6, len - 6, host, port);
    if (!strncmp(im, "file://", 7) && len > 7) {
        *path = ferry__strndup(im + 7, len - 7);
        return *path ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "out of memory parsing init_method");
    }
    return ferry__fail(FERRY_EINVAL,
                       "init_method must be env://, tcp://host:port, file:///path or pmix://, but "
                       "got '%s'",
                       im);
}

bool ferry__rendezvous_is_pmix(const char *init_method)
{
    const char *im = init_method && *init_method ? init_method : ferry__launch_default_method();
    return !strncmp(im, "pmix://", 7) && (im[7] == '\0' || im[7] == '?');
}

/* Rank and world size from the PMIx server; ones the caller gave must agree with it. */
static ferry_status identity_from_pmix(int *rank, int *world)
{
    ferry__pmix_identity id;
    ferry_status rc = ferry__pmix_identity_get(&id);
    if (rc != FERRY_OK)
        return rc;
    if (*rank >= 0 && *rank != id.rank)
        return ferry__fail(FERRY_EINVAL, "rank %d was asked for, but the PMIx launcher gave rank %d",
                           *rank, id.rank);
    if (*world > 0 && *world != id.world_size)
        return ferry__fail(FERRY_EINVAL,
                           "world size %d was asked for, but the PMIx launcher started %d "
                           "processes",
                           *world, id.world_size);
    *rank = id.rank;
    *world = id.world_size;
    return FERRY_OK;
}

ferry_status ferry__rendezvous_resolve_env(const char *init_method, int *rank_io, int *world_io,
                                           char **store_host, int *store_port, char **file_path)
{
    const char *im = init_method && *init_method ? init_method : ferry__launch_default_method();
    const char *query = NULL;
    int rank = rank_io && *rank_io >= 0 ? *rank_io : -1;
    int world = world_io && *world_io > 0 ? *world_io : 0, port = 0;
    char *host = NULL, *path = NULL;
    bool is_env = false;
    ferry_status rc = parse_method(im, &is_env, &host, &port, &path, &query);
    if (rc == FERRY_OK)
        rc = parse_query(query, &rank, &world);
    if (rc == FERRY_OK && ferry__rendezvous_is_pmix(im))
        rc = identity_from_pmix(&rank, &world);
    size_t rank_from = 0;
    if (rc == FERRY_OK && rank < 0)
        rc = int_from_env(rank_vars, sizeof rank_vars / sizeof *rank_vars, 0, &rank, &rank_from);
    if (rc == FERRY_OK && world <= 0)
        rc = int_from_env(size_vars, sizeof size_vars / sizeof *size_vars, rank_from, &world,
                          NULL);
    if (rc == FERRY_OK && is_env)
        rc = master_from_env(&host, &port);
    if (rc == FERRY_OK && world <= 0)
        rc = ferry__fail(FERRY_EINVAL, "world size must be positive, but got %d", world);
    if (rc == FERRY_OK && rank >= world)
        rc = ferry__fail(FERRY_EINVAL, "rank %d is out of range for world size %d", rank, world);
    if (rc != FERRY_OK || !store_host)
        ferry__free(host);
    if (rc != FERRY_OK || !file_path)
        ferry__free(path);
    if (rc != FERRY_OK)
        return rc;
    if (rank_io)
        *rank_io = rank;
    if (world_io)
        *world_io = world;
    if (store_host)
        *store_host = host;
    if (store_port)
        *store_port = port;
    if (file_path)
        *file_path = path;
    return FERRY_OK;
}

ferry_status ferry__rendezvous_token_policy(const char *token, const char *insecure, bool is_file,
                                            const char **out)
{
    *out = NULL;
    if (token && !*token)
        return ferry__fail(FERRY_EINVAL,
                           "FERRY_AUTH_TOKEN is empty; set it to a secret shared by every worker "
                           "(ferryrun makes one), or unset it and set FERRY_INSECURE=1 to run "
                           "without authentication");
    if (token) {
        *out = token;
        return FERRY_OK;
    }
    if (is_file || (insecure && !strcmp(insecure, "1")))
        return FERRY_OK;
    return ferry__fail(FERRY_EAUTH,
                       "FERRY_AUTH_TOKEN is not set: without it anyone who reaches the store's "
                       "port could join the job. Set FERRY_AUTH_TOKEN to the same secret on "
                       "every worker (ferryrun sets one), or set FERRY_INSECURE=1 to run "
                       "without authentication");
}
