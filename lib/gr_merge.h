/* gr_merge: merge kernels for one tensor at a time (linear, task arithmetic,
 * the TIES/DARE/breadcrumbs/DELLA family, slerp, PCB, model stock) on fp32
 * buffers. Semantics: reference/merge-methods.md, "Merge methods".
 *
 * Where graft deliberately differs from mergekit (v0.1.x):
 *  - random masks come from Philox keyed by (seed, tensor, model index,
 *    element): reproducible on any machine and thread count, not torch's;
 *  - dare rescales by 1/d by default (the paper); rescale l1 gives
 *    mergekit's 2025 behaviour; della by 1/p (paper), l1 on request;
 *  - breadcrumbs with n_top = 0 keeps the n_keep largest (mergekit zeroes
 *    the tensor through a slicing accident);
 *  - magnitude with floor(d n) = 0 keeps nothing (mergekit asserts);
 *  - top-k ties are broken by lower index (torch's argsort order is
 *    unspecified); della ranks ties the same way;
 *  - della ranks within the last dimension for every tensor (mergekit uses
 *    dim 1, which is the same for the 1-D and 2-D tensors of LLMs); a row
 *    of one element gets r = 1/2, i.e. p = d (mergekit fails on scalars);
 *  - model_stock fails when |1 + (N-1) cos| < 1e-6 instead of returning
 *    an exploding t;
 *  - ties elects + on a sign tie and divides by the kept weights
 *    (mergekit); the TIES paper's code trims model-wide (scope global:
 *    gr_prune_global), breaks sign ties by the model-wide majority and
 *    divides by the number of kept entries (the same with unit weights);
 *  - pcb follows the PCB paper (clip, exp/tanh balance, top-r, min-max);
 *    mergekit's pcb is a different softmax variant. A constant row
 *    min-max-normalises to 0, and S = 0 when the kept scores are all equal
 *    (the paper's code divides 0 by 0 there). */
#ifndef GR_MERGE_H
#define GR_MERGE_H

#include <stddef.h>
#include <stdint.h>

#include "gr_prune.h"

typedef enum {
    GR_MERGE_LINEAR,
    GR_MERGE_TASK_ARITHMETIC,
    GR_MERGE_TIES,
    GR_MERGE_DARE_TIES,
    GR_MERGE_DARE_LINEAR,
    GR_MERGE_BREADCRUMBS,
    GR_MERGE_BREADCRUMBS_TIES,
    GR_MERGE_DELLA,
    GR_MERGE_DELLA_LINEAR,
    GR_MERGE_SLERP,
    GR_MERGE_PCB,
    GR_MERGE_MODEL_STOCK,
    GR_MERGE_COUNT
} gr_merge_method;

typedef enum {
    GR_CONSENSUS_NONE,  /* no sign election (linear family) */
    GR_CONSENSUS_SUM,   /* elected sign = sign of sum_i u_i (TIES paper, default) */
    GR_CONSENSUS_COUNT, /* elected sign = sign of sum_i sign(u_i) */
} gr_consensus;

/* Options for one merge, shared by all tensors. gr_merge_opts_init fills the
 * method's defaults; callers then override what the user set. */
typedef struct gr_merge_opts {
    gr_merge_method method;
    gr_prune_method sparsify; /* implied by the method (none, magnitude, dare, ...) */
    gr_consensus consensus;   /* implied; ties family may switch sum <-> count */
    gr_rescale rescale;       /* for the sparsifier; GR_RESCALE_DEFAULT = method's */
    int normalize;    /* divide by the (kept) weight sum: linear, ties, della: 1; others 0 */
    double lambda;    /* scale of the merged delta; default 1 */
    double t;         /* slerp: 0 gives the base, 1 the other model */
    double pcb_ratio; /* pcb: fraction of the balance scores kept per model, (0, 1]; 0.1 */
    uint64_t seed;    /* dare/della masks: key = gr_rng_key(seed, tensor, rng_index) */
    int threads;      /* OpenMP threads for element-wise work; <= 0: one */
} gr_merge_opts;

/* Fills defaults for the named method; GR_EINVAL naming `merge_method` and
 * the accepted names if unknown. */
int gr_merge_opts_init(gr_merge_opts *o, const char *method);
int gr_merge_method_parse(const char *name, gr_merge_method *out);
const char *gr_merge_method_name(gr_merge_method m);
int gr_consensus_parse(const char *name, gr_consensus *out);
/* Whether the method reads base (all but linear), needs exactly two inputs
 * (slerp: the base plus one model), or draws random masks (dare/della). */
