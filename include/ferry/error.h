/* Status codes and the thread-local "last error" every ferry call leaves behind on failure. */
#ifndef FERRY_ERROR_H
#define FERRY_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FERRY_API __attribute__((visibility("default")))
#define FERRY_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FERRY_API
#define FERRY_PRINTF(f, a)
#endif

/* X(name, text): the one list of codes; ferry_strerror is generated from it. */
#define FERRY_STATUS_LIST(X)                                                   \
    X(FERRY_OK, "success")                                                     \
    X(FERRY_EINVAL, "invalid argument")                                        \
    X(FERRY_ENOMEM, "out of memory")                                           \
    X(FERRY_ETIMEDOUT, "timed out")                                            \
    X(FERRY_ESHUTDOWN, "RPC is not running")                                   \
    X(FERRY_EUNKNOWN_WORKER, "unknown worker")                                 \
    X(FERRY_EUNKNOWN_FUNCTION, "unknown function")                             \
    X(FERRY_EREMOTE, "remote function failed")                                 \
    X(FERRY_ETRANSPORT, "transport error")                                     \
    X(FERRY_EPROTO, "malformed message")                                       \
    X(FERRY_ETYPE, "wrong value kind")                                         \
    X(FERRY_ENOTOWNER, "not the owner")                                        \
    X(FERRY_EAUTH, "authentication failed")                                    \
    X(FERRY_ECANCELED, "canceled")                                             \
    X(FERRY_EAGAIN, "still pending")                                           \
    X(FERRY_ENOTSUP, "not supported")                                          \
    X(FERRY_EDEVICE, "device error")

#define FERRY__STATUS_ENUM(name, text) name,
typedef enum { FERRY_STATUS_LIST(FERRY__STATUS_ENUM) FERRY__STATUS_COUNT } ferry_status;
#undef FERRY__STATUS_ENUM

/* A static string describing `status`; never NULL (unknown codes give "unknown status"). */
FERRY_API const char *ferry_strerror(ferry_status status);

/* The code and message of the last failure on this thread (FERRY_OK and "" when nothing failed
   yet or after ferry_clear_error). A successful call does not reset them, so read them only right
   after a call reported failure; the exception is the value accessors (ferry/value.h), which
   set the status (not the message) to FERRY_OK when they succeed. The message is borrowed and
   stays valid until the next failing ferry call on this thread. Per thread, so thread-safe. */
FERRY_API ferry_status ferry_last_status(void);
FERRY_API const char *ferry_last_error(void);

/* When the last failure on this thread is FERRY_EREMOTE (a remote function failed), the code that
   function itself failed with (FERRY_EINVAL for `ferry_set_error(FERRY_EINVAL, ...)`); through
   nested calls (A calls B, whose function passes up the FERRY_EREMOTE of its own call to C) the
   innermost function's code. FERRY_EREMOTE when the callee's code is not known (a peer that does
   not send it). For any other last failure, the same as ferry_last_status(). Per thread. */
FERRY_API ferry_status ferry_last_remote_status(void);

/* Records `status` and a printf-style message as this thread's last error and returns `status`.
   `fmt` NULL records ferry_strerror(status); messages are cut at 1023 bytes. `fmt` may format
   ferry_last_error() itself (to add context to an error being passed up).
   A remote function returns `ferry_set_error(FERRY_EINVAL, "bad shape %d", n)`; its caller sees
   FERRY_EREMOTE with a message naming the worker, the function and "bad shape ...", and
   ferry_last_remote_status() FERRY_EINVAL. Setting FERRY_EREMOTE while the last error already is
   FERRY_EREMOTE (passing a remote failure up with more context) keeps its remote status; any
   other call makes the remote status `status`. */
FERRY_API ferry_status ferry_set_error(ferry_status status, const char *fmt, ...) FERRY_PRINTF(2, 3);
FERRY_API ferry_status ferry_set_errorv(ferry_status status, const char *fmt, va_list ap);

/* Forgets the last error of this thread (status FERRY_OK, message ""). */
FERRY_API void ferry_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
