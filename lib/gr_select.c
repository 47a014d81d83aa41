/* gr_select: radix selection on float bit patterns (exact, O(n), no copy of
 * the data) for per-tensor top-k and whole-model thresholds. */
#include "gr_select.h"

#include <math.h>
#include <stdlib.h>

#include "gr_err.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Digit schedules over the 32-bit key, most significant digit first. Small
 * inputs use 11-bit digits (2 Ki counters, three passes); large ones and
 * whole-model selection 16-bit digits (64 Ki counters, two passes). */
#define SMALL_N_MAX    ((size_t)1 << 20)
#define MAX_PASSES     3
#define MIN_PER_THREAD 65536             /* fewer elements than this per thread: fewer threads */
#define SEGMENT_MAX    ((size_t)1 << 30) /* per-thread uint32 counters cannot overflow */

static const int small_shift[MAX_PASSES] = {21, 10, 0}, small_bits[MAX_PASSES] = {11, 11, 10};
static const int large_shift[MAX_PASSES] = {16, 0, 0}, large_bits[MAX_PASSES] = {16, 16, 0};

typedef struct selrank {
    uint64_t rank;   /* descending rank wanted */
    uint64_t rem;    /* rank within the elements matching prefix */
    uint32_t prefix; /* key bits determined so far */
    uint32_t pmask;  /* which bits are determined */
    uint64_t eq;     /* after the last pass: elements equal to the key */
    int slot;        /* histogram slot in the current pass */
} selrank;

struct gr_gsel {
    int mode, threads;
    int npasses;
    const int *shift, *bits;
    int pass;       /* current pass, 0-based */
    uint64_t total; /* elements fed in pass 0 */
    uint64_t fed;   /* elements fed in the current pass */
    int m;          /* ranks */
    int ranks_set, done;
    selrank r[GR_GSEL_MAX_RANKS];
    int nslots;
    uint32_t spre[GR_GSEL_MAX_RANKS], smask[GR_GSEL_MAX_RANKS];
    size_t nb;       /* buckets per slot in the current pass */
    uint64_t *hist;  /* nslots x nb */
    uint32_t *thist; /* threads x nslots x (nb + 1); bucket nb counts non-matches */
    int thist_threads;
};

static int clamp_threads(int threads, size_t n)
{
    if (threads < 1) threads = 1;
    size_t most = n / MIN_PER_THREAD;
    if (most < 1) most = 1;
    if ((size_t)threads > most) threads = (int)most;
    return threads;
}

static inline uint32_t key_of(float x, int mode)
{
    return mode == GR_SEL_SIGNED ? gr_sel_signkey(x) : gr_sel_abskey(x);
}

