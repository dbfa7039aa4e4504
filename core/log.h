/* Logging to stderr, level from FERRY_LOG (error, warn, info, debug; default warn; anything
   else is warned about once). Each line carries time, pid, thread, worker name and module. The
   level is checked before formatting. With FERRY_LOG_FILE a rank's lines go to its own file
   from init to shutdown (README, "Running programs"); stderr before and after. */
#ifndef FERRY_CORE_LOG_H
#define FERRY_CORE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"

typedef enum { FERRY_LOG_ERROR, FERRY_LOG_WARN, FERRY_LOG_INFO, FERRY_LOG_DEBUG } ferry__log_level;

/* The level in force once FERRY_LOG was read, and above every level until then, so a check
   made before passes and reads it (ferry__log_level_read, once). A level check on a hot path
   is then one load and one branch: the variable is hidden, so no GOT load either. */
#define FERRY__LOG_UNREAD 0x7fffffff
extern _Atomic int ferry__log_level_now __attribute__((visibility("hidden")));
ferry__log_level ferry__log_level_read(void);

/* True when lines of `level` are written. */
static inline bool ferry__log_on(ferry__log_level level)
{
    return (int)level <= atomic_load_explicit(&ferry__log_level_now, memory_order_relaxed) &&
           level <= ferry__log_level_read();
}

/* The level in force (read from FERRY_LOG once). */
static inline ferry__log_level ferry__log_level_get(void)
{
    return ferry__log_level_read();
}

/* True when debug lines are written: for code that must compute something only for them. */
static inline bool ferry__log_debug_on(void)
{
    return ferry__log_on(FERRY_LOG_DEBUG);
}

void ferry__log_write(ferry__log_level level, const char *module, const char *fmt, ...)
    FERRY_PRINTF(3, 4);
/* The worker name printed on every line (copied; NULL clears it) and its rank: from here on
   lines go to the rank's FERRY_LOG_FILE when one is set (NULL closes it). */
void ferry__log_set_worker(const char *name, int rank);
/* The file name FERRY_LOG_FILE's pattern gives for `rank`: %r is the rank, %p the pid, %% a
   percent sign, and a pattern without %r gets ".<rank>" appended. Writes at most cap bytes
   with the NUL; returns the length it needed (as snprintf). */
size_t ferry__log_file_name(const char *pattern, int rank, char *out, size_t cap);

#define FERRY_LOG_AT(level, module, ...)                                                  \
    do {                                                                                \
        if (ferry__log_on(level))                                                       \
            ferry__log_write((level), (module), __VA_ARGS__);                           \
    } while (0)

#define ferry__log_error(module, ...) FERRY_LOG_AT(FERRY_LOG_ERROR, module, __VA_ARGS__)
#define ferry__log_warn(module, ...) FERRY_LOG_AT(FERRY_LOG_WARN, module, __VA_ARGS__)
#define ferry__log_info(module, ...) FERRY_LOG_AT(FERRY_LOG_INFO, module, __VA_ARGS__)
#define ferry__log_debug(module, ...) FERRY_LOG_AT(FERRY_LOG_DEBUG, module, __VA_ARGS__)

#endif
