/* The tcp provider's interface choice (net_iface.h): a named interface, else the source address
   the kernel would use toward the master, found with a connected UDP socket (connecting one
   sends nothing), plus the interface list looked up for the names and addresses we print. */
#include "transport/net_iface.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The local address whose route reaches master. */
static bool local_addr_toward(const char *master, struct sockaddr_storage *out, socklen_t *out_len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res = NULL;
    if (getaddrinfo(master, "9", &hints, &res) != 0 || !res)
        return false;
    bool ok = false;
    int fd = socket(res->ai_family, SOCK_DGRAM, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
        *out_len = sizeof *out;
        ok = getsockname(fd, (struct sockaddr *)out, out_len) == 0;
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    if (ok && out->ss_family == AF_INET)
        ((struct sockaddr_in *)out)->sin_port = 0;
    else if (ok && out->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)out)->sin6_port = 0;
    return ok;
}

static void numeric(const struct sockaddr *sa, char *out, size_t cap)
{
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    if (getnameinfo(sa, len, out, (socklen_t)cap, NULL, 0, NI_NUMERICHOST) != 0)
        out[0] = '\0';
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return a->sa_family == AF_INET6 &&
           memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* NAMED: the interface's address (IPv4 first). ROUTE: the name of the interface holding src. */
static void look_up(ferry__iface_choice *c)
{
    struct ifaddrs *all = NULL;
    if (getifaddrs(&all) != 0)
        return;
    const struct ifaddrs *v6 = NULL;
    for (const struct ifaddrs *it = all; it; it = it->ifa_next) {
        const struct sockaddr *sa = it->ifa_addr;
        if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
            continue;
        if (c->how == FERRY__IFACE_ROUTE && same_addr(sa, &c->src)) {
            snprintf(c->name, sizeof c->name, "%s", it->ifa_name);
            break;
        }
        if (c->how == FERRY__IFACE_NAMED && !strcmp(it->ifa_name, c->name)) {
            if (sa->sa_family == AF_INET) {
                numeric(sa, c->addr, sizeof c->addr);
                v6 = NULL;
                break;
            }
            v6 = v6 ? v6 : it;
        }
    }
    if (v6)
        numeric(v6->ifa_addr, c->addr, sizeof c->addr);
    freeifaddrs(all);
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

bool ferry__net_host_is_local_name(const char *host)
{
    if (!host || !*host || !strcmp(host, "localhost") || !strncmp(host, "localhost.", 10))
        return false;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) == 0) { /* a numeric address means what it says */
        freeaddrinfo(res);
        return false;
    }
    hints.ai_flags = 0;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return false;
    bool all_loopback = true;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        all_loopback = all_loopback && is_loopback(ai->ai_addr);
    freeaddrinfo(res);
    return all_loopback;
}

void ferry__net_iface_pick(const char *iface, const char *master_addr, ferry__iface_choice *out)
{
    *out = (ferry__iface_choice){.how = FERRY__IFACE_ANY};
    if (iface && *iface) {
        out->how = FERRY__IFACE_NAMED;
        snprintf(out->name, sizeof out->name, "%s", iface);
    } else if (ferry__net_host_is_local_name(master_addr)) {
        out->how = FERRY__IFACE_LOCAL_NAME;
    } else if (master_addr && *master_addr) {
        out->how = local_addr_toward(master_addr, &out->src, &out->src_len) ? FERRY__IFACE_ROUTE
                                                                            : FERRY__IFACE_NO_ROUTE;
        if (out->how == FERRY__IFACE_ROUTE)
            numeric((const struct sockaddr *)&out->src, out->addr, sizeof out->addr);
    }
    if (out->how == FERRY__IFACE_NAMED || out->how == FERRY__IFACE_ROUTE)
        look_up(out);
}

const char *ferry__net_iface_how_name(ferry__iface_how how)
{
    switch (how) {
    case FERRY__IFACE_NAMED:
        return "named";
    case FERRY__IFACE_ROUTE:
        return "route to the master";
    case FERRY__IFACE_NO_ROUTE:
        return "no route to the master";
    case FERRY__IFACE_LOCAL_NAME:
        return "host name that is loopback here";
    default:
        return "provider's choice";
    }
}