float gr_sel_key_to_float(uint32_t key, int mode)
{
    uint32_t u = key;
    if (mode == GR_SEL_SIGNED) u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void gsel_init(gr_gsel *s, int mode, int threads, int small)
{
    memset(s, 0, sizeof *s);
    s->mode = mode;
    s->threads = threads < 1 ? 1 : threads;
    s->shift = small ? small_shift : large_shift;
    s->bits = small ? small_bits : large_bits;
    s->npasses = small ? 3 : 2;
    s->nslots = 1; /* pass 0: one slot matching everything */
    s->spre[0] = s->smask[0] = 0;
}

static void gsel_free(gr_gsel *s)
{
    free(s->hist);
    free(s->thist);
    s->hist = NULL;
    s->thist = NULL;
}

/* Allocates and zeroes the counters of the current pass. */
static int gsel_begin_pass(gr_gsel *s)
{
    s->nb = (size_t)1 << s->bits[s->pass];
    free(s->hist);
    free(s->thist);
    s->thist = NULL;
    s->hist = calloc((size_t)s->nslots * s->nb, sizeof *s->hist);
    if (!s->hist) return gr_seterr(GR_ENOMEM, "select: out of memory for histograms");
    s->thist_threads = s->threads;
    s->thist = malloc((size_t)s->threads * (size_t)s->nslots * (s->nb + 1) * sizeof *s->thist);
    if (!s->thist) return gr_seterr(GR_ENOMEM, "select: out of memory for histograms");
    s->fed = 0;
    return 0;
}

/* Counts the digit of the current pass for the elements of x[lo, hi) that
 * match each slot's prefix, into h (nslots x (nb + 1)). */
static void count_range(const gr_gsel *s, const float *x, size_t lo, size_t hi, uint32_t *h)
{
    const int shift = s->shift[s->pass];
    const uint32_t dmask = (uint32_t)(s->nb - 1);
    const size_t nb1 = s->nb + 1;
    memset(h, 0, (size_t)s->nslots * nb1 * sizeof *h);
    if (s->pass == 0) {
        if (s->mode == GR_SEL_SIGNED)
            for (size_t i = lo; i < hi; i++) h[gr_sel_signkey(x[i]) >> shift]++;
        else
            for (size_t i = lo; i < hi; i++) h[gr_sel_abskey(x[i]) >> shift]++;
        return;
    }
    for (int sl = 0; sl < s->nslots; sl++) {
        const uint32_t pre = s->spre[sl], msk = s->smask[sl];
        uint32_t *hs = h + (size_t)sl * nb1;
        const uint32_t miss = (uint32_t)s->nb;
        if (s->mode == GR_SEL_SIGNED) {
            for (size_t i = lo; i < hi; i++) {
                uint32_t key = gr_sel_signkey(x[i]);
                hs[(key & msk) == pre ? (key >> shift) & dmask : miss]++;
            }
        } else {
            for (size_t i = lo; i < hi; i++) {
                uint32_t key = gr_sel_abskey(x[i]);
                hs[(key & msk) == pre ? (key >> shift) & dmask : miss]++;
            }
        }
    }
}

int gr_gsel_feed(gr_gsel *s, const float *x, size_t n)
{
    if (s->done) return gr_seterr(GR_ESTATE, "select: feed after the last pass");
    if (!s->hist) {
        int rc = gsel_begin_pass(s);
        if (rc) return rc;
    }
    const size_t nb1 = s->nb + 1;
    for (size_t seg = 0; seg < n; seg += SEGMENT_MAX) {
        size_t len = n - seg < SEGMENT_MAX ? n - seg : SEGMENT_MAX;
        const float *xs = x + seg;
        int nt = clamp_threads(s->threads, len);
        if (nt > s->thist_threads) nt = s->thist_threads;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int t = 0; t < nt; t++) {
            size_t lo = len * (size_t)t / (size_t)nt, hi = len * (size_t)(t + 1) / (size_t)nt;
            count_range(s, xs, lo, hi, s->thist + (size_t)t * (size_t)s->nslots * nb1);
        }
        for (int t = 0; t < nt; t++)
            for (int sl = 0; sl < s->nslots; sl++) {
                const uint32_t *h = s->thist + ((size_t)t * (size_t)s->nslots + (size_t)sl) * nb1;
                uint64_t *g = s->hist + (size_t)sl * s->nb;
                for (size_t b = 0; b < s->nb; b++) g[b] += h[b];
            }
    }
    s->fed += n;
    if (s->pass == 0) s->total += n;
    return 0;
}

gr_gsel *gr_gsel_new(int mode, int threads)
{
    gr_gsel *s = malloc(sizeof *s);
    if (!s) {
        gr_seterr(GR_ENOMEM, "select: out of memory");
        return NULL;
    }
    gsel_init(s, mode, threads, 0);
    return s;
}

gr_gsel *gr_gsel_new_small(int mode, int threads)
{
    gr_gsel *s = malloc(sizeof *s);
    if (!s) {
        gr_seterr(GR_ENOMEM, "select: out of memory");
        return NULL;
    }
    gsel_init(s, mode, threads, 1);
    return s;
}

void gr_gsel_destroy(gr_gsel **s)
{
    if (!s || !*s) return;
    gsel_free(*s);
    free(*s);
    *s = NULL;
}

uint64_t gr_gsel_total(const gr_gsel *s)
{
    return s->total;
}

