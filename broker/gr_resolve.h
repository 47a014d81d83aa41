/* gr_resolve: turns a stage whose dependencies are finished into what a
 * worker runs — dependency stage ids in input parameters replaced by their
 * output artifact ids, the `_inputs` description for fan-in ops, the list of
 * input artifacts — and its memo key (DESIGN.md section 5). */
#ifndef GR_RESOLVE_H
#define GR_RESOLVE_H

#include <stddef.h>

#include "gr_op.h"

/* One finished dependency, as stored in Redis (JSON texts, borrowed). */
typedef struct gr_resolve_dep {
    const char *sid;
    const char *op;
    const char *rparams; /* the params it ran with (object), or "{}" */
    const char *metrics; /* object or "null" */
    const char *outputs; /* object: name -> artifact id; `out` is what dependants get */
} gr_resolve_dep;

typedef struct gr_resolved {
    char *rparams; /* canonical JSON object, with `_inputs` for fan-in ops */
    char *inputs;  /* JSON array of every artifact id read, in order, no repeats */
    char memo[65]; /* hex sha256 memo key */
} gr_resolved;

/* Resolves a stage of op whose parameters (JSON object text, as submitted:
 * input parameters hold stage ids or artifact ids) are params. Every stage id
 * in an input parameter must be one of deps and have an `out` output.
 * On success fills *out (free with gr_resolved_clear) and returns 0; else
 * GR_EINVAL/GR_EFORMAT/GR_ENOMEM with gr_errmsg() naming the stage reference
 * and the rule broken (the broker fails the stage with that message). */
int gr_resolve_stage(const char *op_name, const char *params, const gr_resolve_dep *deps,
                     size_t ndeps, gr_resolved *out);
void gr_resolved_clear(gr_resolved *r);

/* The memo key: hex sha256 of "graft-memo/1", the op name, its version, the
 * canonical JSON of params without keys starting with '_', and the input ids,
 * separated by newlines. Returns 0 or GR_ENOMEM/GR_EINVAL. */
int gr_memo_key(const gr_op *op, const gr_json *params, const char *const *inputs, size_t ninputs,
                char hex[65]);

#endif
