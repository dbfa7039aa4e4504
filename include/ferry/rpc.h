/* The RPC agent: torch.distributed.rpc for C. The torch-style calls act on one process-wide
   agent started by ferry_init_rpc. Every call here is thread-safe. */
#ifndef FERRY_RPC_H
#define FERRY_RPC_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"
#include "ferry/future.h"
#include "ferry/tensor.h"
#include "ferry/value.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Timeouts are seconds. FERRY_TIMEOUT_DEFAULT means the agent's default (rpc_timeout);
   0 means no timeout (torch's convention). */
#define FERRY_TIMEOUT_DEFAULT (-1.0)
#define FERRY_TIMEOUT_NONE 0.0

/* Worker names are unique, match [A-Za-z0-9_:-]+ and are shorter than this (torch's rule).
   Wherever a call takes a worker's name it also takes "#<rank>" ("#0", "#3"): torch's calls
   accept a rank in place of a name, and no name has a '#'. */
#define FERRY_MAX_NAME_LEN 128

typedef struct {
    const char *name; /* borrowed from the agent; valid until shutdown */
    int id;           /* the worker's rank */
} ferry_worker_info;

/* One entry of a device map: tensors on `from` here, sent to `worker`, land on `to` there
   (torch's TensorPipeRpcBackendOptions.device_maps). */
#define FERRY_MAX_DEVICE_MAPS 64
#define FERRY_MAX_RPC_DEVICES 64
typedef struct {
    char worker[FERRY_MAX_NAME_LEN];
    ferry_device from, to;
} ferry_device_map_entry;

typedef struct {
    int num_worker_threads;  /* 16 */
    double rpc_timeout;      /* 60 s; 0 = none */
    /* "env://" | "tcp://host:port" | "file:///path" | "pmix://". NULL = the launcher's:
       pmix:// under a PMIx launcher whose server answers (mpirun, srun --mpi=pmix), else env://
       (ferry_launch_detect in launch.h says which, and why). */
    const char *init_method;
    const char *transport;   /* NULL = auto (shm to same-host peers, tcp to others); "tcp",
                                "shm" or a libfabric provider name forces one. FERRY_TRANSPORT
                                in the environment overrides it. */
    /* Heartbeat. While a call to a peer on another host has waited at least one period, the
       peer gets a small ping every period; it is answered where it is read (the peer's progress
       thread), never behind the peer's functions. A peer that leaves pings unanswered for
       heartbeat_misses x heartbeat_period_s (a same-host peer: that /proc shows stopped for as
       long) is taken for unreachable: its waiting calls fail with FERRY_ETRANSPORT and new calls
       to it fail at once, while the checks go on; once it answers again its calls work again.
       Only a failed send (the transport says so) or a process known gone (same host: its pid,
       zombies included) makes a peer dead for good. FERRY_HEARTBEAT_PERIOD_S and
       FERRY_HEARTBEAT_MISSES in the environment override these. docs/failures.md gives the
       times. */
    double heartbeat_period_s; /* 1.0 s; 0 = no heartbeat (a hung peer is seen only by timeouts) */
    int heartbeat_misses;      /* 3 (>= 1) */
    /* Threads the pool lends to tasks blocked on a future (a function waiting on a nested
       rpc_sync), on top of num_worker_threads. When all are lent, further work queues until a
       blocked task resumes. -1 = 4 x num_worker_threads; 0 = none (torch's fixed pool). */
    int max_spare_threads;
    /* The largest tensor, in bytes, a builtin makes for a caller where the caller chooses its
       size (torch.ones, zeros, full, arange, eye, rand, randn, the arithmetic builtins with
       broadcasting, torch.matmul): a bigger request fails with FERRY_EINVAL naming this cap
       before anything is allocated. Builtins that touch tensors run on the pool. 8 GiB; 0 = no
       cap. */
    long long builtin_max_bytes;
    /* Device maps (ferry_rpc_options_set_device_map fills them) and the devices this worker
       uses (ferry_rpc_options_set_devices; none set = every device the maps name, as torch).
       docs/cuda.md gives the rules ferry_init_rpc checks them against. */
    int n_device_maps;
    ferry_device_map_entry device_maps[FERRY_MAX_DEVICE_MAPS];
    int n_devices;
    ferry_device devices[FERRY_MAX_RPC_DEVICES];
} ferry_rpc_options;

/* Fills *opts with torch's defaults: 16 threads, 60 s, init_method NULL, transport auto, heartbeat every
   1 s with 3 misses allowed, 4 x 16 spare threads, builtins capped at 8 GiB. NULL is ignored. */
FERRY_API void ferry_rpc_options_init(ferry_rpc_options *opts);

/* torch's options.set_device_map(worker, {from: to}), one pair per call: a tensor on `from`
   sent to `worker` lands on `to` there, and what comes back from there lands through the inverse
   map. Adding a pair again is a no-op. FERRY_OK, or FERRY_EINVAL for a NULL or bad name, a
   negative index ("Device index must not be negative"), `from` already mapped to another device
   for that worker ("`set_device_map` only supports 1-to-1 mapping, trying to map cuda:0 to cuda:1
   and cuda:2"), or more than FERRY_MAX_DEVICE_MAPS pairs. The devices are checked against the
   workers' real devices at ferry_init_rpc. */
FERRY_API ferry_status ferry_rpc_options_set_device_map(ferry_rpc_options *opts,
                                                        const char *worker, ferry_device from,
                                                        ferry_device to);
/* torch's options.set_devices(devices): the CUDA devices this worker's RPC uses. FERRY_OK, or
   FERRY_EINVAL for a CPU device ("`set_devices` expect a list of CUDA devices, but got device
   type cpu."), a negative index, n outside 0..FERRY_MAX_RPC_DEVICES or NULL with n > 0. */
FERRY_API ferry_status ferry_rpc_options_set_devices(ferry_rpc_options *opts,
                                                     const ferry_device *devices, int n);

/* Joins the group: rendezvous through init_method, opens the fabric, connects to every worker
   and returns once all world_size workers are up. rank -1 and world_size 0 are read from the
   environment (RANK/WORLD_SIZE, then SLURM_PROCID/SLURM_NTASKS, OMPI_COMM_WORLD_RANK/SIZE,
   PMI_RANK/PMI_SIZE) or, with pmix://, from the PMIx server. Under Slurm an unset MASTER_ADDR
   or MASTER_PORT comes from the job (first node of the step, a port from the job id), and
   under Slurm or torchrun an unset FERRY_AUTH_TOKEN is derived from ~/.ferry/secret
   (docs/launchers.md). A NULL name means "worker<rank>". NULL options = defaults.
   `name` and `opts` are borrowed (copied). Serialized with ferry_shutdown.
   Returns FERRY_OK; FERRY_EINVAL (bad name, rank, world size, options, init_method or
   environment, with the variable named; a rank claimed twice); FERRY_ETIMEDOUT when not every
   rank arrived within rpc_timeout (the message lists the missing ranks); FERRY_ETRANSPORT
   (fabric or store failure); FERRY_EPROTO (malformed data in the rendezvous store); FERRY_EAUTH
   (FERRY_AUTH_TOKEN mismatch); FERRY_ENOMEM; FERRY_EINVAL "RPC is already initialized".
   Bad heartbeat or thread options (or FERRY_HEARTBEAT_* values) fail with FERRY_EINVAL naming
   the option or variable. Device maps and devices lists are checked on every worker against
   every worker's names and device counts, so all fail together with the same FERRY_EINVAL and
   torch's text ("Node worker0 has source devices with invalid indices in its device map for
   worker1 ..."; docs/cuda.md lists them). */
FERRY_API ferry_status ferry_init_rpc(const char *name, int rank, int world_size,
                                      const ferry_rpc_options *opts);

/* Leaves the group. graceful: waits until no worker has outstanding work, then all stop together
   (timeout 0 = wait forever, as torch). Not graceful: stops now; pending futures fail with
   FERRY_ESHUTDOWN. Returns FERRY_OK, FERRY_ESHUTDOWN (not initialized), FERRY_ETIMEDOUT
   (graceful wait ran out) or the error of the workers' exchange during the graceful wait
   (FERRY_ETRANSPORT when a peer or the store went away); on every error but FERRY_ESHUTDOWN the
   agent is stopped anyway. Stopping waits on no peer, dead or stopped: calls still waiting fail
   with FERRY_ESHUTDOWN and requests this worker was to answer later (RRef fetches of values not
   there yet) are answered with FERRY_ESHUTDOWN before its pool drains, so the call returns about
   `timeout` after it started at most, on the worker hosting the rendezvous store too
   (docs/failures.md gives the bounds). A worker whose peers gave up on it first gets an error
   naming the workers that had already left; when the worker hosting the store (rank 0) is gone
   (it died, or left), the error names it as unreachable. */
FERRY_API ferry_status ferry_shutdown(bool graceful, double timeout);

/* Fills *out for the worker called `name` (borrowed; NULL = this worker). FERRY_OK,
   FERRY_EINVAL (out NULL), FERRY_EUNKNOWN_WORKER, FERRY_ESHUTDOWN. */
FERRY_API ferry_status ferry_get_worker_info(const char *name, ferry_worker_info *out);
/* Fills up to `cap` entries of `out` with every worker in rank order and sets *n (when n is not
   NULL) to the world size; out may be NULL when cap is 0, to learn the size. FERRY_OK, or
   FERRY_ESHUTDOWN before init. */
FERRY_API ferry_status ferry_get_worker_infos(ferry_worker_info *out, size_t cap, size_t *n);
/* torch's get_worker_info(rank): *out for the worker of `rank`. FERRY_OK, FERRY_EINVAL (out
   NULL), FERRY_EUNKNOWN_WORKER (no such rank; the message gives the world's ranks),
   FERRY_ESHUTDOWN. */
FERRY_API ferry_status ferry_get_worker_info_by_rank(int rank, ferry_worker_info *out);
/* torch's _get_all_worker_infos: the same as ferry_get_worker_infos. */
FERRY_API ferry_status ferry_get_all_worker_infos(ferry_worker_info *out, size_t cap, size_t *n);

/* The default timeout of calls made from now on, in seconds (torch's get_rpc_timeout and
   _set_rpc_timeout). get gives 60 before init. set returns FERRY_OK, FERRY_EINVAL (negative or
   NaN) or FERRY_ESHUTDOWN (not initialized). The value belongs to the running agent: a later
   ferry_init_rpc starts again from its options' rpc_timeout. */
FERRY_API double ferry_get_rpc_timeout(void);
FERRY_API ferry_status ferry_set_rpc_timeout(double timeout);

/* A remote function. `args` is a list, `kwargs` a dict (both borrowed; never NULL: empty when the
   caller passed none). On success it stores a new reference in *result (NULL means none) and
   returns FERRY_OK; on failure it returns ferry_set_error(code, ...) and the caller sees
   FERRY_EREMOTE naming this worker, the function and the message. It runs on a pool thread and may
   call ferry_rpc_sync itself. */
typedef ferry_status (*ferry_fn)(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user);
/* An async remote function (torch's @rpc.functions.async_execution): returns a future (new
   reference) whose completion sends the response, or NULL after ferry_set_error. */
typedef ferry_future *(*ferry_async_fn)(const ferry_value *args, const ferry_value *kwargs,
                                        void *user);

/* Registers `fn` under `name` for this process (before or after init; before is recommended so
   no peer can call a name not there yet). A name is taken once: registering under a taken name,
   a builtin's included (torch.add, min, ...), is FERRY_EINVAL, even with the same function
   (a program that registers at every ferry_init_rpc registers once, or replaces):
   ferry_replace_function takes the name over, ferry_unregister_function frees it. Names are
   non-empty and shorter than FERRY_MAX_NAME_LEN; the name is copied, `user` is passed to every
   call as is and must stay valid while registered. FERRY_OK, FERRY_EINVAL (bad name, NULL fn,
   name taken), FERRY_ENOMEM. */
FERRY_API ferry_status ferry_register_function(const char *name, ferry_fn fn, void *user);
/* Frees `name` (a user's function or a builtin) so another function may take it; calls to it
   fail as unknown meanwhile. FERRY_OK, or FERRY_EINVAL when nothing is registered under it. */
FERRY_API ferry_status ferry_unregister_function(const char *name);
FERRY_API ferry_status ferry_register_async_function(const char *name, ferry_async_fn fn,
                                                     void *user);
/* Functions that promise never to block may run right where their request is read: on the
   agent's progress thread, or on a thread of this process that is waiting on a future (in
   ferry_future_wait, ferry_future_value, ferry_rpc_sync, ...) and reads the fabric meanwhile. Such
   a function must not block, and must not rely on the thread's own thread-local state: the
   thread may be a user thread in the middle of its own call. ferry saves and restores that
   thread's last error around the function, and its modules install the request's own call
   state (such as a distributed autograd context) for its length. Register functions that may
   block with ferry_register_function instead: they run on the agent's pool. */
FERRY_API ferry_status ferry_register_nonblocking_function(const char *name, ferry_fn fn,
                                                           void *user);

/* Registers `fn` under `name` in place of whatever is registered there, a builtin included
   (which then is no longer one: ferry_builtins stops listing it), or as a plain registration
   when the name is free. The swap is atomic: every call that starts after it runs `fn`; calls
   already running finish with the function they started with (so that one's `user` must stay
   valid until they end). The kind follows the call: ferry_replace_function for a pool
   function, _nonblocking_ and _async_ as their register calls. Names and arguments as
   ferry_register_function. FERRY_OK, FERRY_EINVAL (bad name, NULL fn), FERRY_ENOMEM. */
FERRY_API ferry_status ferry_replace_function(const char *name, ferry_fn fn, void *user);
FERRY_API ferry_status ferry_replace_nonblocking_function(const char *name, ferry_fn fn,
                                                          void *user);
FERRY_API ferry_status ferry_replace_async_function(const char *name, ferry_async_fn fn,
                                                    void *user);

/* One builtin: a function every worker serves from its start without any registration
   (docs/builtins.md describes each). The strings are static. */
typedef struct {
    const char *name;      /* what ferry_rpc_sync takes: "torch.add", "min", ... */
    const char *signature; /* torch's or Python's parameters: "torch.add(input, other, *, alpha=1)" */
    const char *summary;   /* one line on the result */
} ferry_builtin_info;

/* The builtins registered in this process now, in docs/builtins.md's order: fills up to `cap`
   entries of `out` and sets *n (when n is not NULL) to how many there are; out may be NULL when
   cap is 0, to learn the count. A builtin replaced or unregistered is left out. Thread-safe;
   works before ferry_init_rpc. FERRY_OK, or FERRY_EINVAL (out NULL with cap > 0). */
FERRY_API ferry_status ferry_builtins(ferry_builtin_info *out, size_t cap, size_t *n);

/* Calls `fn` on worker `to` (both borrowed). args (a list) and kwargs (a dict) are borrowed and
   may be NULL; they are only read, so a registered function may pass on its own (const) ones,
   here and in every call that sends arguments (ferry_remote, ferry_rref_rpc_sync, the object
   and group calls). timeout is >= 0 or FERRY_TIMEOUT_DEFAULT.
   rpc_sync returns the result (new reference; none is a none value) or NULL with the last error:
   FERRY_EREMOTE (the function failed), FERRY_EUNKNOWN_FUNCTION, FERRY_EUNKNOWN_WORKER,
   FERRY_ETIMEDOUT, FERRY_ESHUTDOWN, FERRY_ETRANSPORT, FERRY_EINVAL, FERRY_EPROTO, FERRY_ENOMEM.
   rpc_async returns a future of the same (new reference), or NULL for errors found before
   sending: FERRY_EINVAL (names, argument kinds, timeout), FERRY_ESHUTDOWN,
   FERRY_EUNKNOWN_WORKER, FERRY_ETRANSPORT (the peer is known dead or the send failed),
   FERRY_ENOMEM. Tensors in args are sent from their storage without a copy: do not change them
   until the call completes. */
FERRY_API ferry_value *ferry_rpc_sync(const char *to, const char *fn, const ferry_value *args,
                                      const ferry_value *kwargs, double timeout);
FERRY_API ferry_future *ferry_rpc_async(const char *to, const char *fn, const ferry_value *args,
                                        const ferry_value *kwargs, double timeout);

#ifdef __cplusplus
}
#endif
#endif
