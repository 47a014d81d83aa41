/* gr_dtype: safetensors dtype names and sizes, and bit-exact fp32 <-> bf16 /
 * fp16 / fp64 conversions (PyTorch's round-to-nearest-even). */
#include "gr_dtype.h"
#include "gr_err.h"

#include <string.h>

/* safetensors data are little-endian and graft hands out raw pointers into
 * the mapping, so it supports little-endian hosts only. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "graft reads safetensors data in place and needs a little-endian host"
#endif

/* Conversions of fewer elements than this run on the calling thread; larger
 * ones are split into chunks of this many elements, one OpenMP iteration each
 * (big enough that the fork/join cost is noise, small enough to balance). */
#define CONV_CHUNK ((size_t)1 << 16)

/* `omp simd` asks for vectorisation even where -O2's cheap cost model would
 * not try; it changes no result (the loops are element-wise integer code). */
#ifdef _OPENMP
#define GR_SIMD         _Pragma("omp simd")
#define GR_SIMD_ANY_SUB _Pragma("omp simd reduction(| : any_sub)")
#else
#define GR_SIMD
#define GR_SIMD_ANY_SUB
#endif

static const struct {
    const char *name;
    unsigned bits;
} dtypes[GR_DT_COUNT] = {
    [GR_DT_BOOL] = {"BOOL", 8},       [GR_DT_U8] = {"U8", 8},
    [GR_DT_I8] = {"I8", 8},           [GR_DT_F8_E5M2] = {"F8_E5M2", 8},
    [GR_DT_F8_E4M3] = {"F8_E4M3", 8}, [GR_DT_F8_E8M0] = {"F8_E8M0", 8},
    [GR_DT_F6_E2M3] = {"F6_E2M3", 6}, [GR_DT_F6_E3M2] = {"F6_E3M2", 6},
    [GR_DT_F4] = {"F4", 4},           [GR_DT_I16] = {"I16", 16},
    [GR_DT_U16] = {"U16", 16},        [GR_DT_F16] = {"F16", 16},
    [GR_DT_BF16] = {"BF16", 16},      [GR_DT_I32] = {"I32", 32},
    [GR_DT_U32] = {"U32", 32},        [GR_DT_F32] = {"F32", 32},
    [GR_DT_I64] = {"I64", 64},        [GR_DT_U64] = {"U64", 64},
    [GR_DT_F64] = {"F64", 64},        [GR_DT_C64] = {"C64", 64},
};

int gr_dtype_from_name(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < GR_DT_COUNT; i++)
        if (!strcmp(dtypes[i].name, name)) return i;
    return -1;
}

const char *gr_dtype_name(gr_dtype dt)
{
    return (unsigned)dt < GR_DT_COUNT ? dtypes[dt].name : "?";
}

unsigned gr_dtype_bits(gr_dtype dt)
{
    return (unsigned)dt < GR_DT_COUNT ? dtypes[dt].bits : 0;
}

int gr_dtype_is_float(gr_dtype dt)
{
    return dt == GR_DT_F32 || dt == GR_DT_F16 || dt == GR_DT_BF16 || dt == GR_DT_F64;
}

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- scalar reference conversions: integer bit operations only, so the
 * result never depends on the FPU's rounding mode or flush-to-zero flags ---- */

float gr_bf16_to_f32(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

uint16_t gr_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0; /* any NaN, sign dropped */
    /* Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even;
     * a carry out of the mantissa bumps the exponent (up to Inf) as it should. */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float gr_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) /* Inf, or NaN quieted with its payload kept (as x86 and PyTorch do) */
        return u2f(sign | 0x7F800000u | (man << 13) | (man ? 0x00400000u : 0));
    if (exp != 0) return u2f(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return u2f(sign);
    /* Subnormal: man * 2^-24; normalise so the leading 1 becomes implicit. */
    int top = 31 - __builtin_clz(man); /* 0..9 */
    return u2f(sign | ((uint32_t)(top + 103) << 23) | ((man << (23 - top)) & 0x7FFFFFu));
}