int gr_gsel_set_ranks(gr_gsel *s, const uint64_t *ranks, int m)
{
    if (s->pass != 0 || s->ranks_set)
        return gr_seterr(GR_ESTATE, "select: ranks must be set once, during the first pass");
    if (m < 1 || m > GR_GSEL_MAX_RANKS)
        return gr_seterr(GR_EINVAL, "select: %d ranks requested (1..%d allowed)", m,
                         GR_GSEL_MAX_RANKS);
    for (int i = 0; i < m; i++) {
        if (ranks[i] >= s->total)
            return gr_seterr(GR_EINVAL, "select: rank %llu out of range (%llu elements)",
                             (unsigned long long)ranks[i], (unsigned long long)s->total);
        s->r[i].rank = s->r[i].rem = ranks[i];
        s->r[i].prefix = s->r[i].pmask = 0;
        s->r[i].eq = 0;
    }
    s->m = m;
    s->ranks_set = 1;
    return 0;
}

/* Narrows every rank to one bucket of the pass just ended. */
static void resolve_pass(gr_gsel *s)
{
    const int shift = s->shift[s->pass];
    for (int i = 0; i < s->m; i++) {
        selrank *r = &s->r[i];
        const uint64_t *h = s->hist + (size_t)(s->pass == 0 ? 0 : r->slot) * s->nb;
        uint64_t cum = 0;
        size_t b = s->nb;
        while (b-- > 0) {
            if (cum + h[b] > r->rem) break;
            cum += h[b];
        }
        /* b is valid: the slot holds more than rem elements by construction. */
        r->rem -= cum;
        r->prefix |= (uint32_t)b << shift;
        r->pmask |= (uint32_t)(s->nb - 1) << shift;
        r->eq = h[b];
    }
}

int gr_gsel_end_pass(gr_gsel *s)
{
    if (s->done) return 0;
    if (!s->ranks_set) return gr_seterr(GR_ESTATE, "select: no ranks set before the pass ended");
    if (s->pass > 0 && s->fed != s->total)
        return gr_seterr(GR_EINVAL,
                         "select: pass %d fed %llu elements but the first pass fed %llu (the "
                         "same tensors must be fed in every pass)",
                         s->pass + 1, (unsigned long long)s->fed, (unsigned long long)s->total);
    if (!s->hist) { /* nothing fed at all */
        int rc = gsel_begin_pass(s);
        if (rc) return rc;
    }
    resolve_pass(s);
    s->pass++;
    if (s->pass >= s->npasses) {
        s->done = 1;
        gsel_free(s);
        return 0;
    }
    /* Distinct prefixes become the slots of the next pass. */
    s->nslots = 0;
    for (int i = 0; i < s->m; i++) {
        int sl = 0;
        while (sl < s->nslots && (s->spre[sl] != s->r[i].prefix || s->smask[sl] != s->r[i].pmask))
            sl++;
        if (sl == s->nslots) {
            s->spre[sl] = s->r[i].prefix;
            s->smask[sl] = s->r[i].pmask;
            s->nslots++;
        }
        s->r[i].slot = sl;
    }
    int rc = gsel_begin_pass(s);
    return rc ? rc : 1;
}

int gr_gsel_value(const gr_gsel *s, int r, float *out)
{
    if (!s->done || r < 0 || r >= s->m)
        return gr_seterr(GR_ESTATE, "select: result %d not available", r);
    *out = gr_sel_key_to_float(s->r[r].prefix, s->mode);
    return 0;
}

int gr_gsel_topk(const gr_gsel *s, int r, gr_gtopk *out)
{
    if (!s->done || r < 0 || r >= s->m)
        return gr_seterr(GR_ESTATE, "select: result %d not available", r);
    if (s->mode != GR_SEL_ABS) return gr_seterr(GR_EINVAL, "select: top-k needs magnitude keys");
    out->key = s->r[r].prefix;
    out->ties_left = s->r[r].rem + 1;
    return 0;
}

void gr_gtopk_none(gr_gtopk *g)
{
    g->key = UINT32_MAX;
    g->ties_left = 0;
}

void gr_gtopk_all(gr_gtopk *g)
{
    g->key = 0;
    g->ties_left = UINT64_MAX;
}

