/* The per-user secret and the job tokens derived from it (see launcher.h). The file is read
   with O_NOFOLLOW and checked after opening (a regular file, the caller's, no access for group
   or others), so a planted link or a file someone else can read is never trusted. A missing
   file is written under a temporary name and linked into place, so processes that race to make
   it agree on the first one linked. */
#include "transport/launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "transport/sha256.h"

#define SECRET_BYTES 32
#define SECRET_MAX 512
#define SECRET_MIN_TEXT 32
#define PATH_CAP 4096

static const char hex_digits[] = "0123456789abcdef";

static void to_hex(const unsigned char *raw, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[raw[i] >> 4];
        out[2 * i + 1] = hex_digits[raw[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The secret file's path and, when it is the default one, the directory to create. */
static ferry_status secret_path(char *path, char *dir)
{
    const char *custom = getenv("FERRY_SECRET_FILE");
    *dir = '\0';
    if (custom && *custom) {
        if (strlen(custom) >= PATH_CAP)
            return ferry__fail(FERRY_EINVAL, "FERRY_SECRET_FILE is too long");
        snprintf(path, PATH_CAP, "%s", custom);
        return FERRY_OK;
    }
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(geteuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home || !*home || strlen(home) > PATH_CAP - 32)
        return ferry__fail(FERRY_EAUTH,
                           "no home directory for the job secret: set HOME, FERRY_SECRET_FILE or "
                           "FERRY_AUTH_TOKEN");
    snprintf(dir, PATH_CAP, "%.4000s/.ferry", home);
    snprintf(path, PATH_CAP, "%.4000s/.ferry/secret", home);
    return FERRY_OK;
}

static ferry_status ensure_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ferry__fail(FERRY_EAUTH, "cannot create %s for the job secret: %s", dir,
                           strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0)
        return ferry__fail(FERRY_EAUTH, "cannot read %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return ferry__fail(FERRY_EAUTH,
                           "%s must be a directory of yours that nobody else may write to", dir);
    return FERRY_OK;
}

/* FERRY_OK with the secret's text; FERRY_ENOENT-like: *is_missing when there is no file. */
static ferry_status read_secret(const char *path, char *text, size_t *len, bool *is_missing)
{
    *is_missing = false;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        *is_missing = true;
        return FERRY_OK;
    }
    if (fd < 0)
        return ferry__fail(FERRY_EAUTH, "cannot open the job secret %s: %s%s", path,
                           strerror(errno), errno == ELOOP ? " (it is a symbolic link)" : "");
    struct stat st;
    ferry_status rc = FERRY_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        rc = ferry__fail(FERRY_EAUTH, "the job secret %s is not a regular file", path);
    else if (st.st_uid != geteuid())
        rc = ferry__fail(FERRY_EAUTH, "the job secret %s belongs to someone else (uid %d)", path,
                         (int)st.st_uid);
    else if (st.st_mode & 077)
        rc = ferry__fail(FERRY_EAUTH,
                         "the job secret %s may be read by others (mode %03o): chmod 600 it", path,
                         (unsigned)(st.st_mode & 0777));
    ssize_t n = rc == FERRY_OK ? read(fd, text, SECRET_MAX) : 0;
    close(fd);
    if (rc != FERRY_OK)
        return rc;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ' || text[n - 1] == '\r'))
        n--;
    if (n < SECRET_MIN_TEXT)
        return ferry__fail(FERRY_EAUTH,
                           "the job secret %s holds %zd bytes; it needs at least %d (delete it "
                           "and ferry makes a new one)",
                           path, n < 0 ? (ssize_t)0 : n, SECRET_MIN_TEXT);
    *len = (size_t)n;
    return FERRY_OK;
}

static ferry_status create_secret(const char *path)
{
    unsigned char raw[SECRET_BYTES];
    char text[2 * SECRET_BYTES + 2], tmp[PATH_CAP + 64];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return ferry__fail(FERRY_EAUTH, "no randomness for the job secret: %s", strerror(errno));
    to_hex(raw, sizeof raw, text);
    explicit_bzero(raw, sizeof raw);
    strcat(text, "\n");
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return ferry__fail(FERRY_EAUTH, "cannot create the job secret %s: %s", tmp,
                           strerror(errno));
    size_t len = strlen(text);
    bool is_ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    explicit_bzero(text, sizeof text);
    int err = errno;
    if (is_ok && link(tmp, path) != 0 && errno != EEXIST) {
        err = errno;
        is_ok = false;
    }
    unlink(tmp);
    return is_ok ? FERRY_OK
                 : ferry__fail(FERRY_EAUTH, "cannot write the job secret %s: %s", path,
                               strerror(err));
}

ferry_status ferry__launch_secret_token(const char *scope, char *out)
{
    if (!scope || !*scope)
        return ferry__fail(FERRY_EINVAL, "a job token needs a scope");
    char path[PATH_CAP], dir[PATH_CAP], text[SECRET_MAX];
    size_t len = 0;
    bool is_missing = false;
    ferry_status rc = secret_path(path, dir);
    if (rc == FERRY_OK && *dir)
        rc = ensure_dir(dir);
    if (rc == FERRY_OK)
        rc = read_secret(path, text, &len, &is_missing);
    if (rc == FERRY_OK && is_missing && (rc = create_secret(path)) == FERRY_OK)
        rc = read_secret(path, text, &len, &is_missing);
    if (rc == FERRY_OK && is_missing)
        rc = ferry__fail(FERRY_EAUTH, "the job secret %s vanished while it was made", path);
    if (rc != FERRY_OK) {
        explicit_bzero(text, sizeof text);
        return rc;
    }
    static const char label[] = "ferry/job-token/";
    size_t scope_len = strlen(scope);
    char *msg = ferry__malloc(sizeof label + scope_len);
    if (!msg) {
        explicit_bzero(text, sizeof text);
        return ferry__fail(FERRY_ENOMEM, "out of memory deriving the job token");
    }
    memcpy(msg, label, sizeof label - 1);
    memcpy(msg + sizeof label - 1, scope, scope_len);
    unsigned char mac[FERRY_SHA256_LEN];
    ferry__hmac_sha256(text, len, msg, sizeof label - 1 + scope_len, mac);
    ferry__free(msg);
    explicit_bzero(text, sizeof text);
    to_hex(mac, sizeof mac, out);
    explicit_bzero(mac, sizeof mac);
    return FERRY_OK;
}

ferry_status ferry__launch_job_token(char *out, bool *is_derived)
{
    char scope[1024];
    *is_derived = false;
    if (!ferry__launch_job_scope(scope, sizeof scope, NULL))
        return FERRY_OK;
    ferry_status rc = ferry__launch_secret_token(scope, out);
    *is_derived = rc == FERRY_OK;
    return rc;
}