uint16_t gr_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return sign | 0x7E00u;  /* NaN */
    if (a >= 0x477FF000u) return sign | 0x7C00u; /* >= 65520 rounds to Inf */
    if (a >= 0x38800000u) {                      /* normal half: |f| >= 2^-14 */
        uint32_t m = a - 0x38000000u;            /* rebias exponent 127 -> 15 */
        return sign | (uint16_t)((m + 0xFFFu + ((m >> 13) & 1u)) >> 13);
    }
    if (a <= 0x33000000u) return sign; /* <= 2^-25: rounds (ties to even) to zero */
    /* Subnormal half: round(|f| * 2^24) with the full 24-bit significand. */
    uint32_t e = a >> 23; /* 102..112 */
    uint32_t sig = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 */
    uint32_t r = sig >> shift, rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return sign | (uint16_t)r;
}

/* ---- bulk kernels: branch-free loops the compiler vectorises; each is held
 * against the scalar reference above over all 65,536 16-bit patterns and
 * large f32 samples in tests/unit/test_dtype.c. Loads and stores of the
 * stored dtype go through memcpy because tensor data in a file need not be
 * aligned to its element size. ---- */

static inline uint16_t ld16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void bf16_to_f32_run(const unsigned char *restrict src, float *restrict dst, size_t n)
{
    GR_SIMD
    for (size_t i = 0; i < n; i++) dst[i] = u2f((uint32_t)ld16(src + 2 * i) << 16);
}

static void f32_to_bf16_run(const float *restrict src, unsigned char *restrict dst, size_t n)
{
    GR_SIMD
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f2u(src[i]);
        uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        uint16_t h = (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r);
        memcpy(dst + 2 * i, &h, sizeof h);
    }
}

static void f16_to_f32_run(const unsigned char *restrict src, float *restrict dst, size_t n)
{
    GR_SIMD
    for (size_t i = 0; i < n; i++) {
        uint32_t h = ld16(src + 2 * i);
        uint32_t sign = (h & 0x8000u) << 16;
        uint32_t em = h & 0x7FFFu;
        /* Masks instead of branches: all ones when the condition holds. */
        uint32_t is_sub = 0u - (uint32_t)(em < 0x0400u);
        uint32_t is_special = 0u - (uint32_t)(em >= 0x7C00u);
        uint32_t is_nan = 0u - (uint32_t)(em > 0x7C00u);
        uint32_t normal = (em << 13) + 0x38000000u;
        uint32_t special = (em << 13) | 0x7F800000u | (is_nan & 0x00400000u);
        /* Subnormal: the float 0.5 + man*2^-24 minus 0.5 is exactly man*2^-24
         * (operands and result are all exact normal floats: no rounding). */
        uint32_t sub = f2u(u2f(0x3F000000u | em) - 0.5f);
        uint32_t r = (normal & ~is_special) | (special & is_special);
        r = (r & ~is_sub) | (sub & is_sub);
        dst[i] = u2f(sign | r);
    }
}

/* f32 -> f16 in two passes per block: a vectorisable pass that is exact for
 * everything except subnormal results, then a scalar fix-up of those (rare). */
static uint32_t f32_to_f16_block(const float *restrict src, unsigned char *restrict dst, size_t n)
{
    uint32_t any_sub = 0;
    GR_SIMD_ANY_SUB
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f2u(src[i]);
        uint32_t sign = (u >> 16) & 0x8000u;
        uint32_t a = u & 0x7FFFFFFFu;
        uint32_t m = a - 0x38000000u;
        uint32_t r = (m + 0xFFFu + ((m >> 13) & 1u)) >> 13;
        r = a >= 0x477FF000u ? 0x7C00u : r;
        r = a > 0x7F800000u ? 0x7E00u : r;
        r = a <= 0x33000000u ? 0u : r;
        any_sub |= (a - 0x33000001u) < (0x38800000u - 0x33000001u) ? 1u : 0u;
        uint16_t h = (uint16_t)(sign | r);
        memcpy(dst + 2 * i, &h, sizeof h);
    }
    return any_sub;
}

