/* launch_check: one 3-worker job that must give the same results under every launcher
   (ferryrun, torchrun's environment, mpirun, srun with and without PMIx, sbatch). Each rank
   joins with nothing but what its launcher set: no name, no rank, no world size, no
   init_method. Every rank prints the launcher it detected,
     launch_check: rank R of N on HOST: launcher L (init_method M)
   and rank 0 makes one call of each kind (rpc_sync of the builtin torch.add on worker1,
   rpc_async on worker2, remote() on worker2 and to_here, a distributed-autograd forward
   through worker1 and worker2 with its backward pass) and prints one line of results that
   tests/launchers/run.sh compares byte for byte between launchers:
     launch_check: world=3 names=... add=... async=... rref=... grad=...
   Exit status 0 only when every step worked; a failure says which step and why on stderr.
   `launch_check --detect` only prints what ferry_launch_detect found, one line,
     launch_check: detect: launcher L rank R of N init_method M problem: P
   and exits 0 (1 when detection failed), so a test can ask a launcher what ferry sees under it
   before running a job there. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ferry/ferry.h"
#include "ferry/launch.h"

#define WORLD 3
#define TEXT_BYTES 128

static int fail(const char *what)
{
    fprintf(stderr, "launch_check: %s failed: %s: %s\n", what,
            ferry_strerror(ferry_last_status()), ferry_last_error());
    return 1;
}

static ferry_tensor *vec2(float a, float b)
{
    float v[2] = {a, b};
    int64_t n = 2;
    return ferry_tensor_from_data(v, 1, &n, FERRY_FLOAT32);
}

static ferry_tensor *leaf2(float a, float b)
{
    ferry_tensor *t = vec2(a, b);
    if (t && ferry_tensor_set_requires_grad(t, true) != FERRY_OK) {
        ferry_tensor_release(t);
        return NULL;
    }
    return t;
}

/* The tensor a call returned, formatted into out; releases v. */
static int take_text(ferry_value *v, char *out, const char *what)
{
    ferry_tensor *t = ferry_value_as_tensor(v);
    if (!t) {
        ferry_value_release(v);
        return fail(what);
    }
    ferry_tensor_format(t, out, TEXT_BYTES);
    ferry_value_release(v);
    return 0;
}

/* fn(a, b) on `to` (tensors borrowed), waited for. */
static ferry_value *call2(const char *to, const char *fn, ferry_tensor *a, ferry_tensor *b)
{
    ferry_value *args = ferry_args(2, ferry_tensor_value(a), ferry_tensor_value(b));
    ferry_value *r = args ? ferry_rpc_sync(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(args);
    return r;
}

/* The world's names in rank order, comma separated. */
static int names_text(char *out, size_t cap)
{
    ferry_worker_info infos[WORLD];
    size_t n = 0;
    if (ferry_get_worker_infos(infos, WORLD, &n) != FERRY_OK)
        return fail("get_worker_infos");
    if (n != WORLD) {
        fprintf(stderr, "launch_check: the world has %zu workers, not %d\n", n, WORLD);
        return 1;
    }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "," : "", infos[i].name);
    return 0;
}

/* loss = sum(x * y on worker1 + x on worker2); d loss / dx = y + 1, d loss / dy = x. */
static int autograd_text(char *out)
{
    int rc = 1;
    ferry_tensor *x = leaf2(1, 2), *y = leaf2(3, 4), *loss = NULL;
    ferry_value *p = NULL, *q = NULL;
    int64_t ctx = ferry_dist_autograd_context_begin();
    if (!x || !y || ctx < 0)
        goto done;
    p = call2("worker1", "torch.mul", x, y);
    q = p ? call2("worker2", "torch.add", ferry_value_as_tensor(p), x) : NULL;
    loss = q ? ferry_sum(ferry_value_as_tensor(q)) : NULL;
    if (!loss || ferry_dist_autograd_backward(ctx, &loss, 1, false) != FERRY_OK)
        goto done;
    ferry_tensor *gx = ferry_dist_autograd_get_gradient(ctx, x);
    ferry_tensor *gy = gx ? ferry_dist_autograd_get_gradient(ctx, y) : NULL;
    if (gx && gy) {
        char a[TEXT_BYTES], b[TEXT_BYTES];
        ferry_tensor_format(gx, a, sizeof a);
        ferry_tensor_format(gy, b, sizeof b);
        snprintf(out, 2 * TEXT_BYTES + 2, "%s,%s", a, b);
        rc = 0;
    }
    ferry_tensor_release(gx);
    ferry_tensor_release(gy);
done:
    if (rc)
        fail("distributed autograd");
    if (ctx >= 0 && ferry_dist_autograd_context_end(ctx) != FERRY_OK && rc == 0)
        rc = fail("dist_autograd_context_end");
    ferry_value_release(p);
    ferry_value_release(q);
    ferry_tensor_release(loss);
    ferry_tensor_release(x);
    ferry_tensor_release(y);
    return rc;
}

