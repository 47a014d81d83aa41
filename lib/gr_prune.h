/* gr_prune: delta sparsifiers (dare, darex, drop, magnitude, breadcrumbs,
 * della) on fp32 tensors, per tensor or with thresholds over a whole model.
 * Semantics: reference/merge-methods.md, "Sparsifiers". */
#ifndef GR_PRUNE_H
#define GR_PRUNE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GR_PRUNE_NONE,        /* delta unchanged */
    GR_PRUNE_DARE,        /* keep with probability d, rescale (default 1/d) */
    GR_PRUNE_DAREX,       /* keep with probability d, divide kept by q */
    GR_PRUNE_DROP,        /* dare without rescale ("DropOnly") */
    GR_PRUNE_MAGNITUDE,   /* keep exactly floor(d*n) largest |delta| */
    GR_PRUNE_BREADCRUMBS, /* drop top gamma outliers and the smallest */
    GR_PRUNE_DELLA,       /* per-row rank-based keep probability, 1/p */
} gr_prune_method;

typedef enum {
    GR_RESCALE_DEFAULT = -1, /* the method's own: inverse for dare/della, none else */
    GR_RESCALE_NONE = 0,
    GR_RESCALE_INVERSE, /* dare: kept * (float)(1/d); della: (float)(kept / p) */
    GR_RESCALE_L1,      /* kept * L1(before) / L1(after), as mergekit >= 2025 */
} gr_rescale;

/* Parse a method / rescale name. GR_EINVAL naming the parameter and the
 * accepted names when unknown. */
int gr_prune_method_parse(const char *name, gr_prune_method *out);
const char *gr_prune_method_name(gr_prune_method m);
int gr_rescale_parse(const char *name, gr_rescale *out);
const char *gr_rescale_name(gr_rescale r);

typedef struct gr_prune_params {
    gr_prune_method method;
    double density;     /* fraction kept, in (0, 1]; 1 = unchanged */
    double gamma;       /* breadcrumbs: top fraction dropped, [0, 1); default 0.01 */
    double epsilon;     /* della: 0 <= eps, 0 < d - eps, d + eps < 1; default 0.15 */
    double q;           /* darex: kept entries divided by q, d <= q < 1 */
    gr_rescale rescale; /* GR_RESCALE_DEFAULT resolves per method */
} gr_prune_params;

/* Defaults for method m: density 1, gamma 0.01, epsilon 0.15, q = 0 (must
 * be set for darex), rescale default. */
void gr_prune_params_init(gr_prune_params *p, gr_prune_method m);
/* Checks the parameters: density in (0, 1], gamma in [0, 1), della's
 * 0 < d - eps and d + eps < 1 (when d < 1), darex's d <= q < 1, rescale
 * allowed for the method (magnitude/breadcrumbs: none|l1; darex: its own q).
 * `what` (e.g. "prune" or "merge: model 2") prefixes the message. */
int gr_prune_check(const gr_prune_params *p, const char *what);
/* The rescale mode actually used (resolves GR_RESCALE_DEFAULT). */
gr_rescale gr_prune_rescale_of(const gr_prune_params *p);

typedef struct gr_prune_stats {
    uint64_t n, kept;           /* elements; nonzero elements after pruning */
    double l1_before, l1_after; /* sum |delta| before / after */
    double l2_before, l2_after; /* sqrt(sum delta^2) */
} gr_prune_stats;

/* Prunes one delta tensor x[0..n) in place (computing in fp32, sums in
 * double). row_len is the length of the last dimension (della ranks within
 * rows; n for 1-D, 1 for a scalar; must divide n). rng_key comes from
 * gr_rng_key(seed, tensor name, model index); element i draws uniform
 * gr_rng_uniform(rng_key, i) and is kept iff u < p, so the result is the same
 * for any thread count. threads <= 0 means one. stats may be NULL.
 * `name` (tensor name) only labels errors. Returns 0 or GR_EINVAL/GR_ENOMEM. */
int gr_prune_tensor(const gr_prune_params *p, const char *name, float *x, size_t n, size_t row_len,
                    uint64_t rng_key, int threads, gr_prune_stats *stats);
/* Element-wise methods (dare, darex, drop; rescale none or inverse) on a
 * chunk: x[0..n) holds elements [first, first + n) of the tensor whose key
 * is rng_key. Pruning a tensor chunk by chunk gives the same bytes as
 * gr_prune_tensor on the whole. GR_EINVAL for other methods or rescale l1
 * (they need the whole tensor). */
int gr_prune_chunk(const gr_prune_params *p, const char *name, float *x, size_t n, uint64_t first,
                   uint64_t rng_key, int threads);
/* Plain single-threaded scalar version of the same (the reference the fast
 * path is tested against; uses gr_select_topk_ref for magnitude selection). */
int gr_prune_tensor_ref(const gr_prune_params *p, const char *name, float *x, size_t n,
                        size_t row_len, uint64_t rng_key, gr_prune_stats *stats);

/* ---- scope: global (magnitude, breadcrumbs) ----
 * Thresholds over all tensors of one model. Feed every tensor of the model,
 * in a fixed order, once per pass, then apply tensor by tensor in the same
 * order:
 *
 *   gr_prune_global *g = gr_prune_global_new(&p, threads);
 *   do { for each tensor: gr_prune_global_feed(g, delta, n); }
 *   while ((rc = gr_prune_global_end_pass(g)) > 0);
 *   for each tensor: gr_prune_global_apply(g, delta, n, &stats);
 *
 * Two passes (three with rescale l1: the factor is the model's
 * L1(before)/L1(after)). Methods that are random (dare, della) have no
 * global form: GR_EINVAL from _new. */
typedef struct gr_prune_global gr_prune_global;

gr_prune_global *gr_prune_global_new(const gr_prune_params *p, int threads);
void gr_prune_global_destroy(gr_prune_global **g);
int gr_prune_global_feed(gr_prune_global *g, const float *x, size_t n);
/* 1: feed all tensors again; 0: ready to apply; < 0: error. */
int gr_prune_global_end_pass(gr_prune_global *g);
/* Prunes the next tensor in place (same order as fed). */
int gr_prune_global_apply(gr_prune_global *g, float *x, size_t n, gr_prune_stats *stats);
/* Total elements and elements to keep over the model (after the passes). */
uint64_t gr_prune_global_total(const gr_prune_global *g);
uint64_t gr_prune_global_keep(const gr_prune_global *g);

/* Accumulates s into acc (for per-model summaries). */
void gr_prune_stats_add(gr_prune_stats *acc, const gr_prune_stats *s);

#endif
