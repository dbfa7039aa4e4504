/* codec_demo: what a ferry message looks like on the wire. It builds a call the way a program
   would pass it to ferry_rpc_sync (a tensor, a transposed view of it, plain values, keyword
   arguments), encodes it into one flat buffer, decodes that buffer as a receiver would, and
   prints both sides so the round trip can be checked by eye: the transposed view arrives as a
   strided tensor with the same values, the bytes of the tensors travel as attachments after a
   small envelope. It uses the codec's internal header because it is built inside the tree. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "ferry/ferry.h"
#include "rpc/wire.h"

static void print_value(const ferry_value *v, int indent);

static void print_tensor(ferry_tensor *t, int indent)
{
    char buf[512];
    ferry_tensor_format(t, buf, sizeof buf);
    printf("%*s%s  shape ", indent, "", buf);
    for (int d = 0; d < ferry_tensor_ndim(t); d++)
        printf("%s%lld", d ? "x" : "", (long long)ferry_tensor_sizes(t)[d]);
    printf("%s strides [", ferry_tensor_ndim(t) ? "" : "()");
    for (int d = 0; d < ferry_tensor_ndim(t); d++)
        printf("%s%lld", d ? ", " : "", (long long)ferry_tensor_strides(t)[d]);
    printf("] %s\n", ferry_tensor_is_contiguous(t) ? "contiguous" : "strided");
}

static void print_bytes(const ferry_value *v, int indent)
{
    size_t len;
    const unsigned char *p = ferry_value_as_bytes(v, &len);
    printf("%*sbytes[%zu] ", indent, "", len);
    for (size_t i = 0; i < len; i++)
        printf("%02x", p[i]);
    printf("\n");
}

/* Recursion is fine here: the demo prints values it built itself, a few levels deep. */
static void print_value(const ferry_value *v, int indent)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_NONE: printf("%*sNone\n", indent, ""); break;
    case FERRY_VALUE_BOOL: printf("%*s%s\n", indent, "", ferry_value_as_bool(v) ? "True" : "False"); break;
    case FERRY_VALUE_INT: printf("%*s%lld\n", indent, "", (long long)ferry_value_as_int(v)); break;
    case FERRY_VALUE_DOUBLE: printf("%*s%g\n", indent, "", ferry_value_as_double(v)); break;
    case FERRY_VALUE_STRING: printf("%*s\"%s\"\n", indent, "", ferry_value_as_string(v)); break;
    case FERRY_VALUE_BYTES: print_bytes(v, indent); break;
    case FERRY_VALUE_TENSOR: print_tensor(ferry_value_as_tensor(v), indent); break;
    case FERRY_VALUE_LIST:
        printf("%*slist of %zu\n", indent, "", ferry_list_len(v));
        for (size_t i = 0; i < ferry_list_len(v); i++)
            print_value(ferry_list_get(v, i), indent + 2);
        break;
    case FERRY_VALUE_DICT:
        printf("%*sdict of %zu\n", indent, "", ferry_dict_len(v));
        for (size_t i = 0; i < ferry_dict_len(v); i++) {
            printf("%*s%s:\n", indent + 2, "", ferry_dict_key_at(v, i));
            print_value(ferry_dict_value_at(v, i), indent + 4);
        }
        break;
    case FERRY_VALUE_RREF: printf("%*sRRef\n", indent, ""); break;
    case FERRY_VALUE_OBJECT: printf("%*sobject\n", indent, ""); break;
    case FERRY_VALUE_FUTURE: printf("%*sfuture\n", indent, ""); break;
    }
}

static void print_msg(const char *title, const ferry__msg *m)
{
    printf("%s: type %d id %llu from rank %d fn \"%s\" timeout %gs\n", title, (int)m->type,
           (unsigned long long)m->id, (int)m->src, m->fn ? m->fn : "", m->timeout_s);
    printf("  args:\n");
    print_value(m->args, 4);
    printf("  kwargs:\n");
    print_value(m->kwargs, 4);
}

/* Encodes `m` the way the agent does and shows where each attachment's bytes come from. */
static void show_attachments(const ferry__msg *m)
{
    ferry__wire_out out;
    if (ferry__wire_encode(m, NULL, &out) != FERRY_OK)
        return;
    printf("envelope: %zu bytes, %zu attachment(s), %zu bytes inline\n", out.header_len,
           out.n_atts, out.inline_bytes);
    for (size_t i = 0; i < out.n_atts; i++) {
        ferry_tensor *t = out.atts[i].tensor;
        printf("  attachment %zu: %zu bytes %s, %s (no copy)\n", i, out.atts[i].len,
               out.atts[i].is_inline ? "inline" : "bulk",
               ferry_tensor_is_contiguous(t) ? "the tensor's own bytes"
                                             : "the span of storage its strided view covers");
    }
    ferry__wire_out_free(&out);
}

int main(void)
{
    int64_t sizes[2] = {2, 3};
    ferry_tensor *flat = ferry_arange(0, 6, 1, FERRY_FLOAT32);
    ferry_tensor *x = flat ? ferry_tensor_view(flat, 2, sizes) : NULL;
    ferry_tensor *xt = x ? ferry_tensor_transpose(x, 0, 1) : NULL;
    if (!xt) {
        fprintf(stderr, "codec_demo: %s\n", ferry_last_error());
        return 1;
    }
    ferry_value *args = ferry_args(4, ferry_tensor_value(x), ferry_tensor_value(xt),
                                   ferry_int(3), ferry_bytes("a\0b", 3));
    ferry_value *kwargs = ferry_dict_new(), *alpha = ferry_double(0.5),
                *tag = ferry_list_of(2, ferry_string("demo"), ferry_none());
    ferry_dict_set(kwargs, "alpha", alpha);
    ferry_dict_set(kwargs, "tag", tag);
    ferry__msg call = {.type = FERRY__MSG_CALL, .id = 42, .src = 1, .fn = "torch.add",
                       .args = args, .kwargs = kwargs, .timeout_s = 60};
    print_msg("sent", &call);
    show_attachments(&call);

    uint8_t *buf = NULL;
    size_t len = 0;
    ferry__msg got;
    int rc = 1;
    if (ferry__wire_encode_flat(&call, NULL, &buf, &len) == FERRY_OK &&
        ferry__wire_decode_flat(buf, len, NULL, &got) == FERRY_OK) {
        printf("flat message: %zu bytes\n", len);
        print_msg("received", &got);
        bool same = ferry_value_equal(got.args, args) && ferry_value_equal(got.kwargs, kwargs);
        printf("round trip: %s\n", same ? "equal" : "DIFFERENT");
        rc = same ? 0 : 1;
        ferry__msg_clear(&got);
    } else {
        fprintf(stderr, "codec_demo: %s\n", ferry_last_error());
    }
    ferry__free(buf);
    ferry_value_release(tag);
    ferry_value_release(alpha);
    ferry_value_release(kwargs);
    ferry_value_release(args);
    ferry_tensor_release(xt);
    ferry_tensor_release(x);
    ferry_tensor_release(flat);
    return rc;
}
