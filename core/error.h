/* Internal error helpers: where a failure starts, record it once and return the code. */
#ifndef FERRY_CORE_ERROR_H
#define FERRY_CORE_ERROR_H

#include <stdio.h>

#include "ferry/error.h"

/* Records the failure as this thread's last error and returns the code. */
#define ferry__fail(rc, ...) ferry_set_error((rc), __VA_ARGS__)

/* Same, for calls that return a pointer: records and yields NULL. */
#define ferry__fail_null(rc, ...) (ferry_set_error((rc), __VA_ARGS__), NULL)

/* The status half of this thread's last error (core/error.c). Initial-exec TLS: reached with
   one instruction from the library, static or shared, rather than through __tls_get_addr; it
   takes 4 bytes of the static TLS space glibc keeps for libraries loaded later. */
#if defined(__GNUC__)
#define FERRY__TLS_INITIAL_EXEC __attribute__((tls_model("initial-exec")))
#else
#define FERRY__TLS_INITIAL_EXEC
#endif
extern _Thread_local ferry_status ferry__last_status FERRY__TLS_INITIAL_EXEC;

/* Sets the last status to FERRY_OK and leaves the message: one thread-local store, for calls
   that report success through the last status (the value accessors). */
static inline void ferry__status_clear(void)
{
    ferry__last_status = FERRY_OK;
}

/* Records FERRY_EREMOTE with the callee's own code `remote` (FERRY_OK or out of range: not
   known, read as FERRY_EREMOTE) as this thread's last error; returns FERRY_EREMOTE. */
ferry_status ferry__set_remote_error(ferry_status remote, const char *fmt, ...) FERRY_PRINTF(2, 3);

/* A thread's last error, kept aside while the thread runs someone else's work (a request read
   by a thread that waits on a future) and put back afterwards. */
#define FERRY__ERROR_MESSAGE_CAP 1024
typedef struct {
    ferry_status status;
    ferry_status remote; /* ferry_last_remote_status's, behind a FERRY_EREMOTE */
    char message[FERRY__ERROR_MESSAGE_CAP];
} ferry__error_state;
void ferry__error_save(ferry__error_state *out);
void ferry__error_restore(const ferry__error_state *saved);

/* Maps an errno value to a status (ENOMEM -> FERRY_ENOMEM, ETIMEDOUT -> FERRY_ETIMEDOUT, ...). */
ferry_status ferry__status_from_errno(int err);

/* Our own invariants only: never user input, wire bytes or peer failure. */
#define FERRY_ASSERT(cond)                                                              \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "ferry: internal invariant failed: %s (%s:%d)\n", #cond,     \
                    __FILE__, __LINE__);                                                \
            __builtin_trap();                                                           \
        }                                                                               \
    } while (0)

#endif