int gr_merge_needs_base(gr_merge_method m);
int gr_merge_is_random(gr_merge_method m);
/* Checks option ranges (t in [0,1], pcb_ratio in (0,1], finite lambda). */
int gr_merge_opts_check(const gr_merge_opts *o);

/* Per-model parameters for one tensor (already resolved by gr_mparam). */
typedef struct gr_merge_model {
    double weight;      /* w_i (linear, task-vector methods; pcb and slerp ignore it) */
    double density;     /* d_i in (0, 1]; 1 = no pruning */
    double gamma;       /* breadcrumbs */
    double epsilon;     /* della */
    uint64_t rng_index; /* model index in the RNG key: stable across tensors */
} gr_merge_model;

/* weight 1, density 1, gamma 0.01, epsilon 0.15, rng_index i. */
void gr_merge_model_init(gr_merge_model *m, uint64_t rng_index);

/* The tensor being merged. */
typedef struct gr_merge_tinfo {
    const char *name; /* for messages and the RNG key */
    size_t n;         /* elements */
    size_t row_len;   /* last dimension (della); n for 1-D, 1 for a scalar */
} gr_merge_tinfo;

enum { GR_MERGE_IN_MODELS = 0, GR_MERGE_IN_DELTAS = 1 };

/* Merges one tensor into out[0..n).
 *  base: n floats, the base model's tensor; may be NULL only for linear with
 *        GR_MERGE_IN_MODELS. For slerp it is v0 (t = 0 gives it).
 *  in:   k arrays of n floats: fine-tuned tensors θ_i (GR_MERGE_IN_MODELS)
 *        or deltas δ_i = θ_i − θ_b (GR_MERGE_IN_DELTAS). They are used as
 *        scratch and OVERWRITTEN (deltas are formed and pruned in place), so
 *        the merge needs no memory beyond the k + 1 input buffers.
 *  models: k per-model parameters. k >= 1; slerp needs k == 1, model_stock
 *        k >= 2.
 *  out:  n floats; may alias base (not the inputs).
 * Sparsifiers run per tensor (scope tensor). For scope global, prune each
 * model's deltas first with gr_prune_global and merge them with density 1.
 * Deterministic: the same bytes for any thread count. Returns 0, or
 * GR_EINVAL with a message naming the tensor, model and rule, or GR_ENOMEM. */
int gr_merge_tensor(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                    float *const *in, int in_kind, const gr_merge_model *models, size_t k,
                    float *out);
/* Plain single-threaded scalar reference of the same. */
int gr_merge_tensor_ref(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                        float *const *in, int in_kind, const gr_merge_model *models, size_t k,
                        float *out);

/* ---- PCB over the whole model (scope global, as the PCB paper's code) ----
 * Per-tensor PCB (gr_merge_tensor with GR_MERGE_PCB) is graft's default: it
 * streams like every other method, one pass per tensor, and agrees with the
 * mergekit convention that merges are per tensor. The global form treats
 * each model's delta as one row of the paper's n x D matrix: the outlier
 * clip quantiles, the min-max normalisations and the top-r cut of the
 * balance scores are taken over the whole model. Protocol, with the deltas
 * of all k models for each tensor (fed in a fixed order every pass):
 *
 *   gr_pcb_global *g = gr_pcb_global_new(k, ratio, threads);
 *   do { for each tensor: gr_pcb_global_feed(g, deltas, n); }
 *   while ((rc = gr_pcb_global_end_pass(g)) > 0);           four passes
 *   for each tensor: gr_pcb_global_apply(g, base, deltas, n, lambda, out);
 */
typedef struct gr_pcb_global gr_pcb_global;
gr_pcb_global *gr_pcb_global_new(size_t k, double ratio, int threads);
void gr_pcb_global_destroy(gr_pcb_global **g);
int gr_pcb_global_feed(gr_pcb_global *g, const float *const *deltas, size_t n);
int gr_pcb_global_end_pass(gr_pcb_global *g);
/* out = base + lambda * merged delta; out may alias base. */
int gr_pcb_global_apply(gr_pcb_global *g, const float *base, const float *const *deltas, size_t n,
                        double lambda, float *out);

#endif
