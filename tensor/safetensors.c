/* Saving and loading named tensors in the safetensors format. Loading reads the header, has
   tensor/safetensors_json.c parse it, checks the byte layout against the data section the way the
   reference reader does (ranges sorted by offset must tile the data section exactly, each range
   as long as dtype x shape says), then copies the data section once into one 64-byte-aligned
   storage that every tensor views. Saving lays tensors out as the reference writer does (larger
   alignment first, then by name; header padded with spaces to 8 bytes), so the same tensors give
   the same bytes, and replaces the target file atomically through a temporary file. */
#include "ferry/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "tensor/safetensors_impl.h"
#include "tensor/tensor_impl.h"

struct ferry_safetensors {
    ferry__st_header h;
};

/* Pulls `len` bytes of the data section into `dst`; a file or a memory buffer. */
typedef ferry_status (*fill_fn)(void *ctx, void *dst, size_t len);

/* One tensor to write, in file order once sorted. */
typedef struct {
    const char *name;
    ferry_tensor *t; /* contiguous, a reference of our own */
    int rank;
    size_t nbytes;
} save_item;

/* ---- loading ---- */

static int cmp_range(const void *a, const void *b)
{
    const ferry__st_entry *x = *(const ferry__st_entry *const *)a;
    const ferry__st_entry *y = *(const ferry__st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* The bytes dtype x shape needs must equal the declared range. */
static ferry_status check_entry_size(const ferry__st_entry *e)
{
    uint64_t nbytes = ferry__st_dtype_size(e->dtype);
    for (int d = 0; d < e->ndim; d++)
        if (__builtin_mul_overflow(nbytes, (uint64_t)e->sizes[d], &nbytes))
            return ferry__fail(FERRY_EPROTO, "safetensors: the shape of tensor \"%.64s\" "
                               "overflows 64 bits", e->name);
    if (e->end < e->begin)
        return ferry__fail(FERRY_EPROTO, "safetensors: tensor \"%.64s\" has data_offsets [%llu, "
                           "%llu] that run backwards", e->name, (unsigned long long)e->begin,
                           (unsigned long long)e->end);
    if (e->end - e->begin != nbytes)
        return ferry__fail(FERRY_EPROTO, "safetensors: tensor \"%.64s\" (%s) needs %llu bytes "
                           "but data_offsets [%llu, %llu] give %llu", e->name,
                           ferry__st_dtype_code(e->dtype), (unsigned long long)nbytes,
                           (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)(e->end - e->begin));
    return FERRY_OK;
}

/* As the reference reader: sorted by offset, the ranges must follow each other without gap or
   overlap and end exactly at the end of the data section. */
static ferry_status check_layout(const ferry__st_header *h, uint64_t data_len)
{
    const ferry__st_entry **order = ferry__malloc((h->n_entries + 1) * sizeof *order);
    uint64_t pos = 0;
    ferry_status rc = FERRY_OK;
    if (!order)
        return ferry__fail(FERRY_ENOMEM, "safetensors: out of memory");
    for (size_t i = 0; i < h->n_entries; i++)
        order[i] = &h->entries[i];
    qsort(order, h->n_entries, sizeof *order, cmp_range);
    for (size_t i = 0; rc == FERRY_OK && i < h->n_entries; i++) {
        const ferry__st_entry *e = order[i];
        if ((rc = check_entry_size(e)) != FERRY_OK)
            break;
        if (e->begin != pos)
            rc = ferry__fail(FERRY_EPROTO, "safetensors: tensor \"%.64s\" starts at byte %llu "
                             "of the data, expected %llu (ranges %s)", e->name,
                             (unsigned long long)e->begin, (unsigned long long)pos,
                             e->begin < pos ? "overlap" : "leave a gap");
        pos = e->end;
    }
    if (rc == FERRY_OK && pos != data_len)
        rc = ferry__fail(FERRY_EPROTO, "safetensors: the tensors cover %llu bytes but the data "
                         "section holds %llu", (unsigned long long)pos,
                         (unsigned long long)data_len);
    ferry__free(order);
    return rc;
}

/* A view into the shared storage, or a copy of its own when the file placed the tensor at an
   offset its element type cannot be read from (only hand-made files do that). */
static ferry_tensor *make_tensor(ferry_storage *storage, const ferry__st_entry *e)
{
    size_t elem = ferry__st_dtype_size(e->dtype);
    if (e->begin == e->end)
        return ferry__tensor_make(storage, 0, e->ndim, e->sizes, NULL, e->dtype);
    if (e->begin % elem == 0)
        return ferry__tensor_make(storage, (int64_t)(e->begin / elem), e->ndim, e->sizes, NULL,
                                  e->dtype);
    return ferry_tensor_from_data((const char *)storage->data + e->begin, e->ndim, e->sizes,
                                  e->dtype);
}

/* Parses and checks the header, then loads the data section through `fill`. */
static ferry_safetensors *build(const char *header, size_t header_len, uint64_t data_len,
                                fill_fn fill, void *ctx)
{
    ferry_safetensors *st = ferry__calloc(1, sizeof *st);
    ferry_storage *storage = NULL;
    if (!st)
        return ferry__fail_null(FERRY_ENOMEM, "safetensors: out of memory");
    if (ferry__st_parse_header(header, header_len, &st->h) != FERRY_OK ||
        check_layout(&st->h, data_len) != FERRY_OK)
        goto fail;
    if (!(storage = ferry__storage_new((size_t)data_len, FERRY_DEVICE_CPU)) ||
        fill(ctx, storage->data, (size_t)data_len) != FERRY_OK)
        goto fail;
    for (size_t i = 0; i < st->h.n_entries; i++) {
        ferry__st_entry *e = &st->h.entries[i];
        if (!(e->tensor = make_tensor(storage, e)))
            goto fail;
    }
    ferry__storage_release(storage); /* the tensors hold it now */
    return st;
fail:
    if (storage)
        ferry__storage_release(storage);
    ferry_safetensors_free(st);
    return NULL;
}

/* Checks the 8-byte length prefix against the bytes that follow it. */
static ferry_status check_header_len(uint64_t n, uint64_t avail)
{
    if (n > FERRY__ST_MAX_HEADER)
        return ferry__fail(FERRY_EPROTO, "safetensors: header length %llu exceeds the limit of "
                           "%llu bytes", (unsigned long long)n,
                           (unsigned long long)FERRY__ST_MAX_HEADER);
    if (n > avail)
        return ferry__fail(FERRY_EPROTO, "safetensors: header length %llu runs past the end of "
                           "the input (%llu bytes after the length)", (unsigned long long)n,
                           (unsigned long long)avail);
    return FERRY_OK;
}

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static ferry_status fill_from_memory(void *ctx, void *dst, size_t len)
{
    if (len)
        memcpy(dst, ctx, len);
    return FERRY_OK;
}

ferry_safetensors *ferry_safetensors_load_buffer(const void *data, size_t len)
{
    const unsigned char *bytes = data;
    if (!data && len)
        return ferry__fail_null(FERRY_EINVAL, "safetensors: NULL buffer");
    if (len < 8)
        return ferry__fail_null(FERRY_EPROTO, "safetensors: input of %zu bytes is shorter than "
                                "the 8-byte header length", len);
    uint64_t n = read_le64(bytes);
    if (check_header_len(n, len - 8) != FERRY_OK)
        return NULL;
    return build((const char *)bytes + 8, (size_t)n, len - 8 - n, fill_from_memory,
                 (void *)(bytes + 8 + n));
}

typedef struct {
    int fd;
    off_t offset;
    const char *path;
} file_src;

/* pread until `len` bytes arrived; a short file is malformed, an I/O error is reported as such. */
static ferry_status read_exact(const file_src *src, off_t offset, void *dst, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(src->fd, (char *)dst + done, len - done, offset + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ferry__fail(FERRY_EINVAL, "safetensors: reading '%s': %s", src->path,
                               strerror(errno));
        if (r == 0)
            return ferry__fail(FERRY_EPROTO, "safetensors: '%s' ended early (it changed while "
                               "being read?)", src->path);
        done += (size_t)r;
    }
    return FERRY_OK;
}

static ferry_status fill_from_file(void *ctx, void *dst, size_t len)
{
    const file_src *src = ctx;
    return read_exact(src, src->offset, dst, len);
}

/* Reads the length prefix and the header of an open file, then builds from it. */
static ferry_safetensors *load_fd(file_src *src, uint64_t size)
{
    unsigned char prefix[8];
    ferry_safetensors *st = NULL;
    if (size < 8)
        return ferry__fail_null(FERRY_EPROTO, "safetensors: '%s' is %llu bytes, shorter than the "
                                "8-byte header length", src->path, (unsigned long long)size);
    if (read_exact(src, 0, prefix, 8) != FERRY_OK)
        return NULL;
    uint64_t n = read_le64(prefix);
    if (check_header_len(n, size - 8) != FERRY_OK)
        return NULL;
    char *header = ferry__malloc((size_t)n + 1);
    if (!header)
        return ferry__fail_null(FERRY_ENOMEM, "safetensors: out of memory for a %llu-byte "
                                "header", (unsigned long long)n);
    if (read_exact(src, 8, header, (size_t)n) == FERRY_OK) {
        src->offset = (off_t)(8 + n);
        st = build(header, (size_t)n, size - 8 - n, fill_from_file, src);
    }
    ferry__free(header);
    return st;
}

ferry_safetensors *ferry_safetensors_load(const char *path)
{
    struct stat sb;
    ferry_safetensors *st = NULL;
    if (!path)
        return ferry__fail_null(FERRY_EINVAL, "safetensors: NULL path");
    file_src src = {open(path, O_RDONLY | O_CLOEXEC), 0, path};
    if (src.fd < 0)
        return ferry__fail_null(FERRY_EINVAL, "safetensors: cannot open '%s': %s", path,
                                strerror(errno));
    if (fstat(src.fd, &sb) != 0)
        ferry__fail(FERRY_EINVAL, "safetensors: cannot stat '%s': %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        ferry__fail(FERRY_EINVAL, "safetensors: '%s' is not a regular file", path);
    else
        st = load_fd(&src, (uint64_t)sb.st_size);
    close(src.fd);
    return st;
}

size_t ferry_safetensors_count(const ferry_safetensors *st)
{
    return st ? st->h.n_entries : 0;
}

const char *ferry_safetensors_name(const ferry_safetensors *st, size_t i)
{
    if (!st || i >= st->h.n_entries)
        return ferry__fail_null(FERRY_EINVAL, "safetensors: no tensor at index %zu", i);
    return st->h.entries[i].name;
}

ferry_tensor *ferry_safetensors_get(const ferry_safetensors *st, const char *name)
{
    if (!st || !name)
        return ferry__fail_null(FERRY_EINVAL, "safetensors: NULL argument");
    for (size_t i = 0; i < st->h.n_entries; i++)
        if (strcmp(st->h.entries[i].name, name) == 0)
            return ferry_tensor_retain(st->h.entries[i].tensor);
    return ferry__fail_null(FERRY_EINVAL, "safetensors: no tensor named \"%.64s\"", name);
}

size_t ferry_safetensors_metadata_count(const ferry_safetensors *st)
{
    return st ? st->h.n_meta : 0;
}

const char *ferry_safetensors_metadata_key(const ferry_safetensors *st, size_t i)
{
    if (!st || i >= st->h.n_meta)
        return ferry__fail_null(FERRY_EINVAL, "safetensors: no metadata entry at index %zu", i);
    return st->h.meta[i].key;
}

const char *ferry_safetensors_metadata(const ferry_safetensors *st, const char *key)
{
    if (!st || !key)
        return ferry__fail_null(FERRY_EINVAL, "safetensors: NULL argument");
    for (size_t i = 0; i < st->h.n_meta; i++)
        if (strcmp(st->h.meta[i].key, key) == 0)
            return st->h.meta[i].value;
    return ferry__fail_null(FERRY_EINVAL, "safetensors: no metadata key \"%.64s\"", key);
}

void ferry_safetensors_free(ferry_safetensors *st)
{
    if (!st)
        return;
    ferry__st_header_clear(&st->h);
    ferry__free(st);
}

/* ---- saving ---- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const save_item *)a)->name, ((const save_item *)b)->name);
}

/* The reference writer's order: larger alignment first, then by name. */
static int cmp_file_order(const void *a, const void *b)
{
    const save_item *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank > y->rank ? -1 : 1;
    return strcmp(x->name, y->name);
}

static ferry_status check_string(const char *s, const char *what, size_t i)
{
    if (!s)
        return ferry__fail(FERRY_EINVAL, "safetensors: %s %zu is NULL", what, i);
    if (!ferry__st_utf8_valid(s, strlen(s)))
        return ferry__fail(FERRY_EINVAL, "safetensors: %s %zu is not valid UTF-8", what, i);
    return FERRY_OK;
}

static ferry_status prepare_item(save_item *it, const char *name, ferry_tensor *t, size_t i)
{
    ferry_status rc = check_string(name, "name", i);
    if (rc != FERRY_OK)
        return rc;
    if (strcmp(name, "__metadata__") == 0)
        return ferry__fail(FERRY_EINVAL, "safetensors: \"__metadata__\" cannot name a tensor");
    if (!t)
        return ferry__fail(FERRY_EINVAL, "safetensors: tensor \"%.64s\" is NULL", name);
    if (ferry_tensor_device(t).type != FERRY_CPU)
        return ferry__fail(FERRY_ENOTSUP, "safetensors: tensor \"%.64s\" is not on the CPU",
                           name);
    if (ferry__st_dtype_rank(ferry_tensor_dtype(t)) < 0)
        return ferry__fail(FERRY_EINVAL, "safetensors: tensor \"%.64s\" has an invalid dtype",
                           name);
    if (!(it->t = ferry_tensor_contiguous(t)))
        return ferry_last_status();
    it->name = name;
    it->rank = ferry__st_dtype_rank(ferry_tensor_dtype(t));
    it->nbytes = ferry_tensor_nbytes(it->t);
    return FERRY_OK;
}

/* Checks arguments and fills items in file order. */
static ferry_status prepare_items(save_item *items, const char *const *names,
                                  ferry_tensor *const *tensors, size_t n)
{
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        rc = prepare_item(&items[i], names[i], tensors[i], i);
    if (rc != FERRY_OK)
        return rc;
    qsort(items, n, sizeof *items, cmp_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(items[i - 1].name, items[i].name) == 0)
            return ferry__fail(FERRY_EINVAL, "safetensors: tensor name \"%.64s\" given twice",
                               items[i].name);
    qsort(items, n, sizeof *items, cmp_file_order);
    return FERRY_OK;
}

static ferry_status check_metadata(const char *const *keys, const char *const *values, size_t n)
{
    ferry_status rc = FERRY_OK;
    if (n && (!keys || !values))
        return ferry__fail(FERRY_EINVAL, "safetensors: NULL metadata arrays");
    for (size_t i = 0; rc == FERRY_OK && i < n; i++) {
        if ((rc = check_string(keys[i], "metadata key", i)) != FERRY_OK ||
            (rc = check_string(values[i], "metadata value", i)) != FERRY_OK)
            break;
        for (size_t k = 0; k < i; k++)
            if (strcmp(keys[k], keys[i]) == 0)
                return ferry__fail(FERRY_EINVAL, "safetensors: metadata key \"%.64s\" given "
                                   "twice", keys[i]);
    }
    return rc;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes as the reference writer does. */
static ferry_status build_header(ferry__st_buf *b, const save_item *items, size_t n,
                                 const char *const *keys, const char *const *values, size_t n_meta)
{
    uint64_t offset = 0;
    ferry__st_buf_put(b, "{", 1);
    if (n_meta) {
        ferry__st_buf_put(b, "\"__metadata__\":{", 16);
        for (size_t i = 0; i < n_meta; i++) {
            if (i)
                ferry__st_buf_put(b, ",", 1);
            ferry__st_buf_json_string(b, keys[i]);
            ferry__st_buf_put(b, ":", 1);
            ferry__st_buf_json_string(b, values[i]);
        }
        ferry__st_buf_put(b, "}", 1);
    }
    for (size_t i = 0; i < n; i++) {
        const ferry_tensor *t = items[i].t;
        if (i || n_meta)
            ferry__st_buf_put(b, ",", 1);
        ferry__st_buf_json_string(b, items[i].name);
        ferry__st_buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[",
                             ferry__st_dtype_code(ferry_tensor_dtype(t)));
        for (int d = 0; d < ferry_tensor_ndim(t); d++)
            ferry__st_buf_printf(b, d ? ",%lld" : "%lld", (long long)ferry_tensor_sizes(t)[d]);
        ferry__st_buf_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                             (unsigned long long)(offset + items[i].nbytes));
        offset += items[i].nbytes;
    }
    ferry__st_buf_put(b, "}", 1);
    while (!b->failed && b->len % 8)
        ferry__st_buf_put(b, " ", 1);
    return b->failed ? ferry__fail(FERRY_ENOMEM, "safetensors: out of memory for the header")
                     : FERRY_OK;
}

static ferry_status write_all(int fd, const void *data, size_t len, const char *path)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return ferry__fail(FERRY_EINVAL, "safetensors: writing '%s': %s", path,
                               strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return FERRY_OK;
}

/* Creates a fresh temporary file beside `path` (same directory, so rename is atomic). */
static int open_temp(const char *path, char **tmp_out)
{
    static atomic_uint counter; /* makes names unique among threads of this process */
    size_t len = strlen(path) + 64;
    char *tmp = ferry__malloc(len);
    int fd = -1;
    if (!tmp) {
        ferry__fail(FERRY_ENOMEM, "safetensors: out of memory");
        return -1;
    }
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        snprintf(tmp, len, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        ferry__fail(FERRY_EINVAL, "safetensors: cannot create a file beside '%s': %s", path,
                    strerror(errno));
        ferry__free(tmp);
        return -1;
    }
    *tmp_out = tmp;
    return fd;
}

static ferry_status write_file(const char *path, const ferry__st_buf *header,
                               const save_item *items, size_t n)
{
    unsigned char prefix[8];
    char *tmp = NULL;
    ferry_status rc;
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)((uint64_t)header->len >> (8 * i));
    int fd = open_temp(path, &tmp);
    if (fd < 0)
        return ferry_last_status();
    rc = write_all(fd, prefix, 8, path);
    if (rc == FERRY_OK)
        rc = write_all(fd, header->data, header->len, path);
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        rc = write_all(fd, ferry_tensor_data_const(items[i].t), items[i].nbytes, path);
    if (close(fd) != 0 && rc == FERRY_OK)
        rc = ferry__fail(FERRY_EINVAL, "safetensors: writing '%s': %s", path, strerror(errno));
    if (rc == FERRY_OK && rename(tmp, path) != 0)
        rc = ferry__fail(FERRY_EINVAL, "safetensors: cannot replace '%s': %s", path,
                         strerror(errno));
    if (rc != FERRY_OK)
        unlink(tmp);
    ferry__free(tmp);
    return rc;
}

ferry_status ferry_safetensors_save_with_metadata(const char *path, const char *const *names,
                                                  ferry_tensor *const *tensors, size_t n,
                                                  const char *const *meta_keys,
                                                  const char *const *meta_values, size_t n_meta)
{
    ferry__st_buf header = {0};
    ferry_status rc;
    if (!path || (n && (!names || !tensors)))
        return ferry__fail(FERRY_EINVAL, "safetensors: NULL path, names or tensors");
    if ((rc = check_metadata(meta_keys, meta_values, n_meta)) != FERRY_OK)
        return rc;
    save_item *items = ferry__calloc(n ? n : 1, sizeof *items);
    if (!items)
        return ferry__fail(FERRY_ENOMEM, "safetensors: out of memory");
    if ((rc = prepare_items(items, names, tensors, n)) == FERRY_OK &&
        (rc = build_header(&header, items, n, meta_keys, meta_values, n_meta)) == FERRY_OK)
        rc = write_file(path, &header, items, n);
    for (size_t i = 0; i < n; i++)
        ferry_tensor_release(items[i].t);
    ferry__free(items);
    ferry__st_buf_free(&header);
    return rc;
}

ferry_status ferry_safetensors_save(const char *path, const char *const *names,
                                    ferry_tensor *const *tensors, size_t n)
{
    return ferry_safetensors_save_with_metadata(path, names, tensors, n, NULL, NULL, 0);
}
