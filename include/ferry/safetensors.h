/* Named tensors in the safetensors format (the one torch users share weights in): an 8-byte
   little-endian header length N, N bytes of JSON naming each tensor's dtype, shape and byte range,
   then the tensors' bytes. Files ferry writes are byte-for-byte what the reference writer makes
   for the same tensors (tensors ordered by dtype alignment, then name; header padded with spaces
   to a multiple of 8). The loader trusts nothing in the file and shares one aligned buffer among
   the tensors it returns, so a load copies the bytes once. */
#ifndef FERRY_SAFETENSORS_H
#define FERRY_SAFETENSORS_H

#include <stddef.h>

#include "ferry/error.h"
#include "ferry/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A loaded file: its tensors and its string metadata. Immutable once loaded, so every accessor
   is thread-safe; single owner (ferry_safetensors_free). */
typedef struct ferry_safetensors ferry_safetensors;

/* Writes n CPU tensors under the given names (borrowed; names are NUL-terminated UTF-8, unique,
   not "__metadata__") to `path`, replacing the file. Non-contiguous tensors are written in
   row-major order. Returns FERRY_OK, FERRY_EINVAL (a NULL argument, a bad or duplicate name, a
   file that cannot be written; the message says which), FERRY_ENOTSUP (a tensor not on the CPU)
   or FERRY_ENOMEM. On failure no partial file is left behind. Thread-safe. */
FERRY_API ferry_status ferry_safetensors_save(const char *path, const char *const *names,
                                              ferry_tensor *const *tensors, size_t n);

/* The same, also writing the n_meta string pairs meta_keys[i] -> meta_values[i] as the file's
   "__metadata__" (as torch users' {"format": "pt"}); keys unique, both UTF-8 (FERRY_EINVAL for
   NULL arrays with n_meta > 0, a NULL or non-UTF-8 string, a duplicate key). n_meta 0 writes
   no "__metadata__" entry at all. Otherwise as ferry_safetensors_save. */
FERRY_API ferry_status ferry_safetensors_save_with_metadata(const char *path,
                                                            const char *const *names,
                                                            ferry_tensor *const *tensors, size_t n,
                                                            const char *const *meta_keys,
                                                            const char *const *meta_values,
                                                            size_t n_meta);

/* Loads a file. Returns a new object, or NULL with FERRY_EINVAL (NULL path, the file cannot be
   opened or read), FERRY_EPROTO (anything malformed: header length, JSON syntax or escapes,
   unknown or duplicate keys, offsets out of range, overlapping, leaving gaps or not matching
   dtype x shape, duplicate names; the message says what and where), FERRY_ENOTSUP (a valid
   safetensors dtype ferry has no counterpart for, such as I16, or more than FERRY_MAX_DIMS
   dimensions) or FERRY_ENOMEM. Never crashes or leaks on bad input. Thread-safe. */
FERRY_API ferry_safetensors *ferry_safetensors_load(const char *path);

/* The same from `len` bytes in memory (borrowed; copied, so the caller may free them at once). */
FERRY_API ferry_safetensors *ferry_safetensors_load_buffer(const void *data, size_t len);

/* How many tensors the file holds; 0 for NULL. */
FERRY_API size_t ferry_safetensors_count(const ferry_safetensors *st);

/* The name of tensor i in the order the header lists them (borrowed, lives as long as `st`);
   NULL with FERRY_EINVAL when i >= count. */
FERRY_API const char *ferry_safetensors_name(const ferry_safetensors *st, size_t i);

/* The tensor called `name` (a new reference), or NULL with FERRY_EINVAL when there is none. The
   tensors of one file share one storage: they outlive `st`, and writing into one never touches
   another's bytes. Every call for one name returns the same tensor. */
FERRY_API ferry_tensor *ferry_safetensors_get(const ferry_safetensors *st, const char *name);

/* The "__metadata__" pairs: how many, the i-th key (header order), and the value for a key.
   Borrowed strings living as long as `st`; NULL (with FERRY_EINVAL) when absent. */
FERRY_API size_t ferry_safetensors_metadata_count(const ferry_safetensors *st);
FERRY_API const char *ferry_safetensors_metadata_key(const ferry_safetensors *st, size_t i);
FERRY_API const char *ferry_safetensors_metadata(const ferry_safetensors *st, const char *key);

/* Frees the object (not the tensors handed out, which hold their own references). NULL is fine. */
FERRY_API void ferry_safetensors_free(ferry_safetensors *st);

#ifdef __cplusplus
}
#endif
#endif
