/* Tests for gr_dtype: dtype names, and fp32 <-> bf16/fp16/fp64 conversions
 * checked bit for bit against numpy (fp16) and the formulas of
 * reference/formats.md (bf16), over every 16-bit pattern and large samples of
 * fp32 patterns around the rounding boundaries. */
#include "gr_dtype.h"
#include "gr_err.h"
#include "gr_test.h"

#include <float.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* splitmix64: a fixed, seedable source of test patterns */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int is_nan_bits(uint32_t u)
{
    return (u & 0x7FFFFFFFu) > 0x7F800000u;
}

/* ---- independent references, written from formats.md ---- */

/* The formula of formats.md, literally. */
static uint16_t ref_bf16_formula(uint32_t u)
{
    if (is_nan_bits(u)) return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* The same rounding stated as a comparison of the dropped half-word. */
static uint16_t ref_bf16_compare(uint32_t u)
{
    if (is_nan_bits(u)) return 0x7FC0;
    uint32_t hi = u >> 16, lo = u & 0xFFFFu;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) hi++;
    return (uint16_t)hi;
}

static void test_names(void)
{
    static const char *names[] = {
        "BOOL", "U8",  "I8",   "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "I16",
        "U16",  "F16", "BF16", "I32",     "U32",     "F32",     "I64",     "U64",     "F64", "C64"};
    static const unsigned bits[] = {8,  8,  8,  8,  8,  8,  6,  6,  4,  16,
                                    16, 16, 16, 32, 32, 32, 64, 64, 64, 64};
    CHECK_EQ_INT(sizeof names / sizeof *names, GR_DT_COUNT);
    for (int i = 0; i < GR_DT_COUNT; i++) {
        CHECK_EQ_INT(gr_dtype_from_name(names[i]), i);
        CHECK(!strcmp(gr_dtype_name((gr_dtype)i), names[i]));
        CHECK_EQ_INT(gr_dtype_bits((gr_dtype)i), bits[i]);
        CHECK_EQ_INT(gr_dtype_is_float((gr_dtype)i),
                     i == GR_DT_F32 || i == GR_DT_F16 || i == GR_DT_BF16 || i == GR_DT_F64);
    }
    CHECK_EQ_INT(gr_dtype_from_name("F17"), -1);
    CHECK_EQ_INT(gr_dtype_from_name("bf16"), -1);
    CHECK_EQ_INT(gr_dtype_from_name(""), -1);
    CHECK_EQ_INT(gr_dtype_from_name(NULL), -1);
}