/* Counts elements of x[0..n) with magnitude key > key and == key. */
static void count_gt_eq(const float *x, size_t n, uint32_t key, int threads, uint64_t *gt,
                        uint64_t *eq)
{
    uint64_t g = 0, e = 0;
    int nt = clamp_threads(threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : g, e)
    for (size_t i = 0; i < n; i++) {
        uint32_t a = gr_sel_abskey(x[i]);
        g += a > key;
        e += a == key;
    }
    *gt = g;
    *eq = e;
}

/* Index just past the need-th (1-based) element of x whose magnitude key is
 * key; the caller guarantees at least need such elements. */
static size_t tie_end_of(const float *x, size_t n, uint32_t key, uint64_t need, int threads)
{
    int nt = clamp_threads(threads, n);
    enum { MAXT = 256 };
    if (nt > MAXT) nt = MAXT;
    uint64_t cnt[MAXT];
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int t = 0; t < nt; t++) {
        size_t lo = n * (size_t)t / (size_t)nt, hi = n * (size_t)(t + 1) / (size_t)nt;
        uint64_t c = 0;
        for (size_t i = lo; i < hi; i++) c += gr_sel_abskey(x[i]) == key;
        cnt[t] = c;
    }
    for (int t = 0; t < nt; t++) {
        size_t lo = n * (size_t)t / (size_t)nt, hi = n * (size_t)(t + 1) / (size_t)nt;
        if (need > cnt[t]) {
            need -= cnt[t];
            continue;
        }
        for (size_t i = lo; i < hi; i++)
            if (gr_sel_abskey(x[i]) == key && --need == 0) return i + 1;
    }
    return n; /* not reached when the caller's count is right */
}

int gr_gtopk_local(gr_gtopk *g, const float *x, size_t n, int threads, gr_topk *out)
{
    uint64_t gt, eq;
    out->key = g->key;
    if (g->key == UINT32_MAX) { /* selects nothing */
        out->tie_end = 0;
        out->k = 0;
        return 0;
    }
    count_gt_eq(x, n, g->key, threads, &gt, &eq);
    if (g->ties_left >= eq) {
        out->tie_end = n;
        out->k = gt + eq;
        if (g->ties_left != UINT64_MAX) g->ties_left -= eq;
    } else {
        out->tie_end = g->ties_left ? tie_end_of(x, n, g->key, g->ties_left, threads) : 0;
        out->k = gt + g->ties_left;
        g->ties_left = 0;
    }
    return 0;
}

/* Runs the whole selection of one array for m descending ranks. */
static int select_ranks(const float *x, size_t n, const uint64_t *ranks, int m, int mode,
                        int threads, gr_gsel *s)
{
    gsel_init(s, mode, clamp_threads(threads, n), n < SMALL_N_MAX);
    int rc = gr_gsel_feed(s, x, n);
    if (!rc) rc = gr_gsel_set_ranks(s, ranks, m);
    while (!rc && (rc = gr_gsel_end_pass(s)) > 0) rc = gr_gsel_feed(s, x, n);
    gsel_free(s);
    return rc;
}

/* ---- one rank of one large array: sample, then one filtering pass ----
 * A stratified sample of the keys brackets the wanted rank between two
 * keys (hi, lo) with a wide margin; one pass counts the elements above hi
 * and gathers those in [lo, hi] with their indices; if the rank falls among
 * the gathered ones (almost always), the radix selection finishes on them
 * alone, and so does the search for the tie cut. Otherwise, or when too many
 * elements land in the bracket (heavy ties), the full radix passes run: the
 * result is exact either way. */

#define SAMPLE_MIN          ((size_t)1 << 16) /* below this, radix passes directly */
#define SAMPLE_N            16384
#define SAMPLE_SIGMAS       5.0
#define SAMPLE_SLACK        16.0
#define GATHER_MAX_FRACTION 16 /* give up when more than n / 16 are gathered */

