/* Status strings and the thread-local last error. */
#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ERROR_MESSAGE_CAP FERRY__ERROR_MESSAGE_CAP

/* Declared in core/error.h so that value accessors can clear it inline. */
_Thread_local ferry_status ferry__last_status FERRY__TLS_INITIAL_EXEC;
/* The callee's own code behind a FERRY_EREMOTE last status (FERRY_EREMOTE: not known). */
static _Thread_local ferry_status last_remote;
static _Thread_local char last_message[ERROR_MESSAGE_CAP];

#define FERRY__STATUS_TEXT(name, text) [name] = text,
static const char *const status_text[FERRY__STATUS_COUNT] = {FERRY_STATUS_LIST(FERRY__STATUS_TEXT)};

const char *ferry_strerror(ferry_status status)
{
    if ((unsigned)status >= FERRY__STATUS_COUNT)
        return "unknown status";
    return status_text[status];
}

ferry_status ferry_last_status(void)
{
    return ferry__last_status;
}

const char *ferry_last_error(void)
{
    return last_message;
}

ferry_status ferry_last_remote_status(void)
{
    return ferry__last_status == FERRY_EREMOTE ? last_remote : ferry__last_status;
}

/* A remote code as it may be kept: out of range or FERRY_OK (no code sent) is not known. */
static ferry_status known_remote(ferry_status remote)
{
    return remote > FERRY_OK && remote < FERRY__STATUS_COUNT ? remote : FERRY_EREMOTE;
}

ferry_status ferry_set_errorv(ferry_status status, const char *fmt, va_list ap)
{
    char tmp[ERROR_MESSAGE_CAP];
    /* fmt may name last_message itself (passing an error up with more context): format aside. */
    if (fmt)
        vsnprintf(tmp, sizeof tmp, fmt, ap);
    else
        snprintf(tmp, sizeof tmp, "%s", ferry_strerror(status));
    snprintf(last_message, sizeof last_message, "%s", tmp);
    /* A FERRY_EREMOTE passed up keeps the code of the function that first failed. */
    if (status != FERRY_EREMOTE || ferry__last_status != FERRY_EREMOTE)
        last_remote = status;
    ferry__last_status = status;
    return status;
}

ferry_status ferry__set_remote_error(ferry_status remote, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ferry_set_errorv(FERRY_EREMOTE, fmt, ap);
    va_end(ap);
    last_remote = known_remote(remote);
    return FERRY_EREMOTE;
}

ferry_status ferry_set_error(ferry_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ferry_set_errorv(status, fmt, ap);
    va_end(ap);
    return status;
}

void ferry_clear_error(void)
{
    ferry__last_status = FERRY_OK;
    last_remote = FERRY_OK;
    last_message[0] = '\0';
}

ferry_status ferry__status_from_errno(int err)
{
    switch (err) {
    case 0:
        return FERRY_OK;
    case ENOMEM:
        return FERRY_ENOMEM;
    case ETIMEDOUT:
        return FERRY_ETIMEDOUT;
    case EINVAL:
        return FERRY_EINVAL;
    case EAGAIN:
        return FERRY_EAGAIN;
    case ECANCELED:
        return FERRY_ECANCELED;
    case EACCES:
    case EPERM:
        return FERRY_EAUTH;
    default:
        return FERRY_ETRANSPORT;
    }
}

void ferry__error_save(ferry__error_state *out)
{
    out->status = ferry__last_status;
    out->remote = last_remote;
    out->message[0] = '\0';
    if (last_message[0] == '\0')
        return; /* the usual case: nothing to keep */
    size_t n = strnlen(last_message, sizeof last_message - 1);
    memcpy(out->message, last_message, n);
    out->message[n] = '\0';
}

void ferry__error_restore(const ferry__error_state *saved)
{
    ferry__last_status = saved->status;
    last_remote = saved->remote;
    if (saved->message[0] == '\0') {
        last_message[0] = '\0';
        return;
    }
    size_t n = strnlen(saved->message, sizeof saved->message - 1);
    memcpy(last_message, saved->message, n);
    last_message[n] = '\0';
}
