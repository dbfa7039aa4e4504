/* Tests for safetensors save/load: round trips of every dtype (scalars and zero-size tensors too),
   the torch-written file in tests/data (values, and byte-for-byte the same file when ferry saves
   the same tensors), and malformed inputs, which must fail with a clear status and no crash or
   leak (the ASan build checks the latter). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/test_util.h"
#include "core/alloc.h"
#include "ferry/safetensors.h"

#define TORCH_FILE "tests/data/torch_written.safetensors"

/* A fresh directory holding the one file a test writes; cleaned by tmp_done. */
typedef struct {
    char dir[256];
    char path[300];
} tmp_file;

static void tmp_init(tmp_file *t)
{
    ferry_test_mkdtemp(t->dir, sizeof t->dir, "ferry-st");
    snprintf(t->path, sizeof t->path, "%s/t.safetensors", t->dir);
}

/* Removes the file and the directory; fails if anything else (a stray temporary) is left. */
static void tmp_done(tmp_file *t)
{
    unlink(t->path);
    cr_assert(rmdir(t->dir) == 0, "stray files left in %s", t->dir);
}

/* A file image: length prefix, the header text as given, then data_len bytes of 0xAB. */
static unsigned char *make_image(const char *header, size_t data_len, size_t *len)
{
    size_t n = strlen(header);
    unsigned char *buf = malloc(8 + n + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    memset(buf + 8 + n, 0xAB, data_len);
    *len = 8 + n + data_len;
    return buf;
}

static ferry_tensor *tensor_of(const void *data, int ndim, const int64_t *sizes, ferry_dtype dt)
{
    return ferry_assert_ptr(ferry_tensor_from_data(data, ndim, sizes, dt));
}

Test(tensor_safetensors, round_trips_every_dtype_when_saved_and_loaded, .timeout = 10)
{
    static const float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, -0.125f, 1e30f};
    static const double f64[2] = {0.1, -1e300};
    static const int64_t i64[3] = {INT64_MIN, -1, INT64_MAX};
    static const int32_t i32[2] = {INT32_MIN, 7};
    static const uint8_t u8[3] = {0, 128, 255};
    static const uint8_t b[4] = {1, 0, 0, 1};
    static const uint16_t f16[2] = {0x3c00, 0xfbff}, bf16[2] = {0x3f80, 0xc049};
    static const float one = 42.0f;
    const int64_t s23[2] = {2, 3}, s2[1] = {2}, s3[1] = {3}, s4[1] = {4}, s0[3] = {4, 0, 2};
    ferry_tensor *t[10] = {
        tensor_of(f32, 2, s23, FERRY_FLOAT32), tensor_of(f64, 1, s2, FERRY_FLOAT64),
        tensor_of(i64, 1, s3, FERRY_INT64),    tensor_of(i32, 1, s2, FERRY_INT32),
        tensor_of(u8, 1, s3, FERRY_UINT8),     tensor_of(b, 1, s4, FERRY_BOOL),
        tensor_of(f16, 1, s2, FERRY_FLOAT16),  tensor_of(bf16, 1, s2, FERRY_BFLOAT16),
        tensor_of(&one, 0, NULL, FERRY_FLOAT32), tensor_of(NULL, 3, s0, FERRY_INT64),
    };
    const char *names[10] = {"f32", "f64", "i64", "i32", "u8", "bool", "f16", "bf16", "scalar",
                             "empty"};
    tmp_file tf;
    tmp_init(&tf);
    ferry_assert_ok(ferry_safetensors_save(tf.path, names, t, 10));
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(tf.path));
    cr_assert_eq(ferry_safetensors_count(st), 10);
    cr_assert_eq(ferry_safetensors_metadata_count(st), 0);
    for (int i = 0; i < 10; i++) {
        ferry_tensor *got = ferry_assert_ptr(ferry_safetensors_get(st, names[i]));
        cr_assert(ferry_tensor_equal(got, t[i]), "tensor %s differs after the round trip",
                  names[i]);
        cr_assert_eq(ferry_tensor_ndim(got), ferry_tensor_ndim(t[i]));
        ferry_tensor_release(got);
        ferry_tensor_release(t[i]);
    }
    ferry_safetensors_free(st);
    tmp_done(&tf);
}