/* Ascending LSD radix sort of 32-bit keys (tmp: scratch of n). */
static void radix_sort_u32(uint32_t *k, uint32_t *tmp, size_t n)
{
    size_t cnt[256];
    for (int sh = 0; sh < 32; sh += 8) {
        memset(cnt, 0, sizeof cnt);
        for (size_t i = 0; i < n; i++) cnt[(k[i] >> sh) & 255]++;
        size_t sum = 0;
        for (int c = 0; c < 256; c++) {
            size_t t = cnt[c];
            cnt[c] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++) tmp[cnt[(k[i] >> sh) & 255]++] = k[i];
        memcpy(k, tmp, n * sizeof *k);
    }
}

/* The filtering pass over x[a, b): counts keys above hi into *above and
 * stores the elements with lo <= key <= hi, and their indices, into bt/bi
 * (the count goes to *c; stores past cap land in slot cap, so the caller
 * detects overflow by the count). Plain loop: always store, advance only for
 * elements in range. */
static void filter_range_ref(const float *x, size_t a, size_t b, int mode, uint32_t lo, uint32_t hi,
                             float *bt, size_t *bi, size_t cap, uint64_t *above, uint64_t *c)
{
    for (size_t i = a; i < b; i++) {
        uint32_t kk = key_of(x[i], mode);
        size_t slot = *c < cap ? *c : cap;
        *above += kk > hi;
        bt[slot] = x[i];
        bi[slot] = i;
        *c += (kk >= lo) & (kk <= hi);
    }
}

#ifdef __SSE2__
#include <emmintrin.h>

/* The same, four keys per step: SSE2 compares (signed, so keys are biased
 * by 2^31), a 4-bit movemask of the in-range lanes, and stores only for set
 * bits, which are a few per cent of the elements. */
static void filter_range(const float *x, size_t a, size_t b, int mode, uint32_t lo, uint32_t hi,
                         float *bt, size_t *bi, size_t cap, uint64_t *above, uint64_t *c)
{
    const __m128i bias = _mm_set1_epi32((int)0x80000000u);
    const __m128i vlo = _mm_xor_si128(_mm_set1_epi32((int)lo), bias);
    const __m128i vhi = _mm_xor_si128(_mm_set1_epi32((int)hi), bias);
    const __m128i absmask = _mm_set1_epi32(0x7fffffff), ones = _mm_set1_epi32(-1);
    const int sgn = mode == GR_SEL_SIGNED;
    uint64_t cnt = *c, up = 0;
    size_t i = a;
    while (b - i >= 4) {
        /* lane counters of `above` stay far from overflow within a round */
        size_t steps = (b - i) / 4 < ((size_t)1 << 20) ? (b - i) / 4 : ((size_t)1 << 20);
        size_t end = i + 4 * steps;
        __m128i acc = _mm_setzero_si128();
        for (; i < end; i += 4) {
            __m128i v = _mm_castps_si128(_mm_loadu_ps(x + i)), k;
            if (sgn) /* signed key (~u or u | 2^31), then biased: flip bit 31 */
                k = _mm_xor_si128(v, _mm_andnot_si128(bias, _mm_srai_epi32(v, 31)));
            else
                k = _mm_xor_si128(_mm_and_si128(v, absmask), bias);
            __m128i gt = _mm_cmpgt_epi32(k, vhi), lt = _mm_cmplt_epi32(k, vlo);
            acc = _mm_sub_epi32(acc, gt);
            int in = _mm_movemask_ps(_mm_castsi128_ps(_mm_xor_si128(_mm_or_si128(gt, lt), ones)));
            while (in) {
                size_t j = i + (size_t)__builtin_ctz((unsigned)in), slot = cnt < cap ? cnt : cap;
                bt[slot] = x[j];
                bi[slot] = j;
                cnt++;
                in &= in - 1;
            }
        }
        uint32_t lanes[4];
        _mm_storeu_si128((__m128i *)lanes, acc);
        up += (uint64_t)lanes[0] + lanes[1] + lanes[2] + lanes[3];
    }
    *above += up;
    *c = cnt;
    filter_range_ref(x, i, b, mode, lo, hi, bt, bi, cap, above, c);
}
#else
#define filter_range filter_range_ref
#endif

