/* The file:// store: the same operations as the TCP store over one shared file, for clusters
   where a shared filesystem is easier to reach than rank 0's port. The file is an append-only log
   of (key, value) records; the last record for a key wins. Every operation takes an fcntl lock on
   the whole file (shared to read, exclusive to append) and first reads the records appended since
   this handle last looked, so each process keeps an up-to-date cache without rereading the file.
   Blocking gets and waits poll the file with a short, growing interval, and locks are taken
   without blocking (retried with backoff) so every operation keeps its deadline even when
   another process holds the lock and stopped. A delete appends a tombstone. Lengths read from the
   file are checked against the same caps as the TCP store: a corrupt file fails, never crashes.
   The token is not used: the file's owner and permissions are what keeps others out, so the
   open refuses a symlink, a file that is not ours or that others may write, and a directory
   others could swap it in (see store.h). */
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
#define TOMBSTONE UINT32_MAX /* the value length of a delete record */

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
    uint64_t requests;
    pthread_mutex_t lock;
} file_store;

/* Takes the lock before deadline (seconds on ferry__now_s; 0 = none), trying without blocking
   and backing off 1 ms to 50 ms, so a holder that stopped cannot hang us past it. */
static ferry_status lock_file(file_store *fs, short type, double deadline)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET};
    long sleep_us = 1000;
    pthread_mutex_lock(&fs->lock);
    while (fcntl(fs->fd, F_SETLK, &fl) != 0) {
        int err = errno;
        if (err == EINTR)
            continue;
        if (err != EAGAIN && err != EACCES) {
            pthread_mutex_unlock(&fs->lock);
            return ferry__fail(ferry__status_from_errno(err), "cannot lock file store %s: %s",
                               fs->path, strerror(err));
        }
        if (deadline && ferry__now_s() >= deadline) {
            pthread_mutex_unlock(&fs->lock);
            return ferry__fail(FERRY_ETIMEDOUT,
                               "file store %s stayed locked by another process past the deadline",
                               fs->path);
        }
        ferry__sleep_us(sleep_us);
        sleep_us = sleep_us * 2 > 50000 ? 50000 : sleep_us * 2;
    }
    fs->requests++;
    return FERRY_OK;
}

