/* Logging to stderr, level from FERRY_LOG (error, warn, info, debug; default warn). Each line
   carries time, pid, thread, worker name and module. The level is checked before formatting. */
#ifndef FERRY_CORE_LOG_H
#define FERRY_CORE_LOG_H

#include "ferry/error.h"

typedef enum { FERRY_LOG_ERROR, FERRY_LOG_WARN, FERRY_LOG_INFO, FERRY_LOG_DEBUG } ferry__log_level;

/* The level in force (read from FERRY_LOG once). */
ferry__log_level ferry__log_level_get(void);
void ferry__log_write(ferry__log_level level, const char *module, const char *fmt, ...)
    FERRY_PRINTF(3, 4);
/* The worker name printed on every line (copied; NULL clears it). */
void ferry__log_set_worker(const char *name);

#define FERRY_LOG_AT(level, module, ...)                                                  \
    do {                                                                                \
        if ((level) <= ferry__log_level_get())                                          \
            ferry__log_write((level), (module), __VA_ARGS__);                           \
    } while (0)

#define ferry__log_error(module, ...) FERRY_LOG_AT(FERRY_LOG_ERROR, module, __VA_ARGS__)
#define ferry__log_warn(module, ...) FERRY_LOG_AT(FERRY_LOG_WARN, module, __VA_ARGS__)
#define ferry__log_info(module, ...) FERRY_LOG_AT(FERRY_LOG_INFO, module, __VA_ARGS__)
#define ferry__log_debug(module, ...) FERRY_LOG_AT(FERRY_LOG_DEBUG, module, __VA_ARGS__)

#endif
