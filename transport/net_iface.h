/* Which network interface the tcp provider is bound to: the one FERRY_IFACE names, else the one
   whose route reaches the master address, else whatever the provider picks. net.c binds its
   endpoint with the choice; `ferryrun --check` prints it, so both always agree. */
#ifndef FERRY_TRANSPORT_NET_IFACE_H
#define FERRY_TRANSPORT_NET_IFACE_H

#include <stdbool.h>
#include <sys/socket.h>

typedef enum {
    FERRY__IFACE_ANY = 0,  /* neither a name nor a master address: the provider picks */
    FERRY__IFACE_NAMED,    /* an interface name was given (FERRY_IFACE or the option) */
    FERRY__IFACE_ROUTE,    /* the interface whose route reaches the master address */
    FERRY__IFACE_NO_ROUTE, /* a master address no route reaches (or that does not resolve):
                              the provider picks */
    FERRY__IFACE_LOCAL_NAME, /* a master host name that resolves only to loopback here (Debian
                                maps a host's own name to 127.0.1.1): the route says nothing of
                                the network other hosts use, so the provider picks, and it
                                lists real interfaces before loopback */
} ferry__iface_how;

/* Whether host is a name (not a numeric address, not "localhost") whose every address here is a
   loopback one: rank 0's own host name on a machine that maps it to 127.0.1.1. */
bool ferry__net_host_is_local_name(const char *host);

typedef struct {
    ferry__iface_how how;
    /* NAMED: the name as given; ROUTE: the interface holding src, "" when none was found. */
    char name[64];
    /* The interface's numeric address ("" when unknown or, for NAMED, no such interface). */
    char addr[64];
    /* ROUTE: the source address to bind, port 0. */
    struct sockaddr_storage src;
    socklen_t src_len;
} ferry__iface_choice;

/* Fills *out from iface (NULL or "" = not named) and master_addr (NULL or "" = none). Only reads
   the routing table and the interface list; sends nothing. Any thread. */
void ferry__net_iface_pick(const char *iface, const char *master_addr, ferry__iface_choice *out);

/* "named", "route to the master", "provider's choice", "no route to the master", "host name
   that is loopback here". */
const char *ferry__net_iface_how_name(ferry__iface_how how);

#endif
