/* Tests for gr_select: top-k by magnitude against a full sort of the
 * floats (ties by lower index) for small and large arrays with heavy ties,
 * order statistics, whole-model selection across several arrays, and
 * independence from the thread count. */
#include <stdint.h>
#include <unistd.h>

#include "gr_err.h"
#include "gr_rng.h"
#include "gr_select.h"
#include "gr_test.h"

static gr_rng_stream rs;

typedef struct item {
    float a;
    size_t i;
} item;

/* |x| descending with fabsf on floats (not bit keys), then index. */
static int cmp_item(const void *p, const void *q)
{
    const item *x = p, *y = q;
    if (x->a != y->a) return x->a > y->a ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static item *sorted_items(const float *x, size_t n)
{
    item *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (item){fabsf(x[i]), i};
    qsort(v, n, sizeof *v, cmp_item);
    return v;
}

/* Values with many ties: small integers (and signed zeros) scaled. */
static void tie_fill(float *x, size_t n, int levels)
{
    for (size_t i = 0; i < n; i++) {
        int v = (int)(gr_rng_next_u32(&rs) % (uint32_t)(2 * levels + 1)) - levels;
        x[i] = v == 0 ? ((gr_rng_next_u32(&rs) & 1) ? -0.0f : 0.0f) : (float)v * 0.125f;
    }
}

/* The selection of every k in ks must be exactly the first k of the sort. */
static void check_topk(const float *x, size_t n, const size_t *ks, int nk, int threads)
{
    item *v = sorted_items(x, n);
    unsigned char *want = malloc(n ? n : 1);
    for (int q = 0; q < nk; q++) {
        size_t k = ks[q];
        gr_topk t, tr;
        CHECK(gr_select_topk(x, n, k, threads, &t) == 0);
        /* the library's own sorting reference: small arrays only (time) */
        if (n <= 5000)
            CHECK(gr_select_topk_ref(x, n, k, &tr) == 0);
        else
            tr = t;
        CHECK_MSG(t.key == tr.key && t.tie_end == tr.tie_end && t.k == k,
                  "n=%zu k=%zu: fast (%08x, %zu) vs reference (%08x, %zu)", n, k, t.key, t.tie_end,
                  tr.key, tr.tie_end);
        memset(want, 0, n);
        for (size_t r = 0; r < k; r++) want[v[r].i] = 1;
        size_t bad = 0, count = 0;
        for (size_t i = 0; i < n; i++) {
            int has = gr_topk_has(&t, x[i], i);
            bad += has != want[i];
            count += has;
        }
        CHECK_MSG(bad == 0 && count == k, "n=%zu k=%zu threads=%d: %zu wrong, %zu selected", n, k,
                  threads, bad, count);
    }
    free(v);
    free(want);
}

static void test_small(void)
{
    gr_rng_stream_init(&rs, 1, "small");
    const size_t sizes[] = {1, 2, 3, 10, 97, 1000, 4099};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        float *x = malloc(n * sizeof *x);
        for (int levels = 1; levels <= 1000; levels *= 10) {
            tie_fill(x, n, levels);
            size_t ks[] = {0, 1, n / 3, n / 2, n - 1, n, (size_t)(gr_rng_next_u32(&rs) % n)};
            check_topk(x, n, ks, 7, 1);
            check_topk(x, n, ks, 7, 3);
        }
        for (size_t i = 0; i < n; i++) x[i] = (float)gr_rng_next_normal(&rs);
        size_t ks[] = {0, 1, n / 2, n};
        check_topk(x, n, ks, 4, 2);
        free(x);
    }
    float special[6] = {INFINITY, -INFINITY, 1e-45f, -1e-45f, 3.0f, -0.0f};
    size_t ks[] = {1, 2, 3, 4, 5, 6};
    check_topk(special, 6, ks, 6, 1);
    gr_topk t;
    CHECK(gr_select_topk(special, 6, 7, 1, &t) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "k = 7 exceeds the 6 elements");
}

/* Above 2^20 elements the 16-bit two-pass schedule runs. */
static void test_large(void)
{
    gr_rng_stream_init(&rs, 2, "large");
    const size_t n = ((size_t)1 << 20) + 12345;
    float *x = malloc(n * sizeof *x);
    tie_fill(x, n, 300);
    size_t ks[] = {1, n / 10, n / 2 + 7};
    check_topk(x, n, ks, 3, 4);
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.01 * gr_rng_next_normal(&rs));
    size_t ks2[] = {n / 5};
    check_topk(x, n, ks2, 1, 1);
    free(x);
}

static int cmp_float(const void *p, const void *q)
{
    float a = *(const float *)p, b = *(const float *)q;
    return a < b ? -1 : a > b;
}

static void test_kth(void)
{
    gr_rng_stream_init(&rs, 3, "kth");
    const size_t sizes[] = {1, 5, 1000, 200003};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        float *x = malloc(n * sizeof *x), *srt = malloc(n * sizeof *srt),
              *ab = malloc(n * sizeof *ab);
        tie_fill(x, n, 50);
        for (size_t i = 0; i < n; i++) srt[i] = x[i], ab[i] = fabsf(x[i]);
        qsort(srt, n, sizeof *srt, cmp_float);
        qsort(ab, n, sizeof *ab, cmp_float);
        size_t js[] = {0, n / 4, n / 2, n - 1};
        for (int q = 0; q < 4; q++) {
            float v, vr, a;
            CHECK(gr_select_kth(x, n, js[q], GR_SEL_SIGNED, 3, &v) == 0);
            if (n <= 5000)
                CHECK(gr_select_kth_ref(x, n, js[q], GR_SEL_SIGNED, &vr) == 0);
            else
                vr = srt[js[q]];
            CHECK(gr_select_kth(x, n, js[q], GR_SEL_ABS, 2, &a) == 0);
            CHECK_MSG(v == srt[js[q]] && vr == v, "n=%zu j=%zu: %g vs sorted %g", n, js[q], v,
                      srt[js[q]]);
            CHECK_MSG(a == ab[js[q]], "n=%zu j=%zu abs: %g vs sorted %g", n, js[q], a, ab[js[q]]);
        }
        free(x), free(srt), free(ab);
    }
}