Test(tensor_safetensors, reads_torch_values_when_loading_the_torch_written_file, .timeout = 10)
{
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(TORCH_FILE));
    cr_assert_eq(ferry_safetensors_count(st), 10);
    cr_assert_str_eq(ferry_safetensors_metadata(st, "format"), "pt");
    cr_assert_str_eq(ferry_safetensors_metadata(st, "note"),
                     "quote \" backslash \\ tab \t e-acute \xc3\xa9");
    ferry_tensor *w = ferry_assert_ptr(ferry_safetensors_get(st, "weight"));
    cr_assert_eq(ferry_tensor_dtype(w), FERRY_FLOAT32);
    cr_assert_eq(ferry_tensor_ndim(w), 2);
    cr_assert(ferry_tensor_sizes(w)[0] == 2 && ferry_tensor_sizes(w)[1] == 3);
    for (int i = 0; i < 6; i++)
        cr_assert_float_eq(ferry_tensor_item_at(w, i), i * 0.5 - 1.0, 0);
    static const struct {
        const char *name;
        ferry_dtype dtype;
        int64_t numel;
        double values[5];
    } want[] = {
        {"bias", FERRY_FLOAT64, 3, {0.1, -2.5, 3e10}},
        {"ids", FERRY_INT64, 4, {0, -1, 1099511627776.0, -4611686018427387904.0}},
        {"counts", FERRY_INT32, 4, {1, -2, 3, -4}},
        {"pixels", FERRY_UINT8, 5, {0, 1, 127, 128, 255}},
        {"mask", FERRY_BOOL, 3, {1, 0, 1}},
        {"half", FERRY_FLOAT16, 3, {1.0, -0.5, 65504.0}},
        {"brain", FERRY_BFLOAT16, 2, {1.0, -3.140625}},
        {"scalar", FERRY_FLOAT32, 1, {7.25}},
        {"empty", FERRY_FLOAT32, 0, {0}},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        ferry_tensor *t = ferry_assert_ptr(ferry_safetensors_get(st, want[k].name));
        cr_assert_eq(ferry_tensor_dtype(t), want[k].dtype, "%s: dtype", want[k].name);
        cr_assert_eq(ferry_tensor_numel(t), want[k].numel, "%s: numel", want[k].name);
        for (int64_t i = 0; i < want[k].numel; i++)
            cr_assert_eq(ferry_tensor_item_at(t, i), want[k].values[i], "%s[%lld]",
                         want[k].name, (long long)i);
        ferry_tensor_release(t);
    }
    ferry_tensor *s = ferry_assert_ptr(ferry_safetensors_get(st, "scalar"));
    cr_assert_eq(ferry_tensor_ndim(s), 0);
    ferry_tensor_release(s);
    ferry_tensor_release(w);
    ferry_safetensors_free(st);
}

Test(tensor_safetensors, writes_the_reference_bytes_when_saving_the_torch_tensors, .timeout = 10)
{
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(TORCH_FILE));
    size_t n = ferry_safetensors_count(st), n_meta = ferry_safetensors_metadata_count(st);
    const char *names[16], *keys[4], *values[4];
    ferry_tensor *tensors[16];
    cr_assert(n <= 16 && n_meta <= 4);
    /* Handed over in reverse order: the writer must sort them as the reference does. */
    for (size_t i = 0; i < n; i++) {
        names[i] = ferry_safetensors_name(st, n - 1 - i);
        tensors[i] = ferry_assert_ptr(ferry_safetensors_get(st, names[i]));
    }
    for (size_t i = 0; i < n_meta; i++) {
        keys[i] = ferry_safetensors_metadata_key(st, i);
        values[i] = ferry_safetensors_metadata(st, keys[i]);
    }
    tmp_file tf;
    tmp_init(&tf);
    ferry_assert_ok(ferry_safetensors_save_with_metadata(tf.path, names, tensors, n, keys, values,
                                                         n_meta));
    size_t len_ref, len_ours;
    unsigned char *ref = ferry_test_read_file(TORCH_FILE, &len_ref), *ours = ferry_test_read_file(tf.path, &len_ours);
    cr_assert_eq(len_ours, len_ref);
    cr_assert(memcmp(ours, ref, len_ref) == 0, "ferry's file differs from the reference bytes");
    free(ref);
    free(ours);
    for (size_t i = 0; i < n; i++)
        ferry_tensor_release(tensors[i]);
    ferry_safetensors_free(st);
    tmp_done(&tf);
}

