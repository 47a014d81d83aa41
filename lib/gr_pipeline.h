/* gr_pipeline: parses a pipeline file (YAML, DESIGN.md section 7) into a DAG
 * of concrete stages in topological order, with matrices expanded, implied
 * fetches inserted and every parameter checked against the op table.
 *
 * File format (schemas/pipeline.schema.json is the machine-readable form):
 *
 *   name: merge-three                # optional, default: file name stem
 *   priority: 0                      # optional default for every stage
 *   vars: {seed: 1}                  # optional; "${seed}" in a parameter
 *   stages:
 *     <id>:                          #   ids: [A-Za-z0-9_-]{1,64}
 *       op: prune                    # required, an op of gr_op_find()
 *       retries: 3                   # extra attempts after a failure (0..100)
 *       timeout: 600                 # seconds per attempt, 0 = none
 *       priority: 0                  # higher runs first (ties: older first)
 *       after: [other]               # ordering without data flow
 *       matrix: {density: [0.5, 0.1]}# fan-out, cartesian product
 *       input: d_math                # every other key is an op parameter
 *
 * Input parameters (GR_P_INPUT / GR_P_INPUTS in the op's table) hold stage ids
 * or artifact references. `sha256:<64 hex>` is kept as is. `file://`,
 * `http://`, `https://` and `hf://` URIs are replaced by the id of an implied
 * stage `fetch:<first 12 hex of sha256(uri)>` (op `fetch`, param `url`; one per
 * distinct URI); a relative `file://` path is made absolute against the
 * directory of `filename`. A stage id in a single-input parameter means that
 * stage's output tree `out`.
 *
 * Matrix: `matrix: {k: [v1, v2], ...}` makes one variant per combination with
 * parameter k set to the value. Variant ids append the bindings sorted by
 * variable name: `p_math[density=0.5]`, `m[lr=0.1,seed=2]` (strings unquoted,
 * other values as canonical JSON). A stage whose single-input parameter names
 * a matrix stage is expanded with it (map) and inherits its variables; two
 * upstreams that share a variable are matched on it (zip, not product). A
 * list-input parameter or `after:` naming a matrix stage means every variant
 * consistent with the consumer's own bindings (reduce; fan-in). A matrix
 * variable may be an input parameter (fan-out over stages or URIs).
 *
 * Variables: `vars:` defines scalars or lists; a parameter whose whole value
 * is the string "${v}" takes v's value and type; "${v}" inside a longer
 * string is replaced by v's text (scalars only). "$${" escapes a literal "${".
 *
 * Overrides (`--set`, applied before anything else), each "key=value" where
 * value is parsed as a JSON value when it parses, else taken as a string:
 *   name=NEW            the pipeline name
 *   VAR=VALUE           a variable declared under vars:
 *   STAGE.PARAM=VALUE   a stage parameter (or retries/timeout/priority/op);
 *                       setting a matrix variable pins it (drops it from the
 *                       matrix)
 *   STAGE.matrix.K=[..] a matrix variable's list of values
 * An override naming no variable or stage is an error. */
#ifndef GR_PIPELINE_H
#define GR_PIPELINE_H

#include <stddef.h>

#include "gr_json.h"
#include "gr_op.h"

#define GR_PIPELINE_MAX_STAGES   100000 /* after expansion */
#define GR_STAGE_DEFAULT_RETRIES 3

typedef struct gr_stage {
    char *id;        /* unique within the pipeline */
    char *op;        /* op name (gr_op_find(op) != NULL) */
    gr_json *params; /* object (owned). Input parameters hold stage ids (each also
                        in deps) or artifact ids "sha256:<hex>" */
    char **deps;     /* ids of stages that must finish first: data inputs and
                        after:, each once, all earlier in stages[] */
    size_t ndeps;
    int retries;    /* retries after the first attempt (default 3) */
    double timeout; /* seconds per attempt; 0 = none */
    int priority;   /* higher first; default 0 */
    int line;       /* 1-based line of the stage in the file (implied fetch
                       stages: the line of the first parameter naming the URI) */
} gr_stage;

typedef struct gr_pipeline {
    char *name;
    int priority;     /* top-level default priority */
    gr_stage *stages; /* in topological order: deps always come earlier */
    size_t nstages;
} gr_pipeline;

/* Parses text[0..len) (YAML 1.1/1.2 subset: block or flow style, anchors
 * and aliases allowed, merge keys not) with filename used in messages and for
 * relative file:// URIs (may be NULL: messages say "pipeline", relative
 * file:// URIs are an error). sets[0..nsets) are "key=value" overrides as
 * described above (sets may be NULL when nsets is 0).
 *
 * Returns a pipeline the caller frees with gr_pipeline_free, or NULL with
 * gr_errmsg() set to one line "FILE:LINE: stage 'ID': what is wrong" (unknown
 * op, unknown or missing parameter, wrong type, reference to a missing stage,
 * a cycle, bad matrix, bad override, YAML syntax) and code GR_EINVAL (bad
 * input) or GR_ENOMEM. */
gr_pipeline *gr_pipeline_parse(const char *text, size_t len, const char *filename,
                               const char *const *sets, size_t nsets);
/* Reads the file at path and parses it (GR_ENOTFOUND/GR_EIO if unreadable). */
gr_pipeline *gr_pipeline_load(const char *path, const char *const *sets, size_t nsets);
void gr_pipeline_free(gr_pipeline **p);

/* The stage with that id, or NULL. */
const gr_stage *gr_pipeline_find(const gr_pipeline *p, const char *id);

/* The expanded pipeline as JSON: {"name":..,"priority":..,"stages":[{"id","op",
 * "params","deps","retries","timeout","priority","line"}...]} (canonical
 * params). Appends to b; returns 0 or GR_ENOMEM. */
int gr_pipeline_to_json(const gr_pipeline *p, gr_buf *b);

/* Whether parameter name of op is an input: GR_P_INPUT, GR_P_INPUTS or 0. */
int gr_param_input_kind(const gr_op *op, const char *name);

/* Rewrites input references: returns a deep copy of params in which every
 * string in an input parameter of op (a single string, or the strings of a
 * list) is replaced by what fn returns. fn(ud, param, ref, &repl) returns 0
 * with *repl a malloc'd replacement (or NULL to keep ref), or a GR_E* code
 * with gr_errmsg() set, which aborts the rewrite. The broker uses it to turn
 * stage ids into output ids, the worker to turn artifact ids into local
 * paths. Returns NULL on error (fn's code in gr_errcode()). */
typedef int (*gr_input_fn)(void *ud, const char *param, const char *ref, char **repl);
gr_json *gr_params_map_inputs(const gr_op *op, const gr_json *params, gr_input_fn fn, void *ud);

/* Whether s is an artifact id "sha256:" followed by 64 lowercase hex digits. */
int gr_is_artifact_id(const char *s);

#endif
