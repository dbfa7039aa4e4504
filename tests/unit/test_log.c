/* Unit tests for the level FERRY_LOG sets and the log file name a rank gets from
   FERRY_LOG_FILE. Each test runs in a process of its own, so each reads FERRY_LOG afresh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "test_util.h"

Test(log_file_name, puts_the_rank_where_the_pattern_says, .timeout = 5)
{
    char out[64];
    cr_expect_eq(ferry__log_file_name("run-%r.log", 3, out, sizeof out), strlen("run-3.log"));
    cr_expect_str_eq(out, "run-3.log");
    ferry__log_file_name("logs/%r/%r", 12, out, sizeof out);
    cr_expect_str_eq(out, "logs/12/12");
    ferry__log_file_name("100%%-%r", 0, out, sizeof out);
    cr_expect_str_eq(out, "100%-0");
}

Test(log_file_name, appends_the_rank_when_the_pattern_has_none, .timeout = 5)
{
    char out[64], want[64];
    ferry__log_file_name("ferry.log", 7, out, sizeof out);
    cr_expect_str_eq(out, "ferry.log.7");
    ferry__log_file_name("x-%p", 1, out, sizeof out);
    snprintf(want, sizeof want, "x-%d.1", (int)getpid());
    cr_expect_str_eq(out, want);
}

Test(log_file_name, says_how_long_a_name_that_does_not_fit_would_be, .timeout = 5)
{
    char out[8];
    size_t n = ferry__log_file_name("abcdefgh-%r", 42, out, sizeof out);
    cr_expect_eq(n, strlen("abcdefgh-42"));
    cr_expect_str_eq(out, "abcdefg", "cut to the buffer, NUL-terminated");
}

Test(log_level, is_read_from_ferry_log_once, .timeout = 5)
{
    setenv("FERRY_LOG", "DEBUG", 1);
    cr_expect_eq(ferry__log_level_get(), FERRY_LOG_DEBUG, "the level's name in any case");
    cr_expect(ferry__log_debug_on());
    setenv("FERRY_LOG", "error", 1);
    cr_expect_eq(ferry__log_level_get(), FERRY_LOG_DEBUG, "read once, not on every check");
}

Test(log_level, is_warn_by_default_and_debug_lines_are_off, .timeout = 5)
{
    unsetenv("FERRY_LOG");
    cr_expect(ferry__log_on(FERRY_LOG_WARN), "a first check reads the level");
    cr_expect_eq(ferry__log_level_get(), FERRY_LOG_WARN);
    cr_expect(ferry__log_on(FERRY_LOG_ERROR));
    cr_expect(!ferry__log_on(FERRY_LOG_INFO));
    cr_expect(!ferry__log_debug_on());
}

Test(log_level, info_keeps_debug_lines_off, .timeout = 5)
{
    setenv("FERRY_LOG", "info", 1);
    cr_expect(!ferry__log_debug_on(), "a first check that fails reads the level too");
    cr_expect_eq(ferry__log_level_get(), FERRY_LOG_INFO);
    cr_expect(ferry__log_on(FERRY_LOG_INFO));
}