Test(tensor_safetensors, writes_padded_empty_header_when_no_tensors, .timeout = 10)
{
    static const unsigned char want[] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ',
                                         ' '};
    tmp_file tf;
    tmp_init(&tf);
    ferry_assert_ok(ferry_safetensors_save(tf.path, NULL, NULL, 0));
    size_t len;
    unsigned char *got = ferry_test_read_file(tf.path, &len);
    cr_assert_eq(len, sizeof want);
    cr_assert(memcmp(got, want, len) == 0);
    free(got);
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(tf.path));
    cr_assert_eq(ferry_safetensors_count(st), 0);
    ferry_safetensors_free(st);
    tmp_done(&tf);
}

Test(tensor_safetensors, escapes_names_like_the_reference_when_names_hold_odd_chars, .timeout = 10)
{
    const char *names[2] = {"a\"b\\c\nd\x01 \xc3\xa9/", ""};
    const int64_t s1[1] = {1};
    const float v = 2.0f;
    ferry_tensor *t[2] = {tensor_of(&v, 1, s1, FERRY_FLOAT32), tensor_of(&v, 1, s1, FERRY_FLOAT32)};
    tmp_file tf;
    tmp_init(&tf);
    ferry_assert_ok(ferry_safetensors_save(tf.path, names, t, 2));
    size_t len;
    unsigned char *raw = ferry_test_read_file(tf.path, &len);
    raw[len] = '\0';
    cr_assert(strstr((char *)raw + 8, "\"a\\\"b\\\\c\\nd\\u0001 \xc3\xa9/\":") != NULL,
              "unexpected escaping: %s", raw + 8);
    free(raw);
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(tf.path));
    for (int i = 0; i < 2; i++) {
        ferry_tensor *got = ferry_assert_ptr(ferry_safetensors_get(st, names[i]));
        cr_assert(ferry_tensor_equal(got, t[i]));
        ferry_tensor_release(got);
        ferry_tensor_release(t[i]);
    }
    ferry_safetensors_free(st);
    tmp_done(&tf);
}

Test(tensor_safetensors, writes_row_major_when_the_tensor_is_a_transposed_view, .timeout = 10)
{
    const int64_t s23[2] = {2, 3};
    static const int32_t v[6] = {0, 1, 2, 3, 4, 5}, vt[6] = {0, 3, 1, 4, 2, 5};
    ferry_tensor *t = tensor_of(v, 2, s23, FERRY_INT32);
    ferry_tensor *tt = ferry_assert_ptr(ferry_tensor_transpose(t, 0, 1));
    const char *name = "t";
    tmp_file tf;
    tmp_init(&tf);
    ferry_assert_ok(ferry_safetensors_save(tf.path, &name, &tt, 1));
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(tf.path));
    ferry_tensor *got = ferry_assert_ptr(ferry_safetensors_get(st, "t"));
    cr_assert_eq(ferry_tensor_sizes(got)[0], 3);
    cr_assert(memcmp(ferry_tensor_data(got), vt, sizeof vt) == 0);
    ferry_tensor_release(got);
    ferry_tensor_release(tt);
    ferry_tensor_release(t);
    ferry_safetensors_free(st);
    tmp_done(&tf);
}

Test(tensor_safetensors, shares_one_aligned_storage_when_loaded, .timeout = 10)
{
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(TORCH_FILE));
    ferry_tensor *ids = ferry_assert_ptr(ferry_safetensors_get(st, "ids"));
    ferry_tensor *bias = ferry_assert_ptr(ferry_safetensors_get(st, "bias"));
    ferry_tensor *again = ferry_assert_ptr(ferry_safetensors_get(st, "ids"));
    cr_assert(ferry_tensor_shares_storage(ids, bias));
    cr_assert_eq(again, ids, "one name gives one tensor");
    cr_assert_eq((uintptr_t)ferry_tensor_data(ids) % 64, 0, "the data section starts aligned");
    ferry_safetensors_free(st);
    /* The tensors outlive the file object. */
    cr_assert_eq(ferry_tensor_item_at(bias, 1), -2.5);
    ferry_tensor_release(again);
    ferry_tensor_release(ids);
    ferry_tensor_release(bias);
}

