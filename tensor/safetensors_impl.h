/* Internal pieces of the safetensors reader and writer shared by tensor/safetensors.c (files,
   layout, tensors) and tensor/safetensors_json.c (the strict header parser and JSON writing). */
#ifndef FERRY_TENSOR_SAFETENSORS_IMPL_H
#define FERRY_TENSOR_SAFETENSORS_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/safetensors.h"

/* The reference reader refuses headers above this size; so do we (a bound for hostile files). */
#define FERRY__ST_MAX_HEADER ((uint64_t)100000000)

/* One tensor as the header describes it; `tensor` is filled once the bytes are loaded. */
typedef struct {
    char *name;
    ferry_dtype dtype;
    int ndim;
    int64_t sizes[FERRY_MAX_DIMS];
    uint64_t begin, end; /* byte range inside the data section */
    ferry_tensor *tensor;
} ferry__st_entry;

typedef struct {
    char *key, *value;
} ferry__st_pair;

/* The parsed header: entries and metadata in the order the JSON lists them. */
typedef struct {
    ferry__st_entry *entries;
    size_t n_entries, cap_entries;
    ferry__st_pair *meta;
    size_t n_meta, cap_meta;
} ferry__st_header;

/* Parses `len` bytes of header JSON into `out` (zeroed by the caller). On failure returns
   FERRY_EPROTO / FERRY_ENOTSUP / FERRY_ENOMEM with the message recorded, and `out` holds whatever
   was parsed so far for ferry__st_header_clear. Checks syntax, escapes, UTF-8, field sets and
   duplicate names; the byte layout is checked by the caller, which knows the data size. */
ferry_status ferry__st_parse_header(const char *text, size_t len, ferry__st_header *out);
void ferry__st_header_clear(ferry__st_header *h);

/* The safetensors code ("F32"), element size and the reference writer's ordering rank (larger
   alignment first) of a ferry dtype; NULL / 0 / -1 for an invalid dtype. */
const char *ferry__st_dtype_code(ferry_dtype dtype);
size_t ferry__st_dtype_size(ferry_dtype dtype);
int ferry__st_dtype_rank(ferry_dtype dtype);

/* True when the n bytes are well-formed UTF-8 (no overlongs, surrogates or code points past
   U+10FFFF). */
bool ferry__st_utf8_valid(const char *s, size_t n);

/* A growing byte buffer for the writer; `failed` turns sticky on the first failed allocation so
   callers check once at the end. */
typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} ferry__st_buf;

void ferry__st_buf_put(ferry__st_buf *b, const void *bytes, size_t n);
void ferry__st_buf_printf(ferry__st_buf *b, const char *fmt, ...) FERRY_PRINTF(2, 3);
/* Appends s as a JSON string, escaped as the reference writer escapes it. */
void ferry__st_buf_json_string(ferry__st_buf *b, const char *s);
void ferry__st_buf_free(ferry__st_buf *b);

#endif
