/* gr_forward: the fp32 forward pass of a gr_model over whole windows of
 * tokens (OpenBLAS sgemm over all positions at once, causal attention per
 * head and block of queries), giving next-token log-probabilities; plus a
 * plain per-token reference implementation to hold it against. */
#ifndef GR_FORWARD_H
#define GR_FORWARD_H

#include <stdint.h>

#include "gr_model.h"

typedef struct gr_fwd gr_fwd;

/* Workspace for running m (borrowed: must outlive the gr_fwd) on up to
 * max_rows positions per call (B sequences of T tokens: B*T <= max_rows, and
 * T <= the model's max_position_embeddings). threads is the op's thread
 * budget: a run splits every matrix product and loop over that many OpenMP
 * threads, each calling OpenBLAS single-threaded (one pool, never two; the
 * caller's openblas_set_num_threads setting is restored when a run returns).
 * A streamed model (gr_model_streaming) is converted by each run into this
 * workspace's own buffers, one layer and a chunk of lm_head rows at a time
 * (so several workspaces may share one model), giving the same numbers as
 * the model held resident.
 * NULL with gr_errmsg() on failure. */
gr_fwd *gr_fwd_new(const gr_model *m, int max_rows, int threads);
void gr_fwd_destroy(gr_fwd **f);

/* Runs B sequences of T tokens each (tokens: (B, T), row-major).
 * logp: (B, T-1); logp[b*(T-1) + t] = log p(tokens[b][t+1] | tokens[b][0..t])
 * for t >= first (entries below first are left untouched; positions before
 * `first` serve as context only, and their lm_head rows are skipped).
 * (0 <= first < T-1). logits: optional (B, T, V) raw logits; when given,
 * first must be 0.
 * Token ids outside [0, vocab), T < 2, T > max positions or B*T > max_rows
 * are GR_EINVAL. */
int gr_fwd_run(gr_fwd *f, const int32_t *tokens, int B, int T, int first, float *logits,
               double *logp);

/* The same result for one sequence computed with plain loops, one position
 * at a time (a KV cache, matrix-vector products, no BLAS, no threads): the
 * reference the fast path is tested against. logits optional (T, V). */
int gr_fwd_ref(const gr_model *m, const int32_t *tokens, int T, float *logits, double *logp);

#endif