Test(tensor_safetensors, copies_the_tensor_when_its_offset_is_misaligned, .timeout = 10)
{
    const char *hdr = "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"f\":{\"data_offsets\":[1,5],\"shape\":[],\"dtype\":\"F32\"}}";
    size_t len;
    unsigned char *img = make_image(hdr, 5, &len);
    const float v = -6.5f;
    memcpy(img + len - 4, &v, 4);
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load_buffer(img, len));
    free(img); /* the loader copied what it needs */
    ferry_tensor *f = ferry_assert_ptr(ferry_safetensors_get(st, "f"));
    cr_assert_eq(ferry_tensor_item(f), -6.5);
    cr_assert_eq((uintptr_t)ferry_tensor_data(f) % 4, 0);
    cr_assert_str_eq(ferry_safetensors_name(st, 1), "f", "names keep the header's order");
    ferry_tensor_release(f);
    ferry_safetensors_free(st);
}

/* Each case: a header (with data_len bytes after it) that must be refused with `code`. */
static const struct {
    const char *header;
    size_t data_len;
    ferry_status code;
} bad_headers[] = {
    {"", 0, FERRY_EPROTO},
    {" {}", 0, FERRY_EPROTO},
    {"{", 0, FERRY_EPROTO},
    {"{}x", 0, FERRY_EPROTO},
    {"[]", 0, FERRY_EPROTO},
    {"{\"a\":", 0, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}{}", 4, FERRY_EPROTO},
    {"{'a':{}}", 0, FERRY_EPROTO},
    /* layout */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 5, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 3, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", 4,
     FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}", 0,
     FERRY_EPROTO},
    /* fields and values */
    {"{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, FERRY_ENOTSUP},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, FERRY_EPROTO},
    {"{\"a\":{}}", 0, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
     FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":{\"x\":1},\"shape\":[1],\"data_offsets\":[0,4]}}", 4, FERRY_EPROTO},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
     "\"data_offsets\":[0,1]}}", 1, FERRY_ENOTSUP},
    {"{\"a\":[1]}", 0, FERRY_EPROTO},
    /* strings */
    {"{\"a\\x\":{}}", 0, FERRY_EPROTO},
    {"{\"a\\u12G4\":{}}", 0, FERRY_EPROTO},
    {"{\"a\\u12\":{}}", 0, FERRY_EPROTO},
    {"{\"a\\udc00\":{}}", 0, FERRY_EPROTO},
    {"{\"a\\ud800x\":{}}", 0, FERRY_EPROTO},
    {"{\"a\\u0000\":{}}", 0, FERRY_EPROTO},
    {"{\"a\xff\":{}}", 0, FERRY_EPROTO},
    {"{\"a\xc0\x80\":{}}", 0, FERRY_EPROTO},
    {"{\"a\xed\xa0\x80\":{}}", 0, FERRY_EPROTO},
    {"{\"a\x01\":{}}", 0, FERRY_EPROTO},
    {"{\"a\\", 0, FERRY_EPROTO},
    /* metadata */
    {"{\"__metadata__\":{\"k\":1}}", 0, FERRY_EPROTO},
    {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, FERRY_EPROTO},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, FERRY_EPROTO},
    {"{\"__metadata__\":[]}", 0, FERRY_EPROTO},
};

Test(tensor_safetensors, fails_with_a_message_when_the_header_is_malformed, .timeout = 10)
{
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        size_t len;
        unsigned char *img = make_image(bad_headers[i].header, bad_headers[i].data_len, &len);
        ferry_clear_error();
        ferry_safetensors *st = ferry_safetensors_load_buffer(img, len);
        cr_assert_null(st, "case %zu (%s) was accepted", i, bad_headers[i].header);
        cr_assert_eq(ferry_last_status(), bad_headers[i].code, "case %zu (%s): got %s: %s", i,
                     bad_headers[i].header, ferry_strerror(ferry_last_status()),
                     ferry_last_error());
        cr_assert(strlen(ferry_last_error()) > 10, "case %zu: no message", i);
        free(img);
    }
}

