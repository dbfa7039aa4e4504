/* The file:// store: the same operations as the TCP store over one shared file, for clusters
   where a shared filesystem is easier to reach than rank 0's port. The file is an append-only log
   of (key, value) records; the last record for a key wins. Every operation takes an fcntl lock on
   the whole file (shared to read, exclusive to append) and first reads the records appended since
   this handle last looked, so each process keeps an up-to-date cache without rereading the file.
   Blocking gets and waits poll the file with a short, growing interval. Lengths read from the
   file are checked against the same caps as the TCP store: a corrupt file fails, never crashes.
   The token is not used: the file's permissions (0600) are what keeps others out. */
#include "transport/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "transport/store_wire.h"

#define RECORD_HEAD 8

typedef struct {
    char *key;
    uint8_t *val;
    size_t val_len;
} record;

/* One handle. `lock` serializes this process's threads, which share one set of fcntl locks. */
typedef struct {
    int fd;
    char *path;
    off_t parsed; /* bytes of the file already in `recs` */
    record *recs;
    size_t n_recs, cap_recs;
    pthread_mutex_t lock;
} file_store;

static ferry_status lock_file(file_store *fs, short type)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET};
    pthread_mutex_lock(&fs->lock);
    while (fcntl(fs->fd, F_SETLKW, &fl) != 0) {
        if (errno != EINTR) {
            int err = errno;
            pthread_mutex_unlock(&fs->lock);
            return ferry__fail(ferry__status_from_errno(err), "cannot lock file store %s: %s",
                               fs->path, strerror(err));
        }
    }
    return FERRY_OK;
}

static void unlock_file(file_store *fs)
{
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
    fcntl(fs->fd, F_SETLK, &fl);
    pthread_mutex_unlock(&fs->lock);
}

static record *find(file_store *fs, const char *key)
{
    /* Newest first: a rendezvous mostly asks for what was just written. */
    for (size_t i = fs->n_recs; i-- > 0;)
        if (!strcmp(fs->recs[i].key, key))
            return &fs->recs[i];
    return NULL;
}

/* Takes ownership of key and val. */
static ferry_status remember(file_store *fs, char *key, uint8_t *val, size_t val_len)
{
    record *r = find(fs, key);
    if (r) {
        ferry__free(key);
        ferry__free(r->val);
        r->val = val;
        r->val_len = val_len;
        return FERRY_OK;
    }
    if (fs->n_recs == fs->cap_recs) {
        size_t cap = fs->cap_recs ? fs->cap_recs * 2 : 64;
        record *p = ferry__realloc(fs->recs, cap * sizeof *p);
        if (!p) {
            ferry__free(key);
            ferry__free(val);
            return ferry__fail(FERRY_ENOMEM, "out of memory reading file store %s", fs->path);
        }
        fs->recs = p;
        fs->cap_recs = cap;
    }
    fs->recs[fs->n_recs++] = (record){key, val, val_len};
    return FERRY_OK;
}

static bool read_at(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        p += got;
        n -= (size_t)got;
        off += got;
    }
    return true;
}

/* Reads the records appended since the last look. Call with the file locked. A record cut off at
   the end can only be left by a writer that died mid-append (appends hold the exclusive lock):
   it is skipped here and the next append overwrites it. */
