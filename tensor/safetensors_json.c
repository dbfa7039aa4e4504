/* The JSON side of safetensors: a strict parser for exactly the header grammar (an object of
   tensor entries {"dtype", "shape", "data_offsets"} plus an optional "__metadata__" object of
   strings) and the escaping the writer uses. The parser follows the grammar rather than building a
   generic JSON tree, so nesting is bounded by construction and nothing outside the grammar
   (floats, negative numbers, unknown fields, duplicate keys, bad escapes, invalid UTF-8) gets in.
   Every failure records what was wrong and at which header byte. */
#include "tensor/safetensors_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this code assumes a little-endian host"
#endif

/* Parser state over the header bytes. */
typedef struct {
    const unsigned char *start, *p, *end;
} jp;

static const struct {
    ferry_dtype dtype;
    const char *code;
    size_t size;
    int rank; /* position in the reference's dtype list, which is ordered by alignment */
} dtype_table[] = {
    {FERRY_BOOL, "BOOL", 1, 0},    {FERRY_UINT8, "U8", 1, 1},     {FERRY_FLOAT16, "F16", 2, 7},
    {FERRY_BFLOAT16, "BF16", 2, 8}, {FERRY_INT32, "I32", 4, 9},   {FERRY_FLOAT32, "F32", 4, 11},
    {FERRY_FLOAT64, "F64", 8, 12}, {FERRY_INT64, "I64", 8, 13},
};
#define DTYPE_TABLE_LEN (sizeof dtype_table / sizeof dtype_table[0])

/* Valid safetensors dtypes ferry has no tensor type for. */
static const char *const unsupported_dtypes[] = {"I8", "F8_E5M2", "F8_E4M3", "I16",
                                                 "U16", "U32", "U64"};

static ferry_status jfail(const jp *j, const char *fmt, ...) FERRY_PRINTF(2, 3);
static ferry_status jfail(const jp *j, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ferry__fail(FERRY_EPROTO, "safetensors header, byte %zu: %s",
                       (size_t)(j->p - j->start), msg);
}

static void skip_ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* Skips whitespace and consumes `c`. */
static ferry_status expect(jp *j, char c)
{
    skip_ws(j);
    if (j->p >= j->end)
        return jfail(j, "expected '%c', found the end of the header", c);
    if (*j->p != (unsigned char)c)
        return jfail(j, "expected '%c', found '%c'", c, *j->p);
    j->p++;
    return FERRY_OK;
}

/* After a member or element: consumes ',' (returns true in *more) or `close`. */
static ferry_status next_or_close(jp *j, char close, bool *more)
{
    skip_ws(j);
    if (j->p < j->end && *j->p == ',') {
        j->p++;
        *more = true;
        return FERRY_OK;
    }
    *more = false;
    return expect(j, close);
}

/* Length of the UTF-8 sequence at s (at most n bytes available), or 0 when malformed. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

bool ferry__st_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq_len(u + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads the 4 hex digits of a \u escape at j->p (which must end before `stop`). */
static ferry_status read_hex4(jp *j, const unsigned char *stop, uint32_t *out)
{
    uint32_t v = 0;
    if (stop - j->p < 4)
        return jfail(j, "\\u escape needs 4 hex digits");
    for (int i = 0; i < 4; i++) {
        unsigned char c = j->p[i];
        int d = c >= '0' && c <= '9' ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return jfail(j, "bad hex digit in \\u escape");
        v = v << 4 | (uint32_t)d;
    }
    j->p += 4;
    *out = v;
    return FERRY_OK;
}