Test(tensor_safetensors, accepts_whitespace_and_any_key_order_when_the_json_is_valid,
     .timeout = 10)
{
    const char *hdr = "{ \"b\" :\n{\"shape\" : [ 2 ] ,\t\"data_offsets\":[4 ,6],\"dtype\":\"U8\"} ,"
                      "\"a\\u00e9\\ud83d\\ude00\\/\":{\"dtype\":\"BOOL\",\"shape\":[4],"
                      "\"data_offsets\":[0,4]}, \"__metadata__\" : { } }  \r\n ";
    size_t len;
    unsigned char *img = make_image(hdr, 6, &len);
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load_buffer(img, len));
    cr_assert_eq(ferry_safetensors_count(st), 2);
    cr_assert_str_eq(ferry_safetensors_name(st, 1), "a\xc3\xa9\xf0\x9f\x98\x80/");
    ferry_tensor *b = ferry_assert_ptr(ferry_safetensors_get(st, "b"));
    cr_assert_eq(ferry_tensor_item_at(b, 1), 0xAB);
    ferry_tensor_release(b);
    ferry_safetensors_free(st);
    free(img);
}

Test(tensor_safetensors, fails_cleanly_when_the_file_is_truncated_anywhere, .timeout = 20)
{
    size_t len;
    unsigned char *full = ferry_test_read_file(TORCH_FILE, &len);
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *part = malloc(cut ? cut : 1); /* exact size, so ASan sees overreads */
        memcpy(part, full, cut);
        ferry_safetensors *st = ferry_safetensors_load_buffer(part, cut);
        cr_assert_null(st, "a %zu-byte prefix was accepted", cut);
        cr_assert_eq(ferry_last_status(), FERRY_EPROTO, "prefix %zu: %s", cut,
                     ferry_last_error());
        free(part);
    }
    free(full);
}

Test(tensor_safetensors, fails_when_the_header_length_is_out_of_bounds, .timeout = 10)
{
    unsigned char img[24] = {0};
    memcpy(img + 8, "{}      ", 8);
    uint64_t lens[4] = {17, UINT64_MAX, (uint64_t)1 << 63, 100000001};
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 8; i++)
            img[i] = (unsigned char)(lens[k] >> (8 * i));
        cr_assert_null(ferry_safetensors_load_buffer(img, sizeof img));
        cr_assert_eq(ferry_last_status(), FERRY_EPROTO);
        cr_assert(strstr(ferry_last_error(), "header length") != NULL, "%s", ferry_last_error());
    }
    cr_assert_null(ferry_safetensors_load_buffer(img, 7));
    cr_assert_eq(ferry_last_status(), FERRY_EPROTO);
}

Test(tensor_safetensors, returns_enomem_without_leaking_when_allocations_fail, .timeout = 20)
{
    size_t len;
    unsigned char *full = ferry_test_read_file(TORCH_FILE, &len);
    ferry_safetensors *st = NULL;
    long nth;
    for (nth = 1; !st && nth < 1000; nth++) {
        ferry__alloc_fail_after(nth, 0);
        st = ferry_safetensors_load_buffer(full, len);
        if (!st)
            cr_assert_eq(ferry_last_status(), FERRY_ENOMEM, "failing allocation %ld: %s", nth,
                         ferry_last_error());
    }
    ferry__alloc_fail_after(0, 0);
    cr_assert_not_null(st, "never succeeded");
    cr_assert_gt(nth, 3, "the load should need a few allocations");
    ferry_safetensors_free(st);
    free(full);
}

Test(tensor_safetensors, returns_enomem_without_leaving_files_when_saving_runs_out, .timeout = 20)
{
    const int64_t s2[1] = {2};
    static const double v[2] = {1, 2};
    ferry_tensor *t = tensor_of(v, 1, s2, FERRY_FLOAT64);
    const char *name = "x";
    tmp_file tf;
    tmp_init(&tf);
    ferry_status rc = FERRY_ENOMEM;
    for (long nth = 1; rc != FERRY_OK && nth < 100; nth++) {
        ferry__alloc_fail_after(nth, 0);
        rc = ferry_safetensors_save(tf.path, &name, &t, 1);
        cr_assert(rc == FERRY_OK || rc == FERRY_ENOMEM, "allocation %ld: %s", nth,
                  ferry_last_error());
    }
    ferry__alloc_fail_after(0, 0);
    ferry_assert_ok(rc);
    ferry_tensor_release(t);
    tmp_done(&tf);
}