static ferry_status refresh(file_store *fs)
{
    struct stat sb;
    if (fstat(fs->fd, &sb) != 0)
        return ferry__fail(FERRY_ETRANSPORT, "cannot stat file store %s: %s", fs->path,
                           strerror(errno));
    while (sb.st_size - fs->parsed >= RECORD_HEAD) {
        uint8_t head[RECORD_HEAD];
        if (!read_at(fs->fd, head, sizeof head, fs->parsed))
            return ferry__fail(FERRY_ETRANSPORT, "cannot read file store %s", fs->path);
        uint32_t klen = ferry__store_load_be32(head), vlen = ferry__store_load_be32(head + 4);
        if (klen > FERRY__STORE_KEY_MAX || vlen > FERRY__STORE_VALUE_MAX)
            return ferry__fail(FERRY_EPROTO, "file store %s is corrupt at offset %lld", fs->path,
                               (long long)fs->parsed);
        if (sb.st_size - fs->parsed < (off_t)(RECORD_HEAD + klen + vlen))
            break;
        char *key = ferry__malloc(klen + 1);
        uint8_t *val = ferry__malloc(vlen);
        if (!key || !val) {
            ferry__free(key);
            ferry__free(val);
            return ferry__fail(FERRY_ENOMEM, "out of memory reading file store %s", fs->path);
        }
        if (!read_at(fs->fd, key, klen, fs->parsed + RECORD_HEAD) ||
            !read_at(fs->fd, val, vlen, fs->parsed + RECORD_HEAD + klen) ||
            memchr(key, '\0', klen)) {
            ferry__free(key);
            ferry__free(val);
            return ferry__fail(FERRY_EPROTO, "file store %s is corrupt at offset %lld", fs->path,
                               (long long)fs->parsed);
        }
        key[klen] = '\0';
        fs->parsed += RECORD_HEAD + klen + vlen;
        ferry_status rc = remember(fs, key, val, vlen);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

/* Writes buf at the end of what was parsed, first cutting off a record a dead writer left
   unfinished. Call with the file locked exclusively and refreshed. */
static ferry_status write_tail(file_store *fs, const uint8_t *buf, size_t total)
{
    size_t off = 0;
    if (ftruncate(fs->fd, fs->parsed) != 0)
        return ferry__fail(FERRY_ETRANSPORT, "cannot write file store %s: %s", fs->path,
                           strerror(errno));
    while (off < total) {
        ssize_t n = pwrite(fs->fd, buf + off, total - off, fs->parsed + (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ferry__fail(FERRY_ETRANSPORT, "cannot write file store %s: %s", fs->path,
                               n < 0 ? strerror(errno) : "short write");
        off += (size_t)n;
    }
    fs->parsed += (off_t)total;
    return FERRY_OK;
}

/* Appends one record and caches it. Call with the file locked exclusively and refreshed. */
static ferry_status append(file_store *fs, const char *key, const void *val, size_t len)
{
    size_t klen = strlen(key), total = RECORD_HEAD + klen + len;
    uint8_t *buf = ferry__malloc(total);
    char *key_copy = ferry__strdup(key);
    uint8_t *val_copy = ferry__malloc(len);
    ferry_status rc = FERRY_OK;
    if (!buf || !key_copy || !val_copy) {
        rc = ferry__fail(FERRY_ENOMEM, "out of memory writing file store %s", fs->path);
    } else {
        uint32_t lens[2] = {(uint32_t)klen, (uint32_t)len};
        for (int i = 0; i < RECORD_HEAD; i++)
            buf[i] = (uint8_t)(lens[i / 4] >> (24 - 8 * (i % 4)));
        memcpy(buf + RECORD_HEAD, key, klen);
        if (len) {
            memcpy(buf + RECORD_HEAD + klen, val, len);
            memcpy(val_copy, val, len);
        }
        rc = write_tail(fs, buf, total);
    }
    ferry__free(buf);
    if (rc != FERRY_OK) {
        ferry__free(key_copy);
        ferry__free(val_copy);
        return rc;
    }
    return remember(fs, key_copy, val_copy, len);
}

static ferry_status file_set(void *impl, const char *key, const void *val, size_t len)
{
    file_store *fs = impl;
    ferry_status rc = lock_file(fs, F_WRLCK);
    if (rc != FERRY_OK)
        return rc;
    rc = refresh(fs);
    if (rc == FERRY_OK)
        rc = append(fs, key, val, len);
    unlock_file(fs);
    return rc;
}

static ferry_status copy_out(file_store *fs, const void *src, size_t len, void **out,
                             size_t *out_len)
{
    *out = ferry__malloc(len);
    if (!*out)
        return ferry__fail(FERRY_ENOMEM, "out of memory reading file store %s", fs->path);
    if (len)
        memcpy(*out, src, len);
    *out_len = len;
    return FERRY_OK;
}

/* Polls until every key exists (copying keys[0]'s value out when val is given). */
static ferry_status poll_keys(file_store *fs, const char *const *keys, size_t n, double timeout_s,
                              void **val, size_t *len)
{
    double deadline = timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
    long sleep_us = 1000;
    for (;;) {
        ferry_status rc = lock_file(fs, F_RDLCK);
        if (rc != FERRY_OK)
            return rc;
        rc = refresh(fs);
        size_t found = 0;
        while (rc == FERRY_OK && found < n && find(fs, keys[found]))
            found++;
        if (rc == FERRY_OK && found == n && val) {
            record *r = find(fs, keys[0]);
            rc = copy_out(fs, r->val, r->val_len, val, len);
        }
        unlock_file(fs);
        if (rc != FERRY_OK || found == n)
            return rc;
        if (deadline && ferry__now_s() >= deadline)
            return ferry__fail(FERRY_ETIMEDOUT, "file store wait for '%s' timed out after %g s",
                               keys[found], timeout_s);
        ferry__sleep_us(sleep_us);
        sleep_us = sleep_us * 2 > 50000 ? 50000 : sleep_us * 2;
    }
}

static ferry_status file_get(void *impl, const char *key, double timeout_s, void **val,
                             size_t *len)
{
    return poll_keys(impl, &key, 1, timeout_s, val, len);
}

static ferry_status file_wait(void *impl, const char *const *keys, size_t n, double timeout_s)
{
    return poll_keys(impl, keys, n, timeout_s, NULL, NULL);
}

static bool parse_i64(const record *r, int64_t *out)
{
    char buf[32], *end;
    if (r->val_len == 0 || r->val_len >= sizeof buf)
        return false;
    memcpy(buf, r->val, r->val_len);
    buf[r->val_len] = '\0';
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    *out = v;
    return !errno && !*end;
}

static ferry_status file_add(void *impl, const char *key, int64_t delta, int64_t *out)
{
    file_store *fs = impl;
    int64_t cur = 0, sum = 0;
    char text[32];
    ferry_status rc = lock_file(fs, F_WRLCK);
    if (rc != FERRY_OK)
        return rc;
    rc = refresh(fs);
    record *r = rc == FERRY_OK ? find(fs, key) : NULL;
    if (rc == FERRY_OK && ((r && !parse_i64(r, &cur)) || __builtin_add_overflow(cur, delta, &sum)))
        rc = ferry__fail(FERRY_EINVAL,
                         "store key '%s' does not hold an integer (or the sum overflows)", key);
    if (rc == FERRY_OK) {
        int n = snprintf(text, sizeof text, "%" PRId64, sum);
        rc = append(fs, key, text, (size_t)n);
        *out = sum;
    }
    unlock_file(fs);
    return rc;
}

/* As the TCP store (torch's compare_set): replies with the value now stored, or `expected`
   when the key is absent and something was expected. */
static ferry_status file_cas(void *impl, const char *key, const void *expected,
                             size_t expected_len, const void *desired, size_t desired_len,
                             void **actual, size_t *actual_len)
{
    file_store *fs = impl;
    bool expect_present = expected != NULL || expected_len > 0;
    ferry_status rc = lock_file(fs, F_WRLCK);
    if (rc != FERRY_OK)
        return rc;
    rc = refresh(fs);
    record *r = rc == FERRY_OK ? find(fs, key) : NULL;
    bool matches = r ? expect_present && r->val_len == expected_len &&
                           (!expected_len || !memcmp(r->val, expected, expected_len))
                     : !expect_present;
    if (rc == FERRY_OK && matches)
        rc = append(fs, key, desired, desired_len);
    if (rc == FERRY_OK) {
        r = find(fs, key);
        rc = r ? copy_out(fs, r->val, r->val_len, actual, actual_len)
               : copy_out(fs, expected, expected_len, actual, actual_len);
    }
    unlock_file(fs);
    return rc;
}

static ferry_status file_check(void *impl, const char *const *keys, size_t n, bool *present)
{
    file_store *fs = impl;
    ferry_status rc = lock_file(fs, F_RDLCK);
    if (rc != FERRY_OK)
        return rc;
    rc = refresh(fs);
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        present[i] = find(fs, keys[i]) != NULL;
    unlock_file(fs);
    return rc;
}

static void file_close(void *impl)
{
    file_store *fs = impl;
    for (size_t i = 0; i < fs->n_recs; i++) {
        ferry__free(fs->recs[i].key);
        ferry__free(fs->recs[i].val);
    }
    ferry__free(fs->recs);
    ferry__free(fs->path);
    if (fs->fd >= 0)
        close(fs->fd);
    pthread_mutex_destroy(&fs->lock);
    ferry__free(fs);
}

static const ferry__store_backend file_backend = {
    .set = file_set,
    .get = file_get,
    .add = file_add,
    .wait = file_wait,
    .compare_set = file_cas,
    .check = file_check,
    .close = file_close,
};

ferry__store *ferry__store_open_file(const char *path, const char *token)
{
    (void)token;
    if (!path || !*path)
        return ferry__fail_null(FERRY_EINVAL, "file store needs a path");
    file_store *fs = ferry__calloc(1, sizeof *fs);
    if (!fs)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory opening file store %s", path);
    pthread_mutex_init(&fs->lock, NULL);
    fs->path = ferry__strdup(path);
    fs->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (!fs->path || fs->fd < 0) {
        ferry_status rc = fs->path ? ferry__status_from_errno(errno) : FERRY_ENOMEM;
        if (rc == FERRY_ENOMEM)
            ferry__fail(rc, "out of memory opening file store %s", path);
        else
            ferry__fail(rc == FERRY_EAUTH ? rc : FERRY_ETRANSPORT,
                        "cannot open file store %s: %s", path, strerror(errno));
        file_close(fs);
        return NULL;
    }
    return ferry__store_wrap(&file_backend, fs);
}