static void f32_to_f16_run(const float *restrict src, unsigned char *restrict dst, size_t n)
{
    for (size_t i0 = 0; i0 < n; i0 += 1024) {
        size_t k = n - i0 < 1024 ? n - i0 : 1024;
        if (!f32_to_f16_block(src + i0, dst + 2 * i0, k)) continue;
        for (size_t i = i0; i < i0 + k; i++) {
            uint32_t a = f2u(src[i]) & 0x7FFFFFFFu;
            if (a > 0x33000000u && a < 0x38800000u) {
                uint16_t h = gr_f32_to_f16(src[i]);
                memcpy(dst + 2 * i, &h, sizeof h);
            }
        }
    }
}

static void f64_to_f32_run(const unsigned char *restrict src, float *restrict dst, size_t n)
{
    GR_SIMD
    for (size_t i = 0; i < n; i++) {
        double d;
        memcpy(&d, src + 8 * i, sizeof d);
        dst[i] = (float)d;
    }
}

static void f32_to_f64_run(const float *restrict src, unsigned char *restrict dst, size_t n)
{
    GR_SIMD
    for (size_t i = 0; i < n; i++) {
        double d = src[i];
        memcpy(dst + 8 * i, &d, sizeof d);
    }
}

int gr_to_f32(gr_dtype dt, const void *src, float *dst, size_t n)
{
    size_t esz;
    switch (dt) {
    case GR_DT_F32:
        esz = 4;
        break;
    case GR_DT_F16:
    case GR_DT_BF16:
        esz = 2;
        break;
    case GR_DT_F64:
        esz = 8;
        break;
    default:
        return gr_seterr(GR_EUNSUP, "cannot convert %s to F32 (only F32, F16, BF16, F64)",
                         gr_dtype_name(dt));
    }
    size_t nchunks = (n + CONV_CHUNK - 1) / CONV_CHUNK;
    const unsigned char *s = src;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nchunks > 1)
#endif
    for (size_t c = 0; c < nchunks; c++) {
        size_t i0 = c * CONV_CHUNK, k = n - i0 < CONV_CHUNK ? n - i0 : CONV_CHUNK;
        const unsigned char *p = s + i0 * esz;
        switch (dt) {
        case GR_DT_F32:
            memcpy(dst + i0, p, k * sizeof(float));
            break;
        case GR_DT_F16:
            f16_to_f32_run(p, dst + i0, k);
            break;
        case GR_DT_BF16:
            bf16_to_f32_run(p, dst + i0, k);
            break;
        default:
            f64_to_f32_run(p, dst + i0, k);
            break;
        }
    }
    return 0;
}

int gr_from_f32(gr_dtype dt, const float *src, void *dst, size_t n)
{
    size_t esz;
    switch (dt) {
    case GR_DT_F32:
        esz = 4;
        break;
    case GR_DT_F16:
    case GR_DT_BF16:
        esz = 2;
        break;
    case GR_DT_F64:
        esz = 8;
        break;
    default:
        return gr_seterr(GR_EUNSUP, "cannot convert F32 to %s (only F32, F16, BF16, F64)",
                         gr_dtype_name(dt));
    }
    size_t nchunks = (n + CONV_CHUNK - 1) / CONV_CHUNK;
    unsigned char *d = dst;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nchunks > 1)
#endif
    for (size_t c = 0; c < nchunks; c++) {
        size_t i0 = c * CONV_CHUNK, k = n - i0 < CONV_CHUNK ? n - i0 : CONV_CHUNK;
        unsigned char *p = d + i0 * esz;
        switch (dt) {
        case GR_DT_F32:
            memcpy(p, src + i0, k * sizeof(float));
            break;
        case GR_DT_F16:
            f32_to_f16_run(src + i0, p, k);
            break;
        case GR_DT_BF16:
            f32_to_bf16_run(src + i0, p, k);
            break;
        default:
            f32_to_f64_run(src + i0, p, k);
            break;
        }
    }
    return 0;
}
