/* `ferryrun --check`: for a user whose cluster job will not start, what a ferry process started
   here would find, in the order it meets them: the libfabric providers offered (and which
   ferry opens), the interface tcp would bind, the launcher environment and the rendezvous
   init_method NULL picks, and the auth token. The verdict (exit 0) is whether a rendezvous can
   be found: the launcher's facts are complete and, for a TCP store, a token can be had. */
#include <rdma/fabric.h>
#include <rdma/fi_errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/error.h"
#include "ferry/launch.h"
#include "tools/ferryrun/ferryrun.h"
#include "transport/launcher.h"
#include "transport/net_iface.h"

#define CHECK_FI_VERSION FI_VERSION(1, 17)
#define MAX_ROWS 128

/* One provider on one domain (for tcp, an interface), with the fabrics (networks) it reaches
   there. */
typedef struct {
    const char *prov, *domain;
    char fabrics[160];
} row;

/* What ferry opens: FERRY_TRANSPORT's provider when forced ("tcp" means tcp;ofi_rxm, as in
   net.c), else shm for this host and tcp;ofi_rxm for other hosts. */
static const char *ferry_use(const char *prov)
{
    const char *forced = getenv("FERRY_TRANSPORT");
    if (forced && *forced && strcmp(forced, "auto") != 0) {
        const char *want = strcmp(forced, "tcp") == 0 ? "tcp;ofi_rxm" : forced;
        return strcmp(prov, want) == 0 ? "yes (forced by FERRY_TRANSPORT)" : "no";
    }
    if (strcmp(prov, "shm") == 0)
        return "yes (peers on this host)";
    if (strcmp(prov, "tcp;ofi_rxm") == 0)
        return "yes (peers on other hosts)";
    return "no";
}

static void append(char *buf, size_t cap, const char *sep, const char *word)
{
    size_t used = strlen(buf);
    if (used + strlen(sep) + strlen(word) + 4 >= cap) {
        if (!strstr(buf, "..."))
            snprintf(buf + used, cap - used, "%s...", sep);
        return;
    }
    snprintf(buf + used, cap - used, "%s%s", used ? sep : "", word);
}

static bool has_provider(const row *rows, int n, const char *prov)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].prov, prov))
            return true;
    return false;
}

/* Whether the ", "-separated list holds word. */
static bool has_word(const char *list, const char *word)
{
    size_t len = strlen(word);
    for (const char *p = strstr(list, word); p; p = strstr(p + 1, word))
        if ((p == list || p[-1] == ' ') && (p[len] == ',' || p[len] == '\0'))
            return true;
    return false;
}

/* Adds an RDM entry to its provider-and-domain row; false when the table is full. */
static bool add_row(row *rows, int *n, const char *prov, const char *domain, const char *fabric)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(rows[i].prov, prov) && !strcmp(rows[i].domain, domain)) {
            if (!has_word(rows[i].fabrics, fabric))
                append(rows[i].fabrics, sizeof rows[i].fabrics, ", ", fabric);
            return true;
        }
    if (*n == MAX_ROWS)
        return false;
    rows[*n] = (row){.prov = prov, .domain = domain};
    append(rows[*n].fabrics, sizeof rows[*n].fabrics, ", ", fabric);
    (*n)++;
    return true;
}

static const char *name_or(const char *s)
{
    return s ? s : "?";
}

/* ferry opens reliable-datagram (RDM) endpoints only: those get a row each; the rest are
   named in one line. */
static void print_providers(void)
{
    uint32_t v = fi_version();
    struct fi_info *all = NULL;
    printf("fabric providers (libfabric %u.%u):\n", FI_MAJOR(v), FI_MINOR(v));
    int rc = fi_getinfo(CHECK_FI_VERSION, NULL, NULL, 0, NULL, &all);
    if (rc != 0) {
        printf("  none: fi_getinfo failed: %s\n", fi_strerror(-rc));
        return;
    }
    row rows[MAX_ROWS];
    char others[256] = "";
    int n = 0, used = 0;
    for (struct fi_info *it = all; it; it = it->next)
        if (it->ep_attr && it->ep_attr->type == FI_EP_RDM)
            add_row(rows, &n, name_or(it->fabric_attr ? it->fabric_attr->prov_name : NULL),
                    name_or(it->domain_attr ? it->domain_attr->name : NULL),
                    name_or(it->fabric_attr ? it->fabric_attr->name : NULL));
    for (struct fi_info *it = all; it; it = it->next) {
        const char *prov = name_or(it->fabric_attr ? it->fabric_attr->prov_name : NULL);
        if (!has_provider(rows, n, prov) && !has_word(others, prov))
            append(others, sizeof others, ", ", prov);
    }
    printf("  %-16s %-10s %-40s %s\n", "provider", "domain", "fabric", "used by ferry");
    for (int i = 0; i < n; i++) {
        const char *use = ferry_use(rows[i].prov);
        used += use[0] == 'y';
        printf("  %-16s %-10s %-40s %s\n", rows[i].prov, rows[i].domain, rows[i].fabrics, use);
    }
    if (others[0])
        printf("  offered without RDM endpoints, so not used: %s\n", others);
    if (!used)
        printf("  none of these is one ferry opens: a job started here cannot reach its peers\n");
    fi_freeinfo(all);
}

