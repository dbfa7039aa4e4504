/* Element types: their sizes and torch names, the float16 and bfloat16 bit conversions, and the
   slow-path helpers that read or write one element of any dtype as a double. Conversions into
   integer types saturate instead of invoking C's undefined behaviour for out-of-range doubles,
   and go through int64 first so that, as in torch, -1 stored into uint8 wraps to 255. */
#include "tensor/tensor_impl.h"

#include <math.h>
#include <string.h>

static const size_t dtype_sizes[FERRY_DTYPE_COUNT] = {
    [FERRY_FLOAT32] = 4, [FERRY_FLOAT64] = 8, [FERRY_INT64] = 8,   [FERRY_INT32] = 4,
    [FERRY_UINT8] = 1,   [FERRY_BOOL] = 1,    [FERRY_FLOAT16] = 2, [FERRY_BFLOAT16] = 2,
};

static const char *const dtype_names[FERRY_DTYPE_COUNT] = {
    [FERRY_FLOAT32] = "float32", [FERRY_FLOAT64] = "float64", [FERRY_INT64] = "int64",
    [FERRY_INT32] = "int32",     [FERRY_UINT8] = "uint8",     [FERRY_BOOL] = "bool",
    [FERRY_FLOAT16] = "float16", [FERRY_BFLOAT16] = "bfloat16",
};

size_t ferry_dtype_size(ferry_dtype dtype)
{
    if ((unsigned)dtype >= FERRY_DTYPE_COUNT)
        return 0;
    return dtype_sizes[dtype];
}

const char *ferry_dtype_name(ferry_dtype dtype)
{
    if ((unsigned)dtype >= FERRY_DTYPE_COUNT)
        return "invalid";
    return dtype_names[dtype];
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float ferry__half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf or NaN: keep the payload's top bits */
        return bits_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in float */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t ferry__float_to_half(float f)
{
    uint32_t u = float_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf stays inf; NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0));
    if (abs >= 0x477ff000u) /* rounds past 65504: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) {
        /* below the smallest normal half (2^-14): round to a multiple of 2^-24, ties to even.
           The float arithmetic is exact up to that final rounding, which the FPU does for us. */
        float mag = bits_float(abs);
        float scaled = mag * 0x1p24f; /* exact: a power-of-two scale */
        float r = rintf(scaled);      /* default rounding mode: nearest, ties to even */
        return (uint16_t)(sign | (uint16_t)r);
    }
    /* normal: drop 13 mantissa bits with round-to-nearest-even; a carry into the exponent is
       the right answer (it may even reach inf, excluded above) */
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return (uint16_t)(sign | ((rounded - 0x38000000u) >> 13));
}

float ferry__bf16_to_float(uint16_t b)
{
    return bits_float((uint32_t)b << 16);
}

uint16_t ferry__float_to_bf16(float f)
{
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncating could make it inf; force quiet */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static int64_t double_to_int64(double v)
{
    if (isnan(v))
        return 0;
    if (v >= 0x1p63)
        return INT64_MAX;
    if (v < -0x1p63)
        return INT64_MIN;
    return (int64_t)v;
}

double ferry__load_as_double(const void *p, ferry_dtype dtype)
{
    switch (dtype) {
    case FERRY_FLOAT32: return *(const float *)p;
    case FERRY_FLOAT64: return *(const double *)p;
    case FERRY_INT64: return (double)*(const int64_t *)p;
    case FERRY_INT32: return *(const int32_t *)p;
    case FERRY_UINT8: return *(const uint8_t *)p;
    case FERRY_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
    case FERRY_FLOAT16: return ferry__half_to_float(*(const uint16_t *)p);
    case FERRY_BFLOAT16: return ferry__bf16_to_float(*(const uint16_t *)p);
    }
    return 0.0;
}

void ferry__store_from_double(void *p, ferry_dtype dtype, double v)
{
    switch (dtype) {
    case FERRY_FLOAT32: *(float *)p = (float)v; break;
    case FERRY_FLOAT64: *(double *)p = v; break;
    case FERRY_INT64: *(int64_t *)p = double_to_int64(v); break;
    /* narrower integers wrap from int64 like a C cast of an in-range integer, as torch does */
    case FERRY_INT32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)double_to_int64(v); break;
    case FERRY_UINT8: *(uint8_t *)p = (uint8_t)(uint64_t)double_to_int64(v); break;
    case FERRY_BOOL: *(uint8_t *)p = v != 0.0; break; /* NaN is true, as bool(nan) */
    case FERRY_FLOAT16: *(uint16_t *)p = ferry__float_to_half((float)v); break;
    case FERRY_BFLOAT16: *(uint16_t *)p = ferry__float_to_bf16((float)v); break;
    }
}
