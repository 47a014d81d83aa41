/* gr_mergekit: mergekit YAML merge configurations read into the parameters
 * of graft's merge op, so `graft merge` and a pipeline's merge stage run the
 * same code on the same numbers. */
#ifndef GR_MERGEKIT_H
#define GR_MERGEKIT_H

#include <stddef.h>

#include "gr_json.h"

/* Limits on hostile configs (YAML aliases can multiply nodes). */
#define GR_MERGEKIT_MAX_BYTES (4u << 20)
#define GR_MERGEKIT_MAX_NODES 100000
#define GR_MERGEKIT_MAX_DEPTH 64

/* Reads one mergekit config (text[0..len), named `what` in messages) and
 * returns the merge op's parameter object (caller frees with gr_json_free):
 *
 *   merge_method          -> method
 *   base_model            -> base
 *   models[i].model       -> models[] (entries naming the base are the base
 *                            for every method but linear, and are dropped)
 *   models[i].parameters  -> per_model[] {weight, density, gamma, epsilon}
 *   parameters            -> weight, density, gamma, epsilon, lambda,
 *                            normalize, t, rescale (false -> "none");
 *                            int8_mask is accepted and ignored
 *   out_dtype, else dtype -> dtype (graft computes in fp32 either way)
 *   tokenizer_source      -> tokenizer_source ("base" = the default)
 *   seed, scope           -> seed, scope (graft's additions)
 *
 * Values may be numbers, layer gradients (lists) or {filter, value} lists;
 * they are checked here. Anything else (slices, unknown keys or methods,
 * "model+lora" references, tokenizer unions) is GR_EINVAL or GR_EUNSUP
 * naming the file, the line and the key. NULL on failure. */
gr_json *gr_mergekit_parse(const char *text, size_t len, const char *what);
/* The same for a file. */
gr_json *gr_mergekit_load(const char *path);

#endif