/* Whole-model selection over arrays fed in order, with two ranks, equals
 * the selection of their concatenation; ties go to earlier arrays. */
static void test_global(void)
{
    gr_rng_stream_init(&rs, 4, "global");
    const size_t len[4] = {3, 20000, 1, 7777};
    size_t n = 0;
    for (int t = 0; t < 4; t++) n += len[t];
    float *x = malloc(n * sizeof *x);
    tie_fill(x, n, 40);
    uint64_t ranks[2] = {n / 7, n / 2};
    for (int threads = 1; threads <= 4; threads += 3) {
        gr_gsel *s = gr_gsel_new(GR_SEL_ABS, threads);
        size_t off = 0;
        for (int t = 0; t < 4; t++) {
            CHECK(gr_gsel_feed(s, x + off, len[t]) == 0);
            off += len[t];
        }
        CHECK_EQ_INT(gr_gsel_total(s), n);
        CHECK(gr_gsel_set_ranks(s, ranks, 2) == 0);
        int rc, passes = 1;
        while ((rc = gr_gsel_end_pass(s)) > 0) {
            passes++;
            off = 0;
            for (int t = 0; t < 4; t++) {
                CHECK(gr_gsel_feed(s, x + off, len[t]) == 0);
                off += len[t];
            }
        }
        CHECK(rc == 0);
        CHECK_EQ_INT(passes, 2);
        for (int r = 0; r < 2; r++) {
            gr_gtopk g;
            gr_topk whole;
            CHECK(gr_gsel_topk(s, r, &g) == 0);
            CHECK(gr_select_topk_ref(x, n, ranks[r] + 1, &whole) == 0);
            size_t count = 0, bad = 0;
            off = 0;
            for (int t = 0; t < 4; t++) {
                gr_topk loc;
                CHECK(gr_gtopk_local(&g, x + off, len[t], threads, &loc) == 0);
                for (size_t i = 0; i < len[t]; i++) {
                    int has = gr_topk_has(&loc, x[off + i], i);
                    count += has;
                    bad += has != gr_topk_has(&whole, x[off + i], off + i);
                }
                off += len[t];
            }
            CHECK_MSG(bad == 0 && count == ranks[r] + 1, "rank %d: %zu wrong, %zu selected", r, bad,
                      count);
            float v;
            CHECK(gr_gsel_value(s, r, &v) == 0);
            CHECK(gr_sel_abskey(v) == whole.key);
        }
        gr_gsel_destroy(&s);
        CHECK(s == NULL);
    }
    /* misuse */
    gr_gsel *s = gr_gsel_new(GR_SEL_ABS, 1);
    CHECK(gr_gsel_feed(s, x, 10) == 0);
    CHECK(gr_gsel_end_pass(s) == GR_ESTATE);
    uint64_t big = 10;
    CHECK(gr_gsel_set_ranks(s, &big, 1) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "rank 10 out of range");
    big = 9;
    CHECK(gr_gsel_set_ranks(s, &big, 1) == 0);
    CHECK(gr_gsel_end_pass(s) == 1);
    CHECK(gr_gsel_feed(s, x, 9) == 0);
    CHECK(gr_gsel_end_pass(s) == GR_EINVAL);
    gr_gsel_destroy(&s);
    gr_gsel_destroy(&s); /* NULL is fine */
    free(x);
}

/* Inputs that defeat the sampled one-pass filter and must take the exact
 * fallback: data periodic with the sample stride (the sample sees only the
 * large values), and one value repeated everywhere (the bracket holds all). */
static void test_adversarial(void)
{
    const size_t n = 8192 * 16;
    float *x = malloc(n * sizeof *x);
    for (size_t j = 0; j < n; j++)
        x[j] = j % 16 == 8 ? 1000.0f + (float)(j % 7) : 0.1f * (float)(j % 5);
    size_t ks[] = {1, n / 100, n / 2, n - 3};
    check_topk(x, n, ks, 4, 2);
    for (size_t j = 0; j < n; j++) x[j] = j % 3 ? -0.5f : 0.5f;
    check_topk(x, n, ks, 4, 3);
    float v;
    CHECK(gr_select_kth(x, n, n - 10, GR_SEL_SIGNED, 2, &v) == 0 &&
          v == 0.5f); /* a third are +0.5 */
    CHECK(gr_select_kth(x, n, n / 2, GR_SEL_SIGNED, 2, &v) == 0 && v == -0.5f);
    free(x);
}

/* The runs use several OpenMP threads on a few shared cores: idle threads
 * must sleep rather than spin (libgomp reads this once, at load time). */
static void passive_omp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    (void)argc;
    passive_omp(argv);
    RUN(test_adversarial);
    RUN(test_small);
    RUN(test_kth);
    RUN(test_global);
    RUN(test_large);
    TEST_MAIN_END();
}
