/* The shm doorbell (see net_doorbell.h): a shared page with our "sleeping" flag plus an abstract
   datagram socket, named "ferry-<pid>-<nonce>" so pages of dead processes can be found and
   removed. Ringing is one non-blocking sendto, skipped while the peer's flag says it is awake;
   the fences that make "either it sees our post or we see it asleep" hold are here and in the
   progress thread's sleep. */
#include "transport/net_doorbell.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"

#define PAGE_BYTES 4096

static const char *const MOD = "net";

static void bell_addr(const char *name, struct sockaddr_un *out, socklen_t *len)
{
    memset(out, 0, sizeof *out);
    out->sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(out->sun_path + 1, name, n); /* abstract: leading NUL, nothing on disk */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static atomic_int *map_flag(const char *name, int oflag)
{
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, oflag, 0600);
    if (fd < 0)
        return NULL;
    void *p = (oflag & O_CREAT) && ftruncate(fd, PAGE_BYTES) != 0
                  ? MAP_FAILED
                  : mmap(NULL, PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

unsigned long long ferry__net_pidns(void)
{
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

bool ferry__net_is_stale(unsigned long long pidns, int pid)
{
    return pid > 0 && pid != (int)getpid() && pidns == ferry__net_pidns() &&
           kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Pages left by processes of our pid namespace that died without closing (killed tests,
   crashes). A page unlinked while still mapped stays valid for whoever mapped it. */
static void remove_stale_bells(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        unsigned long long ns = 0, nonce = 0;
        int pid = 0, end = 0;
        if (sscanf(de->d_name, "ferry-%llu-%d-%llx%n", &ns, &pid, &nonce, &end) != 3 ||
            de->d_name[end] || !ferry__net_is_stale(ns, pid))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/%s", de->d_name);
        shm_unlink(path);
    }
    closedir(d);
}

void ferry__net_bell_open(ferry__net_bell *b, int epoll_fd)
{
    remove_stale_bells();
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint64_t)ferry__now_ns(); /* unique enough with the pid in front */
    snprintf(b->name, sizeof b->name, "ferry-%llu-%d-%016llx", ferry__net_pidns(),
             (int)getpid(), (unsigned long long)nonce);
    struct sockaddr_un a;
    socklen_t len;
    bell_addr(b->name, &a, &len);
    b->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    b->flag = map_flag(b->name, O_CREAT | O_EXCL | O_RDWR);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = b};
    if (b->fd < 0 || !b->flag || bind(b->fd, (struct sockaddr *)&a, len) != 0 ||
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, b->fd, &ev) != 0) {
        ferry__log_info(MOD, "no shm doorbell (%s): idle shm is polled", strerror(errno));
        if (b->fd >= 0)
            close(b->fd);
        b->fd = -1;
    }
}

void ferry__net_bell_close(ferry__net_bell *b)
{
    if (b->fd >= 0)
        close(b->fd);
    if (b->flag) {
        munmap((void *)b->flag, PAGE_BYTES);
        char path[80];
        snprintf(path, sizeof path, "/%s", b->name);
        shm_unlink(path);
    }
    b->fd = -1;
    b->flag = NULL;
}

void ferry__net_bell_attach(ferry__net_peer_bell *to, const ferry__net_bell *own,
                            const unsigned char *name, size_t name_len, bool is_self)
{
    char text[sizeof own->name];
    if (own->fd < 0 || name_len >= sizeof text)
        return;
    memcpy(text, name, name_len);
    text[name_len] = '\0';
    bell_addr(text, &to->addr, &to->addr_len);
    to->flag = is_self ? own->flag : map_flag(text, O_RDWR);
    to->is_set = true;
}

void ferry__net_bell_detach(ferry__net_peer_bell *to, const ferry__net_bell *own)
{
    if (to->flag && to->flag != own->flag)
        munmap((void *)to->flag, PAGE_BYTES);
    to->flag = NULL;
    to->is_set = false;
}

void ferry__net_bell_ring(const ferry__net_bell *own, const ferry__net_peer_bell *to, int rank)
{
    if (!to->is_set)
        return;
    /* The post wrote into the peer's queue; the peer stores its flag before its last look at
       that queue. With a full fence on both sides one of us sees the other. */
    atomic_thread_fence(memory_order_seq_cst);
    if (to->flag && !atomic_load(to->flag))
        return;
    if (sendto(own->fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&to->addr,
               to->addr_len) < 0 && errno != EAGAIN)
        ferry__log_debug(MOD, "doorbell of rank %d: %s", rank, strerror(errno));
}

void ferry__net_bell_set_sleeping(ferry__net_bell *own, bool is_sleeping)
{
    if (own->flag)
        atomic_store(own->flag, is_sleeping);
}

void ferry__net_bell_drain(ferry__net_bell *own)
{
    char buf[64];
    for (int i = 0; i < 64; i++)
        if (recv(own->fd, buf, sizeof buf, MSG_DONTWAIT) < 0)
            break;
}
