/* libFuzzer target for the safetensors loader: any bytes must either load (and then every tensor
   must be readable end to end) or fail with a status, never crash, hang or leak. */
#include <stddef.h>
#include <stdint.h>

#include "ferry/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ferry_safetensors *st = ferry_safetensors_load_buffer(data, size);
    if (!st)
        return 0;
    /* Touch every accepted tensor's bytes so ASan sees any view that points past its storage. */
    for (size_t i = 0; i < ferry_safetensors_count(st); i++) {
        ferry_tensor *t = ferry_safetensors_get(st, ferry_safetensors_name(st, i));
        const unsigned char *p = ferry_tensor_data_const(t);
        volatile unsigned char sink = 0;
        for (size_t k = 0; k < ferry_tensor_nbytes(t); k++)
            sink ^= p[k];
        (void)sink;
        ferry_tensor_release(t);
    }
    for (size_t i = 0; i < ferry_safetensors_metadata_count(st); i++)
        (void)ferry_safetensors_metadata(st, ferry_safetensors_metadata_key(st, i));
    ferry_safetensors_free(st);
    return 0;
}