static void test_bf16_all_patterns(void)
{
    int bad = 0;
    static uint16_t h[65536], back[65536];
    static float f[65536];
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    CHECK_EQ_INT(gr_to_f32(GR_DT_BF16, h, f, 65536), 0);
    CHECK_EQ_INT(gr_from_f32(GR_DT_BF16, f, back, 65536), 0);
    for (uint32_t i = 0; i < 65536; i++) {
        float s = gr_bf16_to_f32((uint16_t)i);
        uint16_t want = is_nan_bits(i << 16) ? 0x7FC0 : (uint16_t)i;
        if (f2u(s) != i << 16 || f2u(f[i]) != i << 16 || gr_f32_to_bf16(s) != want ||
            back[i] != want) {
            if (bad++ < 5)
                fprintf(stderr, "bf16 %04x: %08x %08x -> %04x %04x\n", i, f2u(s), f2u(f[i]),
                        gr_f32_to_bf16(s), back[i]);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

/* Every bf16 value's neighbourhood: each high half-word with low half-words
 * at and around the tie point, plus random ones. */
static void test_bf16_rounding(void)
{
    static const uint32_t lows[] = {0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF};
    const size_t per = sizeof lows / sizeof *lows + 2;
    size_t n = 65536 * per;
    float *src = malloc(n * sizeof *src);
    uint16_t *out = malloc(n * sizeof *out);
    uint64_t seed = 1;
    size_t k = 0;
    for (uint32_t hi = 0; hi < 65536; hi++) {
        for (size_t j = 0; j < per - 2; j++) src[k++] = u2f(hi << 16 | lows[j]);
        src[k++] = u2f(hi << 16 | (uint32_t)(mix(&seed) & 0xFFFF));
        src[k++] = u2f(hi << 16 | (uint32_t)(mix(&seed) & 0xFFFF));
    }
    CHECK_EQ_INT(gr_from_f32(GR_DT_BF16, src, out, n), 0);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f2u(src[i]);
        uint16_t a = ref_bf16_formula(u), b = ref_bf16_compare(u);
        if (a != b || gr_f32_to_bf16(src[i]) != a || out[i] != a)
            if (bad++ < 5)
                fprintf(stderr, "f32 %08x -> bf16 lib %04x bulk %04x formula %04x compare %04x\n",
                        u, gr_f32_to_bf16(src[i]), out[i], a, b);
    }
    CHECK_EQ_INT(bad, 0);
    free(src);
    free(out);
}

static void test_special_values(void)
{
    /* ties from formats.md */
    CHECK_EQ_INT(gr_f32_to_bf16(u2f(0x3F808000u)), 0x3F80);
    CHECK_EQ_INT(gr_f32_to_bf16(u2f(0x3F818000u)), 0x3F82);
    /* overflow */
    CHECK_EQ_INT(gr_f32_to_bf16(FLT_MAX), 0x7F80);
    CHECK_EQ_INT(gr_f32_to_bf16(-FLT_MAX), 0xFF80);
    CHECK_EQ_INT(gr_f32_to_f16(FLT_MAX), 0x7C00);
    CHECK_EQ_INT(gr_f32_to_f16(-FLT_MAX), 0xFC00);
    CHECK_EQ_INT(gr_f32_to_f16(65504.0f), 0x7BFF);
    CHECK_EQ_INT(gr_f32_to_f16(65519.996f), 0x7BFF); /* below the midpoint to Inf */
    CHECK_EQ_INT(gr_f32_to_f16(65520.0f), 0x7C00);   /* the tie rounds to even = Inf */
    CHECK_EQ_INT(gr_f32_to_f16(INFINITY), 0x7C00);
    CHECK_EQ_INT(gr_f32_to_bf16(-INFINITY), 0xFF80);
    /* NaN: bf16 drops the sign (0x7FC0); f16 keeps it (sign | 0x7E00) */
    CHECK_EQ_INT(gr_f32_to_bf16(NAN), 0x7FC0);
    CHECK_EQ_INT(gr_f32_to_bf16(u2f(0xFFC00001u)), 0x7FC0);
    CHECK_EQ_INT(gr_f32_to_bf16(u2f(0x7F800001u)), 0x7FC0); /* signalling */
    CHECK_EQ_INT(gr_f32_to_f16(u2f(0x7FC00000u)), 0x7E00);
    CHECK_EQ_INT(gr_f32_to_f16(u2f(0xFF800001u)), 0xFE00);
    CHECK(isnan(gr_bf16_to_f32(0x7FC0)) && isnan(gr_f16_to_f32(0x7E00)));
    CHECK_EQ_INT(f2u(gr_f16_to_f32(0xFC01)), 0xFFC02000u); /* quieted, payload kept */
    /* subnormals: rounded, never flushed */
    CHECK_EQ_INT(gr_f32_to_bf16(u2f(0x00008000u)), 0x0000); /* tie to even (0) */
    CHECK_EQ_INT(gr_f32_to_bf16(u2f(0x00018000u)), 0x0002); /* tie to even (2) */
    CHECK_EQ_INT(gr_f32_to_bf16(u2f(0x00008001u)), 0x0001);
    CHECK_EQ_INT(f2u(gr_bf16_to_f32(0x0001)), 0x00010000u);
    CHECK_EQ_INT(gr_f32_to_f16(ldexpf(1, -24)), 0x0001); /* smallest half subnormal */
    CHECK_EQ_INT(gr_f32_to_f16(ldexpf(1, -25)), 0x0000); /* tie with 0 -> even */
    CHECK_EQ_INT(gr_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    CHECK_EQ_INT(gr_f32_to_f16(ldexpf(3, -25)), 0x0002);     /* 1.5 ulp: tie -> even (2) */
    CHECK_EQ_INT(gr_f32_to_f16(ldexpf(5, -25)), 0x0002);     /* 2.5 ulp: tie -> even (2) */
    CHECK_EQ_INT(gr_f32_to_f16(-ldexpf(1023, -24)), 0x83FF); /* largest subnormal */
    CHECK_EQ_INT(gr_f32_to_f16(ldexpf(2047, -25)), 0x0400);  /* rounds up to min normal */
    CHECK_EQ_INT(f2u(gr_f16_to_f32(0x0001)), f2u(ldexpf(1, -24)));
    CHECK_EQ_INT(f2u(gr_f16_to_f32(0x83FF)), f2u(-ldexpf(1023, -24)));
    CHECK_EQ_INT(gr_f32_to_f16(-0.0f), 0x8000);
    CHECK_EQ_INT(gr_f32_to_bf16(-0.0f), 0x8000);
    CHECK_EQ_INT(gr_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3C00);     /* tie to even, down */
    CHECK_EQ_INT(gr_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3C02); /* tie to even, up */
}

/* Runs /usr/bin/python3 with numpy on files in dir; returns 0 when it ran. */
static int have_numpy(void)
{
    return system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

static int run_py(const char *script)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c '%s'", script);
    return system(cmd);
}

static void *read_all(const char *path, size_t want)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *p = malloc(want ? want : 1);
    size_t got = fread(p, 1, want, f);
    fclose(f);
    if (got != want) {
        free(p);
        return NULL;
    }
    return p;
}

static void test_f16_against_numpy(void)
{
    if (!have_numpy()) {
        printf("SKIP test_f16_against_numpy: /usr/bin/python3 has no numpy\n");
        return;
    }
    char dir[] = "/tmp/graft-test-dtype-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char in16[256], out16[256], in32[256], out32[256], script[2048];
    snprintf(in16, sizeof in16, "%s/h.bin", dir);
    snprintf(out16, sizeof out16, "%s/h2f.bin", dir);
    snprintf(in32, sizeof in32, "%s/f.bin", dir);
    snprintf(out32, sizeof out32, "%s/f2h.bin", dir);

    /* f32 inputs: every half value, the exact midpoints between neighbours
     * (ties) and one f32 ulp either side of them, the overflow and underflow
     * edges, and random bit patterns over the whole f32 range. */
    size_t cap = 65536 * 8 + 3000000, n = 0;
    uint32_t *u = malloc(cap * sizeof *u);
    for (uint32_t h = 0; h < 0x7C00; h++) {
        for (uint32_t s = 0; s < 2; s++) {
            uint32_t lo = f2u(gr_f16_to_f32((uint16_t)h)),
                     hi = f2u(gr_f16_to_f32((uint16_t)(h + 1)));
            float mid = (u2f(lo) + u2f(hi)) / 2; /* exact: 11-bit values, one more bit */
            uint32_t m = f2u(mid);
            u[n++] = lo | s << 31;
            u[n++] = m | s << 31;
            u[n++] = (m - 1) | s << 31;
            u[n++] = (m + 1) | s << 31;
        }
    }
    for (uint32_t k = 0; k < 4096; k++) { /* around 65504 .. 65520 .. */
        u[n++] = 0x477FE000u + k;
        u[n++] = 0x33000000u - 2048 + k; /* around 2^-25 */
        u[n++] = 0x38800000u - 2048 + k; /* around the smallest normal half */
    }
    uint64_t seed = 7;
    while (n < cap) u[n++] = (uint32_t)mix(&seed);
    FILE *f = fopen(in32, "wb");
    CHECK(f && fwrite(u, 4, n, f) == n);
    fclose(f);
    uint16_t all16[65536];
    for (uint32_t i = 0; i < 65536; i++) all16[i] = (uint16_t)i;
    f = fopen(in16, "wb");
    CHECK(f && fwrite(all16, 2, 65536, f) == 65536);
    fclose(f);

    snprintf(script, sizeof script,
             "import numpy as np\n"
             "h = np.fromfile(\"%s\", dtype=np.uint16).view(np.float16)\n"
             "h.astype(np.float32).view(np.uint32).astype(\"<u4\").tofile(\"%s\")\n"
             "f = np.fromfile(\"%s\", dtype=np.uint32).view(np.float32)\n"
             "with np.errstate(all=\"ignore\"):\n"
             "    f.astype(np.float16).view(np.uint16).astype(\"<u2\").tofile(\"%s\")\n",
             in16, out16, in32, out32);
    CHECK_EQ_INT(run_py(script), 0);
    uint32_t *np_h2f = read_all(out16, 65536 * 4);
    uint16_t *np_f2h = read_all(out32, n * 2);
    CHECK(np_h2f && np_f2h);
    if (!np_h2f || !np_f2h) goto done;

    /* f16 -> f32: all 65,536 patterns, scalar and bulk */
    float bulk[65536];
    CHECK_EQ_INT(gr_to_f32(GR_DT_F16, all16, bulk, 65536), 0);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint32_t got = f2u(gr_f16_to_f32((uint16_t)i)), want = np_h2f[i];
        if ((i & 0x7C00) == 0x7C00 && (i & 0x3FF)) /* NaN: numpy keeps a signalling one */
            want = (uint32_t)(i & 0x8000) << 16 | 0x7FC00000u | (i & 0x3FFu) << 13;
        if (got != want || f2u(bulk[i]) != want)
            if (bad++ < 5)
                fprintf(stderr, "f16 %04x -> f32 lib %08x bulk %08x numpy %08x\n", i, got,
                        f2u(bulk[i]), np_h2f[i]);
        /* round trip */
        uint16_t back = gr_f32_to_f16(gr_f16_to_f32((uint16_t)i));
        uint16_t rt_want =
            (i & 0x7C00) == 0x7C00 && (i & 0x3FF) ? (uint16_t)((i & 0x8000) | 0x7E00) : (uint16_t)i;
        if (back != rt_want && bad++ < 5) fprintf(stderr, "f16 %04x round trip -> %04x\n", i, back);
    }
    CHECK_EQ_INT(bad, 0);

    /* f32 -> f16: the sample, scalar and bulk */
    uint16_t *out = malloc(n * sizeof *out);
    CHECK_EQ_INT(gr_from_f32(GR_DT_F16, (const float *)u, out, n), 0);
    bad = 0;
    size_t ties = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t want = is_nan_bits(u[i]) ? (uint16_t)((u[i] >> 16 & 0x8000) | 0x7E00) : np_f2h[i];
        uint16_t got = gr_f32_to_f16(u2f(u[i]));
        if (got != want || out[i] != want)
            if (bad++ < 5)
                fprintf(stderr, "f32 %08x -> f16 lib %04x bulk %04x numpy %04x\n", u[i], got,
                        out[i], np_f2h[i]);
        ties += (u[i] & 0x1FFF) == 0x1000 && (u[i] & 0x7FFFFFFF) >= 0x38800000u;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(ties > 10000); /* the sample really holds ties */
    printf("f16: 65536 patterns and %zu f32 samples agree with numpy\n", n);
    free(out);
done:
    free(np_h2f);
    free(np_f2h);
    free(u);
    unlink(in16);
    unlink(out16);
    unlink(in32);
    unlink(out32);
    rmdir(dir);
}

/* The OpenMP-chunked bulk paths, at odd addresses and lengths, against the
 * scalar reference for F16, BF16 and F64. */
static void test_bulk_vs_scalar(void)
{
    const size_t n = 3 * 65536 + 777; /* several chunks and a ragged end */
    float *src = malloc(n * sizeof *src), *back = malloc(n * sizeof *back);
    unsigned char *raw = malloc(n * 8 + 1), *mis = raw + 1; /* misaligned on purpose */
    uint64_t seed = 3;
    for (size_t i = 0; i < n; i++) {
        uint32_t r = (uint32_t)mix(&seed);
        /* a third random bits, a third ordinary magnitudes, a third tiny */
        src[i] = i % 3 == 0   ? u2f(r)
                 : i % 3 == 1 ? (float)((int32_t)r) * 1e-6f
                              : u2f(r & 0x387FFFFFu);
    }
    int bad = 0;
    for (int pass = 0; pass < 3; pass++) {
        gr_dtype dt = pass == 0 ? GR_DT_F16 : pass == 1 ? GR_DT_BF16 : GR_DT_F64;
        CHECK_EQ_INT(gr_from_f32(dt, src, mis, n), 0);
        CHECK_EQ_INT(gr_to_f32(dt, mis, back, n), 0);
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            double d;
            uint32_t want_back;
            if (dt == GR_DT_F64) {
                memcpy(&d, mis + 8 * i, 8);
                if (f2u((float)d) != f2u(src[i]) && !(isnan(d) && isnan(src[i]))) bad++;
                want_back = f2u((float)d);
            } else {
                memcpy(&h, mis + 2 * i, 2);
                uint16_t want = dt == GR_DT_F16 ? gr_f32_to_f16(src[i]) : gr_f32_to_bf16(src[i]);
                if (h != want && bad++ < 5)
                    fprintf(stderr, "%s bulk %04x scalar %04x for %08x\n", gr_dtype_name(dt), h,
                            want, f2u(src[i]));
                want_back = f2u(dt == GR_DT_F16 ? gr_f16_to_f32(h) : gr_bf16_to_f32(h));
            }
            if (f2u(back[i]) != want_back && bad++ < 5)
                fprintf(stderr, "%s back %08x want %08x\n", gr_dtype_name(dt), f2u(back[i]),
                        want_back);
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* F32 is a copy; other dtypes are refused */
    CHECK_EQ_INT(gr_to_f32(GR_DT_F32, src, back, n), 0);
    CHECK(!memcmp(src, back, n * sizeof *src));
    CHECK_EQ_INT(gr_to_f32(GR_DT_I8, mis, back, 4), GR_EUNSUP);
    CHECK_CONTAINS(gr_errmsg(), "I8");
    CHECK_EQ_INT(gr_from_f32(GR_DT_F8_E4M3, src, mis, 4), GR_EUNSUP);
    CHECK_EQ_INT(gr_to_f32(GR_DT_BF16, mis, back, 0), 0);
    free(src);
    free(back);
    free(raw);
}

static void test_f64(void)
{
    double d[] = {1e300, -1e300, 1.0 + ldexp(1, -24), 1.0 + 3 * ldexp(1, -24), 1e-46, 0.1};
    float f[6];
    CHECK_EQ_INT(gr_to_f32(GR_DT_F64, d, f, 6), 0);
    CHECK(isinf(f[0]) && f[0] > 0 && isinf(f[1]) && f[1] < 0);
    CHECK_EQ_INT(f2u(f[2]), 0x3F800000u); /* tie to even, down */
    CHECK_EQ_INT(f2u(f[3]), 0x3F800002u); /* tie to even, up */
    CHECK_EQ_INT(f2u(f[4]), 0x00000000u); /* below half the smallest subnormal */
    CHECK_EQ_INT(f2u(f[5]), f2u(0.1f));
    double back[6];
    CHECK_EQ_INT(gr_from_f32(GR_DT_F64, f, back, 6), 0);
    for (int i = 0; i < 6; i++) CHECK(back[i] == (double)f[i]);
}

int main(void)
{
    RUN(test_names);
    RUN(test_bf16_all_patterns);
    RUN(test_bf16_rounding);
    RUN(test_special_values);
    RUN(test_f16_against_numpy);
    RUN(test_bulk_vs_scalar);
    RUN(test_f64);
    TEST_MAIN_END();
}
