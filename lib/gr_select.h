/* gr_select: exact top-k by magnitude and order statistics in O(n) (radix
 * select on the float bits), for one array or across many (a whole model). */
#ifndef GR_SELECT_H
#define GR_SELECT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Order used for top-k: |x| descending, then index ascending (ties: lower
 * index first). Magnitudes compare by their bit pattern with the sign bit
 * cleared, so -0 == +0, +inf is the largest number and NaN ranks above inf
 * (as in torch.topk). Callers that must reject NaN check before selecting. */
static inline uint32_t gr_sel_abskey(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

/* Signed order: a uint32 key that sorts like the float value (-inf < ... <
 * -0 < +0 < ... < +inf; -0 and +0 get distinct adjacent keys). */
static inline uint32_t gr_sel_signkey(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
float gr_sel_key_to_float(uint32_t key, int mode);

/* The first k elements of the top-k order of one array: element i is
 * selected iff its abskey > key, or abskey == key and i < tie_end. k = 0
 * gives key = UINT32_MAX, tie_end = 0 (nothing); k = n selects everything. */
typedef struct gr_topk {
    uint32_t key;
    size_t tie_end;
    size_t k;
} gr_topk;

static inline int gr_topk_has(const gr_topk *t, float x, size_t i)
{
    uint32_t a = gr_sel_abskey(x);
    return a > t->key || (a == t->key && i < t->tie_end);
}

/* Exact top-k of x[0..n) by magnitude, k <= n, in O(n) time. Large arrays
 * (>= 64 Ki): a stratified sample brackets the k-th magnitude, one pass
 * counts the elements above the bracket and gathers those inside it with
 * their indices (a few per cent of n), and radix selection and the tie cut
 * finish on them; if the sample misleads or the bracket overflows (heavy
 * ties) the full radix passes run instead (two or three counting passes,
 * plus a scan for tie_end when the k-th magnitude is tied). Extra memory: at
 * most n/16 (value, index) pairs and per-thread histograms; x is not copied.
 * threads <= 0 means one; the result never depends on it. Returns 0, or
 * GR_EINVAL if k > n, GR_ENOMEM. */
int gr_select_topk(const float *x, size_t n, size_t k, int threads, gr_topk *out);
/* Reference: the same result from a full O(n log n) sort of (|x|, index). */
int gr_select_topk_ref(const float *x, size_t n, size_t k, gr_topk *out);

enum { GR_SEL_ABS = 0, GR_SEL_SIGNED = 1 };

/* The value of rank j (0-based) in ascending order of x[0..n) (mode
 * GR_SEL_SIGNED: by value; GR_SEL_ABS: by |x|, value returned as |x|), i.e.
 * sorted(x)[j] as numpy/torch would give it. j < n. */
int gr_select_kth(const float *x, size_t n, size_t j, int mode, int threads, float *out);
int gr_select_kth_ref(const float *x, size_t n, size_t j, int mode, float *out);

/* ---- selection over many arrays (scope: global) ----
 * The arrays are fed in the same order in every pass; their elements are
 * ordered as one long array in feed order. Protocol:
 *
 *   gr_gsel *s = gr_gsel_new(mode, threads);
 *   for each tensor: gr_gsel_feed(s, x, n);       pass 1: counts
 *   N = gr_gsel_total(s);
 *   gr_gsel_set_ranks(s, ranks, m);                 ranks in DESCENDING order
 *   while (gr_gsel_end_pass(s) > 0)                 (0 = largest), < N
 *       for each tensor: gr_gsel_feed(s, x, n);
 *   gr_gsel_value(s, r, &v) / gr_gsel_topk(s, r, &g)
 *
 * Pass 1 histograms the high 16 bits of the keys, pass 2 the low 15/16 bits
 * of the elements in the chosen buckets: two passes over the model, no copy.
 * Memory: 64 Ki counters per thread per rank. */
typedef struct gr_gsel gr_gsel;

/* Up to this many ranks per selector (e.g. breadcrumbs' two cut points). */
#define GR_GSEL_MAX_RANKS 4

gr_gsel *gr_gsel_new(int mode, int threads);
/* The same for a total known to be below 2^20 elements (e.g. one small
 * tensor): 11-bit digits, three passes, 2 Ki counters instead of 64 Ki. */
gr_gsel *gr_gsel_new_small(int mode, int threads);
void gr_gsel_destroy(gr_gsel **s);
/* Adds x[0..n) to the current pass. */
int gr_gsel_feed(gr_gsel *s, const float *x, size_t n);
/* Elements fed in pass 1. */
uint64_t gr_gsel_total(const gr_gsel *s);
/* After pass 1: the ranks wanted (descending order, each < total). */
int gr_gsel_set_ranks(gr_gsel *s, const uint64_t *ranks, int m);
/* Ends a pass. Returns 1 when another pass over all arrays is needed, 0 when
 * the results are ready, or a negative GR_E* code (e.g. a pass fed a
 * different number of elements than pass 1). */
int gr_gsel_end_pass(gr_gsel *s);

/* The element of descending rank ranks[r]: its value (|x| in GR_SEL_ABS). */
int gr_gsel_value(const gr_gsel *s, int r, float *out);

/* Global top-k in feed order: the first (ranks[r] + 1) elements. Apply it
 * tensor by tensor, IN FEED ORDER, with gr_gtopk_local: ties at the cut
 * magnitude are given to earlier tensors first. */
typedef struct gr_gtopk {
    uint32_t key;
    uint64_t ties_left; /* tied elements still to select */
} gr_gtopk;
int gr_gsel_topk(const gr_gsel *s, int r, gr_gtopk *out);
/* A global top-k with k = 0 (selects nothing) or k = all (everything). */
void gr_gtopk_none(gr_gtopk *g);
void gr_gtopk_all(gr_gtopk *g);
/* The local top-k of the next tensor x[0..n) under g; consumes g->ties_left. */
int gr_gtopk_local(gr_gtopk *g, const float *x, size_t n, int threads, gr_topk *out);

#endif
