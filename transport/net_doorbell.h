/* The shm doorbell, private to the fabric layer. shm completion queues have no wait fd and shm
   peers never signal one, so a process reached over shm publishes a doorbell: a shared page
   holding "my progress thread sleeps" and an abstract datagram socket. A sender that posted to
   a sleeping peer sends it one byte, which wakes the peer's epoll. Its name travels in the
   address blob; net.c publishes and attaches, net_progress.c rings and sleeps. */
#ifndef FERRY_TRANSPORT_NET_DOORBELL_H
#define FERRY_TRANSPORT_NET_DOORBELL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

/* This process's doorbell. */
typedef struct {
    int fd;                         /* bound abstract datagram socket, or -1: no doorbell */
    atomic_int *flag;               /* our shared page: nonzero while the progress thread sleeps */
    char name[64];                  /* the socket's abstract name and the page's shm name */
} ferry__net_bell;

/* A peer's doorbell as this process rings it (shm peers only). */
typedef struct {
    bool is_set;
    atomic_int *flag;               /* its sleeping flag, mapped; NULL = ring always */
    struct sockaddr_un addr;
    socklen_t addr_len;
} ferry__net_peer_bell;

/* Creates our doorbell and adds its socket to epoll_fd (event data: the bell's address). On
   failure bell->fd is -1 and the reason is logged at info: shm then still works, the progress
   thread naps instead of sleeping. Also removes pages left by processes that died. */
void ferry__net_bell_open(ferry__net_bell *bell, int epoll_fd);

/* Closes and unlinks ours; fd -1 / flag NULL are fine. */
void ferry__net_bell_close(ferry__net_bell *bell);

/* Attaches to the doorbell a peer published (name: name_len bytes, not NUL-terminated). With
   is_self it is ours (a user thread may post to self while we sleep) and nothing new is mapped.
   Does nothing when we have no doorbell ourselves or the name is too long. */
void ferry__net_bell_attach(ferry__net_peer_bell *to, const ferry__net_bell *own,
                            const unsigned char *name, size_t name_len, bool is_self);

/* Names in /dev/shm that ferry makes (doorbells here, shm regions in net.c) carry the pid
   namespace (the inode of /proc/self/ns/pid; 0 when unknown) beside the pid, because /dev/shm
   may be shared by processes in other pid namespaces (containers), whose pids mean nothing
   here. A name is stale only when it carries our namespace and a pid that no longer exists;
   names from other namespaces are left to their own processes. */
unsigned long long ferry__net_pidns(void);
bool ferry__net_is_stale(unsigned long long pidns, int pid);

/* Unmaps what attach mapped (ours stays: ferry__net_bell_close's). */
void ferry__net_bell_detach(ferry__net_peer_bell *to, const ferry__net_bell *own);

/* After posting to a peer: sends it a byte if it sleeps (or if its flag is unknown). rank is
   for the debug log. Any thread. */
void ferry__net_bell_ring(const ferry__net_bell *own, const ferry__net_peer_bell *to, int rank);

/* The progress thread says whether it is about to sleep, for peers deciding to ring. */
void ferry__net_bell_set_sleeping(ferry__net_bell *own, bool is_sleeping);

/* Reads away the rings that woke us. */
void ferry__net_bell_drain(ferry__net_bell *own);

#endif
