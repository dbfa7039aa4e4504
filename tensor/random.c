/* Random numbers: torch.Generator, torch.manual_seed, torch.randn and torch.rand. The generator is
   xoshiro256** (fast, 256 bits of state, passes BigCrush) seeded through splitmix64 so that close
   seeds still give unrelated streams. Uniform samples keep only as many random bits as the target
   dtype's mantissa holds, so rounding to float can never produce 1.0 and rand stays in [0, 1).
   Normal samples use the Box-Muller transform on pairs. Streams are reproducible for a seed but
   are not torch's (torch uses mt19937 on CPU). */
#include "tensor/tensor_impl.h"

#include <math.h>
#include <pthread.h>

#include "core/alloc.h"
#include "core/error.h"

struct ferry_generator {
    uint64_t s[4];
};

/* torch's default seed, so an unseeded program behaves the same from run to run */
#define DEFAULT_SEED 67280421310721ull

/* The process-wide default generator (torch's default CPU generator): both fields are guarded
   by default_lock; the state is seeded on first use. */
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static ferry_generator default_gen;
static bool default_seeded;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void gen_seed(ferry_generator *g, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        g->s[i] = splitmix64(&seed); /* never all zero: splitmix64 is a bijection of a counter */
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t gen_next(ferry_generator *g)
{
    uint64_t *s = g->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* A uniform sample in [0, 1) with `digits` random bits (<= 53): exactly representable in a
   type with that many mantissa digits. */
static double gen_uniform(ferry_generator *g, int digits)
{
    return (double)(gen_next(g) >> (64 - digits)) * ldexp(1.0, -digits);
}

ferry_generator *ferry_generator_new(uint64_t seed)
{
    ferry_generator *g = ferry__malloc(sizeof *g);
    if (!g)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory allocating a generator");
    gen_seed(g, seed);
    return g;
}

void ferry_generator_free(ferry_generator *gen)
{
    ferry__free(gen);
}

void ferry_manual_seed(uint64_t seed)
{
    pthread_mutex_lock(&default_lock);
    gen_seed(&default_gen, seed);
    default_seeded = true;
    pthread_mutex_unlock(&default_lock);
}

/* Mantissa digits of a floating dtype, 0 for the others. */
static int float_digits(ferry_dtype dtype)
{
    switch (dtype) {
    case FERRY_FLOAT32: return 24;
    case FERRY_FLOAT64: return 53;
    case FERRY_FLOAT16: return 11;
    case FERRY_BFLOAT16: return 8;
    default: return 0;
    }
}

static void fill_uniform(ferry_generator *g, char *p, int64_t n, ferry_dtype dtype)
{
    size_t elem = ferry_dtype_size(dtype);
    int digits = float_digits(dtype);
    for (int64_t i = 0; i < n; i++)
        ferry__store_from_double(p + (size_t)i * elem, dtype, gen_uniform(g, digits));
}

static void fill_normal(ferry_generator *g, char *p, int64_t n, ferry_dtype dtype)
{
    size_t elem = ferry_dtype_size(dtype);
    const double two_pi = 6.283185307179586476925286766559;
    for (int64_t i = 0; i < n; i += 2) {
        /* u1 in (0, 1] keeps log finite */
        double u1 = 1.0 - gen_uniform(g, 53), u2 = gen_uniform(g, 53);
        double r = sqrt(-2.0 * log(u1));
        ferry__store_from_double(p + (size_t)i * elem, dtype, r * cos(two_pi * u2));
        if (i + 1 < n)
            ferry__store_from_double(p + (size_t)(i + 1) * elem, dtype, r * sin(two_pi * u2));
    }
}

typedef void (*fill_fn)(ferry_generator *g, char *p, int64_t n, ferry_dtype dtype);

static ferry_tensor *random_tensor(const char *what, int ndim, const int64_t *sizes,
                                   ferry_dtype dtype, ferry_generator *gen, fill_fn fill)
{
    if ((unsigned)dtype < FERRY_DTYPE_COUNT && float_digits(dtype) == 0)
        return ferry__fail_null(FERRY_EINVAL, "%s: expected a floating point dtype, got %s", what,
                                ferry_dtype_name(dtype));
    ferry_tensor *t = ferry_tensor_empty(ndim, sizes, dtype, FERRY_DEVICE_CPU);
    if (!t)
        return NULL;
    if (gen) {
        fill(gen, ferry_tensor_data(t), ferry_tensor_numel(t), dtype);
        return t;
    }
    pthread_mutex_lock(&default_lock);
    if (!default_seeded) {
        gen_seed(&default_gen, DEFAULT_SEED);
        default_seeded = true;
    }
    fill(&default_gen, ferry_tensor_data(t), ferry_tensor_numel(t), dtype);
    pthread_mutex_unlock(&default_lock);
    return t;
}

ferry_tensor *ferry_randn(int ndim, const int64_t *sizes, ferry_dtype dtype, ferry_generator *gen)
{
    return random_tensor("randn", ndim, sizes, dtype, gen, fill_normal);
}

ferry_tensor *ferry_rand(int ndim, const int64_t *sizes, ferry_dtype dtype, ferry_generator *gen)
{
    return random_tensor("rand", ndim, sizes, dtype, gen, fill_uniform);
}
