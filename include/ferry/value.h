/* Values: torch's IValue for C. Immutable once built (dicts are filled before they are shared),
   refcounted, safe to retain and release from any thread. */
#ifndef FERRY_VALUE_H
#define FERRY_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ferry_value ferry_value;
typedef struct ferry_tensor ferry_tensor;
typedef struct ferry_rref ferry_rref;

typedef enum {
    FERRY_VALUE_NONE,
    FERRY_VALUE_BOOL,
    FERRY_VALUE_INT,
    FERRY_VALUE_DOUBLE,
    FERRY_VALUE_STRING,
    FERRY_VALUE_BYTES,
    FERRY_VALUE_TENSOR,
    FERRY_VALUE_LIST,
    FERRY_VALUE_DICT,
    FERRY_VALUE_RREF,
    FERRY_VALUE_OBJECT, /* an object of a registered class (ferry/object.h); never sent by value */
    FERRY_VALUE_FUTURE  /* a future (ferry/future.h: ferry_value_of_future); never sent */
} ferry_kind;

/* Constructors return a new reference, or NULL with FERRY_ENOMEM or FERRY_EINVAL (a NULL
   string, tensor or rref; NULL data with len > 0; len SIZE_MAX; ferry_rref_value before the rref
   module is set up). Strings and bytes are copied and must be NUL-terminated UTF-8 or any bytes
   without NUL; use ferry_bytes for data with embedded NULs. Tensors and rrefs are borrowed and
   retained. */
FERRY_API ferry_value *ferry_none(void);
FERRY_API ferry_value *ferry_bool(bool b);
FERRY_API ferry_value *ferry_int(int64_t i);
FERRY_API ferry_value *ferry_double(double d);
FERRY_API ferry_value *ferry_string(const char *s);
FERRY_API ferry_value *ferry_string_n(const char *s, size_t len);
FERRY_API ferry_value *ferry_bytes(const void *data, size_t len);
FERRY_API ferry_value *ferry_tensor_value(ferry_tensor *t);
FERRY_API ferry_value *ferry_rref_value(ferry_rref *r);

/* Lists (new reference). ferry_list_of and ferry_args STEAL their n items (so they nest
   naturally), on failure too; if any item is NULL the others are released and the result is
   NULL. The last error is then the one already recorded on this thread (normally the failed
   constructor's), or FERRY_EINVAL when none is. FERRY_ENOMEM. ferry_args is the same call,
   named for argument lists. */
FERRY_API ferry_value *ferry_list_of(size_t n, ...);
FERRY_API ferry_value *ferry_args(size_t n, ...);
/* A list of n borrowed items (each retained); new reference, or NULL with FERRY_EINVAL (items
   NULL with n > 0, or a NULL item) or FERRY_ENOMEM. */
FERRY_API ferry_value *ferry_list_from(ferry_value *const *items, size_t n);

/* Dicts map strings to values, keep insertion order, and may only be changed while the caller
   holds the sole reference (so no other thread can see the change). ferry_dict_new returns an
   empty dict (new reference) or NULL with FERRY_ENOMEM. ferry_dict_set copies `key`, borrows `v`
   (retains it) and replaces an existing key in its first position. Returns FERRY_OK,
   FERRY_ETYPE (NULL or not a dict), FERRY_EINVAL (NULL key or value, v is the dict itself, or the
   dict is shared), FERRY_ENOMEM. */
FERRY_API ferry_value *ferry_dict_new(void);
FERRY_API ferry_status ferry_dict_set(ferry_value *dict, const char *key, const ferry_value *v);

/* The kind of v; FERRY_VALUE_NONE for NULL (no error recorded). */
FERRY_API ferry_kind ferry_value_kind(const ferry_value *v);
/* Static name of a kind ("none", "bool", "int", "double", "string", "bytes", "tensor", "list",
   "dict", "rref", "object", "future"; "unknown" out of range), for messages. */
FERRY_API const char *ferry_kind_name(ferry_kind k);

/* Accessors read a value as the kind the caller expects. The rules are the same for the two
   forms below: a bool is not an int and an int is not a bool (torch's IValue keeps them apart
   too); a double accessor accepts an int and converts it (exactly up to 2^53, rounded past
   that); nothing else converts. A NULL value is a mismatch.

   The last status: every accessor in this section sets ferry_last_status() to FERRY_OK when it
   succeeds (the message of an earlier failure is left, so read ferry_last_error() only when the
   status says failure) and records FERRY_ETYPE or FERRY_EINVAL with a message when it fails, so
   `ferry_value_as_int(v) == 0 && ferry_last_status() != FERRY_OK` means "v is not an int" and
   never "v is 0". Calls outside this section (ferry_value_kind, ferry_value_equal,
   ferry_value_format, ...) never clear it.

   Mismatch messages name the function and both kinds: "ferry_value_as_int: expected an int, got
   a string", "...: expected an int, got an object of class 'Net'", "...: got NULL". Returned
   pointers (strings, bytes, tensors, rrefs, list items, dict keys and values) are borrowed and
   live as long as `v`: retain one to keep it longer. All are thread-safe (values are immutable
   once shared). */

