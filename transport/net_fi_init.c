/* libfabric's one-time initialisation (net_fi_init.h). Two costs of libfabric's start are
   worth avoiding when many processes start on few cores:

   - The verbs provider, built into distribution packages of libfabric, reads all of
     /proc/kallsyms twice while it initialises, whatever FI_PROVIDER says, to learn whether the
     kernel has dma-buf and peer-memory support (70 ms of CPU per process here). No parameter
     turns the read off. We run the initialisation on a short-lived thread of our own whose
     seccomp filter answers ENOENT to an open of exactly the string libfabric passes (its
     address in libfabric's read-only data), so verbs concludes "no support" the way it does
     on a kernel without /proc/kallsyms. The filter, and the no_new_privs flag a filter needs,
     belong to that thread alone and end with it; nothing else of the process changes. Where
     the string is not in libfabric, or seccomp is unavailable, we do nothing.
   - rxm preposts 4096 receive buffers of 16 KiB on its shared receive context, and its buffer
     pool zeroes them as it grows, 1024 at a time: 68 MB written by every process. One chunk is
     plenty for ferry, whose progress thread drains completions continuously; a process that
     runs out simply stops reading its sockets until it reposts (TCP flow control), nothing is
     lost. */
#include "transport/net_fi_init.h"

#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <rdma/fabric.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h> /* __NR_open, __NR_openat */

#include "core/log.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#define HAVE_FILTER 1
#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#else
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#endif
#else
#define HAVE_FILTER 0
#endif

static const char *const MOD = "net";

#define RXM_RX_ENV "FI_OFI_RXM_MSG_RX_SIZE"
#define RXM_RX_DEFAULT "1024"
#define KALLSYMS "/proc/kallsyms"
#define MAX_COPIES 4

static pthread_once_t once = PTHREAD_ONCE_INIT;

#if HAVE_FILTER
typedef struct {
    uintptr_t at[MAX_COPIES];
    int n;
} string_copies;

/* Every copy of "/proc/kallsyms" with its terminating NUL in libfabric's read-only segments:
   those holding data first (.rodata), the code segment only when they have none. */
static int find_copies(struct dl_phdr_info *info, size_t size, void *arg)
{
    string_copies *c = arg;
    (void)size;
    const char *base = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    base = base ? base + 1 : info->dlpi_name;
    if (!base || strncmp(base, "libfabric.so", 12) != 0)
        return 0;
    for (int k = 0; k < 2 * info->dlpi_phnum; k++) {
        if (k == info->dlpi_phnum && c->n > 0)
            break; /* found in data */
        const ElfW(Phdr) *ph = &info->dlpi_phdr[k % info->dlpi_phnum];
        bool is_code = (ph->p_flags & PF_X) != 0;
        if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W) || !(ph->p_flags & PF_R) ||
            is_code != (k >= info->dlpi_phnum))
            continue;
        const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr);
        size_t left = ph->p_filesz;
        const size_t len = sizeof KALLSYMS; /* with the NUL */
        const char *hit;
        while (c->n < MAX_COPIES && left >= len && (hit = memmem(p, left, KALLSYMS, len))) {
            c->at[c->n++] = (uintptr_t)hit;
            left -= (size_t)(hit + len - p);
            p = hit + len;
        }
    }
    return 1; /* the one libfabric; stop */
}

#define STMT(code, k) ((struct sock_filter)BPF_STMT(code, k))
#define JUMP(code, k, t, f) ((struct sock_filter)BPF_JUMP(code, k, t, f))
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define ARG_HI(i) (ARG_LO(i) + 4)

/* Appends: if argument `arg` equals one of the copies, fail with ENOENT. Little-endian halves. */
static int add_path_checks(struct sock_filter *f, int n, int arg, const string_copies *c)
{
    for (int i = 0; i < c->n; i++) {
        uint64_t a = c->at[i];
        f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(arg));
        f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)a, 0, 3);
        f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_HI(arg));
        f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(a >> 32), 0, 1);
        f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOENT & SECCOMP_RET_DATA));
    }
    f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    return n;
}

/* Installs, on the calling thread only, a filter refusing opens of the copies. */
static bool install_filter(const string_copies *c)
{
    struct sock_filter f[8 + 2 * (5 * MAX_COPIES + 1)];
    int n = 0;
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 1, 0);
    f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef __NR_open
    /* open: its checks follow the allow below; openat: past them (5 per copy and an allow). */
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 2, 0);
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, (uint8_t)(5 * c->n + 2), 0);
    f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    n = add_path_checks(f, n, 0, c);
#else
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 1, 0);
    f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
#endif
    n = add_path_checks(f, n, 1, c);
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return false;
    /* prctl, not seccomp(2) with SECCOMP_FILTER_FLAG_TSYNC: this thread only (and prctl is
       known to more kernels and to valgrind). */
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0;
}

/* Any fi_getinfo initialises libfabric; one naming no provider does nothing else. */
static void run_fi_ini(void)
{
    struct fi_info *hints = fi_allocinfo(), *info = NULL;
    if (!hints)
        return;
    hints->fabric_attr->prov_name = strdup("ferry-none");
    if (hints->fabric_attr->prov_name && fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints,
                                                    &info) == 0)
        fi_freeinfo(info);
    fi_freeinfo(hints);
}

static void *filtered_ini(void *arg)
{
    if (install_filter(arg))
        run_fi_ini();
    else
        ferry__log_info(MOD, "no seccomp filter for libfabric's start (%s); it reads %s",
                        strerror(errno), KALLSYMS);
    return NULL;
}

/* Whoever asks for verbs gets libfabric's own answer about its memory support. */
static bool verbs_wanted(void)
{
    const char *full = getenv("FERRY_FABRIC_FULL_INIT");
    if (full && *full && strcmp(full, "0") != 0)
        return true;
    const char *prov = getenv("FI_PROVIDER");
    return prov && *prov != '^' && strstr(prov, "verbs");
}

static void skip_kallsyms(void)
{
    string_copies c = {.n = 0};
    if (verbs_wanted())
        return;
    dl_iterate_phdr(find_copies, &c);
    if (c.n == 0)
        return;
    pthread_t t;
    if (pthread_create(&t, NULL, filtered_ini, &c) == 0)
        pthread_join(t, NULL);
}
#else
static void skip_kallsyms(void) {}
#endif

/* Before libfabric reads its parameters (at its initialisation), and only when the user has
   not chosen. A setenv races with every getenv on another thread (glibc may free the array a
   reader walks), and by ferry_init_rpc the store's threads (and the user's) run: so it happens
   when the library is loaded, before main, while the process has one thread. */
__attribute__((constructor)) static void default_rxm_rx_size(void)
{
    setenv(RXM_RX_ENV, RXM_RX_DEFAULT, 0);
}

static void init_once(void)
{
    skip_kallsyms();
}

void ferry__net_fi_init(void)
{
    pthread_once(&once, init_once);
}