Test(tensor_safetensors, fails_with_einval_when_the_path_cannot_be_read, .timeout = 10)
{
    cr_assert_null(ferry_safetensors_load("/nonexistent/dir/x.safetensors"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "/nonexistent/dir/x.safetensors") != NULL);
    cr_assert_null(ferry_safetensors_load("/tmp"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_safetensors_load(NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_safetensors_load_buffer(NULL, 8));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
}

Test(tensor_safetensors, refuses_to_save_when_arguments_are_bad, .timeout = 10)
{
    const int64_t s1[1] = {1};
    const float v = 1.0f;
    ferry_tensor *t[2] = {tensor_of(&v, 1, s1, FERRY_FLOAT32), tensor_of(&v, 1, s1, FERRY_INT32)};
    const char *dup[2] = {"w", "w"}, *meta[1] = {"__metadata__"}, *bad_utf8[1] = {"\xff"};
    const char *nul[1] = {NULL}, *ok[2] = {"a", "b"}, *keys[2] = {"k", "k"}, *vals[2] = {"1", "2"};
    ferry_tensor *null_t[1] = {NULL};
    tmp_file tf;
    tmp_init(&tf);
    ferry_assert_status(ferry_safetensors_save(tf.path, dup, t, 2), FERRY_EINVAL);
    ferry_assert_status(ferry_safetensors_save(tf.path, meta, t, 1), FERRY_EINVAL);
    ferry_assert_status(ferry_safetensors_save(tf.path, bad_utf8, t, 1), FERRY_EINVAL);
    ferry_assert_status(ferry_safetensors_save(tf.path, nul, t, 1), FERRY_EINVAL);
    ferry_assert_status(ferry_safetensors_save(tf.path, ok, null_t, 1), FERRY_EINVAL);
    ferry_assert_status(ferry_safetensors_save(NULL, ok, t, 2), FERRY_EINVAL);
    ferry_assert_status(ferry_safetensors_save_with_metadata(tf.path, ok, t, 2, keys, vals, 2),
                        FERRY_EINVAL);
    ferry_assert_status(ferry_safetensors_save("/nonexistent/dir/x.safetensors", ok, t, 2),
                        FERRY_EINVAL);
    cr_assert(access(tf.path, F_OK) != 0, "a refused save left a file");
    for (int i = 0; i < 2; i++)
        ferry_tensor_release(t[i]);
    tmp_done(&tf);
}

Test(tensor_safetensors, replaces_the_old_file_when_saving_over_it, .timeout = 10)
{
    const int64_t s1[1] = {1};
    const int64_t a = 1, b = 2;
    ferry_tensor *ta = tensor_of(&a, 1, s1, FERRY_INT64), *tb = tensor_of(&b, 0, NULL, FERRY_INT64);
    const char *na = "a", *nb = "b";
    const char *keys[1] = {"format"}, *vals[1] = {"pt"};
    tmp_file tf;
    tmp_init(&tf);
    ferry_assert_ok(ferry_safetensors_save(tf.path, &na, &ta, 1));
    ferry_assert_ok(ferry_safetensors_save_with_metadata(tf.path, &nb, &tb, 1, keys, vals, 1));
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(tf.path));
    cr_assert_eq(ferry_safetensors_count(st), 1);
    cr_assert_str_eq(ferry_safetensors_name(st, 0), "b");
    cr_assert_str_eq(ferry_safetensors_metadata_key(st, 0), "format");
    cr_assert_null(ferry_safetensors_get(st, "a"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_safetensors_name(st, 1));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_safetensors_metadata(st, "nope"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_safetensors_metadata_key(st, 1));
    cr_assert_eq(ferry_safetensors_count(NULL), 0);
    ferry_safetensors_free(st);
    ferry_safetensors_free(NULL);
    ferry_tensor_release(ta);
    ferry_tensor_release(tb);
    tmp_done(&tf);
}