/* Decodes a \uXXXX escape (j->p just past the 'u'), joining surrogate pairs. */
static ferry_status read_u_escape(jp *j, const unsigned char *stop, uint32_t *cp)
{
    uint32_t lo;
    ferry_status rc = read_hex4(j, stop, cp);
    if (rc != FERRY_OK)
        return rc;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return jfail(j, "unpaired low surrogate in \\u escape");
    if (*cp < 0xD800 || *cp > 0xDBFF)
        return FERRY_OK;
    if (stop - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
        return jfail(j, "high surrogate not followed by a low one");
    j->p += 2;
    if ((rc = read_hex4(j, stop, &lo)) != FERRY_OK)
        return rc;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return jfail(j, "high surrogate not followed by a low one");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    return FERRY_OK;
}

/* One escape sequence (j->p at the backslash) appended to out. */
static ferry_status read_escape(jp *j, const unsigned char *stop, char *out, size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    unsigned char c = j->p[1]; /* the scan guaranteed a character after the backslash */
    uint32_t cp;
    const char *hit = c ? strchr(from, c) : NULL;
    if (hit) {
        out[(*n)++] = to[hit - from];
        j->p += 2;
        return FERRY_OK;
    }
    if (c != 'u')
        return jfail(j, "unknown escape '\\%c'", c);
    j->p += 2;
    ferry_status rc = read_u_escape(j, stop, &cp);
    if (rc != FERRY_OK)
        return rc;
    if (cp == 0)
        return jfail(j, "string contains NUL (\\u0000)");
    *n += put_utf8(out + *n, cp);
    return FERRY_OK;
}

/* Parses a string into a new NUL-terminated buffer. Decoding never grows the text (an escape is
   at least as long as the UTF-8 it stands for), so one allocation of the raw length suffices. */
static ferry_status parse_string(jp *j, char **out)
{
    ferry_status rc = expect(j, '"');
    const unsigned char *stop = j->p;
    size_t n = 0;
    if (rc != FERRY_OK)
        return rc;
    while (stop < j->end && *stop != '"') {
        if (*stop == '\\' && ++stop == j->end)
            break; /* a backslash with nothing after it */
        stop++;
    }
    if (stop >= j->end)
        return jfail(j, "unterminated string");
    char *s = ferry__malloc((size_t)(stop - j->p) + 1);
    if (!s)
        return ferry__fail(FERRY_ENOMEM, "safetensors header: out of memory for a string");
    while (j->p < stop) {
        size_t len = 1;
        if (*j->p == '\\') {
            rc = read_escape(j, stop, s, &n);
        } else if (*j->p < 0x20) {
            rc = jfail(j, "raw control character 0x%02x in string", *j->p);
        } else if ((len = utf8_seq_len(j->p, (size_t)(stop - j->p))) == 0) {
            rc = jfail(j, "invalid UTF-8 in string");
        } else {
            memcpy(s + n, j->p, len);
            n += len;
            j->p += len;
        }
        if (rc != FERRY_OK) {
            ferry__free(s);
            return rc;
        }
    }
    j->p++; /* the closing quote */
    s[n] = '\0';
    *out = s;
    return FERRY_OK;
}

/* A non-negative JSON integer: no sign, fraction, exponent or leading zero. */
static ferry_status parse_uint(jp *j, uint64_t *out)
{
    uint64_t v = 0;
    skip_ws(j);
    if (j->p < j->end && *j->p == '-')
        return jfail(j, "negative number where a size or offset belongs");
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return jfail(j, "expected a non-negative integer");
    if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')
        return jfail(j, "number with a leading zero");
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = *j->p - '0';
        if (v > (UINT64_MAX - d) / 10)
            return jfail(j, "integer does not fit in 64 bits");
        v = v * 10 + d;
        j->p++;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return jfail(j, "expected an integer, found a fraction or exponent");
    *out = v;
    return FERRY_OK;
}

/* A JSON array of at most `max` non-negative integers; *count says how many. */
static ferry_status parse_uint_array(jp *j, uint64_t *vals, int max, int *count)
{
    bool more = true;
    ferry_status rc = expect(j, '[');
    *count = 0;
    if (rc != FERRY_OK)
        return rc;
    skip_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return FERRY_OK;
    }
    while (more) {
        uint64_t v = 0;
        if ((rc = parse_uint(j, &v)) != FERRY_OK)
            return rc;
        if (*count == max)
            return max == FERRY_MAX_DIMS
                       ? ferry__fail(FERRY_ENOTSUP, "safetensors header, byte %zu: more than %d "
                                     "dimensions", (size_t)(j->p - j->start), FERRY_MAX_DIMS)
                       : jfail(j, "array holds more than %d numbers", max);
        vals[(*count)++] = v;
        if ((rc = next_or_close(j, ']', &more)) != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

static ferry_status parse_dtype(jp *j, ferry__st_entry *e)
{
    char *code = NULL;
    ferry_status rc = parse_string(j, &code);
    size_t i = 0, k = 0, n_unsupported = sizeof unsupported_dtypes / sizeof unsupported_dtypes[0];
    if (rc != FERRY_OK)
        return rc;
    while (i < DTYPE_TABLE_LEN && strcmp(code, dtype_table[i].code) != 0)
        i++;
    while (k < n_unsupported && strcmp(code, unsupported_dtypes[k]) != 0)
        k++;
    if (i < DTYPE_TABLE_LEN)
        e->dtype = dtype_table[i].dtype;
    else if (k < n_unsupported)
        rc = ferry__fail(FERRY_ENOTSUP, "safetensors: dtype %s of tensor \"%.64s\" has no ferry "
                         "counterpart", code, e->name);
    else
        rc = jfail(j, "unknown dtype \"%.16s\" for tensor \"%.64s\"", code, e->name);
    ferry__free(code);
    return rc;
}

static ferry_status parse_shape(jp *j, ferry__st_entry *e)
{
    uint64_t dims[FERRY_MAX_DIMS];
    ferry_status rc = parse_uint_array(j, dims, FERRY_MAX_DIMS, &e->ndim);
    if (rc != FERRY_OK)
        return rc;
    for (int i = 0; i < e->ndim; i++) {
        if (dims[i] > (uint64_t)INT64_MAX)
            return jfail(j, "dimension %d of tensor \"%.64s\" is too large", i, e->name);
        e->sizes[i] = (int64_t)dims[i];
    }
    return FERRY_OK;
}

static ferry_status parse_offsets(jp *j, ferry__st_entry *e)
{
    uint64_t v[2];
    int count;
    ferry_status rc = parse_uint_array(j, v, 2, &count);
    if (rc != FERRY_OK)
        return rc;
    if (count != 2)
        return jfail(j, "data_offsets of tensor \"%.64s\" must hold 2 numbers, not %d", e->name,
                     count);
    e->begin = v[0];
    e->end = v[1];
    return FERRY_OK;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]} in any order, each exactly once. */
static ferry_status parse_tensor_info(jp *j, ferry__st_entry *e)
{
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    bool seen[3] = {false, false, false}, more = true;
    ferry_status rc = expect(j, '{');
    skip_ws(j);
    if (rc == FERRY_OK && j->p < j->end && *j->p == '}') {
        j->p++;
        more = false;
    }
    while (rc == FERRY_OK && more) {
        char *key = NULL;
        int f = 0;
        if ((rc = parse_string(j, &key)) != FERRY_OK)
            return rc;
        while (f < 3 && strcmp(key, fields[f]) != 0)
            f++;
        if (f == 3)
            rc = jfail(j, "unknown field \"%.32s\" in tensor \"%.64s\"", key, e->name);
        else if (seen[f])
            rc = jfail(j, "field \"%s\" repeated in tensor \"%.64s\"", key, e->name);
        ferry__free(key);
        if (rc == FERRY_OK && (rc = expect(j, ':')) == FERRY_OK) {
            seen[f] = true;
            rc = f == 0 ? parse_dtype(j, e) : f == 1 ? parse_shape(j, e) : parse_offsets(j, e);
        }
        if (rc == FERRY_OK)
            rc = next_or_close(j, '}', &more);
    }
    for (int f = 0; rc == FERRY_OK && f < 3; f++)
        if (!seen[f])
            rc = jfail(j, "tensor \"%.64s\" lacks \"%s\"", e->name, fields[f]);
    return rc;
}

/* Grows *arr (of *cap items of `size` bytes) so that one more fits. */
static ferry_status grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return FERRY_OK;
    size_t new_cap = *cap ? *cap * 2 : 8;
    void *p = ferry__realloc(*arr, new_cap * size);
    if (!p)
        return ferry__fail(FERRY_ENOMEM, "safetensors header: out of memory");
    *arr = p;
    *cap = new_cap;
    return FERRY_OK;
}

/* "__metadata__": {"key": "value", ...}; strings only, as the format says. */
static ferry_status parse_metadata(jp *j, ferry__st_header *h)
{
    bool more = true;
    ferry_status rc = expect(j, '{');
    skip_ws(j);
    if (rc == FERRY_OK && j->p < j->end && *j->p == '}') {
        j->p++;
        return FERRY_OK;
    }
    while (rc == FERRY_OK && more) {
        rc = grow((void **)&h->meta, &h->cap_meta, h->n_meta, sizeof *h->meta);
        if (rc != FERRY_OK)
            return rc;
        ferry__st_pair *pair = &h->meta[h->n_meta++];
        *pair = (ferry__st_pair){NULL, NULL};
        if ((rc = parse_string(j, &pair->key)) == FERRY_OK && (rc = expect(j, ':')) == FERRY_OK &&
            (rc = parse_string(j, &pair->value)) == FERRY_OK)
            rc = next_or_close(j, '}', &more);
    }
    return rc;
}

/* The value after a top-level key: metadata once, else a tensor entry that takes `key`. */
static ferry_status parse_member(jp *j, ferry__st_header *h, char *key, bool *seen_meta)
{
    ferry_status rc;
    if (strcmp(key, "__metadata__") == 0) {
        ferry__free(key);
        if (*seen_meta)
            return jfail(j, "\"__metadata__\" appears twice");
        *seen_meta = true;
        return parse_metadata(j, h);
    }
    rc = grow((void **)&h->entries, &h->cap_entries, h->n_entries, sizeof *h->entries);
    if (rc != FERRY_OK) {
        ferry__free(key);
        return rc;
    }
    ferry__st_entry *e = &h->entries[h->n_entries++];
    memset(e, 0, sizeof *e);
    e->name = key;
    return parse_tensor_info(j, e);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a repeated string among n (by sorting a copy of the pointers); sets *dup or NULL. */
static const char *find_duplicate(const char **strs, size_t n)
{
    if (n < 2)
        return NULL;
    qsort(strs, n, sizeof *strs, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(strs[i - 1], strs[i]) == 0)
            return strs[i];
    return NULL;
}

static ferry_status check_duplicates(const ferry__st_header *h)
{
    size_t n = h->n_entries > h->n_meta ? h->n_entries : h->n_meta;
    const char **strs = ferry__malloc((n ? n : 1) * sizeof *strs), *dup;
    ferry_status rc = FERRY_OK;
    if (!strs)
        return ferry__fail(FERRY_ENOMEM, "safetensors header: out of memory");
    for (size_t i = 0; i < h->n_entries; i++)
        strs[i] = h->entries[i].name;
    if ((dup = find_duplicate(strs, h->n_entries)) != NULL)
        rc = ferry__fail(FERRY_EPROTO, "safetensors header: tensor name \"%.64s\" appears twice",
                         dup);
    for (size_t i = 0; rc == FERRY_OK && i < h->n_meta; i++)
        strs[i] = h->meta[i].key;
    if (rc == FERRY_OK && (dup = find_duplicate(strs, h->n_meta)) != NULL)
        rc = ferry__fail(FERRY_EPROTO, "safetensors header: metadata key \"%.64s\" appears twice",
                         dup);
    ferry__free(strs);
    return rc;
}

ferry_status ferry__st_parse_header(const char *text, size_t len, ferry__st_header *out)
{
    jp j = {(const unsigned char *)text, (const unsigned char *)text,
            (const unsigned char *)text + len};
    bool seen_meta = false, more = true;
    ferry_status rc;
    /* As the reference reader: the header starts with '{' right away. */
    if (len == 0 || text[0] != '{')
        return jfail(&j, "the header does not start with '{'");
    j.p++;
    skip_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        more = false;
    }
    for (rc = FERRY_OK; rc == FERRY_OK && more;) {
        char *key = NULL;
        if ((rc = parse_string(&j, &key)) != FERRY_OK || (rc = expect(&j, ':')) != FERRY_OK) {
            ferry__free(key);
            return rc;
        }
        if ((rc = parse_member(&j, out, key, &seen_meta)) == FERRY_OK)
            rc = next_or_close(&j, '}', &more);
    }
    if (rc != FERRY_OK)
        return rc;
    skip_ws(&j); /* writers pad the header with spaces */
    if (j.p != j.end)
        return jfail(&j, "unexpected bytes after the header object");
    return check_duplicates(out);
}

void ferry__st_header_clear(ferry__st_header *h)
{
    for (size_t i = 0; i < h->n_entries; i++) {
        ferry__free(h->entries[i].name);
        ferry_tensor_release(h->entries[i].tensor);
    }
    for (size_t i = 0; i < h->n_meta; i++) {
        ferry__free(h->meta[i].key);
        ferry__free(h->meta[i].value);
    }
    ferry__free(h->entries);
    ferry__free(h->meta);
    memset(h, 0, sizeof *h);
}

static int dtype_index(ferry_dtype dtype)
{
    for (size_t i = 0; i < DTYPE_TABLE_LEN; i++)
        if (dtype_table[i].dtype == dtype)
            return (int)i;
    return -1;
}

const char *ferry__st_dtype_code(ferry_dtype dtype)
{
    int i = dtype_index(dtype);
    return i < 0 ? NULL : dtype_table[i].code;
}

size_t ferry__st_dtype_size(ferry_dtype dtype)
{
    int i = dtype_index(dtype);
    return i < 0 ? 0 : dtype_table[i].size;
}

int ferry__st_dtype_rank(ferry_dtype dtype)
{
    int i = dtype_index(dtype);
    return i < 0 ? -1 : dtype_table[i].rank;
}

void ferry__st_buf_put(ferry__st_buf *b, const void *bytes, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = ferry__realloc(b->data, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void ferry__st_buf_printf(ferry__st_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) /* only short numeric pieces go through here */
        b->failed = true;
    else
        ferry__st_buf_put(b, tmp, (size_t)n);
}

/* Escapes as serde_json does (the reference writer): quote, backslash and the short control
   escapes by name, other control characters as lowercase \u00xx, everything else verbatim. */
void ferry__st_buf_json_string(ferry__st_buf *b, const char *s)
{
    ferry__st_buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = *p == '"'    ? "\\\""
                          : *p == '\\' ? "\\\\"
                          : *p == '\b' ? "\\b"
                          : *p == '\f' ? "\\f"
                          : *p == '\n' ? "\\n"
                          : *p == '\r' ? "\\r"
                          : *p == '\t' ? "\\t"
                                       : NULL;
        if (esc)
            ferry__st_buf_put(b, esc, strlen(esc));
        else if (*p < 0x20)
            ferry__st_buf_printf(b, "\\u%04x", *p);
        else
            ferry__st_buf_put(b, p, 1);
    }
    ferry__st_buf_put(b, "\"", 1);
}

void ferry__st_buf_free(ferry__st_buf *b)
{
    ferry__free(b->data);
    memset(b, 0, sizeof *b);
}