/* Result of a selection: the key of descending rank r, its rank among the
 * elements equal to it, how many there are, and (when asked) tie_end as in
 * gr_topk for selecting ranks 0..r. */
typedef struct selres {
    uint32_t key;
    uint64_t rem, eq;
    size_t tie_end;
    int have_tie_end;
} selres;

/* Returns 1 with *res set, 0 when the caller must fall back, or a negative
 * error code. */
static int sampled_select(const float *x, size_t n, uint64_t r, int mode, int threads, selres *res)
{
    const size_t m = SAMPLE_N;
    int nt = clamp_threads(threads, n);
    size_t cap = n / GATHER_MAX_FRACTION / (size_t)nt;
    uint32_t *smp = malloc(2 * m * sizeof *smp);
    float *buf = malloc((cap + 1) * (size_t)nt * sizeof *buf);
    size_t *ibuf = malloc((cap + 1) * (size_t)nt * sizeof *ibuf);
    uint64_t *cnt = malloc((size_t)nt * 2 * sizeof *cnt);
    int rc = 0;
    if (!smp || !buf || !ibuf || !cnt) {
        rc = gr_seterr(GR_ENOMEM, "select: out of memory");
        goto done;
    }
    for (size_t i = 0; i < m; i++)
        smp[i] = key_of(x[(size_t)(((double)i + 0.5) * (double)n / (double)m)], mode);
    radix_sort_u32(smp, smp + m, m); /* ascending: descending position p is m-1-p */
    double q = (double)r / (double)n, ps = q * (double)m;
    double margin = SAMPLE_SIGMAS * sqrt((double)m * q * (1.0 - q)) + SAMPLE_SLACK;
    double hp = floor(ps - margin), lp = ceil(ps + margin);
    uint32_t hi = hp < 0 ? UINT32_MAX : smp[m - 1 - (size_t)hp];
    uint32_t lo = lp >= (double)m ? 0 : smp[m - 1 - (size_t)lp];
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int t = 0; t < nt; t++) {
        size_t a = n * (size_t)t / (size_t)nt, b = n * (size_t)(t + 1) / (size_t)nt;
        uint64_t above = 0, c = 0;
        filter_range(x, a, b, mode, lo, hi, buf + (size_t)t * (cap + 1),
                     ibuf + (size_t)t * (cap + 1), cap, &above, &c);
        cnt[2 * t] = above;
        cnt[2 * t + 1] = c;
    }
    uint64_t above = 0, cand = 0;
    int overflow = 0;
    for (int t = 0; t < nt; t++) {
        above += cnt[2 * t];
        cand += cnt[2 * t + 1];
        overflow |= cnt[2 * t + 1] > cap;
    }
    if (overflow || r < above || r >= above + cand) goto done; /* fall back */
    gr_gsel s;
    uint64_t rr = r - above;
    gsel_init(&s, mode, 1, cand < SMALL_N_MAX);
    for (;;) {
        for (int t = 0; t < nt && !rc; t++)
            rc = gr_gsel_feed(&s, buf + (size_t)t * (cap + 1), (size_t)cnt[2 * t + 1]);
        if (rc) break;
        if (s.pass == 0 && (rc = gr_gsel_set_ranks(&s, &rr, 1))) break;
        if ((rc = gr_gsel_end_pass(&s)) <= 0) break;
        rc = 0; /* another pass */
    }
    gsel_free(&s);
    if (rc) goto done;
    res->key = s.r[0].prefix;
    res->rem = s.r[0].rem;
    res->eq = s.r[0].eq; /* every element equal to key lies in [lo, hi] */
    /* The tie cut: the (rem+1)-th gathered element equal to key, in index
     * order (threads' regions are in index order). */
    uint64_t need = res->rem + 1;
    res->tie_end = n;
    if (need < res->eq)
        for (int t = 0; t < nt && need; t++) {
            const float *bt = buf + (size_t)t * (cap + 1);
            const size_t *bi = ibuf + (size_t)t * (cap + 1);
            for (uint64_t j = 0; j < cnt[2 * t + 1]; j++)
                if (key_of(bt[j], mode) == res->key && --need == 0) {
                    res->tie_end = bi[j] + 1;
                    break;
                }
        }
    res->have_tie_end = 1;
    rc = 1;
