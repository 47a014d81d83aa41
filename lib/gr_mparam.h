/* gr_mparam: merge parameters the way mergekit reads them (scalar, layer
 * gradient, list of {filter, value}), resolved per tensor name.
 * Semantics: reference/merge-methods.md, "Parameters the way mergekit reads
 * them". */
#ifndef GR_MPARAM_H
#define GR_MPARAM_H

#include <stddef.h>

#include "gr_json.h"

/* One parameter value: a scalar, a gradient (list of numbers interpolated
 * over layers) or a list of conditional entries {filter, value} where value
 * is a scalar or a gradient. */
typedef struct gr_mparam gr_mparam;

/* Builds a parameter from JSON: a number, a non-empty array of numbers, or
 * a non-empty array of objects {"filter": STRING (optional), "value": NUMBER
 * or [NUMBERS]}. Anything else (bool, string, empty list, mixed list,
 * unknown key, nested filters, non-finite numbers) is GR_EINVAL naming
 * `what` (e.g. "models[1].parameters.density") and the rule; returns NULL
 * then. The caller destroys the result. */
gr_mparam *gr_mparam_from_json(const gr_json *v, const char *what);
/* Builders (for the YAML reader): NULL on allocation failure. */
gr_mparam *gr_mparam_scalar(double v);
gr_mparam *gr_mparam_gradient(const double *v, size_t n); /* n >= 1, copied */
gr_mparam *gr_mparam_filters(void);                       /* empty list */
/* Appends {filter, value} to a list made by gr_mparam_filters; filter NULL
 * or "*" matches every tensor; value (scalar or gradient) is taken on
 * success and on failure. */
int gr_mparam_filters_add(gr_mparam *list, const char *filter, gr_mparam *value);
void gr_mparam_destroy(gr_mparam **p);

/* Value for a tensor at layer position t in [0, 1]: a scalar is itself; a
 * gradient v[0..n) gives s = t(n-1), i = floor(s), f = s - i,
 * (1-f) v[i] + f v[min(i+1, n-1)]; a filter list uses the first entry whose
 * filter is a substring of the tensor name. Returns 0 with *out set, or
 * GR_ENOTFOUND when no filter matches (the parameter is unset for this
 * tensor: the caller falls back to the next level, then the default). */
int gr_mparam_eval(const gr_mparam *p, const char *tensor, double t, double *out);
/* Evaluates at the tensor's own position: gr_mparam_t(tensor, num_layers). */
int gr_mparam_eval_tensor(const gr_mparam *p, const char *tensor, long num_layers, double *out);

/* The gradient formula alone (n >= 1; t clamped to [0, 1]). */
double gr_mparam_interp(const double *v, size_t n, double t);

/* Layer index of a tensor: the number in the first dotted component that
 * follows a component named "layers", "layer", "h", "blocks" or "block"
 * (model.layers.12.mlp.up_proj.weight -> 12; transformer.h.3.attn.c_attn.weight
 * -> 3). Returns 1 with *layer set, or 0 for tensors outside the layers
 * (embeddings, final norm, lm_head). Numbers of more than 9 digits are not layers. */
int gr_mparam_layer(const char *tensor, long *layer);
/* Position of a tensor for gradients: l / (L - 1) for layer l of L (1 when
 * L == 1), 0 outside the layers, clamped to [0, 1]. */
double gr_mparam_t(const char *tensor, long num_layers);
/* L = 1 + the largest layer index among the names (0 when none has one). */
long gr_mparam_count_layers(const char *const *names, size_t n);

#endif
