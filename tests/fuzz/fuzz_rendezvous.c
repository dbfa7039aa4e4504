/* libFuzzer target for init_method and environment parsing (transport/init_method.c): tcp://
   URLs with ?rank=&world_size= queries, file:// paths, env://, the launcher variables, worker
   names and the auth token rule. The input is NUL-separated fields: init_method, MASTER_ADDR,
   MASTER_PORT, RANK, WORLD_SIZE, SLURM_PROCID, FERRY_AUTH_TOKEN, FERRY_INSECURE, worker name;
   a missing field leaves that variable unset. Whatever parses must make sense: a rank inside a
   positive world size, a store host with a port in range or a file path, never both. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "transport/init_method.h"

#define FIELD_MAX 4096

static const char *const vars[] = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                   "SLURM_PROCID", "FERRY_AUTH_TOKEN", "FERRY_INSECURE"};
#define N_VARS (sizeof vars / sizeof *vars)

/* putenv with buffers of our own, reused on every input, so the fuzzer's many settings do not
   pile up copies in the C library. */
static char env_buf[N_VARS][32 + FIELD_MAX];

static void set_var(size_t i, const char *value, size_t len)
{
    if (!value) {
        unsetenv(vars[i]);
        return;
    }
    snprintf(env_buf[i], sizeof env_buf[i], "%s=%.*s", vars[i], (int)len, value);
    putenv(env_buf[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *field[N_VARS + 2] = {0};
    size_t len[N_VARS + 2] = {0}, n = 0, start = 0;
    char method[FIELD_MAX + 1], name[FIELD_MAX + 1];
    for (size_t i = 0; i <= size && n < N_VARS + 2; i++) {
        if (i == size || data[i] == '\0') {
            field[n] = (const char *)data + start;
            len[n] = i - start < FIELD_MAX ? i - start : FIELD_MAX;
            n++;
            start = i + 1;
        }
    }
    snprintf(method, sizeof method, "%.*s", (int)len[0], field[0] ? field[0] : "");
    for (size_t i = 0; i < N_VARS; i++)
        set_var(i, field[i + 1], len[i + 1]);
    snprintf(name, sizeof name, "%.*s", (int)len[N_VARS + 1],
             field[N_VARS + 1] ? field[N_VARS + 1] : "");

    int rank = -1, world = 0, port = 0;
    char *host = NULL, *path = NULL;
    if (ferry__rendezvous_resolve_env(field[0] ? method : NULL, &rank, &world, &host, &port,
                                      &path) == FERRY_OK) {
        if (world <= 0 || rank < 0 || rank >= world || (!host == !path) ||
            (host && (port < 1 || port > 65535)))
            __builtin_trap();
    }
    ferry__free(host);
    ferry__free(path);
    (void)ferry__rendezvous_check_name(name);

    const char *token = NULL;
    ferry_status rc = ferry__rendezvous_token_policy(getenv("FERRY_AUTH_TOKEN"),
                                                     getenv("FERRY_INSECURE"), false, &token);
    if (rc == FERRY_OK && token && !*token)
        __builtin_trap(); /* an empty token never means "authenticated" */
    if (rc == FERRY_OK && !token && getenv("FERRY_AUTH_TOKEN"))
        __builtin_trap();
    return 0;
}