static double deadline_of(double timeout_s)
{
    return timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
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

static void forget(file_store *fs, const char *key)
{
    record *r = find(fs, key);
    if (!r)
        return;
    ferry__free(r->key);
    ferry__free(r->val);
    *r = fs->recs[--fs->n_recs];
}

/* Takes ownership of key and val; val NULL with TOMBSTONE length forgets the key. */
static ferry_status remember(file_store *fs, char *key, uint8_t *val, size_t val_len)
{
    if (val_len == TOMBSTONE) {
        forget(fs, key);
        ferry__free(key);
        return FERRY_OK;
    }
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
        bool is_delete = vlen == TOMBSTONE;
        uint32_t body_len = is_delete ? 0 : vlen;
        if (klen > FERRY__STORE_KEY_MAX || (!is_delete && vlen > FERRY__STORE_VALUE_MAX))
            return ferry__fail(FERRY_EPROTO, "file store %s is corrupt at offset %lld", fs->path,
                               (long long)fs->parsed);
        if (sb.st_size - fs->parsed < (off_t)(RECORD_HEAD + klen + body_len))
            break;
        char *key = ferry__malloc(klen + 1);
        uint8_t *val = ferry__malloc(body_len);
        if (!key || !val) {
            ferry__free(key);
            ferry__free(val);
            return ferry__fail(FERRY_ENOMEM, "out of memory reading file store %s", fs->path);
        }
        if (!read_at(fs->fd, key, klen, fs->parsed + RECORD_HEAD) ||
            !read_at(fs->fd, val, body_len, fs->parsed + RECORD_HEAD + klen) ||
            memchr(key, '\0', klen)) {
            ferry__free(key);
            ferry__free(val);
            return ferry__fail(FERRY_EPROTO, "file store %s is corrupt at offset %lld", fs->path,
                               (long long)fs->parsed);
        }
        key[klen] = '\0';
        fs->parsed += RECORD_HEAD + klen + body_len;
        if (is_delete) {
            ferry__free(val);
            val = NULL;
        }
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

/* Appends one record and caches it (len TOMBSTONE: a delete). Call with the file locked
   exclusively and refreshed. */
static ferry_status append(file_store *fs, const char *key, const void *val, size_t len)
{
    size_t body_len = len == TOMBSTONE ? 0 : len;
    size_t klen = strlen(key), total = RECORD_HEAD + klen + body_len;
    uint8_t *buf = ferry__malloc(total);
    char *key_copy = ferry__strdup(key);
    uint8_t *val_copy = ferry__malloc(body_len);
    ferry_status rc = FERRY_OK;
    if (!buf || !key_copy || !val_copy) {
        rc = ferry__fail(FERRY_ENOMEM, "out of memory writing file store %s", fs->path);
    } else {
        uint32_t lens[2] = {(uint32_t)klen, (uint32_t)len};
        for (int i = 0; i < RECORD_HEAD; i++)
            buf[i] = (uint8_t)(lens[i / 4] >> (24 - 8 * (i % 4)));
        memcpy(buf + RECORD_HEAD, key, klen);
        if (body_len) {
            memcpy(buf + RECORD_HEAD + klen, val, body_len);
            memcpy(val_copy, val, body_len);
        }
        rc = write_tail(fs, buf, total);
    }
    ferry__free(buf);
    if (rc != FERRY_OK || len == TOMBSTONE) {
        ferry__free(val_copy);
        val_copy = NULL;
    }
    if (rc != FERRY_OK) {
        ferry__free(key_copy);
        return rc;
    }
    return remember(fs, key_copy, val_copy, len);
}

static ferry_status file_set(void *impl, const char *key, const void *val, size_t len,
                             double timeout_s)
{
    file_store *fs = impl;
    ferry_status rc = lock_file(fs, F_WRLCK, deadline_of(timeout_s));
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
    double deadline = deadline_of(timeout_s);
    long sleep_us = 1000;
    for (;;) {
        ferry_status rc = lock_file(fs, F_RDLCK, deadline);
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

static ferry_status file_add(void *impl, const char *key, int64_t delta, int64_t *out,
                             double timeout_s)
{
    file_store *fs = impl;
    int64_t cur = 0, sum = 0;
    char text[32];
    ferry_status rc = lock_file(fs, F_WRLCK, deadline_of(timeout_s));
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
                             void **actual, size_t *actual_len, double timeout_s)
{
    file_store *fs = impl;
    bool expect_present = expected != NULL || expected_len > 0;
    ferry_status rc = lock_file(fs, F_WRLCK, deadline_of(timeout_s));
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

static ferry_status file_check(void *impl, const char *const *keys, size_t n, bool *present,
                               double timeout_s)
{
    file_store *fs = impl;
    ferry_status rc = lock_file(fs, F_RDLCK, deadline_of(timeout_s));
    if (rc != FERRY_OK)
        return rc;
    rc = refresh(fs);
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        present[i] = find(fs, keys[i]) != NULL;
    unlock_file(fs);
    return rc;
}

static ferry_status file_delete(void *impl, const char *const *keys, size_t n, size_t *deleted,
                                double timeout_s)
{
    file_store *fs = impl;
    ferry_status rc = lock_file(fs, F_WRLCK, deadline_of(timeout_s));
    if (rc != FERRY_OK)
        return rc;
    rc = refresh(fs);
    *deleted = 0;
    for (size_t i = 0; rc == FERRY_OK && i < n; i++) {
        if (!find(fs, keys[i]))
            continue;
        rc = append(fs, keys[i], NULL, TOMBSTONE);
        *deleted += rc == FERRY_OK;
    }
    unlock_file(fs);
    return rc;
}

static ferry_status file_stats(void *impl, uint64_t *keys, uint64_t *requests, double timeout_s)
{
    file_store *fs = impl;
    ferry_status rc = lock_file(fs, F_RDLCK, deadline_of(timeout_s));
    if (rc != FERRY_OK)
        return rc;
    rc = refresh(fs);
    *keys = fs->n_recs;
    *requests = fs->requests;
    unlock_file(fs);
    return rc;
}

static bool file_is_connected(void *impl)
{
    return true;
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
    .del = file_delete,
    .stats = file_stats,
    .is_connected = file_is_connected,
    .close = file_close,
};

/* The directory must not let others swap the file: ours or root's, and if group or world may
   write to it, sticky (as /tmp is), so nobody but us can rename or delete our file. */
static ferry_status check_dir(int dfd, const char *dir)
{
    struct stat sb;
    if (fstat(dfd, &sb) != 0)
        return ferry__fail(FERRY_ETRANSPORT, "cannot stat directory %s: %s", dir, strerror(errno));
    if (sb.st_uid != geteuid() && sb.st_uid != 0)
        return ferry__fail(FERRY_EAUTH,
                           "file store directory %s belongs to uid %u, not to us (uid %u) or root; "
                           "refusing it",
                           dir, (unsigned)sb.st_uid, (unsigned)geteuid());
    if ((sb.st_mode & (S_IWGRP | S_IWOTH)) && !(sb.st_mode & S_ISVTX))
        return ferry__fail(FERRY_EAUTH,
                           "file store directory %s is writable by others (mode %03o, not sticky), "
                           "so they could replace the file; refusing it",
                           dir, (unsigned)(sb.st_mode & 07777));
    return FERRY_OK;
}

/* An existing file must be a regular file of ours that only we may write. */
static ferry_status check_file(int fd, const char *path)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return ferry__fail(FERRY_ETRANSPORT, "cannot stat file store %s: %s", path,
                           strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return ferry__fail(FERRY_EAUTH, "file store %s is not a regular file; refusing it", path);
    if (sb.st_uid != geteuid())
        return ferry__fail(FERRY_EAUTH,
                           "file store %s belongs to uid %u, not to us (uid %u); refusing it "
                           "(left by someone else? use a path of your own)",
                           path, (unsigned)sb.st_uid, (unsigned)geteuid());
    if (sb.st_mode & (S_IWGRP | S_IWOTH))
        return ferry__fail(FERRY_EAUTH,
                           "file store %s is writable by group or others (mode %03o); refusing it",
                           path, (unsigned)(sb.st_mode & 07777));
    return FERRY_OK;
}

/* Opens (or creates, exclusively and 0600) the last component of path inside its directory,
   never following a symlink there. -1 and the error. */
static int open_store_file(const char *path)
{
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char *dir = slash ? ferry__strndup(path, slash == path ? 1 : (size_t)(slash - path))
                      : ferry__strdup(".");
    int fd = -1, dfd = -1;
    if (!dir)
        return ferry__fail(FERRY_ENOMEM, "out of memory opening file store %s", path), -1;
    if (!*base) {
        ferry__fail(FERRY_EINVAL, "file store path %s names a directory, not a file", path);
        goto done;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        ferry__fail(FERRY_ETRANSPORT, "cannot open file store directory %s: %s", dir,
                    strerror(errno));
        goto done;
    }
    if (check_dir(dfd, dir) != FERRY_OK)
        goto done;
    for (int attempt = 0; fd < 0 && attempt < 2; attempt++) {
        fd = openat(dfd, base, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            if (check_file(fd, path) != FERRY_OK) {
                close(fd);
                fd = -1;
                goto done;
            }
        } else if (errno == ENOENT) {
            /* Ours alone from the start; EEXIST means another worker won the race: open it. */
            fd = openat(dfd, base, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd < 0 && errno != EEXIST)
                break;
        } else {
            break;
        }
    }
    if (fd < 0 && errno == ELOOP)
        ferry__fail(FERRY_EAUTH, "file store %s is a symbolic link; refusing it", path);
    else if (fd < 0)
        ferry__fail(errno == EACCES ? FERRY_EAUTH : FERRY_ETRANSPORT,
                    "cannot open file store %s: %s", path, strerror(errno));
done:
    if (dfd >= 0)
        close(dfd);
    ferry__free(dir);
    return fd;
}

ferry__store *ferry__store_open_file(const char *path)
{
    if (!path || !*path)
        return ferry__fail_null(FERRY_EINVAL, "file store needs a path");
    file_store *fs = ferry__calloc(1, sizeof *fs);
    if (!fs)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory opening file store %s", path);
    pthread_mutex_init(&fs->lock, NULL);
    fs->fd = -1;
    fs->path = ferry__strdup(path);
    if (!fs->path) {
        ferry__fail(FERRY_ENOMEM, "out of memory opening file store %s", path);
        file_close(fs);
        return NULL;
    }
    fs->fd = open_store_file(path);
    if (fs->fd < 0) {
        file_close(fs);
        return NULL;
    }
    return ferry__store_wrap(&file_backend, fs);
}