/* The host of "host:port" or "[v6]:port". */
static void store_host(const char *store, char *out, size_t cap)
{
    const char *start = store, *end = strrchr(store, ':');
    if (store[0] == '[') {
        start = store + 1;
        end = strchr(store, ']');
    }
    size_t len = end && end > start ? (size_t)(end - start) : 0;
    snprintf(out, cap, "%.*s", (int)len, start);
}

static void print_interface(const ferry_launch_info *info)
{
    char master[FERRYRUN_HOST_MAX] = "";
    store_host(info->store, master, sizeof master);
    if (!master[0] && getenv("MASTER_ADDR"))
        snprintf(master, sizeof master, "%s", getenv("MASTER_ADDR"));
    ferry__iface_choice c;
    ferry__net_iface_pick(getenv("FERRY_IFACE"), master, &c);
    printf("tcp interface: ");
    switch (c.how) {
    case FERRY__IFACE_NAMED:
        if (c.addr[0])
            printf("%s, address %s (named by FERRY_IFACE)\n", c.name, c.addr);
        else
            printf("%s (named by FERRY_IFACE), but no interface here has that name\n", c.name);
        break;
    case FERRY__IFACE_ROUTE:
        printf("%s, address %s (the route to the master %s)\n", c.name[0] ? c.name : "?", c.addr,
               master);
        break;
    case FERRY__IFACE_NO_ROUTE:
        printf("the provider's choice: the master %s does not resolve or no route reaches it "
               "(set FERRY_IFACE to name an interface)\n",
               master);
        break;
    case FERRY__IFACE_LOCAL_NAME:
        printf("the provider's choice: the master %s is this host's name, which resolves to "
               "loopback here, so its route says nothing of the network other hosts use (set "
               "FERRY_IFACE to name an interface)\n",
               master);
        break;
    default:
        printf("the provider's choice (no master address known, FERRY_IFACE unset)\n");
        break;
    }
}

static void print_count(const char *what, int v, int of)
{
    printf(", %s ", what);
    if (v < 0)
        printf("?");
    else
        printf("%d", v);
    if (of < 0)
        printf(" of ?");
    else
        printf(" of %d", of);
}

/* Whether a TCP store's token can be had: set, or derived for the launcher's job, or
   FERRY_INSECURE=1. Prints where it comes from; never the token. */
static bool print_token(void)
{
    const char *env = getenv("FERRY_AUTH_TOKEN"), *insecure = getenv("FERRY_INSECURE");
    char derived[FERRY__TOKEN_HEX_LEN + 1];
    bool is_derived = false;
    printf("auth token: ");
    if (env && !*env)
        return printf("FERRY_AUTH_TOKEN is set but empty, which the store refuses\n"), false;
    if (env)
        return printf("FERRY_AUTH_TOKEN is set\n"), true;
    if (ferry__launch_job_token(derived, &is_derived) != FERRY_OK)
        return printf("FERRY_AUTH_TOKEN is unset and none can be derived: %s\n",
                      ferry_last_error()),
               false;
    if (is_derived)
        return printf("derived from the per-user secret for this launcher's job\n"), true;
    if (insecure && !strcmp(insecure, "1"))
        return printf("none: FERRY_INSECURE=1, the store runs without authentication\n"), true;
    return printf("FERRY_AUTH_TOKEN is unset and this launcher names no job to derive one for: "
                  "set it to the same secret for every process (or FERRY_INSECURE=1)\n"),
           false;
}

int ferryrun_check(void)
{
    ferry_launch_info info;
    memset(&info, 0, sizeof info);
    ferry_status rc = ferry_launch_detect(&info);
    print_providers();
    print_interface(&info);
    printf("launcher: %s", info.launcher_name ? info.launcher_name : "?");
    print_count("rank", info.rank, info.world_size);
    print_count("local rank", info.local_rank, info.local_world_size);
    print_count("node", info.node_rank, info.nnodes);
    printf("\n  found in: %s\n", info.source[0] ? info.source : "(nothing)");
    printf("rendezvous: init_method %s", info.init_method[0] ? info.init_method : "?");
    if (info.store[0])
        printf(", store %s", info.store);
    printf("\n");
    bool is_ok = rc == FERRY_OK && !info.problem[0];
    if (!is_ok)
        printf("  problem: %s\n", info.problem[0] ? info.problem : ferry_last_error());
    /* Only a TCP store asks for the token; pmix:// has none. */
    if (strcmp(info.init_method, "pmix://") != 0 && !print_token())
        is_ok = false;
    printf("%s\n", is_ok ? "verdict: a rendezvous can be found"
                         : "verdict: no rendezvous can be found (see above)");
    return is_ok ? 0 : 1;
}