/* The content, or 0/false/NULL with FERRY_ETYPE on a mismatch. ferry_value_as_bytes sets *len
   (when len is not NULL; 0 on a mismatch). */
FERRY_API bool ferry_value_as_bool(const ferry_value *v);
FERRY_API int64_t ferry_value_as_int(const ferry_value *v);
FERRY_API double ferry_value_as_double(const ferry_value *v);
FERRY_API const char *ferry_value_as_string(const ferry_value *v);
/* Byte length of a string or bytes value (0 + FERRY_ETYPE otherwise). */
FERRY_API size_t ferry_value_len(const ferry_value *v);
FERRY_API const void *ferry_value_as_bytes(const ferry_value *v, size_t *len);
FERRY_API ferry_tensor *ferry_value_as_tensor(const ferry_value *v);
FERRY_API ferry_rref *ferry_value_as_rref(const ferry_value *v);
FERRY_API size_t ferry_list_len(const ferry_value *list);
/* NULL with FERRY_EINVAL past the end. */
FERRY_API ferry_value *ferry_list_get(const ferry_value *list, size_t i);
FERRY_API size_t ferry_dict_len(const ferry_value *dict);
/* NULL with FERRY_EINVAL if `key` is absent or NULL. */
FERRY_API ferry_value *ferry_dict_get(const ferry_value *dict, const char *key);
/* The i-th key and value in insertion order (borrowed); NULL with FERRY_ETYPE (not a dict) or
   FERRY_EINVAL (i past the end). */
FERRY_API const char *ferry_dict_key_at(const ferry_value *dict, size_t i);
FERRY_API ferry_value *ferry_dict_value_at(const ferry_value *dict, size_t i);

/* The same reads as a status: FERRY_OK with the content in *out; FERRY_ETYPE on a kind
   mismatch; FERRY_EINVAL for a NULL `out` (as "ferry_value_get_int: NULL out"). On failure
   *out (and *len) are left as they were, so a default set beforehand survives:
       int64_t n = 10;
       if (ferry_value_get_int(v, &n) != FERRY_OK) ... ferry_last_error() says why ...
   ferry_value_get_bytes sets *len when len is not NULL. */
FERRY_API ferry_status ferry_value_get_bool(const ferry_value *v, bool *out);
FERRY_API ferry_status ferry_value_get_int(const ferry_value *v, int64_t *out);
FERRY_API ferry_status ferry_value_get_double(const ferry_value *v, double *out);
FERRY_API ferry_status ferry_value_get_string(const ferry_value *v, const char **out);
FERRY_API ferry_status ferry_value_get_bytes(const ferry_value *v, const void **out, size_t *len);
FERRY_API ferry_status ferry_value_get_tensor(const ferry_value *v, ferry_tensor **out);
FERRY_API ferry_status ferry_value_get_rref(const ferry_value *v, ferry_rref **out);
/* Item i of a list (borrowed): FERRY_ETYPE (not a list), FERRY_EINVAL (i past the end, as
   "ferry_list_at: list index 3 out of range (length 2)"; NULL out). */
FERRY_API ferry_status ferry_list_at(const ferry_value *list, size_t i, ferry_value **out);
/* The value under `key` (borrowed): FERRY_ETYPE (not a dict), FERRY_EINVAL (absent, as
   "ferry_dict_lookup: key 'lr' not in dict"; NULL key; NULL out). */
FERRY_API ferry_status ferry_dict_lookup(const ferry_value *dict, const char *key,
                                         ferry_value **out);

/* Deep equality: same kinds and contents; dicts need the same keys in the same order; tensors
   compare by dtype, shape and values (ferry_tensor_equal); rrefs by identity of the referenced
   object. NULL equals only NULL. Records no error. */
FERRY_API bool ferry_value_equal(const ferry_value *a, const ferry_value *b);

/* Writes `v` the way Python's repr writes the value torch would return: None, True, 3, 0.1,
   1e+16, 'text' (quoted and escaped as Python does), b'\x00', [1, 2], {'k': 'v'}, tensors as
   ferry_tensor_format writes them ("tensor([1., 2.])"), other objects as <a phrase naming
   them>; "NULL" for NULL. Into buf, NUL-terminated when cap > 0 (buf may be NULL when cap is
   0); returns the length it needed, like snprintf. */
FERRY_API size_t ferry_value_format(const ferry_value *v, char *buf, size_t cap);

/* retain returns `v` with one more reference; release drops one and frees the value (and its
   children's references) with the last. Both accept NULL and are safe from any thread. */
FERRY_API ferry_value *ferry_value_retain(ferry_value *v);
FERRY_API void ferry_value_release(ferry_value *v);

#ifdef __cplusplus
}
#endif
#endif