done:
    free(smp);
    free(buf);
    free(ibuf);
    free(cnt);
    return rc;
}

/* The element of descending rank r (see selres). */
static int select_one(const float *x, size_t n, uint64_t r, int mode, int threads, selres *res)
{
    if (n >= SAMPLE_MIN) {
        int rc = sampled_select(x, n, r, mode, threads, res);
        if (rc != 0) return rc < 0 ? rc : 0;
    }
    gr_gsel s;
    int rc = select_ranks(x, n, &r, 1, mode, threads, &s);
    if (rc) return rc;
    res->key = s.r[0].prefix;
    res->rem = s.r[0].rem;
    res->eq = s.r[0].eq;
    res->have_tie_end = 0;
    return 0;
}

int gr_select_topk(const float *x, size_t n, size_t k, int threads, gr_topk *out)
{
    if (k > n) return gr_seterr(GR_EINVAL, "select: k = %zu exceeds the %zu elements", k, n);
    out->k = k;
    if (k == 0) {
        out->key = UINT32_MAX;
        out->tie_end = 0;
        return 0;
    }
    if (k == n) {
        out->key = 0;
        out->tie_end = n;
        return 0;
    }
    selres res;
    int rc = select_one(x, n, k - 1, GR_SEL_ABS, threads, &res);
    if (rc) return rc;
    out->key = res.key;
    uint64_t need = res.rem + 1; /* tied elements to take */
    if (res.have_tie_end)
        out->tie_end = res.tie_end;
    else
        out->tie_end = need == res.eq ? n : tie_end_of(x, n, out->key, need, threads);
    return 0;
}

int gr_select_kth(const float *x, size_t n, size_t j, int mode, int threads, float *out)
{
    if (j >= n) return gr_seterr(GR_EINVAL, "select: rank %zu out of range (%zu elements)", j, n);
    selres res;
    int rc = select_one(x, n, (uint64_t)(n - 1 - j), mode, threads, &res);
    if (rc) return rc;
    *out = gr_sel_key_to_float(res.key, mode);
    return 0;
}

/* ---- references: full sorts ---- */

typedef struct kidx {
    uint32_t key;
    size_t i;
} kidx;

static int cmp_desc(const void *a, const void *b)
{
    const kidx *p = a, *q = b;
    if (p->key != q->key) return p->key > q->key ? -1 : 1;
    return p->i < q->i ? -1 : p->i > q->i;
}

static kidx *sorted_keys(const float *x, size_t n, int mode)
{
    kidx *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
        gr_seterr(GR_ENOMEM, "select: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) v[i] = (kidx){key_of(x[i], mode), i};
    qsort(v, n, sizeof *v, cmp_desc);
    return v;
}

int gr_select_topk_ref(const float *x, size_t n, size_t k, gr_topk *out)
{
    if (k > n) return gr_seterr(GR_EINVAL, "select: k = %zu exceeds the %zu elements", k, n);
    out->k = k;
    if (k == 0 || k == n) {
        out->key = k ? 0 : UINT32_MAX;
        out->tie_end = k ? n : 0;
        return 0;
    }
    kidx *v = sorted_keys(x, n, GR_SEL_ABS);
    if (!v) return GR_ENOMEM;
    out->key = v[k - 1].key;
    /* All tied elements selected -> tie_end = n (canonical form). */
    out->tie_end = v[k].key == out->key ? v[k - 1].i + 1 : n;
    free(v);
    return 0;
}

int gr_select_kth_ref(const float *x, size_t n, size_t j, int mode, float *out)
{
    if (j >= n) return gr_seterr(GR_EINVAL, "select: rank %zu out of range (%zu elements)", j, n);
    kidx *v = sorted_keys(x, n, mode);
    if (!v) return GR_ENOMEM;
    *out = gr_sel_key_to_float(v[n - 1 - j].key, mode);
    free(v);
    return 0;
}