static int run_master(void)
{
    char names[WORLD * FERRY_MAX_NAME_LEN], add[TEXT_BYTES], async[TEXT_BYTES],
        rref_text[TEXT_BYTES], grad[2 * TEXT_BYTES + 2];
    if (names_text(names, sizeof names))
        return 1;
    ferry_tensor *a = vec2(1, 2), *b = vec2(3, 4);
    int rc = a && b ? 0 : fail("making tensors");
    if (rc == 0)
        rc = take_text(call2("worker1", "torch.add", a, b), add, "rpc_sync torch.add");
    if (rc == 0) {
        ferry_value *args = ferry_args(2, ferry_tensor_value(a), ferry_tensor_value(b));
        ferry_future *f =
            args ? ferry_rpc_async("worker2", "torch.mul", args, NULL, FERRY_TIMEOUT_DEFAULT)
                 : NULL;
        ferry_value_release(args);
        rc = f ? take_text(ferry_future_value(f), async, "rpc_async torch.mul") : fail("rpc_async");
        ferry_future_release(f);
    }
    if (rc == 0) {
        ferry_value *args = ferry_args(2, ferry_tensor_value(b), ferry_int(5));
        ferry_rref *r =
            args ? ferry_remote("worker2", "torch.sub", args, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
        ferry_value_release(args);
        rc = r ? take_text(ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT), rref_text,
                           "remote torch.sub + to_here")
               : fail("remote");
        ferry_rref_release(r);
    }
    if (rc == 0)
        rc = autograd_text(grad);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    if (rc == 0)
        printf("launch_check: world=%d names=%s add=%s async=%s rref=%s grad=%s\n", WORLD, names,
               add, async, rref_text, grad);
    return rc;
}

/* The launcher's name, also when detection failed before naming it. */
static const char *launcher_text(const ferry_launch_info *info)
{
    return info->launcher_name ? info->launcher_name : ferry_launcher_name(info->launcher);
}

static int print_detect(void)
{
    ferry_launch_info info = {0};
    ferry_status rc = ferry_launch_detect(&info);
    printf("launch_check: detect: launcher %s rank %d of %d init_method %s problem: %s\n",
           launcher_text(&info), info.rank, info.world_size, info.init_method, info.problem);
    return rc == FERRY_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--detect"))
        return print_detect();
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--detect]\n", argv[0]);
        return 2;
    }
    ferry_launch_info info = {0};
    /* A launcher with a broken environment is reported, and init is still tried so that its
       own error (naming what is missing) is seen too. */
    if (ferry_launch_detect(&info) != FERRY_OK)
        fprintf(stderr, "launch_check: launcher environment: %s\n", info.problem);
    else if (info.launcher == FERRY_LAUNCHER_NONE)
        fprintf(stderr, "launch_check: no launcher found (%s)\n", info.problem);
    if (ferry_init_rpc(NULL, -1, 0, NULL) != FERRY_OK)
        return fail("init_rpc");
    ferry_worker_info me;
    size_t world = 0;
    if (ferry_get_worker_info(NULL, &me) != FERRY_OK ||
        ferry_get_worker_infos(NULL, 0, &world) != FERRY_OK)
        return fail("get_worker_info");
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    printf("launch_check: rank %d of %zu on %s: launcher %s (init_method %s)\n", me.id, world,
           host, launcher_text(&info), info.init_method);
    fflush(stdout);
    int rc = 0;
    if (world != WORLD) {
        fprintf(stderr, "launch_check: runs as %d ranks, not %zu\n", WORLD, world);
        rc = 1;
    } else if (me.id == 0) {
        rc = run_master();
    }
    if (ferry_shutdown(true, 0) != FERRY_OK && rc == 0)
        rc = fail("shutdown");
    return rc;
}
